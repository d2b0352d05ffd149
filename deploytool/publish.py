"""Stage 4, publish: put a bundle in S3 once, content-addressed, and record the release.

Contract: `publish(bundle, fleet, session, target=..., created_by=...)`
1. names the bundle `<prefix>/<app>/<version>/<sha256>.tgz` in artifacts.bucket (CONTRACTS.md §3);
2. sends one HEAD: when the object is there (same size) nothing is uploaded;
3. otherwise uploads it through boto3's transfer manager (multipart above 16 MiB) with metadata
   version, sha256 and commit, SSE-KMS when artifacts.kms_key_id is set, and ExpectedBucketOwner on
   every request when artifacts.expected_bucket_owner is set;
4. writes the release manifest, one line of JSON, to `<prefix>/<app>/releases/dt=YYYY-MM-DD/<release_id>.json`.
It returns a PublishResult; `.revision()` is what a rollout backend deploys. It does not register the
revision with CodeDeploy (the codedeploy backend does). Where the session points (AWS, or the sandbox's
moto server) is the caller's business. A missing bucket or denied access is one AwsError line.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from deploytool.aws.s3 import S3Gateway
from deploytool.aws.session import AwsSession
from deploytool.bundle import BundleResult
from deploytool.config import Fleet, Group
from deploytool.errors import AwsError
from deploytool.rollout.backend import Revision


@dataclass(frozen=True)
class PublishResult:
    bucket: str
    key: str
    etag: str  # bare, without S3's quotes
    sha256: str
    size: int
    version: str
    commit: str | None
    release_id: str
    manifest_key: str
    uploaded: bool  # False when the object was already there
    manifest: Mapping[str, Any]
    object_version: str | None = None

    @property
    def bundle_uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def revision(self) -> Revision:
        return Revision(
            bucket=self.bucket,
            key=self.key,
            etag=self.etag,
            version=self.version,
            sha256=self.sha256,
            bundle_type="tgz",
            object_version=self.object_version,
        )


def bundle_key(fleet: Fleet, version: str, sha256: str) -> str:
    return f"{fleet.artifacts.prefix}/{fleet.app.name}/{version}/{sha256}.tgz"


def release_id(created_at: datetime, version: str) -> str:
    return f"{created_at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{version}"


def release_key(fleet: Fleet, created_at: datetime, rid: str) -> str:
    return f"{fleet.artifacts.prefix}/{fleet.app.name}/releases/dt={created_at.astimezone(UTC):%Y-%m-%d}/{rid}.json"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def creator() -> str:
    """Who publishes: DEPLOYTOOL_USER, the CI actor, or user@host."""
    named = os.environ.get("DEPLOYTOOL_USER") or os.environ.get("GITHUB_ACTOR")
    if named:
        return named
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def release_manifest(
    fleet: Fleet, bundle: BundleResult, *, bucket: str, key: str, etag: str, target: str, created_by: str,
    created_at: datetime, groups: Sequence[Group] | None = None,
) -> dict[str, Any]:
    """The release record (CONTRACTS.md §3); `deployments` is filled in by the rollout.

    `groups` lists only the groups this release deploys (all by default): reconcile expects the
    release's version on exactly those."""
    return {
        "release_id": release_id(created_at, bundle.version),
        "app": fleet.app.name,
        "version": bundle.version,
        "target": target,
        "bundle_uri": f"s3://{bucket}/{key}",
        "bucket": bucket,
        "key": key,
        "etag": etag,
        "sha256": bundle.sha256,
        "commit": bundle.commit,
        "created_by": created_by,
        "created_at": _iso(created_at),
        "built_at": _iso(bundle.built_at),
        "groups": [
            {"group": g.name, "asg": g.asg, "expected_version": bundle.version, "strategy": g.strategy.label,
             "wave": g.wave}
            for g in (fleet.groups if groups is None else groups)
        ],
        "deployments": {},
    }


def _encryption(fleet: Fleet) -> dict[str, str]:
    kms = fleet.artifacts.kms_key_id
    return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms} if kms else {}


def _put_manifest(gateway: S3Gateway, fleet: Fleet, key: str, manifest: Mapping[str, Any]) -> None:
    line = json.dumps(manifest, separators=(",", ":"), sort_keys=False) + "\n"
    gateway.put_bytes(
        fleet.artifacts.bucket, key, line.encode(), content_type="application/json", extra=_encryption(fleet)
    )


def publish(
    bundle: BundleResult,
    fleet: Fleet,
    session: AwsSession,
    *,
    target: str,
    created_by: str,
    groups: Sequence[Group] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> PublishResult:
    gateway = S3Gateway(session, expected_bucket_owner=fleet.artifacts.expected_bucket_owner)
    bucket = fleet.artifacts.bucket
    key = bundle_key(fleet, bundle.version, bundle.sha256)
    info = gateway.head(bucket, key)
    uploaded = info is None
    if info is None:
        metadata = {"version": bundle.version, "sha256": bundle.sha256}
        if bundle.commit:
            metadata["commit"] = bundle.commit
        extra = {"Metadata": metadata, "ContentType": "application/gzip", **_encryption(fleet)}
        info = gateway.upload_file(bundle.path, bucket, key, extra=extra)
    elif info.size != bundle.size:
        raise AwsError(
            f"s3://{bucket}/{key} exists with {info.size} bytes but this bundle has {bundle.size}: "
            "the object was changed after upload; delete it and publish again"
        )
    created_at = now()
    manifest = release_manifest(
        fleet, bundle, bucket=bucket, key=key, etag=info.etag, target=target, created_by=created_by,
        created_at=created_at, groups=groups,
    )
    manifest_key = release_key(fleet, created_at, manifest["release_id"])
    _put_manifest(gateway, fleet, manifest_key, manifest)
    return PublishResult(
        bucket=bucket, key=key, etag=info.etag, sha256=bundle.sha256, size=bundle.size, version=bundle.version,
        commit=bundle.commit, release_id=manifest["release_id"], manifest_key=manifest_key, uploaded=uploaded,
        manifest=manifest, object_version=info.version_id,
    )

