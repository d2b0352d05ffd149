"""The release record in S3: the release manifest and a small index to find releases again.

Contract (CONTRACTS.md §3, bucket = artifacts.bucket, P = artifacts.prefix, A = app.name):
- manifest: P/A/releases/dt=YYYY-MM-DD/<release_id>.json, ONE line of JSON (Athena's JSON SerDe reads
  it as a row); `deployments` {group: {deployment_id, status, rollback_deployment_id}} is rewritten at
  every orchestrator Checkpoint, so a release that dies mid-way can be resumed. Each entry of `groups`
  carries `outcome` (GROUP_OUTCOMES): `pending` until the group's deployment ends, then what the
  orchestrator concluded for the group (it counts a deployment with a failed instance as failed even
  when the backend says Succeeded). Reconcile expects a group's version only from a release whose
  outcome for that group is `succeeded` (athena/reconcile.sql). dt is the release id's UTC date, so a
  release id alone locates its manifest.
- index: P/A/release-index/<target>/<version>.json points at the release of that version on that
  target (`fab deploy` of the same version resumes it); P/A/release-index/<target>/latest.json keeps
  the target's recent releases, newest first, with their outcome (`fab status`, `fab rollback`).
  The index lives outside releases/ so the Athena table sees manifests only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from deploytool.aws.s3 import S3Gateway
from deploytool.config import Group
from deploytool.errors import DeployToolError, UsageError
from deploytool.rollout.backend import Revision
from deploytool.rollout.events import Checkpoint, Event, GroupFinished, ReleaseFinished
from deploytool.rollout.plan import PriorDeployment
from deploytool.rollout.result import GroupResult, RolloutResult

HISTORY = 50
# A group's outcome in a release manifest: pending (not ended yet, or detached), then one of the others.
GROUP_OUTCOMES = ("pending", "succeeded", "failed", "rolled_back", "stopped", "not_started")
_RELEASE_ID = re.compile(r"^(\d{8})T\d{6}Z-(.+)$")


def release_id_for(version: str, now: datetime) -> str:
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{version}"


def _iso(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ReleaseManifest:
    release_id: str
    app: str
    version: str
    target: str
    bucket: str
    key: str
    etag: str
    sha256: str
    commit: str | None
    created_by: str
    created_at: str
    groups: tuple[Mapping[str, Any], ...]
    deployments: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)  # fields other stages added; kept as they are

    @property
    def bundle_uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def revision(self) -> Revision:
        return Revision(self.bucket, self.key, self.etag, self.version, self.sha256)

    def prior(self) -> dict[str, PriorDeployment]:
        return {name: PriorDeployment.from_record(d) for name, d in self.deployments.items() if d.get("deployment_id")}

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.extra)
        data.update(asdict(self))
        del data["extra"]
        data["bundle_uri"] = self.bundle_uri
        data["groups"] = [dict(g) for g in self.groups]
        data["deployments"] = {k: dict(v) for k, v in self.deployments.items()}
        return data

    def to_json_line(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReleaseManifest:
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        try:
            return cls(
                **{k: data[k] for k in known if k in data and k not in ("groups", "deployments")},
                groups=tuple(data.get("groups") or ()),
                deployments=dict(data.get("deployments") or {}),
                extra={k: v for k, v in data.items() if k not in known and k != "bundle_uri"},
            )
        except TypeError as exc:
            raise UsageError(f"release manifest {data.get('release_id', '?')} is incomplete: {exc}") from exc

    def with_groups(self, groups: Sequence[Group]) -> ReleaseManifest:
        """The manifest listing these groups too (a resumed release may cover more groups)."""
        have = {g["group"] for g in self.groups}
        more = tuple(group_entry(g, self.version) for g in groups if g.name not in have)
        return replace(self, groups=self.groups + more) if more else self


def group_entry(group: Group, version: str) -> dict[str, Any]:
    return {"group": group.name, "asg": group.asg, "expected_version": version,
            "strategy": group.strategy.label, "wave": group.wave, "outcome": "pending"}


def group_outcome(result: GroupResult) -> str:
    """The manifest's word (GROUP_OUTCOMES) for how a group's deployment ended."""
    if result.ok:
        return "succeeded"
    if result.outcome == "failed":
        return "rolled_back" if result.rollback_deployment_id and result.rollback_status == "Succeeded" else "failed"
    if result.outcome in ("stopped", "not-started"):
        return result.outcome.replace("-", "_")
    return "pending"  # detached: the deployment goes on; a later `fab deploy` follows it to its end


def with_outcome(manifest: ReleaseManifest, result: GroupResult) -> ReleaseManifest:
    """The manifest with this group's outcome in its `groups` entry (other entries unchanged)."""
    outcome = group_outcome(result)
    groups = tuple({**g, "outcome": outcome} if g.get("group") == result.group else g for g in manifest.groups)
    return replace(manifest, groups=groups)


