"""The release, as publish, rollout and reconcile all see it: one model, one module. No I/O.

Contract (bucket = artifacts.bucket, P = artifacts.prefix, A = app.name):
- Revision: an S3 bundle revision (CodeDeploy's S3Location) plus the release version and sha256.
- release id: `<yyyymmddThhmmssZ>-<version>`, the UTC time the release was made, then its version;
  `release_id(version, at)` makes one, `release_time(release_id)` reads the time back (UsageError,
  exit 2, for anything else). The time's UTC day is the manifest's dt partition, so a release id alone
  locates its manifest.
- times: UTC only (a naive datetime is a ValueError). `iso_seconds` 2024-01-05T00:15:01Z (manifests'
  created_at/built_at, the deploytool:deployed-at tag); `iso_micro` 2024-01-05T00:15:01.123456Z (inventory
  rows' snapshot_at: fixed width, so text order is time order; Athena's from_iso8601_timestamp reads it).
- S3 keys:
      P/A/<version>/<sha256>.tgz                                   the bundle (content-addressed)
      P/A/releases/dt=YYYY-MM-DD/<release_id>.json                 the release manifest, ONE line of JSON
      P/A/release-index/<target>/<version>.json                    points at the release of that version
      P/A/release-index/<target>/latest.json                       the target's recent releases, newest first
      P/A/inventory/dt=YYYY-MM-DD/<snapshot stamp>-<n>.json.gz     gzip JSON lines, one row per instance
      P/A/lease/<target>.json                                      the target's release lease, while one runs
  The index lives outside releases/ so the Athena table over releases/ sees manifests only
  (athena/releases.sql reads the manifest's fields; athena/reconcile.sql its groups' `outcome`).
- ReleaseManifest: the manifest's fields. `groups` entries are {group, asg, expected_version, strategy,
  wave} plus `outcome` (GROUP_OUTCOMES) once a rollout owns the release: `pending` until the group's
  deployment ends, then what the orchestrator concluded (deploytool.rollout.record writes it); a manifest
  `fab publish` wrote alone has no outcome. `deployments` {group: {deployment_id, status,
  rollback_deployment_id}} is filled in by the rollout. Fields other stages added (`built_at`, ...) are kept
  in `extra` and written back as they were. `to_json_line()` is the one serialisation: publish writes the
  fields in reading order, the rollout's rewrites sort them (`sort_keys`); both are one line, same fields.
- Instance tags (TAG_*): what an instance runs, as the rollout writes them and reconcile reads them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from deploytool.config import Group
from deploytool.errors import UsageError

# A group's outcome in a release manifest: pending (not ended yet, or detached), then one of the others.
GROUP_OUTCOMES = ("pending", "succeeded", "failed", "rolled_back", "stopped", "not_started")
TAG_VERSION = "deploytool:version"
TAG_RELEASE = "deploytool:release"
TAG_DEPLOYED_AT = "deploytool:deployed-at"
_RELEASE_ID = re.compile(r"^(\d{8}T\d{6}Z)-(.+)$")
_RELEASE_TIME = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class Revision:
    """An S3 bundle revision (CodeDeploy's S3Location)."""

    bucket: str
    key: str
    etag: str
    version: str  # the release version (YYYY.MM.DD-sha), not the S3 object version
    sha256: str
    bundle_type: str = "tgz"
    object_version: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


# --- times and release ids -----------------------------------------------------------------------


def utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: deploytool times must be timezone-aware UTC")
    return moment.astimezone(UTC)


def iso_seconds(moment: datetime) -> str:
    """2024-01-05T00:15:01Z: manifests' created_at and built_at, the deploytool:deployed-at tag."""
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_micro(moment: datetime) -> str:
    """2024-01-05T00:15:01.123456Z: the fixed-width form stored in inventory rows."""
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def day_of(moment: datetime) -> str:
    return utc(moment).strftime("%Y-%m-%d")


def release_id(version: str, at: datetime) -> str:
    return f"{utc(at).strftime(_RELEASE_TIME)}-{version}"


def release_time(rid: str) -> datetime:
    """The UTC time a release id starts with; UsageError for anything that is not a release id."""
    match = _RELEASE_ID.match(rid)
    try:
        if match:
            return datetime.strptime(match.group(1), _RELEASE_TIME).replace(tzinfo=UTC)
    except ValueError:
        pass
    raise UsageError(f"release id {rid!r} is not <yyyymmddThhmmssZ>-<version>, e.g. 20240105T001501Z-2024.01.05-abc")


# --- S3 keys -------------------------------------------------------------------------------------


def app_root(prefix: str, app: str) -> str:
    return f"{prefix}/{app}" if prefix else app


def bundle_key(prefix: str, app: str, version: str, sha256: str) -> str:
    return f"{app_root(prefix, app)}/{version}/{sha256}.tgz"


def releases_prefix(prefix: str, app: str) -> str:
    return f"{app_root(prefix, app)}/releases/"


def manifest_key(prefix: str, app: str, rid: str) -> str:
    return f"{releases_prefix(prefix, app)}dt={day_of(release_time(rid))}/{rid}.json"


def index_key(prefix: str, app: str, target: str, name: str) -> str:
    """release-index/<target>/<name>.json: name is a version, or `latest` for the target's history."""
    return f"{app_root(prefix, app)}/release-index/{target}/{name}.json"


def lease_key(prefix: str, app: str, target: str) -> str:
    """lease/<target>.json: who is releasing to that target now (deploytool.rollout.lease)."""
    return f"{app_root(prefix, app)}/lease/{target}.json"


def inventory_prefix(prefix: str, app: str) -> str:
    return f"{app_root(prefix, app)}/inventory/"


def inventory_partition(prefix: str, app: str, day: str) -> str:
    return f"{inventory_prefix(prefix, app)}dt={day}/"


def interruptions_partition(prefix: str, app: str, day: str) -> str:
    """Where the instances' interruption watchers record notices (deploytool_instance.s3put.interruption_key)."""
    return f"{app_root(prefix, app)}/interruptions/dt={day}/"


def inventory_key(prefix: str, app: str, snapshot_at: datetime, n: int) -> str:
    stamp = utc(snapshot_at).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{inventory_partition(prefix, app, day_of(snapshot_at))}{stamp}-{n}.json.gz"


# --- the release manifest ------------------------------------------------------------------------


def group_entry(group: Group, version: str, *, outcome: str | None = "pending") -> dict[str, Any]:
    """A manifest's `groups` entry; `outcome=None` leaves the outcome out (a release no rollout owns yet)."""
    entry: dict[str, Any] = {
        "group": group.name,
        "asg": group.asg,
        "expected_version": version,
        "strategy": group.strategy.label,
        "wave": group.wave,
    }
    if outcome is not None:
        entry["outcome"] = outcome
    return entry


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

    def to_dict(self) -> dict[str, Any]:
        """The fields in reading order: identity, bundle, provenance, the extra fields, groups, deployments."""
        return {
            "release_id": self.release_id,
            "app": self.app,
            "version": self.version,
            "target": self.target,
            "bundle_uri": self.bundle_uri,
            "bucket": self.bucket,
            "key": self.key,
            "etag": self.etag,
            "sha256": self.sha256,
            "commit": self.commit,
            "created_by": self.created_by,
            "created_at": self.created_at,
            **self.extra,
            "groups": [dict(g) for g in self.groups],
            "deployments": {k: dict(v) for k, v in self.deployments.items()},
        }

    def to_json_line(self, *, sort_keys: bool = True) -> str:
        """One line of JSON, no newline (Athena's JSON SerDe reads a line as a row)."""
        return json.dumps(self.to_dict(), sort_keys=sort_keys, separators=(",", ":"))

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


def new_manifest(
    *,
    app: str,
    target: str,
    revision: Revision,
    groups: Sequence[Group],
    commit: str | None,
    created_by: str,
    now: datetime,
    outcome: str | None = "pending",
    extra: Mapping[str, Any] | None = None,
) -> ReleaseManifest:
    """A release of `revision` to `groups`, made `now`; `outcome` is each group entry's (None: no outcome)."""
    return ReleaseManifest(
        release_id=release_id(revision.version, now),
        app=app,
        version=revision.version,
        target=target,
        bucket=revision.bucket,
        key=revision.key,
        etag=revision.etag,
        sha256=revision.sha256,
        commit=commit,
        created_by=created_by,
        created_at=iso_seconds(now),
        groups=tuple(group_entry(g, revision.version, outcome=outcome) for g in groups),
        extra=dict(extra or {}),
    )
