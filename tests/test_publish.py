"""Publishing against a real moto S3 server: content-addressed, uploaded once, release recorded."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import boto3
import pytest
from botocore.stub import Stubber

from deploytool.aws.session import AwsSession
from deploytool.bundle import BundleResult, build_bundle
from deploytool.config import Fleet
from deploytool.errors import AwsError
from deploytool.publish import PublishResult, publish
from deploytool.version import SourceVersion
from tests.builders import TEMPLATES, acme_fleet, write_app
from tests.moto_server import moto_endpoint

SOURCE = SourceVersion("2024.03.05-abc1234", "abc1234" + "0" * 33, False)
NOW = datetime(2024, 3, 6, 7, 8, 9, tzinfo=UTC)
ACCOUNT = "123456789012"  # moto's default account


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_endpoint() as url:
        yield url


@dataclass
class Wire:
    """Every S3 request the session sends, seen through botocore's before-send event."""

    requests: list[tuple[str, str, dict[str, str], int]] = field(default_factory=list)

    def __call__(self, request: Any, **_: Any) -> None:
        headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        self.requests.append((request.method, request.url, headers, int(headers.get("content-length", 0))))

    def calls(self) -> list[tuple[str, str]]:
        return [(method, unquote(url.split("://", 1)[1].split("/", 1)[1])) for method, url, _, _ in self.requests]


@pytest.fixture
def wire() -> Wire:
    return Wire()


@pytest.fixture
def session(endpoint: str, wire: Wire) -> AwsSession:
    boto = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    boto.events.register("before-send.s3", wire)
    return AwsSession(region="us-east-1", endpoint_url=endpoint, boto_session=boto)


def setup_fleet(tmp_path: Path, session: AwsSession, **artifacts: str) -> Fleet:
    bucket = f"acme-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    write_app(tmp_path / "repo" / "src")
    fleet = acme_fleet(tmp_path / "repo", artifacts={"bucket": bucket, **artifacts})
    session.client("s3").create_bucket(Bucket=bucket)
    return fleet


def build(fleet: Fleet, tmp_path: Path) -> BundleResult:
    return build_bundle(fleet, SOURCE, tmp_path / "out", templates=TEMPLATES, now=lambda: NOW)


def run_publish(fleet: Fleet, bundle: BundleResult, session: AwsSession) -> PublishResult:
    return publish(bundle, fleet, session, target="sandbox", created_by="ci@test", now=lambda: NOW)


def test_first_publish_uploads_with_metadata_and_records_the_release(
    tmp_path: Path, session: AwsSession, wire: Wire
) -> None:
    fleet = setup_fleet(tmp_path, session)
    bundle = build(fleet, tmp_path)
    wire.requests.clear()
    result = run_publish(fleet, bundle, session)

    key = f"builds/dt/acme/2024.03.05-abc1234/{bundle.sha256}.tgz"
    assert (result.bucket, result.key, result.uploaded) == (fleet.artifacts.bucket, key, True)
    s3 = session.client("s3")
    head = s3.head_object(Bucket=result.bucket, Key=key)
    assert head["Metadata"] == {"version": SOURCE.version, "sha256": bundle.sha256, "commit": SOURCE.commit}
    assert head["ContentLength"] == bundle.size
    assert result.etag == head["ETag"].strip('"') and '"' not in result.etag
    body = s3.get_object(Bucket=result.bucket, Key=key)["Body"].read()
    assert body == bundle.path.read_bytes()

    assert result.manifest_key == "builds/dt/acme/releases/dt=2024-03-06/20240306T070809Z-2024.03.05-abc1234.json"
    raw = s3.get_object(Bucket=result.bucket, Key=result.manifest_key)["Body"].read().decode()
    assert raw.endswith("\n") and raw.count("\n") == 1  # one line: one Athena row
    assert json.loads(raw) == {
        "release_id": "20240306T070809Z-2024.03.05-abc1234",
        "app": "acme",
        "version": SOURCE.version,
        "target": "sandbox",
        "bundle_uri": f"s3://{result.bucket}/{key}",
        "bucket": result.bucket,
        "key": key,
        "etag": result.etag,
        "sha256": bundle.sha256,
        "commit": SOURCE.commit,
        "created_by": "ci@test",
        "created_at": "2024-03-06T07:08:09Z",
        "built_at": "2024-03-06T07:08:09Z",
        "tasks": {},  # the app's task contract (this app registers none)
        "groups": [
            {
                "group": "email",
                "asg": "asg-email",
                "expected_version": SOURCE.version,
                "strategy": "OneAtATime",
                "wave": 0,
            },
            {
                "group": "video",
                "asg": "asg-video",
                "expected_version": SOURCE.version,
                "strategy": "min 50%",
                "wave": 1,
            },
        ],
        "deployments": {},
    }
    revision = result.revision()
    assert (revision.bucket, revision.key, revision.etag, revision.bundle_type) == (
        result.bucket,
        key,
        result.etag,
        "tgz",
    )
    assert revision.version == SOURCE.version and revision.uri == result.bundle_uri


