"""A moto server subprocess on a free loopback port: S3, EC2, Auto Scaling and SQS for the sandbox.

Contract: `start()` returns once the server answers HTTP (or raises SandboxError with the tail of
its log); the pid and port are written to `pidfile`; `stop()` (idempotent) sends SIGTERM, then
SIGKILL after a grace. The server runs in its own session, so a Ctrl-C on the terminal reaches
only deploytool, which then stops it in order. `stop_recorded(pidfile)` stops a server another
process started (sandbox-down).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from deploytool.sandbox.clock import SYSTEM_CLOCK, Clock
from deploytool.sandbox.errors import SandboxError
from deploytool.sandbox.procs import PidRecord, pid_alive, wait_gone

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, limit: int = 600) -> str:
    try:
        return path.read_text(errors="replace")[-limit:].strip()
    except OSError:
        return ""


class MotoServer:
    """The moto server; subclasses (the sandbox's fake IMDS) change what runs (`argv`), what answers when it is
    up (`ready_path`), what it is called and the record's kind."""

    name = "the moto server"
    kind = "moto"
    ready_path = "/moto-api/"

    def argv(self, port: int) -> list[str]:
        return [self.python, "-m", "moto.server", "-H", HOST, "-p", str(port)]

    def __init__(
        self,
        *,
        log_path: Path,
        pidfile: Path,
        python: str = sys.executable,
        clock: Clock = SYSTEM_CLOCK,
        ready_timeout_s: float = 30.0,
        record: PidRecord | None = None,
    ) -> None:
        self.log_path = log_path
        self.pidfile = pidfile
        self.python = python
        self.clock = clock
        self.ready_timeout_s = ready_timeout_s
        self.record = record
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        for _attempt in range(3):  # another process may take the free port first
            if self._try_start():
                return self
        raise SandboxError(f"{self.name} did not start; its log {self.log_path}: {_tail(self.log_path)}")

    def _try_start(self) -> bool:
        self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            try:
                self.process = subprocess.Popen(
                    self.argv(self.port),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise SandboxError(f"cannot start {self.name} with {self.python}: {exc}") from exc
        if self.record is not None:
            self.record.add(self.process.pid, self.kind, self.url)
        self.pidfile.write_text(f"{self.process.pid} {self.port}\n")
        deadline = self.clock.now() + self.ready_timeout_s
        while self.clock.now() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            if _answers(self.url + self.ready_path):
                return True
            self.clock.sleep(0.1)
        self.stop()
        raise SandboxError(
            f"{self.name} on {self.url} did not answer within {self.ready_timeout_s:.0f} s; "
            f"its log {self.log_path}: {_tail(self.log_path)}"
        )

    def stop(self, grace_s: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.pidfile.unlink(missing_ok=True)


def recorded(pidfile: Path, marker: bytes = b"moto.server") -> tuple[int, int] | None:
    """(pid, port) of the server a pidfile names, if that process is still alive."""
    try:
        pid_text, port_text = pidfile.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    pid, port = int(pid_text), int(port_text)
    if not pid_alive(pid):
        return None
    try:  # the pid may have been reused by another program since: check it is that server
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return (pid, port) if marker in argv and str(port).encode() in argv else None


def stop_recorded(
    pidfile: Path, clock: Clock = SYSTEM_CLOCK, grace_s: float = 5.0, marker: bytes = b"moto.server"
) -> bool:
    """Stop the server a pidfile names (started by an earlier `sandbox-up`; `marker`: a word of its command line,
    the moto server's by default). True if one was running."""
    found = recorded(pidfile, marker)
    pidfile.unlink(missing_ok=True)
    if found is None:
        return False
    pid = found[0]
    os.kill(pid, signal.SIGTERM)
    if wait_gone([pid], grace_s, clock):
        os.kill(pid, signal.SIGKILL)
        wait_gone([pid], grace_s, clock)
    return True