def new_manifest(
    *, app: str, target: str, revision: Revision, groups: Sequence[Group], commit: str | None,
    created_by: str, now: datetime,
) -> ReleaseManifest:
    return ReleaseManifest(
        release_id=release_id_for(revision.version, now),
        app=app,
        version=revision.version,
        target=target,
        bucket=revision.bucket,
        key=revision.key,
        etag=revision.etag,
        sha256=revision.sha256,
        commit=commit,
        created_by=created_by,
        created_at=_iso(now),
        groups=tuple(group_entry(g, revision.version) for g in groups),
    )


@dataclass(frozen=True)
class ReleaseRef:
    """One line of a target's release history."""

    release_id: str
    version: str
    outcome: str = "running"  # running | succeeded | failed | detached


class ReleaseStore:
    """Reads and writes release manifests and the release index through the S3 gateway."""

    def __init__(self, s3: S3Gateway, *, bucket: str, prefix: str, app: str) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.root = f"{prefix}/{app}"

    def manifest_key(self, release_id: str) -> str:
        match = _RELEASE_ID.match(release_id)
        if not match:
            raise UsageError(f"release id {release_id!r} is not <yyyymmddThhmmssZ>-<version>")
        day = match.group(1)
        return f"{self.root}/releases/dt={day[:4]}-{day[4:6]}-{day[6:]}/{release_id}.json"

    def _index_key(self, target: str, name: str) -> str:
        return f"{self.root}/release-index/{target}/{name}.json"

    def save(self, manifest: ReleaseManifest) -> None:
        body = (manifest.to_json_line() + "\n").encode()
        self.s3.put_bytes(self.bucket, self.manifest_key(manifest.release_id), body, content_type="application/json")

    def load(self, release_id: str) -> ReleaseManifest:
        data = self.s3.get_json(self.bucket, self.manifest_key(release_id))
        if data is None:
            raise UsageError(f"no release {release_id!r} in s3://{self.bucket}/{self.root}/releases/")
        return ReleaseManifest.from_dict(data)

    def register(self, manifest: ReleaseManifest) -> None:
        """Point (target, version) at this release and put it first in the target's history."""
        pointer = {"release_id": manifest.release_id, "key": self.manifest_key(manifest.release_id)}
        self.s3.put_json(self.bucket, self._index_key(manifest.target, manifest.version), pointer)
        self._write_history(manifest.target, ReleaseRef(manifest.release_id, manifest.version))

    def finish(self, manifest: ReleaseManifest, result: RolloutResult) -> None:
        outcome = "detached" if result.detached else ("succeeded" if result.succeeded else "failed")
        self._write_history(manifest.target, ReleaseRef(manifest.release_id, manifest.version, outcome))

    def find(self, target: str, version: str) -> ReleaseManifest | None:
        pointer = self.s3.get_json(self.bucket, self._index_key(target, version))
        if not pointer:
            return None
        data = self.s3.get_json(self.bucket, str(pointer["key"]))
        return ReleaseManifest.from_dict(data) if data else None

    def history(self, target: str) -> list[ReleaseRef]:
        data = self.s3.get_json(self.bucket, self._index_key(target, "latest")) or {}
        return [ReleaseRef(**entry) for entry in data.get("releases", [])]

    def _write_history(self, target: str, ref: ReleaseRef) -> None:
        refs = [r for r in self.history(target) if r.release_id != ref.release_id]
        refs = [ref, *refs][:HISTORY]
        self.s3.put_json(self.bucket, self._index_key(target, "latest"), {"releases": [asdict(r) for r in refs]})


class RecordWriter:
    """A Reporter keeping the release manifest's `deployments` and its groups' `outcome` current in S3.

    A group's outcome is written with the Checkpoint that follows its GroupFinished (or at
    ReleaseFinished, for groups that never started). A failed write does not stop the rollout (the
    deployments run anyway): it is kept in `errors`, and the next write writes the whole manifest again.
    """

    def __init__(self, store: ReleaseStore, manifest: ReleaseManifest) -> None:
        self.store = store
        self.manifest = manifest
        self.errors: list[str] = []
        self._unsaved = False  # outcomes changed since the last save

    def publish(self, event: Event) -> None:
        if isinstance(event, GroupFinished):
            self.manifest = with_outcome(self.manifest, event.result)
            self._unsaved = True
        elif isinstance(event, Checkpoint):
            deployments = dict(self.manifest.deployments)
            for name, ref in event.deployments.items():
                deployments[name] = {"deployment_id": ref.deployment_id, "status": ref.status,
                                     "rollback_deployment_id": ref.rollback_deployment_id}
            self.manifest = replace(self.manifest, deployments=deployments)
            self._save()
        elif isinstance(event, ReleaseFinished):
            if self._unsaved:
                self._save()
            self._write(lambda: self.store.finish(self.manifest, event.result))

    def _save(self) -> None:
        if self._write(lambda: self.store.save(self.manifest)):
            self._unsaved = False

    def _write(self, write: Callable[[], None]) -> bool:
        try:
            write()
        except DeployToolError as exc:
            self.errors.append(str(exc))
            return False
        return True
