"""The whole sandbox run (`fab sandbox`, the README's main command) end to end, as a user runs it:
real moto server, real Celery workers on moto's SQS, the real hook scripts, v1 then v2 under load.
And Ctrl-C in the middle of it: every process it started is gone afterwards (checked by pid)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from deploytool.sandbox.procs import pid_alive, wait_gone
from tests.conftest import ROOT
from tests.sandbox_helpers import fleet_copy, started_pids

pytestmark = pytest.mark.slow


def fab_sandbox(fleet: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fabric", "sandbox", "--ci", "--fleet", str(fleet)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_fab_sandbox_deploys_v1_then_v2_under_load_and_reports(tmp_path: Path) -> None:
    process = fab_sandbox(fleet_copy(tmp_path))
    try:
        out, _ = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    root = tmp_path / ".sandbox"
    assert [p for p in started_pids(root) if pid_alive(p)] == [], "the run left processes behind"
    versions = re.search(r"sandbox run (?:ok|NOT OK): (\S+) -> (\S+) in \d+s", out)
    assert versions, out
    v1, v2 = versions.groups()
    assert v1 != v2
    for group in ("email", "reports", "video"):
        assert re.search(rf"│ {group}\s+│ {re.escape(v2)}\s+│ 2 ", out), f"{group} is not on {v2} everywhere:\n{out}"
    counts = re.search(r"^│\s+(\d+) │\s+(\d+) │\s+(\d+) │\s+(\d+) │$", out, re.MULTILINE)
    assert counts, out
    submitted, completed, lost, duplicated = map(int, counts.groups())
    assert submitted > 0 and completed + lost == submitted
    assert duplicated == 0, out
    assert "every instance runs its expected version" in out  # the closing reconcile (DuckDB)
    assert "lifecycle logs:" in out and "worker logs:" in out
    assert lost == 0, f"{lost} of {submitted} tasks lost:\n{out}"
    assert process.returncode == 0, out


def test_ctrl_c_in_the_middle_of_fab_sandbox_leaves_no_process_behind(tmp_path: Path) -> None:
    process = fab_sandbox(fleet_copy(tmp_path))
    root = tmp_path / ".sandbox"
    pids: list[int] = []
    try:
        assert process.stdout is not None
        seen: list[str] = []
        for line in process.stdout:
            seen.append(line)
            if "v2: built and published" in line:  # v1 runs on every instance, the load runs, v2 starts rolling out
                break
        else:
            pytest.fail("fab sandbox ended before v2:\n" + "".join(seen))
        pids = started_pids(root)
        assert len([p for p in pids if pid_alive(p)]) >= 7, "expected moto and six workers"
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 130, "".join(seen) + out
        assert "interrupted" in out
        pids = sorted(set(pids + started_pids(root)))
        assert wait_gone(pids, 5) == [], f"left running: {[p for p in pids if pid_alive(p)]}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
