"""Where things are on one instance, and the small file operations the hooks and the worker do there.

Layout.of(app, environ): {install_dir}/releases/<version>/ (the bundle, app under app/), {install_dir}/current
(a symlink to releases/<version>), run/ (worker.pid, VERSION, node-name, ready.json, interrupted.json,
first-task.json, canary/) and log/worker.log; with restart = "handoff" also live/<version>.<stamp>/ (the
worker's own copy of its release), run/draining/, run/control/, run/handoff/ and run/worker.unit. In the
sandbox every absolute instance path is prefixed with DEPLOYTOOL_INSTANCE_ROOT. Writes are atomic (a temporary
file or symlink renamed over the old); pidfiles and markers are removed only while they still name the pid that
owns them.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Layout:
    """Where things are on this instance (every absolute path prefixed by DEPLOYTOOL_INSTANCE_ROOT)."""

    root: str
    install_dir: Path

    @classmethod
    def of(cls, app: Mapping[str, Any], environ: Mapping[str, str]) -> Layout:
        root = environ.get("DEPLOYTOOL_INSTANCE_ROOT", "").rstrip("/")
        install = app.get("install_dir") or f"/opt/{app['name']}"
        return cls(root=root, install_dir=Path(root + install))

    def on_instance(self, absolute: str) -> Path:
        return Path(self.root + absolute)

    @property
    def releases(self) -> Path:
        return self.install_dir / "releases"

    @property
    def current(self) -> Path:
        return self.install_dir / "current"

    @property
    def live(self) -> Path:
        """restart = "handoff": each worker runs from its own copy, live/<version>.<stamp>, which the agent's
        cleanup of releases/ never touches while a worker finishes there (handoff.py)."""
        return self.install_dir / "live"

    @property
    def draining_dir(self) -> Path:
        """One record per worker handed off and still finishing its tasks (handoff.py): <pid>.json."""
        return self.run_dir / "draining"

    def control_file(self, pid: int) -> Path:
        """What the hooks ask of worker `pid` ("finish" or "resume"); SIGUSR2 tells it to read it."""
        return self.run_dir / "control" / str(pid)

    def handoff_state_file(self, pid: int) -> Path:
        """What worker `pid` says of its hand-off (finish.HandOff): finishing, resumed, finished or reaped."""
        return self.run_dir / "handoff" / f"{pid}.json"

    @property
    def unit_file(self) -> Path:
        """systemd with restart = "handoff": the per-release unit the current worker runs in."""
        return self.run_dir / "worker.unit"

    @property
    def run_dir(self) -> Path:
        return self.install_dir / "run"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "worker.pid"

    @property
    def version_file(self) -> Path:
        return self.run_dir / "VERSION"

    @property
    def node_file(self) -> Path:
        return self.run_dir / "node-name"

    @property
    def ready_file(self) -> Path:
        return self.run_dir / "ready.json"

    @property
    def interrupted_file(self) -> Path:
        return self.run_dir / "interrupted.json"

    @property
    def interruption_file(self) -> Path:
        return self.run_dir / "interruption.json"

    @property
    def watcher_pidfile(self) -> Path:
        return self.run_dir / "watcher.pid"

    @property
    def watcher_log(self) -> Path:
        return self.install_dir / "log" / "watcher.log"

    @property
    def visibility_file(self) -> Path:
        return self.run_dir / "visibility.json"

    @property
    def first_task_file(self) -> Path:
        return self.run_dir / "first-task.json"

    @property
    def canary_dir(self) -> Path:
        return self.run_dir / "canary"

    @property
    def logfile(self) -> Path:
        return self.install_dir / "log" / "worker.log"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def point_symlink(link: Path, target: str) -> None:
    """Flip `link` to `target` atomically (a temporary symlink renamed over it)."""
    temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    temporary.symlink_to(target)
    os.replace(temporary, link)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_if_pid(path: Path, pid: int) -> None:
    """Remove a pidfile / marker only if it still names `pid` (a newer worker may own it)."""
    with contextlib.suppress(OSError, ValueError):
        text = path.read_text().strip()
        owner = int(text) if text.isdigit() else int((json.loads(text) or {}).get("pid", 0))
        if owner == pid:
            path.unlink()
