"""One sandbox instance: a directory that stands for the instance's file system.

Contract (a documented deviation from production): every absolute instance path (an appspec
`destination`, the app's install_dir, env_file...) is mapped under the instance root, so
`/opt/acme-workers` on instance i-0abc of group email is
`<sandbox>/instances/email/i-0abc/opt/acme-workers`. The agent's own directories sit beside it:
`deployment-root/` (the agent's root_dir: `<group-id>/<deployment-id>/deployment-archive` and
`deployment-instructions/`) and `logs/<deployment-id>/<event>.log` with `summary.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from deploytool.config import App
from deploytool.sandbox.errors import SandboxError
from deploytool.sandbox.procs import runs_script


@dataclass(frozen=True)
class Instance:
    group: str
    instance_id: str
    root: Path

    def path(self, absolute: str) -> Path:
        """The sandbox location of an absolute path on this instance."""
        pure = PurePosixPath(absolute)
        if not pure.is_absolute() or ".." in pure.parts:
            raise SandboxError(f"{absolute!r} is not an absolute instance path without '..'")
        return self.root.joinpath(*pure.parts[1:])

    def shown(self, path: Path) -> str:
        """How a sandbox location reads on the instance (for messages)."""
        try:
            return "/" + path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    @property
    def deployment_root(self) -> Path:
        return self.root / "deployment-root"

    @property
    def instructions_dir(self) -> Path:
        return self.deployment_root / "deployment-instructions"

    def logs_dir(self, deployment_id: str) -> Path:
        return self.root / "logs" / deployment_id

    @property
    def ledger(self) -> Path:
        """The sample app's task ledger (ACME_LEDGER) for this instance's worker."""
        return self.root / "ledger.log"

    # --- the app's paths on this instance (deploytool.config.App) ------------------------------

    def install_dir(self, app: App) -> Path:
        return self.path(app.install_path)

    def env_file(self, app: App) -> Path:
        return self.path(app.env_path)

    def worker_pidfile(self, app: App) -> Path:
        return self.install_dir(app) / "run" / "worker.pid"

    def draining_workers(self, app: App) -> list[int]:
        """Workers handed off (restart = "handoff") and still finishing their tasks: run/draining/<pid>.json."""
        found = []
        for record in sorted((self.install_dir(app) / "run" / "draining").glob("*.json")):
            try:
                pid = int(json.loads(record.read_text())["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if runs_script(pid, "celery_worker.py"):
                found.append(pid)
        return found

    def handoffs(self, app: App) -> list[dict[str, Any]]:
        """What each worker handed off said of it (run/handoff/<pid>.json: state, the tasks it held)."""
        found = []
        for record in sorted((self.install_dir(app) / "run" / "handoff").glob("*.json")):
            try:
                found.append(dict(json.loads(record.read_text())))
            except (OSError, ValueError):
                continue
        return found

    def watcher_pidfile(self, app: App) -> Path:
        """The interruption watcher ApplicationStart starts beside the worker (celery_hooks.py watch)."""
        return self.install_dir(app) / "run" / "watcher.pid"

    def interruption(self, app: App) -> dict[str, Any] | None:
        """What the watcher did on a notice (run/interruption.json), if it had one."""
        try:
            return dict(json.loads((self.install_dir(app) / "run" / "interruption.json").read_text()))
        except (OSError, ValueError):
            return None

    def running_version(self, app: App) -> str | None:
        """The version ApplicationStart recorded once the worker was up, if any."""
        try:
            return (self.install_dir(app) / "run" / "VERSION").read_text().strip() or None
        except OSError:
            return None
