"""The whole sandbox run (`fab sandbox`, the README's main command) end to end, as a user runs it:
real moto server, real Celery workers on moto's SQS, the real hook scripts, v1 then v2 under load.
And Ctrl-C in the middle of it, of `fab sandbox` and of the Quick start's `python3 dev.py sandbox`:
every process it started is gone afterwards (checked by pid).

The one end-to-end test that reads the human rendering as such: `fab sandbox` writes no JSON, its report
(the versions per group, the load's counts) is what it gives. The other e2e tests read the `--json-out`
result a CI pipeline reads, or the state on disk."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from deploytool.sandbox.procs import pid_alive, process_group, signal_group, wait_gone
from dev import install_stamp
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


def interrupted_in_v2(process: subprocess.Popen[str], root: Path, interrupt: Callable[[], None]) -> str:
    """Interrupt the run once v2 starts rolling out (v1 runs on every instance, the load runs) and
    return its whole output once it has ended, asserting that every process it started is gone.
    Whatever it left (a failure) is killed afterwards, by process group so a worker's pool goes too."""
    pids: list[int] = []
    try:
        assert process.stdout is not None
        seen: list[str] = []
        for line in process.stdout:
            seen.append(line)
            if "v2: built and published" in line:
                break
        else:
            pytest.fail("the sandbox run ended before v2:\n" + "".join(seen))
        pids = started_pids(root)
        assert len([p for p in pids if pid_alive(p)]) >= 7, "expected moto and six workers"
        interrupt()
        out, _ = process.communicate(timeout=120)
        output = "".join(seen) + out
        pids = sorted(set(pids + started_pids(root)))
        assert wait_gone(pids, 5) == [], f"left running: {[p for p in pids if pid_alive(p)]}\n{output}"
        return output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in pids:
            if pid_alive(pid) and not signal_group(process_group(pid) or 0, signal.SIGKILL):
                os.kill(pid, signal.SIGKILL)


def test_ctrl_c_in_the_middle_of_fab_sandbox_leaves_no_process_behind(tmp_path: Path) -> None:
    process = fab_sandbox(fleet_copy(tmp_path))
    output = interrupted_in_v2(process, tmp_path / ".sandbox", lambda: process.send_signal(signal.SIGINT))
    assert process.returncode == 130, output
    assert "interrupted" in output


def dev_py_checkout(tmp_path: Path) -> Path:
    """A checkout for dev.py: its dev.py, pyproject.toml, lock, fabfile.py and the sample fleet, with .venv the
    venv running these tests, which dev.py set up for this pyproject.toml and lock (so it installs nothing)."""
    venv = Path(sys.prefix)
    stamp = venv / ".deploytool-installed"
    if not (stamp.exists() and stamp.read_text() == install_stamp(ROOT) and (venv / "bin" / "fab").exists()):
        pytest.skip(f"{venv} was not set up by `python3 dev.py` for this pyproject.toml and lock (it would install)")
    checkout = tmp_path / "checkout"
    (checkout / "requirements").mkdir(parents=True)
    for name in ("dev.py", "pyproject.toml", "requirements/dev.lock", "fabfile.py"):
        shutil.copy(ROOT / name, checkout / name)
    (checkout / ".venv").symlink_to(venv)
    fleet_copy(checkout)
    return checkout


def test_ctrl_c_on_the_quick_start_command_reaches_fab_and_leaves_no_process_behind(tmp_path: Path) -> None:
    checkout = dev_py_checkout(tmp_path)
    root = checkout / ".sandbox"
    process = subprocess.Popen(  # its own session: Ctrl-C goes to its whole process group, as from a terminal
        [sys.executable, "dev.py", "sandbox"],
        cwd=checkout,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    output = interrupted_in_v2(process, root, lambda: os.killpg(process.pid, signal.SIGINT))
    assert "Traceback" not in output, output
    assert "interrupted" in output
    assert process.returncode == 130, output
