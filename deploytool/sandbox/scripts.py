"""Run one hook script as the CodeDeploy agent does.

Contract: `run_script` starts the script in a new session (its own process group), with stdin
closed and the hook environment it is given, and logs every stdout/stderr line to the event log.
It waits for the script AND for its output to close: like the agent, a background process that
keeps the script's stdout/stderr open holds the event until the timeout. On timeout (or abort) it
sends SIGTERM to the script's process group, as the agent does; where the agent stops there, the
sandbox waits `kill_grace_s` and then sends SIGKILL to that group only if something in it ignored
SIGTERM, and says so in the log, so that no process is left behind. `runas` runs the script as
that user (only possible as root; otherwise a clear failure unless it is the current user), directly
rather than through `su USER -c SCRIPT` as the agent does: a user whose login shell runs no commands
(nologin, false), for whom the agent's `su` fails every hook, gets a warning in the event's log.
"""

from __future__ import annotations

import os
import pwd
import selectors
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from deploytool.sandbox.clock import SYSTEM_CLOCK, Clock
from deploytool.sandbox.procs import group_members, signal_group

TAIL_CHARS = 2048  # the agent keeps the last 2 KiB of script output for the deployment's diagnostics


@dataclass(frozen=True)
class ScriptOutcome:
    location: str
    ok: bool
    exit_code: int | None = None
    timed_out: bool = False
    killed: bool = False  # the group needed SIGKILL after ignoring SIGTERM
    duration_s: float = 0.0
    message: str = ""


class EventLog:
    """One lifecycle event's log on one instance, and the tail kept for diagnostics."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[str] = path.open("a", encoding="utf-8")
        self._tail = ""
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        text = line if line.endswith("\n") else line + "\n"
        with self._lock:
            self._file.write(f"{stamp} {text}")
            self._file.flush()
            self._tail = (self._tail + text)[-TAIL_CHARS:]

    def tail(self) -> str:
        return self._tail

    def close(self) -> None:
        self._file.close()


NO_COMMAND_SHELLS = ("nologin", "false")


def shell_problem(user: str, shell: str) -> str:
    """Why the agent's `su USER -c SCRIPT` would fail for a user with this login shell, or ""."""
    if not shell:
        return ""  # su runs /bin/sh for an empty shell field
    if os.path.basename(shell) in NO_COMMAND_SHELLS or not os.access(shell, os.X_OK):
        return (
            f"runas {user!r}: the login shell {shell} runs no commands; the CodeDeploy agent starts hooks with "
            f"`su {user} -c SCRIPT`, which fails for this user (give it a shell: usermod -s /bin/bash {user}); "
            "the sandbox runs the script directly"
        )
    return ""


def _identity(runas: str | None) -> tuple[dict[str, Any], dict[str, str], str]:
    """Popen arguments and environment to run as `runas`, or an error message."""
    if not runas:
        return {}, {}, ""
    try:
        entry = pwd.getpwnam(runas)
    except KeyError:
        return {}, {}, f"runas user {runas!r} does not exist on this machine"
    if entry.pw_uid == os.geteuid():
        return {}, {}, ""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        return (
            {},
            {},
            (
                f"runas {runas!r}: running a script as another user needs root, and the sandbox runs as {me!r} "
                "(run the sandbox as root, or leave runas out for local runs)"
            ),
        )
    popen = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": os.getgrouplist(runas, entry.pw_gid)}
    env = {"HOME": entry.pw_dir, "USER": runas, "LOGNAME": runas, "SHELL": entry.pw_shell}
    return popen, env, ""


class _Output:
    """Reads the script's stdout and stderr without blocking and logs them line by line."""

    def __init__(self, process: subprocess.Popen[bytes], log: EventLog) -> None:
        self.log = log
        self.selector = selectors.DefaultSelector()
        self.partial: dict[str, bytes] = {}
        for stream, name in ((process.stdout, "stdout"), (process.stderr, "stderr")):
            if stream is not None:
                self.selector.register(stream.fileno(), selectors.EVENT_READ, name)
                self.partial[name] = b""

    @property
    def open(self) -> bool:
        return bool(self.selector.get_map())

    def pump(self, wait_s: float) -> None:
        for key, _ in self.selector.select(timeout=max(0.0, wait_s)):
            name = str(key.data)
            data = os.read(int(key.fd), 65536)
            if not data:
                self.selector.unregister(key.fd)
                self._emit(name, self.partial.pop(name, b""), final=True)
                continue
            self._emit(name, self.partial.get(name, b"") + data, final=False)

    def _emit(self, name: str, data: bytes, *, final: bool) -> None:
        *lines, rest = data.split(b"\n")
        for line in lines:
            self.log.write(f"[{name}]{line.decode('utf-8', 'replace')}")
        if final and rest:
            self.log.write(f"[{name}]{rest.decode('utf-8', 'replace')}")
        elif not final:
            self.partial[name] = rest

    def close(self) -> None:
        for name, rest in list(self.partial.items()):
            if rest:
                self.log.write(f"[{name}]{rest.decode('utf-8', 'replace')}")
        self.partial.clear()
        self.selector.close()


