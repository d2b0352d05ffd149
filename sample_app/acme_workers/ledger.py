"""Where the sample tasks record that they ran, so a deploy can be checked for lost or
duplicated work without a result backend.

Each run appends one line "<task_id> <name> <version> <pid>" to the file named by
ACME_LEDGER (one file per worker process is fine: appends of a short line are atomic).
"""

from __future__ import annotations

import os
from pathlib import Path


def record(task_id: str, name: str, version: str) -> None:
    target = os.environ.get("ACME_LEDGER")
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = f"{task_id} {name} {version} {os.getpid()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
