"""The botocore floor: pyproject.toml and deploytool.aws.versions agree, and a command run with an older botocore
stops with one line (exit 2) before any AWS call instead of CreateDeployment's ParamValidationError traceback."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import botocore
import pytest
from invoke import Context
from invoke.exceptions import Exit

from deploytool import targets
from deploytool.aws.versions import MIN_BOTOCORE, botocore_problem
from deploytool.config import load_fleet
from deploytool.errors import UsageError
from deploytool.tasks import build, rollout
from tests.builders import acme_fleet, write_app

ROOT = Path(__file__).resolve().parent.parent
TOO_OLD = "1.43.81"  # deploymentMode arrived in 1.43.82, ec2DeploymentOptions in 1.43.115
FLOOR = ".".join(map(str, MIN_BOTOCORE))


def floors() -> dict[str, str]:
    """{'boto3': '1.43.115', 'botocore': ...}: the >= floors of pyproject.toml's dependencies."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    found = {}
    for dep in deps:
        match = re.fullmatch(r"(boto3|botocore)>=([0-9.]+)", dep)
        if match:
            found[match[1]] = match[2]
    return found


def test_pyproject_floors_are_the_checked_floor() -> None:
    assert floors() == {"boto3": FLOOR, "botocore": FLOOR}


def test_the_floor_itself_passes_and_one_below_does_not() -> None:
    assert botocore_problem(FLOOR) is None
    assert botocore_problem("1.44.8") is None
    problem = botocore_problem("1.43.114")
    assert problem is not None and "botocore 1.43.114 is too old" in problem and f">= {FLOOR}" in problem


@pytest.fixture
def old_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(botocore, "__version__", TOO_OLD)


def test_connecting_to_a_target_is_refused_before_any_aws_call(old_botocore: None) -> None:
    fleet = load_fleet(ROOT / "deploy.toml")
    with pytest.raises(UsageError) as refused:
        targets.connect(fleet, "production", endpoint_url="http://127.0.0.1:9")  # nothing listens there
    assert str(refused.value).startswith(f"botocore {TOO_OLD} is too old for deploytool (needs >= {FLOOR}")


@pytest.mark.parametrize(
    ("task", "args"),
    [
        (rollout.deploy, {"target": "production"}),
        (rollout.restart, {"target": "production"}),
        (rollout.setup, {"target": "production"}),
        (rollout.status, {"target": "production"}),
        (build.publish, {"target": "production", "allow_dirty": True}),
    ],
)
def test_fab_tasks_say_it_in_one_line_and_exit_2(
    old_botocore: None, task: object, args: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(Exit) as stopped:
        task(Context(), fleet=str(ROOT / "deploy.toml"), **args)  # type: ignore[operator]
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: botocore {TOO_OLD} is too old for deploytool (needs >= {FLOOR}: CreateDeployment's "
        f"ec2DeploymentOptions and deploymentMode); run: pip install 'boto3>={FLOOR}' 'botocore>={FLOOR}'\n"
    )


def test_the_installed_botocore_is_not_below_the_floor() -> None:
    """In .venv-floor (dev.py's floor run) this is the floor itself; anywhere else, the lock's newer botocore."""
    assert botocore_problem() is None, botocore_problem()


def test_the_sandbox_is_refused_before_it_starts_anything(old_botocore: None, tmp_path: Path) -> None:
    from deploytool.sandbox.session import SandboxSession

    write_app(tmp_path / "repo" / "src")

    fleet = acme_fleet(tmp_path / "repo")
    session = SandboxSession(fleet, target="sandbox", root=tmp_path / "sb", handle_signals=False)
    with pytest.raises(UsageError, match=f"botocore {TOO_OLD} is too old"), session:
        pass  # pragma: no cover: never entered
    assert session.moto is None and not (tmp_path / "sb" / "run").exists()  # no moto server, nothing written
