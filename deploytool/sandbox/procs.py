"""Process helpers: liveness by pid, process groups, pidfiles, and the record of started pids.

Contract: nothing here looks a process up by name. The sandbox stops only processes it started
(their pid or process group) or that its instances recorded in a pidfile. A zombie counts as gone,
since a reparented process may never be reaped by this machine's init.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from deploytool.sandbox.clock import SYSTEM_CLOCK, Clock

Log = Callable[[str], None]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) from /proc, or None when the process or /proc is not there."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _stat(pid)
    return stat is None or stat[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    members: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def signal_group(pgid: int, sig: int) -> bool:
    """Send a signal to a process group; False when the group is gone. Never our own group."""
    if pgid <= 1 or pgid == os.getpgrp():
        return False
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def process_group(pid: int) -> int | None:
    stat = _stat(pid)
    return None if stat is None else stat[1]


def runs_script(pid: int, script: str, *args: str) -> bool:
    """Whether the live process `pid` runs `script` (a file name in its command line) with `args` at the end: a
    pidfile's pid may have been reused by another program since it was written."""
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return False
    has_script = any(os.path.basename(a) == script for a in argv)
    return has_script and (not args or argv[-len(args) :] == list(args)) and pid_alive(pid)


def read_pidfile(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def wait_gone(pids: Iterable[int], timeout_s: float, clock: Clock = SYSTEM_CLOCK, step_s: float = 0.05) -> list[int]:
    """Wait until every pid is gone or the timeout passes; returns those still alive."""
    left = [p for p in pids if pid_alive(p)]
    deadline = clock.now() + timeout_s
    while left and clock.now() < deadline:
        clock.sleep(step_s)
        left = [p for p in left if pid_alive(p)]
    return left


def stop_worker(pid: int, *, grace_s: float, clock: Clock = SYSTEM_CLOCK, log: Log = lambda _: None) -> bool:
    """Stop a worker as the drain does: SIGTERM (warm), SIGQUIT (cold) after `grace_s`.

    As a last resort, after a second grace, SIGKILL of the worker's own process group (never
    ours), said in the log. Returns True when the process is gone.
    """
    steps = ((signal.SIGTERM, "SIGTERM"), (signal.SIGQUIT, "SIGQUIT"))
    for sig, name in steps:
        if not pid_alive(pid):
            return True
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        log(f"sent {name} to worker pid {pid}")
        if not wait_gone([pid], grace_s, clock):
            return True
    pgid = process_group(pid)
    if pgid is not None and signal_group(pgid, signal.SIGKILL):
        log(f"worker pid {pid} outlived SIGTERM and SIGQUIT: sent SIGKILL to its process group {pgid}")
    return not wait_gone([pid], grace_s, clock)


class PidRecord:
    """Appends `<pid> <kind> <what>` for every process the sandbox starts (read by tests and sandbox-down):
    kinds `moto` (the moto server), `hook` (a hook script, leading its own process group) and `worker`
    (a worker a hook started, from its pidfile)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def add(self, pid: int, kind: str, what: str) -> None:
        with self._lock:
            self._append(pid, kind, what)

    def add_once(self, pid: int, kind: str, what: str) -> bool:
        """Add unless this pid is recorded as this kind already; True when added."""
        with self._lock:
            if (pid, kind) in self.pids():
                return False
            self._append(pid, kind, what)
            return True

    def _append(self, pid: int, kind: str, what: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as out:
            out.write(f"{pid} {kind} {what}\n")

    def pids(self) -> list[tuple[int, str]]:
        try:
            lines = self.path.read_text().splitlines()
        except OSError:
            return []
        out: list[tuple[int, str]] = []
        for line in lines:
            parts = line.split(" ", 2)
            if len(parts) >= 2 and parts[0].isdigit():
                out.append((int(parts[0]), parts[1]))
        return out
