"""Stage 4, publish: put a bundle in S3 once, content-addressed, and record the release.

Contract: `publish(bundle, fleet, session, target=..., created_by=...)`
1. names the bundle `<prefix>/<app>/<version>/<sha256>.tgz` in artifacts.bucket (deploytool.model: the keys);
2. sends one HEAD: when the object is there (same size) nothing is uploaded;
3. otherwise uploads it through boto3's transfer manager (multipart above 16 MiB) with metadata
   version, sha256 and commit, SSE-KMS when artifacts.kms_key_id is set, and ExpectedBucketOwner on
   every request when artifacts.expected_bucket_owner is set (both from S3Gateway.for_artifacts, which
   gives every write of the tool the same settings);
4. writes the release manifest (deploytool.model.ReleaseManifest, its groups without an outcome yet), one
   line of JSON, to `<prefix>/<app>/releases/dt=YYYY-MM-DD/<release_id>.json`.
It returns a PublishResult; `.revision()` is what a rollout backend deploys. It does not register the
revision with CodeDeploy (the codedeploy backend does). Where the session points (AWS, or the sandbox's
moto server) is the caller's business. A missing bucket or denied access is one AwsError line.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from deploytool.aws.s3 import S3Gateway
from deploytool.aws.session import AwsSession
from deploytool.bundle import BundleResult
from deploytool.config import Fleet, Group
from deploytool.errors import AwsError
from deploytool.model import (
    ReleaseManifest,
    Revision,
    bundle_key,
    iso_seconds,
    manifest_key,
    new_manifest,
)


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
    manifest: ReleaseManifest
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


def _put_manifest(gateway: S3Gateway, fleet: Fleet, key: str, manifest: ReleaseManifest) -> None:
    line = manifest.to_json_line(sort_keys=False) + "\n"
    gateway.put_bytes(fleet.artifacts.bucket, key, line.encode(), content_type="application/json")


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
    gateway = S3Gateway.for_artifacts(session, fleet.artifacts)
    bucket = fleet.artifacts.bucket
    key = bundle_key(fleet.artifacts.prefix, fleet.app.name, bundle.version, bundle.sha256)
    info = gateway.head(bucket, key)
    uploaded = info is None
    if info is None:
        metadata = {"version": bundle.version, "sha256": bundle.sha256}
        if bundle.commit:
            metadata["commit"] = bundle.commit
        extra = {"Metadata": metadata, "ContentType": "application/gzip"}  # SSE-KMS: the gateway adds it
        info = gateway.upload_file(bundle.path, bucket, key, extra=extra)
    elif info.size != bundle.size:
        raise AwsError(
            f"s3://{bucket}/{key} exists with {info.size} bytes but this bundle has {bundle.size}: "
            "the object was changed after upload; delete it and publish again"
        )
    created_at = now()
    # No outcome in its groups yet: the rollout that takes this release on writes them (deploytool.rollout.record).
    manifest = new_manifest(
        app=fleet.app.name,
        target=target,
        groups=fleet.groups if groups is None else groups,
        commit=bundle.commit,
        revision=Revision(bucket, key, info.etag, bundle.version, bundle.sha256),
        created_by=created_by,
        now=created_at,
        outcome=None,
        extra={"built_at": iso_seconds(bundle.built_at), "tasks": bundle.tasks},
    )
    key_of_manifest = manifest_key(fleet.artifacts.prefix, fleet.app.name, manifest.release_id)
    _put_manifest(gateway, fleet, key_of_manifest, manifest)
    return PublishResult(
        bucket=bucket,
        key=key,
        etag=info.etag,
        sha256=bundle.sha256,
        size=bundle.size,
        version=bundle.version,
        commit=bundle.commit,
        release_id=manifest.release_id,
        manifest_key=key_of_manifest,
        uploaded=uploaded,
        manifest=manifest,
        object_version=info.version_id,
    )
