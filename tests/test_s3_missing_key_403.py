"""A bucket that does not grant the caller s3:ListBucket answers a missing key with 403 instead of 404 (HEAD: a bare
"403 Forbidden", GET: AccessDenied). Every read of a key that may not exist yet (publish's bundle check, the release
index and manifests, reconcile's reads) must then say so in one line, with the grant that fixes it, not "access
denied to bucket".

moto does not enforce bucket policies, so the 403 comes from a botocore before-send hook on the real client: for a
HeadObject/GetObject of a key moto does not have, it answers what S3 sends over HTTP (status 403; GET with S3's XML
error body), and botocore's own parser and error handling turn it into the ClientError the code sees."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse, HTTPHeaders
from moto import mock_aws
from rich.console import Console

from deploytool import targets
from deploytool.aws.s3 import S3Gateway
from deploytool.aws.session import AwsSession
from deploytool.bundle import build_bundle
from deploytool.errors import AwsError
from deploytool.model import index_key
from deploytool.publish import publish
from deploytool.reconcile import command as reconcile_command
from deploytool.rollout.record import ReleaseStore
from deploytool.version import SourceVersion
from tests.builders import TEMPLATES, acme_fleet, write_app

REGION = "us-east-1"
BUCKET = "acme-artifacts"  # tests/builders.py's acme_fleet: prefix builds/dt
ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message>'
    b"<RequestId>4442587FB7D0A2F9</RequestId><HostId>host-id</HostId></Error>"
)


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, *_: Any, **__: Any) -> bytes:
        data, self.data = self.data, b""
        return data

    def stream(self, **_: Any) -> Iterator[bytes]:
        if self.data:
            yield self.read()


@dataclass
class NoListBucket:
    """S3 as it answers a caller without s3:ListBucket: 403 for a key that does not exist, the object otherwise."""

    truth: Any  # a plain client on the same moto: does the key exist?
    answered: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        if request.method not in ("HEAD", "GET"):
            return None
        url = urlsplit(request.url)
        if url.query and "list-type" in url.query:
            return None
        path = unquote(url.path).lstrip("/")
        if url.hostname and url.hostname.startswith(f"{BUCKET}."):
            bucket, key = BUCKET, path
        else:
            bucket, _, key = path.partition("/")
        if not key or self.truth.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0):
            return None  # the object exists (a 404 would be S3's answer to a caller WITH ListBucket)
        self.answered.append((request.method, key))
        headers = HTTPHeaders.from_dict({"x-amz-request-id": "4442587FB7D0A2F9", "Content-Type": "application/xml"})
        return AWSResponse(request.url, 403, headers, _Body(b"" if request.method == "HEAD" else ACCESS_DENIED))


@pytest.fixture
def denied(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[AwsSession, NoListBucket]]:
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    with mock_aws():
        boto = boto3.Session(region_name=REGION)
        truth = boto.client("s3")
        truth.create_bucket(Bucket=BUCKET)
        hook = NoListBucket(truth)
        boto.events.register("before-send.s3", hook)
        yield AwsSession(region=REGION, boto_session=boto), hook


def explained(message: str, what: str) -> None:
    assert "\n" not in message and "access denied to bucket" not in message
    assert message.startswith(f"{what}: S3 answered 403 Forbidden; S3 answers 403 instead of 404 for a missing key")
    assert "lacks s3:ListBucket on the bucket, so the key may simply not exist yet" in message
    assert (
        f'grant s3:ListBucket on arn:aws:s3:::{BUCKET} with the condition StringLikeIfExists s3:prefix "builds/dt/*"'
        in (message)
    )


def test_the_hook_answers_as_s3_does(denied: tuple[AwsSession, NoListBucket]) -> None:
    """The injected answers parse into the ClientErrors S3 gives a caller without ListBucket."""
    session, _ = denied
    client = session.client("s3")
    with pytest.raises(client.exceptions.ClientError) as head:
        client.head_object(Bucket=BUCKET, Key="builds/dt/none")
    assert head.value.response["Error"] == {"Code": "403", "Message": "Forbidden"}
    with pytest.raises(client.exceptions.ClientError) as get:
        client.get_object(Bucket=BUCKET, Key="builds/dt/none")
    assert get.value.response["Error"]["Code"] == "AccessDenied"
    client.put_object(Bucket=BUCKET, Key="builds/dt/there", Body=b"x")
    assert client.get_object(Bucket=BUCKET, Key="builds/dt/there")["Body"].read() == b"x"


def test_the_first_publish_names_the_missing_list_bucket_grant(
    denied: tuple[AwsSession, NoListBucket], tmp_path: Path
) -> None:
    session, hook = denied
    write_app(tmp_path / "repo" / "src")
    fleet = acme_fleet(tmp_path / "repo")
    bundle = build_bundle(fleet, SourceVersion("v1", "c" * 40, False), tmp_path / "dist", templates=TEMPLATES)
    with pytest.raises(AwsError) as caught:
        publish(bundle, fleet, session, target="sandbox", created_by="me")
    key = hook.answered[0][1]
    assert hook.answered == [("HEAD", key)] and key.startswith("builds/dt/acme/v1/")
    explained(str(caught.value), f"HEAD s3://{BUCKET}/{key}")


def test_the_release_index_reads_of_a_first_deploy(denied: tuple[AwsSession, NoListBucket], tmp_path: Path) -> None:
    """`fab deploy` asks the index whether this version was released before (a key that does not exist yet), through
    the store a target's services build (deploytool.targets)."""
    session, _ = denied
    write_app(tmp_path / "repo" / "src")
    fleet = acme_fleet(tmp_path / "repo")
    connected = targets.Connected(targets.target(fleet, "sandbox"), session, backend=None)  # type: ignore[arg-type]
    store = connected.services(fleet, Console(file=io.StringIO()), ci=True).store
    with pytest.raises(AwsError) as caught:
        store.find("sandbox", "v1")
    explained(str(caught.value), f"GET s3://{BUCKET}/{index_key('builds/dt', 'acme', 'sandbox', 'v1')}")
    with pytest.raises(AwsError) as history:
        store.history("sandbox")
    explained(str(history.value), f"GET s3://{BUCKET}/{index_key('builds/dt', 'acme', 'sandbox', 'latest')}")


