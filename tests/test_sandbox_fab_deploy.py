"""The rollout tasks on the default (sandbox) target, as the README runs them (subprocesses of fab):
`fab sandbox-up && fab deploy && fab reconcile && fab restart && fab deploy && fab rollback && fab status --json &&
fab sandbox-down`, with the real hook scripts, real Celery workers on the sandbox's moto SQS, and the
DuckDB reconcile `fab deploy` ends with. Each task attaches anew to the sandbox sandbox-up left running."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deploytool.config import load_fleet
from deploytool.sandbox.procs import pid_alive, read_pidfile, wait_gone
from tests.conftest import ROOT
from tests.sandbox_helpers import fleet_copy, kill_if_alive, started_pids

pytestmark = pytest.mark.slow
NO_SANDBOX = "error: no sandbox is running for target 'sandbox': run `fab sandbox-up` first\n"


def test_fab_deploy_reconcile_restart_rollback_status_on_the_sandbox_target(tmp_path: Path) -> None:
    fleet_file = fleet_copy(tmp_path)  # outside git: the versions are given with --version
    fleet = load_fleet(fleet_file)
    root = tmp_path / ".sandbox"
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}

    def fab(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "fabric", *args, "--fleet", str(fleet_file)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
            env={**env, "PYTHONPATH": str(ROOT), "CI": "1"},
        )
        return done

    def released(*args: str) -> dict[str, Any]:
        """`fab <args> --json-out F`: the result as a CI pipeline reads it (the process must succeed)."""
        result = tmp_path / "result.json"
        result.unlink(missing_ok=True)
        done = fab(*args, "--json-out", str(result))
        assert done.returncode == 0, done.stdout + done.stderr
        data: dict[str, Any] = json.loads(result.read_text())
        return data

    def succeeded(data: dict[str, Any], version: str, mode: str) -> None:
        """Every group's deployment succeeded on both its instances."""
        assert (data["version"], data["target"], data["mode"], data["succeeded"]) == (version, "sandbox", mode, True)
        assert data["outcomes"] == {"succeeded": 3}
        assert {g["group"]: (g["status"], g["succeeded"], g["failed"], g["total"]) for g in data["groups"]} == {
            group: ("Succeeded", 2, 0, 2) for group in ("email", "reports", "video")
        }

    def instances() -> list[Path]:
        return sorted(root.glob("instances/*/i-*"))

    run_dir = Path(fleet.app.install_path.lstrip("/")) / "run"

    def running() -> set[str]:
        return {(i / run_dir / "VERSION").read_text().strip() for i in instances()}

    def workers() -> dict[str, int]:
        found = {i.name: read_pidfile(i / run_dir / "worker.pid") for i in instances()}
        assert all(found.values()), found
        return {name: pid for name, pid in found.items() if pid}

    no = fab("deploy", "--version", "1.0.0")
    assert (no.returncode, no.stderr) == (2, NO_SANDBOX)
    up = fab("sandbox-up")
    pids: list[int] = []
    try:
        assert up.returncode == 0, up.stderr
        deployed = fab("deploy", "--version", "1.0.0")  # the human output, once
        pids = started_pids(root)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        out = deployed.stdout
        assert "tags: 6 instance(s) tagged in 3 CreateTags call(s)" in out
        assert re.search(r"release \S+-1\.0\.0 succeeded: 3 succeeded", out), out
        assert out.rstrip().endswith("every instance runs its expected version"), out  # the closing reconcile
        assert running() == {"1.0.0"} and len(instances()) == 6
        first = workers()
        assert all(pid_alive(pid) for pid in first.values()), first

        reconciled = fab("reconcile")
        assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
        assert "every instance runs its expected version" in reconciled.stdout

        restarted = released("restart")
        succeeded(restarted, "restart", "restart")
        assert restarted["release_id"].endswith("-restart")
        second = workers()
        assert all(second[i] != first[i] and pid_alive(second[i]) for i in first)  # every worker restarted
        assert not [p for p in first.values() if pid_alive(p)]

        v2 = released("deploy", "--version", "2.0.0")
        succeeded(v2, "2.0.0", "deploy")
        assert running() == {"2.0.0"}

        back = released("rollback")
        succeeded(back, "1.0.0", "deploy")  # a rollback is a release of 1.0.0
        assert back["release_id"].endswith("-1.0.0") and back["release_id"] != v2["release_id"]
        assert running() == {"1.0.0"}

        status = fab("status", "--json")  # the rollback's release and its deployments, as they are now
        assert status.returncode == 0, status.stderr
        shown = json.loads(status.stdout)
        assert (shown["target"], shown["lease"]) == ("sandbox", None)  # the rollback let go of the lease
        release = shown["release"]
        assert (release["release_id"], release["version"], release["mode"], release["target"]) == (
            back["release_id"],
            "1.0.0",
            "rollback",
            "sandbox",
        ), release
        assert {g["group"]: g["deployment_id"] for g in release["groups"]} == {
            g["group"]: g["deployment_id"] for g in back["groups"]
        }
        for group in release["groups"]:
            assert (group["status"], group["outcome"], group["failed"]) == ("Succeeded", "succeeded", 0), group
            assert group["succeeded"] == group["total"] > 0 and group["abandoned_reason"] is None, group

        after = fab("reconcile")  # the rollback is a release of its own: 1.0.0 is expected again
        assert after.returncode == 0, after.stdout + after.stderr
        pids = sorted(set(pids + started_pids(root)))
    finally:
        down = fab("sandbox-down")
        pids = sorted(set(pids + started_pids(root)))
        left = wait_gone(pids, 10)
        for pid in left:
            kill_if_alive(pid)
    assert down.returncode == 0, down.stderr
    assert left == [], "sandbox-down left processes behind"
    gone = fab("reconcile")
    assert (gone.returncode, gone.stderr) == (2, NO_SANDBOX)
