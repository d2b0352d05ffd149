"""The running worker as the hooks see it: found by pidfile (direct) or systemd, and signalled.

find_worker returns the worker of this app on this instance, or None and why not (no pidfile, stale
pidfile, a reused pid that is not a launcher of {install_dir}/releases, a unit with no main process).
A worker is recognised by its command line: `python [-u] .../celery_worker.py GROUP` under releases/.
Drain sends only SIGTERM (warm shutdown) and SIGQUIT (cold shutdown), never SIGKILL; a systemd worker
is stopped through `systemctl stop` so Restart=on-failure does not revive it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from deploytool_instance.base import HookError
from deploytool_instance.layout import Layout
from deploytool_instance.settings import Settings

WORKER_SCRIPT = "celery_worker.py"  # the launcher's entry point beside celery_hooks.py: the worker process itself


def process_state(pid: int) -> str | None:
    """The /proc state letter of `pid`, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def process_alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for a parent that never reaps it)."""
    return process_state(pid) not in (None, "Z", "X", "x")


def process_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def process_cwd(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def launcher_script(cmdline: Sequence[str]) -> str | None:
    """The launcher's path in a worker's command line (`python [-u] .../celery_worker.py GROUP`)."""
    for part in cmdline[1:]:
        if os.path.basename(part) == WORKER_SCRIPT:
            return part
    return None


def is_our_worker(pid: int, layout: Layout) -> bool:
    """A launcher of this app's releases/ (or, with restart = "handoff", of its live/ copies)."""
    script = launcher_script(process_cmdline(pid))
    if script is None:
        return False
    real = os.path.realpath(script)
    return any(real.startswith(str(where.resolve()) + os.sep) for where in (layout.releases, layout.live))


def run_command(argv: Sequence[str], privileged: bool = False, timeout: float = 60.0) -> str:
    """Run a command (with `sudo -n` when privileged and not root); its stdout, or a HookError."""
    full = list(argv)
    if privileged and os.geteuid() != 0:
        full = ["sudo", "-n", *full]
    try:
        done = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HookError(f"{shlex.join(full)}: {exc}") from exc
    if done.returncode != 0:
        raise HookError(f"{shlex.join(full)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


class WorkerProcess(Protocol):
    """The running worker as drain sees it: its pid, whether it is gone, and the two signals drain sends."""

    pid: int

    def exited(self) -> bool: ...

    def warm_shutdown(self) -> None: ...

    def cold_shutdown(self) -> None: ...


@dataclass
class DirectWorker:
    """A worker this hook started itself (DEPLOYTOOL_PROCESS_MANAGER=direct)."""

    pid: int

    def exited(self) -> bool:
        return not process_alive(self.pid)

    def _send(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def warm_shutdown(self) -> None:
        self._send(signal.SIGTERM)

    def cold_shutdown(self) -> None:
        self._send(signal.SIGQUIT)


@dataclass
class SystemdWorker(DirectWorker):
    """A worker run by systemd: stopping goes through systemctl so Restart=on-failure does not revive it."""

    unit: str = ""
    stopping: bool = field(default=False)

    def _stop_unit(self) -> None:
        if not self.stopping:
            # systemd sends KillSignal=SIGTERM to the main process only (KillMode=mixed) and, since the
            # stop was asked for, does not restart the worker whatever its exit status.
            run_command(["systemctl", "stop", "--no-block", self.unit], privileged=True)
            self.stopping = True

    def warm_shutdown(self) -> None:
        self._stop_unit()

    def cold_shutdown(self) -> None:
        self._stop_unit()
        self._send(signal.SIGQUIT)


def systemd_main_pid(unit: str) -> int:
    try:
        out = run_command(["systemctl", "show", "--property", "MainPID", "--value", unit], timeout=15.0)
    except HookError:
        return 0
    text = out.strip()
    return int(text) if text.isdigit() else 0


def find_worker(settings: Settings) -> tuple[WorkerProcess | None, str]:
    """The running worker of this app on this instance, or None and why not."""
    layout = settings.layout
    if settings.process_manager == "systemd":
        unit = settings.unit_name
        with contextlib.suppress(OSError):  # restart = "handoff": the current worker's per-release unit
            unit = layout.unit_file.read_text().strip() or unit
        pid = systemd_main_pid(unit)
        if pid <= 0 or not process_alive(pid):
            return None, f"unit {unit} has no running main process"
        return SystemdWorker(pid=pid, unit=unit), f"unit {unit}"
    try:
        text = layout.pidfile.read_text().strip()
    except FileNotFoundError:
        return None, f"no pidfile at {layout.pidfile}"
    if not text.isdigit():
        return None, f"pidfile {layout.pidfile} holds {text!r}, not a pid"
    pid = int(text)
    if not process_alive(pid):
        return None, f"pid {pid} from {layout.pidfile} is not running (stale pidfile)"
    if not is_our_worker(pid, layout):
        return None, f"pid {pid} from {layout.pidfile} is not a worker of {layout.releases} (reused pid)"
    return DirectWorker(pid=pid), f"pidfile {layout.pidfile}"
