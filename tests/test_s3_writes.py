"""Every S3 write the tool makes carries the fleet's encryption, and a release-record write that fails is reported.

The sample fleet on the CodeDeploy simulator and moto S3/EC2/Auto Scaling, its services built by deploytool.targets
(as `fab deploy` builds them); a botocore `before-call.s3` hook on the real S3 client records every S3 operation with
its headers as sent, and plays the bucket policy (moto 5 does not evaluate a policy's condition: under a Deny of
s3:PutObject unless s3:x-amz-server-side-encryption is aws:kms it refuses every PutObject, encrypted or not, and
accepts an unencrypted CreateMultipartUpload): a write without
`x-amz-server-side-encryption: aws:kms` is refused with AccessDenied, as a policy denying
`s3:PutObject` unless `s3:x-amz-server-side-encryption` is `aws:kms` refuses it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from rich.console import Console

from deploytool import targets
from deploytool.config import load_fleet
from deploytool.deploy_flow import Deployed, deploy_and_reconcile
from deploytool.errors import DeployToolError
from deploytool.rollout import commands
from deploytool.rollout.events import Event, GroupStarted
from deploytool.rollout.plan import RolloutOptions
from deploytool.rollout.wiring import Output
from tests.builders import TEMPLATES
from tests.cdsim.env import codedeploy_env
from tests.rollout_helpers import ROOT, SAMPLE_SIZES, World

KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
WRITES = frozenset({"PutObject", "CopyObject", "CreateMultipartUpload", "UploadPartCopy"})
# Every other S3 operation the flows make; a new one fails the test until it is classified here (a new kind of
# write must join WRITES, so its encryption is checked).
READS = frozenset(
    {"HeadObject", "GetObject", "ListObjectsV2", "HeadBucket", "CreateBucket", "UploadPart", "CompleteMultipartUpload"}
    | {"DeleteObject"}  # the release lease's release: no body, nothing to encrypt
)
SSE = "x-amz-server-side-encryption"
SSE_KEY = "x-amz-server-side-encryption-aws-kms-key-id"


@dataclass
class Call:
    operation: str
    path: str  # the request's path: bucket and key
    headers: dict[str, str]


@dataclass
class S3Wire:
    """Records every S3 call as sent; `deny(call)` returning an error code refuses it the way S3 would."""

    calls: list[Call] = field(default_factory=list)
    deny: Callable[[Call], str | None] = lambda call: None
    refused: list[tuple[Call, str]] = field(default_factory=list)

    def __call__(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        call = Call(
            model.name,
            str(params.get("url_path", "")).split("?")[0],
            {k.lower(): str(v) for k, v in params["headers"].items()},
        )
        self.calls.append(call)
        code = self.deny(call)
        if code is not None:
            self.refused.append((call, code))
            status = 503 if code == "SlowDown" else 403
            raise ClientError(
                {
                    "Error": {"Code": code, "Message": f"refused by the test's policy ({code})"},
                    "ResponseMetadata": {"HTTPStatusCode": status},
                },
                model.name,
            )

    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.operation in WRITES]


def enforce_sse_kms(call: Call) -> str | None:
    """The bucket policy: deny a write without aws:kms."""
    return "AccessDenied" if call.operation in WRITES and call.headers.get(SSE) != "aws:kms" else None


@contextmanager
def kms_world(tmp_path: Path, wire: S3Wire, *, kms: str | None = KEY) -> Iterator[World]:
    """The sample fleet (with `kms_key_id` when given), `fab setup` done, services as deploytool.targets makes them."""
    text = (ROOT / "deploy.toml").read_text()
    if kms:
        text = text.replace('prefix = "deploytool"\n', f'prefix = "deploytool"\nkms_key_id = "{kms}"\n', 1)
        assert kms in text
    (tmp_path / "deploy.toml").write_text(text)
    shutil.copytree(ROOT / "sample_app", tmp_path / "sample_app", ignore=shutil.ignore_patterns("__pycache__"))
    fleet = load_fleet(tmp_path / "deploy.toml")
    assert fleet.artifacts.kms_key_id == kms
    with codedeploy_env(SAMPLE_SIZES) as env:
        env.aws.client("s3").create_bucket(Bucket=fleet.artifacts.bucket)
        env.aws.client("s3").meta.events.register("before-call.s3", wire)
        out = io.StringIO()
        moment = [datetime(2025, 5, 1, 12, 0, tzinfo=UTC)]
        connected = targets.Connected(targets.target(fleet, "production"), env.aws, env.backend())
        services = replace(
            connected.services(fleet, Console(file=out, width=200), ci=True),
            clock=env.clock,
            now=lambda: moment[0],
            interactive=False,
        )
        commands.setup(fleet, targets.codedeploy(fleet, "production"), env.gateway, services.console, dry_run=False)
        yield World(env, fleet, services, out, tmp_path, moment)


def deploy(world: World, version: str, *, json_out: Path | None = None) -> Deployed:
    world.later()
    return deploy_and_reconcile(
        world.fleet,
        "production",
        world.fleet.groups,
        RolloutOptions(),
        world.services,
        Output(ci=True, json_out=str(json_out) if json_out else None),
        version=version,
        allow_dirty=False,
        engine="duckdb",
        mirror=str(world.tmp / "mirror"),
        templates=TEMPLATES,
        out_dir=world.tmp / "dist",
        env={},
    )


def kind(call: Call) -> str:
    for part in ("/releases/", "/release-index/", "/inventory/", "/lease/"):
        if part in call.path:
            return part.strip("/")
    return "bundle" if call.path.endswith(".tgz") else call.path


def test_every_write_of_publish_deploy_rollback_and_reconcile_carries_the_fleets_kms_key(tmp_path: Path) -> None:
    wire = S3Wire(deny=enforce_sse_kms)
    with kms_world(tmp_path, wire) as world:
        # above the 16 MiB multipart threshold: the bundle goes up as a multipart upload
        (world.fleet.source_dir / "model.bin").write_bytes(os.urandom(17 * 1024 * 1024))
        first = deploy(world, "v1")
        assert first.result is not None and first.result.succeeded and first.report is not None
        deploy(world, "v2")
        world.later()
        again = commands.rollback(
            world.fleet,
            "production",
            world.fleet.groups,
            RolloutOptions(),
            world.services,
            Output(ci=True),
            to_version="v1",
        )
        assert again is not None and again.succeeded
        s3 = world.env.aws.client("s3")
        stored = [
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=world.fleet.artifacts.bucket)
            for o in page.get("Contents", [])
        ]

    seen = {c.operation for c in wire.calls}
    assert seen <= WRITES | READS, f"unclassified S3 operation(s): {sorted(seen - WRITES - READS)}"
    writes = wire.writes()
    # the bundle, each manifest and its rewrites, the index pointers and history, the inventory snapshots, the
    # release lease (taken with If-None-Match, renewed with If-Match: conditional writes encrypted like the others)
    assert {kind(c) for c in writes} == {"bundle", "releases", "release-index", "inventory", "lease"}
    assert [c.operation for c in writes if kind(c) == "bundle"] == ["CreateMultipartUpload"] * 2  # v1, v2
    assert len(writes) > 20
    unencrypted = [
        (c.operation, c.path) for c in writes if (c.headers.get(SSE), c.headers.get(SSE_KEY)) != ("aws:kms", KEY)
    ]
    assert unencrypted == []
    assert wire.refused == []
    assert len(stored) == len({c.path for c in writes if kind(c) != "lease"})
    assert not [key for key in stored if "/lease/" in key]  # released (deleted) at the end of each rollout


def test_a_fleet_without_a_kms_key_sends_no_encryption_header(tmp_path: Path) -> None:
    wire = S3Wire()
    with kms_world(tmp_path, wire, kms=None) as world:
        done = deploy(world, "v1")
        assert done.result is not None and done.result.succeeded
    assert wire.writes() and all(SSE not in c.headers and SSE_KEY not in c.headers for c in wire.writes())


class RevokeRecordWrites:
    """Once the first group has started, S3 refuses every write of the release record (manifest, index) with
    `code`, `times` times (None: always): a bucket policy or a permission changed mid-release, or S3 slowing down."""

    def __init__(self, code: str, times: int | None = None) -> None:
        self.code, self.left = code, times
        self.armed = False

    def publish(self, event: Event) -> None:
        if isinstance(event, GroupStarted):
            self.armed = True

    def __call__(self, call: Call) -> str | None:
        if not self.armed or call.operation not in WRITES or kind(call) not in ("releases", "release-index"):
            return None
        if self.left is not None:
            if self.left == 0:
                return None
            self.left -= 1
        return self.code


def test_a_release_record_that_cannot_be_written_is_reported_not_swallowed(tmp_path: Path) -> None:
    """The deploy happens (every instance on v2), but the record stays stale: a warning line in the progress, the
    JSON result says `record.written: false` and what is stale, the reconcile (which reads the record) is skipped,
    and the exit code is 4, not 0."""
    revoke = RevokeRecordWrites("AccessDenied")
    wire = S3Wire(deny=revoke)
    result_file = tmp_path / "result.json"
    with kms_world(tmp_path, wire) as world:
        world.services.extra_reporters.append(revoke)
        with pytest.raises(DeployToolError) as caught:
            deploy(world, "v2", json_out=result_file)
        text = world.out.getvalue()
    assert caught.value.exit_code == 4
    assert "reached every instance, but its release record was not written" in str(caught.value)
    assert "fab deploy --version v2` resumes the release and writes it" in str(caught.value)
    data = json.loads(result_file.read_text())
    assert data["succeeded"] is True
    assert data["record"]["written"] is False and data["record"]["stale"] == ["history", "manifest"]
    assert "access denied" in data["record"]["errors"][-1]
    assert "warning: release record: the manifest write failed: PUT s3://" in text
    assert "warning: release record NOT written: history and manifest" in text
    assert "reconcile skipped: the release record it reads was not written (exit 4)" in text
    assert not [c for c in wire.calls if kind(c) == "inventory"]  # no reconcile ran
    refused = {c.operation for c, _ in wire.refused}
    assert refused == {"PutObject"}
    # access denied is not retried: one refused call per write
    assert len(wire.refused) == len(json.loads(result_file.read_text())["record"]["errors"])


def test_a_transient_record_write_failure_is_retried_and_the_release_ends_clean(tmp_path: Path) -> None:
    revoke = RevokeRecordWrites("SlowDown", times=2)
    wire = S3Wire(deny=revoke)
    result_file = tmp_path / "result.json"
    with kms_world(tmp_path, wire) as world:
        world.services.extra_reporters.append(revoke)
        done = deploy(world, "v1", json_out=result_file)
        text = world.out.getvalue()
    assert [code for _, code in wire.refused] == ["SlowDown", "SlowDown"]
    assert done.result is not None and done.result.record is not None
    assert done.result.record.written and done.result.record.errors == ()
    assert json.loads(result_file.read_text())["record"] == {"written": True, "errors": [], "stale": []}
    assert "warning" not in text and done.report is not None and not done.report.has_drift
