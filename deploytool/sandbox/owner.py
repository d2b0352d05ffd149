"""The process that runs a sandbox deployment, and whether it still does.

Contract: sandbox deployments run in threads of the `fab` process that started them (deploytool.sandbox.backend),
so a deployment whose process is gone is run by nobody: it is abandoned, not in progress. `Owner.current()` names
this process by host, pid and start time (field 22 of /proc/<pid>/stat, clock ticks after boot), so that a pid the
kernel has since given to another process is not taken for the owner. `alive()` is True or False on the owner's
host, None elsewhere (it cannot tell).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks after boot, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name, in parentheses, may hold spaces
    try:
        return int(fields[19])  # field 22 overall; `fields` starts at field 3 (state)
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    started: int | None  # /proc/<pid>/stat start time; None where /proc is not there

    @classmethod
    def current(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), process_start_time(os.getpid()))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Owner:
        started = data.get("started")
        return cls(str(data.get("host", "")), int(data.get("pid", 0)), int(started) if started is not None else None)

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "started": self.started}

    def alive(self) -> bool | None:
        if self.host != socket.gethostname():
            return None
        if self.pid <= 0:
            return False
        now = process_start_time(self.pid)
        if now is None:
            return False
        return self.started is None or now == self.started

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}"
