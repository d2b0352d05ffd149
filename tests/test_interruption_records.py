"""The interruption records: the watcher's stdlib S3 PutObject (deploytool_instance.s3put) signs as botocore
does and lands in a real bucket on moto, and `fab reconcile`'s report lists what it read (instance, notice,
outcome, the tasks handed back), with the instances' own records and the policy that lets them write."""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from deploytool import iam
from deploytool.aws.s3 import S3Gateway
from deploytool.aws.session import AwsSession
from deploytool.bundle import fleet_json
from deploytool.model import day_of, interruptions_partition
from deploytool.reconcile.interruptions import read_interruptions
from deploytool.reconcile.query import QueryResult
from deploytool.reconcile.report import build_report, markdown, rich_tables
from deploytool.sandbox.motoserver import MotoServer
from tests.builders import make_fleet
from tests.iam_eval import Need, allowed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from deploytool_instance import s3put

NOW = datetime.datetime(2026, 12, 2, 7, 30, 5, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    "url, token, extra",
    [
        ("http://127.0.0.1:5000/acme-bucket/deploytool/acme/interruptions/dt=2026-12-02/i-1-video-1.json", None, {}),
        (
            "https://acme-bucket.s3.eu-west-1.amazonaws.com/deploytool/acme/interruptions/dt%3D2026-12-02/i-1.json",
            "session-token/with+odd=chars",
            {
                "x-amz-server-side-encryption": "aws:kms",
                "x-amz-server-side-encryption-aws-kms-key-id": "alias/acme",
                "x-amz-expected-bucket-owner": "123456789012",
            },
        ),
    ],
)
def test_the_signature_is_the_one_botocore_computes(url: str, token: str | None, extra: dict[str, str]) -> None:
    body = b'{"kind": "spot"}\n'
    region = "eu-west-1"
    headers = {"content-type": "application/json", **extra}
    request = AWSRequest(method="PUT", url=url, data=body, headers=dict(headers))
    S3SigV4Auth(BotoCredentials("AKIDEXAMPLE", "secret/key+x", token), "s3", region).add_auth(request)
    when = datetime.datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)

    ours = s3put.sign("PUT", url, headers, body, s3put.Credentials("AKIDEXAMPLE", "secret/key+x", token), region, when)

    assert ours["authorization"] == request.headers["Authorization"]
    assert ours["x-amz-content-sha256"] == request.headers["X-Amz-Content-SHA256"]


def test_the_url_is_virtual_hosted_unless_an_endpoint_or_a_dotted_bucket() -> None:
    target = s3put.Target("acme-bucket", "deploytool", "eu-west-1")
    key = s3put.interruption_key("deploytool", "acme", "i-1", "video", NOW.timestamp())
    assert key == "deploytool/acme/interruptions/dt=2026-12-02/i-1-video-20261202T073005Z.json"
    assert key.startswith(interruptions_partition("deploytool", "acme", day_of(NOW)))  # where reconcile lists
    assert s3put.object_url(target, key, None) == (
        "https://acme-bucket.s3.eu-west-1.amazonaws.com/deploytool/acme/interruptions/dt%3D2026-12-02/"
        "i-1-video-20261202T073005Z.json"
    )
    dotted = s3put.Target("acme.bucket", "", "eu-west-1")
    assert s3put.object_url(dotted, "a b", None) == "https://s3.eu-west-1.amazonaws.com/acme.bucket/a%20b"
    assert s3put.object_url(target, "k", "http://127.0.0.1:9/") == "http://127.0.0.1:9/acme-bucket/k"


def test_the_bundle_tells_the_instance_where_to_record() -> None:
    fleet = make_fleet(
        ["video"], artifacts={"prefix": "builds", "kms_key_id": "alias/acme", "expected_bucket_owner": "123456789012"}
    )
    records = json.loads(fleet_json(fleet, "v1", None))["records"]
    target = s3put.Target.of(records)
    assert target == s3put.Target(
        fleet.artifacts.bucket, "builds", fleet.aws.region, "alias/acme", expected_bucket_owner="123456789012"
    )
    assert s3put.Target.of({}) is None  # a bundle from before records: nothing leaves the instance