def test_publishing_again_sends_one_head_and_uploads_nothing(tmp_path: Path, session: AwsSession, wire: Wire) -> None:
    fleet = setup_fleet(tmp_path, session)
    bundle = build(fleet, tmp_path)
    first = run_publish(fleet, bundle, session)
    wire.requests.clear()
    again = publish(
        bundle, fleet, session, target="sandbox", created_by="ci@test", now=lambda: datetime(2024, 3, 7, tzinfo=UTC)
    )
    assert again.uploaded is False
    assert (again.key, again.etag) == (first.key, first.etag)
    calls = wire.calls()
    bundle_calls = [c for c in calls if not c[1].split("/", 1)[1].startswith("builds/dt/acme/releases/")]
    assert bundle_calls == [("HEAD", f"{fleet.artifacts.bucket}/{first.key}")]
    assert calls[1:] == [("PUT", f"{fleet.artifacts.bucket}/{again.manifest_key}")]  # only the release record


def test_large_bundles_go_multipart_with_sse_kms_and_the_expected_owner(
    tmp_path: Path, session: AwsSession, wire: Wire
) -> None:
    fleet = setup_fleet(tmp_path, session, kms_key_id="alias/deploy", expected_bucket_owner=ACCOUNT)
    (fleet.source_dir / "model.bin").write_bytes(os.urandom(17 * 1024 * 1024))
    bundle = build(fleet, tmp_path)
    assert bundle.size > 16 * 1024 * 1024
    wire.requests.clear()
    result = run_publish(fleet, bundle, session)

    queries = [url.split("?", 1)[1] if "?" in url else "" for _, url, _, _ in wire.requests]
    starts = [r for r, q in zip(wire.requests, queries, strict=True) if r[0] == "POST" and q == "uploads"]
    parts = [r for r, q in zip(wire.requests, queries, strict=True) if "partNumber=" in q]
    assert len(starts) == 1 and len(parts) == 2
    start_headers = starts[0][2]
    assert start_headers["x-amz-server-side-encryption"] == "aws:kms"
    assert start_headers["x-amz-server-side-encryption-aws-kms-key-id"] == "alias/deploy"
    assert start_headers["x-amz-meta-sha256"] == bundle.sha256
    for _, url, headers, _ in wire.requests:
        assert headers.get("x-amz-expected-bucket-owner") == ACCOUNT, url
    manifest_put = [r for r in wire.requests if r[0] == "PUT" and "/releases/" in r[1]]
    assert manifest_put[0][2]["x-amz-server-side-encryption"] == "aws:kms"
    assert sum(size for _, _, _, size in parts) == bundle.size
    head = session.client("s3").head_object(Bucket=result.bucket, Key=result.key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert result.etag.endswith("-2")  # a multipart ETag


def test_a_missing_bucket_is_one_clear_line(tmp_path: Path, session: AwsSession) -> None:
    fleet = setup_fleet(tmp_path, session)
    bundle = build(fleet, tmp_path)
    session.client("s3").delete_bucket(Bucket=fleet.artifacts.bucket)
    with pytest.raises(AwsError) as caught:
        run_publish(fleet, bundle, session)
    bucket = fleet.artifacts.bucket
    assert str(caught.value) == (
        f"upload s3://{bucket}/builds/dt/acme/2024.03.05-abc1234/{bundle.sha256}.tgz: bucket {bucket!r} does not "
        "exist (artifacts.bucket)"
    )


def test_access_denied_is_one_clear_line(tmp_path: Path, session: AwsSession) -> None:
    fleet = setup_fleet(tmp_path, session)
    bundle = build(fleet, tmp_path)
    with Stubber(session.client("s3")) as stub:  # S3 answers a HEAD it refuses with a bare 403
        stub.add_client_error("head_object", service_error_code="403", http_status_code=403)
        with pytest.raises(AwsError) as caught:
            run_publish(fleet, bundle, session)
    bucket = fleet.artifacts.bucket
    # the bundle's key does not exist yet on a first publish: a 403 there is S3's answer without s3:ListBucket
    # (tests/test_s3_missing_key_403.py), not "access denied"
    assert str(caught.value) == (
        f"HEAD s3://{bucket}/builds/dt/acme/2024.03.05-abc1234/{bundle.sha256}.tgz: S3 answered 403 Forbidden; S3 "
        "answers 403 instead of 404 for a missing key when the caller lacks s3:ListBucket on the bucket, so the key "
        f"may simply not exist yet: grant s3:ListBucket on arn:aws:s3:::{bucket} with the condition StringLikeIfExists "
        f's3:prefix "builds/dt/*" (`fab iam-policy --role deployer` prints it; if the key does exist: check '
        f"s3:GetObject on arn:aws:s3:::{bucket}/builds/dt/*, "
        "the bucket policy, the KMS key and artifacts.expected_bucket_owner)"
    )


def test_a_release_of_some_groups_expects_its_version_on_those_only(tmp_path: Path, session: AwsSession) -> None:
    fleet = setup_fleet(tmp_path, session)
    bundle = build(fleet, tmp_path)
    result = publish(
        bundle,
        fleet,
        session,
        target="sandbox",
        created_by="ci@test",
        now=lambda: NOW,
        groups=fleet.select_groups(["video"]),
    )
    stored = json.loads(session.client("s3").get_object(Bucket=result.bucket, Key=result.manifest_key)["Body"].read())
    assert [g["group"] for g in stored["groups"]] == ["video"]
