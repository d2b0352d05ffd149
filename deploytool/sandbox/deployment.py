"""One sandbox deployment as the local backend keeps it, and how it reads as a DeploymentSnapshot.

Contract: `Deployment` is the in-memory record of a deployment this process runs (its request, health policy,
instances as `DeploymentTarget`s, status, error, warnings, stop and done events); the backend changes it under
its lock and reads it with `snapshot` and `failure_text`. `recorded_snapshot` reads a finished deployment from a
group record on disk, `in_flight_snapshot` one another process started (InProgress while that process lives,
Abandoned once it is gone). `new_deployment_id` makes CodeDeploy-shaped ids. No I/O beyond asking whether an
owner process is alive.
"""

from __future__ import annotations

import secrets
import string
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from deploytool.config import App, Group
from deploytool.model import Revision
from deploytool.rollout.backend import (
    LIFECYCLE_EVENTS,
    DeploymentSnapshot,
    DeploymentStatus,
    DeployRequest,
    InstanceStatus,
)
from deploytool.sandbox.instance import Instance
from deploytool.sandbox.owner import Owner
from deploytool.sandbox.runner import InstanceResult
from deploytool.strategy import HealthPolicy

_ID_CHARS = string.ascii_uppercase + string.digits


def new_deployment_id() -> str:
    return "d-" + "".join(secrets.choice(_ID_CHARS) for _ in range(9))


@dataclass
class DeploymentTarget:
    instance: Instance
    status: InstanceStatus = "Pending"
    event: str | None = None
    result: InstanceResult | None = None
    unhealthy: bool = False  # at the deployment's start: never deployed, or its last deployment failed


@dataclass
class Deployment:
    id: str
    request: DeployRequest
    revision: Revision
    creator: str
    policy: HealthPolicy
    targets: dict[str, DeploymentTarget]
    status: DeploymentStatus = "Created"
    error: str = ""
    rollback_id: str | None = None
    rollback_on_stop: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    started_at: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def group(self) -> Group:
        return self.request.group

    def count(self, status: str) -> int:
        return sum(1 for t in self.targets.values() if t.status == status)


def _recorded(entry: Mapping[str, Any]) -> dict[str, Any]:
    """What a group record on disk says of a deployment's identity (as a live one's snapshot has it)."""
    started = entry.get("started_at")
    return {
        "creator": str(entry.get("creator") or "user"),
        "description": str(entry.get("description") or ""),
        "created_at": datetime.fromisoformat(str(started)).timestamp() if started else None,
        "version": str(entry["version"]) if entry.get("version") else None,
    }


def in_flight_snapshot(group: str, entry: Mapping[str, Any]) -> DeploymentSnapshot:
    """A deployment another process started and has not recorded finished: running while that process lives."""
    owner = Owner.from_dict(dict(entry.get("owner") or {}))
    gone = owner.alive() is False
    return DeploymentSnapshot(
        deployment_id=str(entry["deployment_id"]),
        group=group,
        status="Abandoned" if gone else "InProgress",
        error=f"the process that ran it ({owner.describe()}) is gone" if gone else "",
        **_recorded(entry),
    )


def recorded_snapshot(group: str, entry: Mapping[str, Any]) -> DeploymentSnapshot:
    """A finished deployment as the group record on disk has it."""
    counts = Counter(str(status) for status in dict(entry.get("instances") or {}).values())
    return DeploymentSnapshot(
        deployment_id=str(entry["deployment_id"]),
        group=group,
        status=entry["status"],
        succeeded=counts["Succeeded"],
        failed=counts["Failed"],
        skipped=counts["Skipped"],
        error=str(entry.get("error") or ""),
        rollback_deployment_id=entry.get("rollback_deployment_id") or None,
        warnings=tuple(str(w) for w in entry.get("warnings") or ()),
        **_recorded(entry),
    )


def snapshot(dep: Deployment, app: App | None = None) -> DeploymentSnapshot:
    """The deployment as polled; with the app and while it runs, also the workers still finishing after a hand-off
    on its instances."""
    running = [t.event for t in dep.targets.values() if t.status == "InProgress" and t.event]
    draining = None  # live information: while the deployment runs (a finished one reads the same from its record)
    if app is not None and not dep.done.is_set():
        draining = sum(len(t.instance.draining_workers(app)) for t in dep.targets.values())
    current = max(running, key=LIFECYCLE_EVENTS.index) if running else None
    return DeploymentSnapshot(
        deployment_id=dep.id,
        group=dep.group.name,
        status=dep.status,
        pending=dep.count("Pending"),
        in_progress=dep.count("InProgress"),
        succeeded=dep.count("Succeeded"),
        failed=dep.count("Failed"),
        skipped=dep.count("Skipped"),
        current_event=current,
        error=dep.error,
        rollback_deployment_id=dep.rollback_id,
        creator=dep.creator,
        description=dep.request.description,
        created_at=datetime.fromisoformat(dep.started_at).timestamp() if dep.started_at else None,
        draining=draining,
        version=dep.revision.version,
        warnings=tuple(dep.warnings),
    )


def failure_text(dep: Deployment) -> str:
    failed = [(iid, t) for iid, t in dep.targets.items() if t.status == "Failed"]
    policy = dep.policy
    head = (
        f"{len(failed)} of {policy.fleet_size} instances failed; {dep.group.strategy.label} needs "
        f"{policy.required_successes} to succeed"
    )
    if failed and failed[0][1].result is not None:
        iid, target = failed[0]
        result = target.result
        assert result is not None
        head += f"; {iid} failed at {result.failed_event}: {result.message}"
    return head