def test_reconcile_reads_say_it_too(denied: tuple[AwsSession, NoListBucket], tmp_path: Path) -> None:
    session, _ = denied
    write_app(tmp_path / "repo" / "src")
    fleet = acme_fleet(tmp_path / "repo")
    s3 = reconcile_command.services_for(fleet, session=session).s3
    with pytest.raises(AwsError) as caught:
        s3.get_bytes(BUCKET, "builds/dt/acme/inventory/dt=2025-01-01/part.json")
    explained(str(caught.value), f"GET s3://{BUCKET}/builds/dt/acme/inventory/dt=2025-01-01/part.json")


def test_without_the_fleet_prefix_the_keys_first_part_is_named(denied: tuple[AwsSession, NoListBucket]) -> None:
    session, _ = denied
    with pytest.raises(AwsError) as caught:
        S3Gateway(session).head(BUCKET, "deploytool/acme/x.tgz")
    assert 'StringLikeIfExists s3:prefix "deploytool/*"' in str(caught.value)


def test_a_real_404_still_reads_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ListBucket (no hook), a missing key is None, as before: the first publish and deploy go on."""
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    with mock_aws():
        boto = boto3.Session(region_name=REGION)
        boto.client("s3").create_bucket(Bucket=BUCKET)
        s3 = S3Gateway(AwsSession(region=REGION, boto_session=boto), prefix="builds/dt")
        assert s3.head(BUCKET, "builds/dt/none") is None and s3.get_bytes(BUCKET, "builds/dt/none") is None
        store = ReleaseStore(s3, bucket=BUCKET, prefix="builds/dt", app="acme")
        assert store.find("sandbox", "v1") is None and store.history("sandbox") == []
