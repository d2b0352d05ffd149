"""The sandbox's service-side records (what CodeDeploy itself remembers about a deployment group).

Contract: one JSON file per group under `<sandbox>/state/groups/`, rewritten atomically (temp file
then rename): the group's id (a stable UUID, CodeDeploy's deploymentGroupId), its last successful
deployment and revision (what a rollback and a newly launched instance get), and the history of
its deployments (each with its instances' statuses and its rollback's id, so a later process can
report it: `finished`), and the deployments started and not yet finished (`in_flight`, each with the
process that runs it, deploytool.sandbox.owner: a later process tells running from abandoned by it), and each
instance's health after its last deployment (`instance_health`: Healthy or Unhealthy, as CodeDeploy keeps it;
an instance not there was never deployed to). Thread-safe within one process; a record changes under an
exclusive lock on `<state>/groups/.lock` too, so that two `fab` processes cannot both take a group (`started`
with `refuse`).
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from deploytool.model import Revision
from deploytool.strategy import next_health

_NAMESPACE = uuid.UUID("5d0c1b44-6a4e-4b5c-9a39-7d1f0d9e5a10")


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=1, sort_keys=True)
            out.write("\n")
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class SandboxState:
    def __init__(self, root: Path, application: str) -> None:
        self.root = root
        self.application = application
        self._lock = threading.Lock()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """This process's threads and every other process of this sandbox, one at a time."""
        with self._lock:
            lock = self.root / "groups" / ".lock"
            lock.parent.mkdir(parents=True, exist_ok=True)
            with lock.open("a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def _path(self, group: str) -> Path:
        return self.root / "groups" / f"{group}.json"

    def _read(self, group: str) -> dict[str, Any]:
        try:
            data = json.loads(self._path(group).read_text())
        except (OSError, ValueError):
            data = {}
        data.setdefault("group", group)
        data.setdefault("group_id", str(uuid.uuid5(_NAMESPACE, f"{self.application}/{group}")))
        data.setdefault("deployments", [])
        return dict(data)

    def group_id(self, group: str) -> str:
        with self._lock:
            return str(self._read(group)["group_id"])

    def last_successful(self, group: str) -> tuple[str, Revision] | None:
        with self._lock:
            last = self._read(group).get("last_successful")
        if not last:
            return None
        return str(last["deployment_id"]), Revision(**last["revision"])

    def finished(self, deployment_ids: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
        """(group, history entry) of each of these deployments found in any group's history."""
        wanted = set(deployment_ids)
        found: list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            for path in sorted((self.root / "groups").glob("*.json")):
                data = self._read(path.stem)
                found += [(path.stem, e) for e in data["deployments"] if e.get("deployment_id") in wanted]
        return found

    def in_flight(self, deployment_ids: Sequence[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(group, entry) of the deployments started and not recorded finished (of these ids, or all)."""
        found: list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            for path in sorted((self.root / "groups").glob("*.json")):
                for deployment_id, entry in dict(self._read(path.stem).get("in_flight") or {}).items():
                    if deployment_ids is None or deployment_id in deployment_ids:
                        found.append((path.stem, {**entry, "deployment_id": deployment_id}))
        return found

    def instance_health(self, group: str) -> dict[str, str]:
        """Instance id -> Healthy/Unhealthy after its last deployment (never deployed: not there)."""
        with self._lock:
            return {str(k): str(v) for k, v in dict(self._read(group).get("health") or {}).items()}

    def started(
        self,
        group: str,
        entry: dict[str, Any],
        *,
        refuse: Callable[[Mapping[str, dict[str, Any]]], None] | None = None,
    ) -> None:
        """A deployment started (`entry` has its deployment_id and owner); `record` ends it. `refuse` sees the
        group's deployments in flight first, under the lock, and raises to keep this one from starting."""
        with self._locked():
            data = self._read(group)
            if refuse is not None:
                refuse(dict(data.get("in_flight") or {}))
            data.setdefault("in_flight", {})[str(entry["deployment_id"])] = entry
            write_json_atomic(self._path(group), data)

    def record(self, group: str, entry: dict[str, Any], *, succeeded_with: Revision | None = None) -> None:
        """Add a finished deployment to the group's history (and make it the last successful one); its instances'
        health follows their statuses (Succeeded: Healthy, Failed: Unhealthy, Skipped: as it was)."""
        with self._locked():
            data = self._read(group)
            health = dict(data.get("health") or {})
            for iid, status in dict(entry.get("instances") or {}).items():
                now = next_health(health.get(iid), str(status))
                if now is not None:
                    health[iid] = now
            data["health"] = health
            data["in_flight"] = {
                k: v for k, v in dict(data.get("in_flight") or {}).items() if k != entry["deployment_id"]
            }
            data["deployments"].append(entry)
            if succeeded_with is not None:
                data["last_successful"] = {"deployment_id": entry["deployment_id"], "revision": asdict(succeeded_with)}
            write_json_atomic(self._path(group), data)