def run_script(
    path: Path,
    *,
    location: str,
    timeout_s: float,
    env: Mapping[str, str],
    cwd: Path,
    log: EventLog,
    runas: str | None = None,
    kill_grace_s: float = 10.0,
    clock: Clock = SYSTEM_CLOCK,
    abort: threading.Event | None = None,
    on_spawn: Callable[[int], None] | None = None,
) -> ScriptOutcome:
    log.write(f"Script - {location}")
    if not path.is_file():
        return _fail(log, location, f"Script does not exist at specified location: {location}")
    if not os.access(path, os.X_OK):
        log.write(f"[deploytool] {location} is not executable: trying to make it executable")
        try:
            path.chmod(path.stat().st_mode | 0o111)
        except OSError:
            return _fail(log, location, f"Unable to set script at specified location: {location} as executable")
    popen, user_env, problem = _identity(runas)
    if problem:
        return _fail(log, location, problem)
    if runas and user_env and shell_problem(runas, user_env["SHELL"]):
        log.write(f"[deploytool] warning: {shell_problem(runas, user_env['SHELL'])}")
    start = clock.now()
    try:
        process = subprocess.Popen(
            [str(path)],
            cwd=cwd,
            env={**env, **user_env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            **popen,
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        hint = " (no #! line?)" if exc.errno == 8 else ""
        who = f" as {runas}" if runas else ""
        return _fail(log, location, f"Script at specified location: {location} could not be run{who}: {reason}{hint}")
    if on_spawn is not None:
        on_spawn(process.pid)
    return _supervise(process, location, timeout_s, runas, log, kill_grace_s, clock, abort, start)


def _fail(log: EventLog, location: str, message: str) -> ScriptOutcome:
    log.write(f"[deploytool] {message}")
    return ScriptOutcome(location, ok=False, message=message)


def _supervise(
    process: subprocess.Popen[bytes],
    location: str,
    timeout_s: float,
    runas: str | None,
    log: EventLog,
    kill_grace_s: float,
    clock: Clock,
    abort: threading.Event | None,
    start: float,
) -> ScriptOutcome:
    output = _Output(process, log)
    deadline = start + timeout_s
    stopped = ""
    try:
        while output.open or process.poll() is None:
            if abort is not None and abort.is_set():
                stopped = "the sandbox is shutting down"
                break
            remaining = deadline - clock.now()
            if remaining <= 0:
                stopped = "timeout"
                break
            if output.open:
                output.pump(min(remaining, 0.2))
            else:
                try:
                    process.wait(timeout=min(remaining, 0.2))
                except subprocess.TimeoutExpired:
                    pass
        killed = False
        if stopped:
            killed = _terminate_group(process, output, log, kill_grace_s, clock)
    finally:
        output.close()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    duration = clock.now() - start
    code = process.returncode
    if stopped == "timeout":
        if code == 0:
            message = (
                f"Script at specified location: {location} exited with code 0, but a process it started kept "
                f"the script's stdout/stderr open until the {timeout_s:g} s timeout (the agent waits for it too): "
                "redirect that process's output, e.g. `cmd >file 2>&1 </dev/null &`"
            )
        else:
            message = f"Script at specified location: {location} failed to complete in {timeout_s:g} seconds"
        log.write(f"[deploytool] {message}")
        return ScriptOutcome(location, False, code, True, killed, duration, message)
    if stopped:
        message = f"Script at specified location: {location} was stopped: {stopped}"
        log.write(f"[deploytool] {message}")
        return ScriptOutcome(location, False, code, False, killed, duration, message)
    if code != 0:
        who = f" run as user {runas}" if runas else ""
        message = f"Script at specified location: {location}{who} failed with exit code {code}"
        log.write(f"[deploytool] {message}")
        return ScriptOutcome(location, False, code, False, False, duration, message)
    log.write(f"[deploytool] {location} exited 0 after {duration:.1f} s")
    return ScriptOutcome(location, True, 0, False, False, duration)


def _terminate_group(
    process: subprocess.Popen[bytes], output: _Output, log: EventLog, grace_s: float, clock: Clock
) -> bool:
    """SIGTERM to the script's process group; SIGKILL to it after the grace if any member ignored it."""
    pgid = process.pid  # start_new_session: the script leads its own group
    signal_group(pgid, signal.SIGTERM)
    log.write(f"[deploytool] sent SIGTERM to the script's process group {pgid}")
    deadline = clock.now() + grace_s
    while clock.now() < deadline:
        if output.open:
            output.pump(0.05)
        else:
            clock.sleep(0.05)
        if process.poll() is not None and not group_members(pgid):
            return False
    members = group_members(pgid)
    if members:
        signal_group(pgid, signal.SIGKILL)
        log.write(
            f"[deploytool] the process group ignored SIGTERM for {grace_s:g} s: sent SIGKILL to pids "
            f"{', '.join(map(str, members))} (the agent stops at SIGTERM; the sandbox leaves nothing behind)"
        )
    process.wait()
    deadline = clock.now() + grace_s  # SIGKILL is asynchronous: wait until they are gone
    while group_members(pgid) and clock.now() < deadline:
        clock.sleep(0.02)
    return bool(members)