def test_the_instance_policy_lets_the_watcher_write_its_records_and_nothing_else() -> None:
    fleet = make_fleet(["video"], artifacts={"prefix": "builds", "kms_key_id": "alias/acme"})
    scope = iam.scope_for(fleet, fleet.targets["production"], database="d", workgroup="w", output_location=None)
    policy = iam.policy("instance", scope)
    bucket = fleet.artifacts.bucket
    key = s3put.interruption_key("builds", fleet.app.name, "i-1", "video", NOW.timestamp())

    def put(resource_key: str) -> Need:
        return Need("s3:PutObject", f"arn:aws:s3:::{bucket}/{resource_key}", {}, "PutObject")

    assert allowed(policy, put(key))
    assert not allowed(policy, put(f"builds/{fleet.app.name}/releases/dt=2026-12-02/x.json"))
    assert not allowed(policy, put(f"builds/{fleet.app.name}/v1.tgz"))
    encrypt = Need(
        "kms:GenerateDataKey",
        f"arn:aws:kms:{fleet.aws.region}:123456789012:key/k-1",
        {"kms:ViaService": f"s3.{fleet.aws.region}.amazonaws.com", "kms:ResourceAliases": ("alias/acme",)},
        "PutObject",
    )
    assert allowed(policy, encrypt)
    assert not allowed(
        iam.policy(
            "instance",
            iam.scope_for(
                make_fleet(["video"]),
                make_fleet(["video"]).targets["production"],
                database="d",
                workgroup="w",
                output_location=None,
            ),
        ),
        encrypt,
    )


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    where = tmp_path_factory.mktemp("moto")
    server = MotoServer(log_path=where / "moto.log", pidfile=where / "moto.pid").start()
    try:
        yield server.url
    finally:
        server.stop()


def test_a_record_put_from_the_instance_is_what_reconcile_reports(moto: str) -> None:
    session = AwsSession(region="us-east-1", endpoint_url=moto, boto_session=_boto_session())
    s3 = S3Gateway(session)
    s3.create_bucket("acme-bucket", "us-east-1")
    target = s3put.Target("acme-bucket", "deploytool", "us-east-1")
    env = {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret", "DEPLOYTOOL_S3_ENDPOINT": moto}
    noticed = NOW.timestamp()
    record: dict[str, Any] = {
        "instance": "i-0a", "group": "video", "version": "v7", "kind": "spot", "policy": "drain",
        "detail": "spot interruption: terminate at 2026-12-02T07:32:05Z", "noticed_at": noticed,
        "outcome": "draining", "drained_s": 0.0, "interrupted": [],
    }  # fmt: skip
    key = s3put.interruption_key("deploytool", "acme", "i-0a", "video", noticed)
    assert s3put.put_record(target, key, record, None, env) == f"recorded at s3://acme-bucket/{key}"
    other = s3put.interruption_key("deploytool", "acme", "i-0b", "reports", noticed + 60)
    lost = {**record, "instance": "i-0b", "group": "reports", "noticed_at": noticed + 60}
    assert s3put.put_record(target, other, lost, None, env).startswith("recorded")
    finished = {
        **record,
        "outcome": "cold",
        "drained_s": 98.5,
        "interrupted": ["transcode_video[t1]", "t2", "t3", "t4"],
    }
    assert s3put.put_record(target, key, finished, None, env).startswith("recorded")  # the same key, final
    s3.put_bytes("acme-bucket", interruptions_partition("deploytool", "acme", "2026-12-02") + "junk.json", b"{")

    # Without credentials, or with no S3 to talk to, the watcher is told in one line and goes on.
    assert "no credentials" in s3put.put_record(target, key, finished, None, {})
    assert s3put.put_record(target, key, finished, None, {**env, "DEPLOYTOOL_S3_ENDPOINT": "http://127.0.0.1:1"})
    assert s3put.put_record(s3put.Target("no-such-bucket", "", "us-east-1"), key, finished, None, env).startswith(
        "not recorded at s3://no-such-bucket/"
    )

    found = read_interruptions(s3, "acme-bucket", prefix="deploytool", app="acme", days=["2026-12-02"], groups=None)
    assert [(r.instance_id, r.outcome, len(r.released)) for r in found.records] == [
        ("i-0a", "cold", 4),
        ("i-0b", "draining", 0),
    ]
    assert found.unreadable == (interruptions_partition("deploytool", "acme", "2026-12-02") + "junk.json",)
    only_video = read_interruptions(
        s3, "acme-bucket", prefix="deploytool", app="acme", days=["2026-12-02"], groups={"video"}
    )
    assert [r.instance_id for r in only_video.records] == ["i-0a"]

    empty = QueryResult(engine="duckdb", columns=(), rows=(), sql="", parameters=())
    report = build_report(empty, app="acme", target="production", window=("2026-12-02", "2026-12-02"),
                          groups=["video", "reports"], interruptions=found.records)  # fmt: skip
    data = report.to_dict()
    assert [i["instance_id"] for i in data["interruptions"]] == ["i-0a", "i-0b"]
    assert data["interruptions"][0]["released"] == ["transcode_video[t1]", "t2", "t3", "t4"]
    assert report.status == "nothing-to-check"  # interruptions are not drift
    text = markdown(report)
    assert "**Interrupted instances: 2**" in text
    assert "`i-0a` (video, `v7`): spot notice at 2026-12-02 07:30:05Z, cold after 98 s; tasks handed back: 4" in text
    assert "draining: no final record (gone before its drain ended, or still draining)" in text
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(rich_tables(report))
    shown = console.export_text()
    assert "Interrupted instances: 2" in shown and "transcode_video[t1], t2, t3, +1" in shown


def _boto_session() -> Any:
    import boto3

    return boto3.Session(aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1")
