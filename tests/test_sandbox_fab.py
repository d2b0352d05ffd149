"""The sandbox's fab tasks, run as a user runs them (a subprocess): sandbox-up, hooks, sandbox-down."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploytool.sandbox.motoserver import recorded
from deploytool.sandbox.procs import pid_alive, wait_gone
from tests.conftest import ROOT
from tests.sandbox_helpers import appspec, fleet_copy, sh, write_bundle


def fab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fabric", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "CI": "1"},
    )


@pytest.mark.slow
def test_sandbox_up_hooks_and_down(tmp_path: Path) -> None:
    fleet = str(fleet_copy(tmp_path))  # the fleet file and its app source (app.source must exist)
    up = fab("sandbox-up", "--fleet", fleet)
    moto = recorded(tmp_path / ".sandbox/run/moto.pid")
    try:
        assert up.returncode == 0, up.stderr
        assert moto is not None and pid_alive(moto[0])
        assert "email: i-" in up.stdout and "fab sandbox-down" in up.stdout
        good = write_bundle(
            tmp_path / "good.tgz",
            {
                "hooks/check.sh": sh('echo "group=$DEPLOYMENT_GROUP_NAME event=$LIFECYCLE_EVENT"'),
                "appspec.yml": appspec({"BeforeInstall": "hooks/check.sh", "ValidateService": "hooks/check.sh"}),
            },
        )
        ran = fab(
            "hooks",
            "--fleet",
            fleet,
            "--group",
            "video",
            "--event",
            "ValidateService,BeforeInstall",
            "--bundle",
            str(good),
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
        out = ran.stdout
        assert (
            out.index("DownloadBundle: Succeeded")
            < out.index("BeforeInstall: Succeeded")
            < out.index("ValidateService: Succeeded")
        )
        assert "[stdout]group=video event=ValidateService" in out
        bad = write_bundle(
            tmp_path / "bad.tgz",
            {
                "hooks/no.sh": sh("echo not ready; exit 4"),
                "appspec.yml": appspec({"ValidateService": "hooks/no.sh"}),
            },
        )
        failed = fab("hooks", "--fleet", fleet, "--event", "ValidateService", "--bundle", str(bad))
        assert failed.returncode == 1
        assert "error: email/i-" in failed.stderr
        assert (
            "ValidateService failed: Script at specified location: hooks/no.sh failed with exit code 4" in failed.stderr
        )
        typo = fab("hooks", "--fleet", fleet, "--event", "ValidateServce")
        assert typo.returncode == 2 and "(did you mean 'ValidateService'?)" in typo.stderr
    finally:
        down = fab("sandbox-down", "--fleet", fleet)
    assert down.returncode == 0, down.stderr
    assert moto is not None and not wait_gone([moto[0]], 5)
