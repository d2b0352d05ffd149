"""`fab status`'s one reading of a release, and its two renderings: the table (with the lease and abandoned lines) and
`--json` (one object on stdout).

Contract: `read_status` reads the target's release lease, the release manifest (default: the target's latest) and
polls the deployments it names, once; `status_text` and `status_json` render that same `StatusView`, so the table and
the JSON cannot disagree. JSON: {target, lease: null (free) | {holder, pid, command, release_id, since, renewed,
renewed_s_ago, stale}, release: {release_id, version, mode, target, created, groups: [{group, wave, strategy,
deployment_id, status, abandoned_reason, succeeded, failed, total, rollback_deployment_id, rollback_status,
outcome}]}}. `status` is the backend's word now (Abandoned: a sandbox deployment whose process is gone), else the
record's, else "not started"; counts are null when the backend reports no instances. `mode` is "rollback" for a
`fab rollback` release (its manifest says so; one written before it did reads "deploy"), else "deploy".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from deploytool.errors import UsageError
from deploytool.model import ReleaseManifest
from deploytool.rollout.backend import DeploymentSnapshot
from deploytool.rollout.lease import LeaseInfo, LeaseStore
from deploytool.rollout.wiring import Services


@dataclass(frozen=True)
class GroupStatus:
    group: str
    wave: str
    strategy: str
    deployment_id: str | None
    status: str
    snapshot: DeploymentSnapshot | None
    rollback_deployment_id: str | None
    rollback: DeploymentSnapshot | None
    outcome: str | None

    def abandoned(self) -> list[DeploymentSnapshot]:
        """Its deployment and rollback the backend calls Abandoned (nothing runs them any more)."""
        return [s for s in (self.snapshot, self.rollback) if s is not None and s.status == "Abandoned"]

    def to_dict(self) -> dict[str, Any]:
        snap = self.snapshot
        counted = snap is not None and snap.total > 0
        return {
            "group": self.group,
            "wave": self.wave,
            "strategy": self.strategy,
            "deployment_id": self.deployment_id,
            "status": self.status,
            "abandoned_reason": snap.error if snap is not None and snap.status == "Abandoned" else None,
            "succeeded": snap.succeeded if counted and snap else None,
            "failed": snap.failed if counted and snap else None,
            "total": snap.total if counted and snap else None,
            "rollback_deployment_id": self.rollback_deployment_id,
            "rollback_status": self.rollback.status if self.rollback else None,
            "outcome": self.outcome,
        }


@dataclass(frozen=True)
class StatusView:
    target: str
    lease: LeaseInfo | None
    now: datetime
    manifest: ReleaseManifest
    groups: tuple[GroupStatus, ...]

    def lease_line(self) -> str:
        return self.lease.line(self.now) if self.lease else f"release lease of target {self.target!r}: free"

    def lease_dict(self) -> dict[str, Any] | None:
        info = self.lease
        if info is None:
            return None
        age = info.age(self.now)
        return {
            "holder": info.holder,
            "pid": info.pid,
            "command": info.command,
            "release_id": info.release_id or None,
            "since": info.since,
            "renewed": info.renewed_at,
            "renewed_s_ago": round(age) if age != float("inf") else None,
            "stale": info.stale(self.now),
        }

    def to_dict(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "target": self.target,
            "lease": self.lease_dict(),
            "release": {
                "release_id": m.release_id,
                "version": m.version,
                "mode": str(m.extra.get("mode", "deploy")),
                "target": m.target,
                "created": m.created_at,
                "created_by": m.created_by,
                "groups": [g.to_dict() for g in self.groups],
            },
        }


def read_lease(target_name: str, services: Services) -> LeaseInfo | None:
    store = services.store
    found = LeaseStore(store.s3, bucket=store.bucket, prefix=store.prefix, app=store.app).read(target_name)
    return found[0] if found else None


def read_status(target_name: str, services: Services, release_id: str | None) -> StatusView:
    """The lease, the release (default: the target's latest) and its deployments as the backend reports them now."""
    lease = read_lease(target_name, services)
    store = services.store
    if release_id:
        manifest = store.load(release_id)
    else:
        history = store.history(target_name)
        if not history:
            raise UsageError(f"no releases on target {target_name!r} yet")
        manifest = store.load(history[0].release_id)
    ids = [
        i for d in manifest.deployments.values() for i in (d.get("deployment_id"), d.get("rollback_deployment_id")) if i
    ]
    snapshots = services.backend.poll(ids) if ids else {}
    groups = []
    for entry in manifest.groups:
        name = str(entry["group"])
        record = manifest.deployments.get(name, {})
        snap = snapshots.get(str(record.get("deployment_id")))
        rollback_id = (snap.rollback_deployment_id if snap else None) or record.get("rollback_deployment_id")
        outcome = entry.get("outcome")
        groups.append(
            GroupStatus(
                group=name,
                wave=str(entry.get("wave", "")),
                strategy=str(entry.get("strategy", "")),
                deployment_id=str(record["deployment_id"]) if record.get("deployment_id") else None,
                status=snap.status if snap else str(record.get("status") or "not started"),
                snapshot=snap,
                rollback_deployment_id=str(rollback_id) if rollback_id else None,
                rollback=snapshots.get(str(rollback_id)) if rollback_id else None,
                outcome=str(outcome) if outcome is not None else None,
            )
        )
    return StatusView(target_name, lease, services.now(), manifest, tuple(groups))
