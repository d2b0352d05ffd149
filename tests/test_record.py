"""The release record on moto S3: one-line manifests, the release index, resume after a crash."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from deploytool.aws.s3 import S3Gateway
from deploytool.aws.session import AwsSession
from deploytool.errors import UsageError
from deploytool.model import ReleaseManifest, new_manifest
from deploytool.rollout.events import Checkpoint, DeploymentRef, Fanout, GroupFinished, ReleaseFinished
from deploytool.rollout.orchestrator import Orchestrator
from deploytool.rollout.plan import rollout_plan
from deploytool.rollout.record import RecordWriter, ReleaseStore, prior_deployments
from deploytool.rollout.result import GroupResult, RolloutResult
from tests.fakes import FakeBackend, FakeClock, Script
from tests.test_orchestrator import REVISION, group

BUCKET = "acme-deploy-artifacts"
NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[ReleaseStore]:
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    with mock_aws():
        s3 = S3Gateway(AwsSession(region="us-east-1"))
        s3.create_bucket(BUCKET, "us-east-1")
        yield ReleaseStore(s3, bucket=BUCKET, prefix="deploytool", app="acme-workers")


def manifest(groups: list[str]) -> ReleaseManifest:
    return new_manifest(
        app="acme-workers",
        target="prod",
        revision=REVISION,
        groups=[group(g) for g in groups],
        commit="abc123",
        created_by="alice",
        now=NOW,
    )


def test_manifest_is_one_line_of_json_under_its_day(store: ReleaseStore) -> None:
    m = manifest(["email"])
    store.save(m)
    key = "deploytool/acme-workers/releases/dt=2025-03-04/20250304T050607Z-v2.json"
    body = store.s3.get_bytes(BUCKET, key)
    assert body is not None and body.count(b"\n") == 1 and body.endswith(b"\n")
    data = json.loads(body)
    assert data["release_id"] == "20250304T050607Z-v2" and data["created_at"] == "2025-03-04T05:06:07Z"
    assert data["bundle_uri"] == f"s3://{REVISION.bucket}/{REVISION.key}"
    assert data["groups"] == [
        {
            "group": "email",
            "asg": "asg-email",
            "expected_version": "v2",
            "strategy": "OneAtATime",
            "wave": 0,
            "outcome": "pending",
        }
    ]
    assert store.load(m.release_id) == m


def test_unknown_fields_written_by_other_stages_survive_a_rewrite(store: ReleaseStore) -> None:
    data = manifest(["email"]).to_dict() | {"bundle_bytes": 1234}
    m = ReleaseManifest.from_dict(data)
    store.save(m)
    assert store.s3.get_json(BUCKET, store.manifest_key(m.release_id))["bundle_bytes"] == 1234


def test_release_index_finds_a_version_and_keeps_history(store: ReleaseStore) -> None:
    first = manifest(["email"])
    store.save(first)
    store.register(first)
    assert store.find("prod", "v2") == first
    assert store.find("prod", "v3") is None and store.find("staging", "v2") is None
    later = new_manifest(
        app="acme-workers",
        target="prod",
        revision=REVISION,
        groups=[group("email")],
        commit=None,
        created_by="bob",
        now=datetime(2025, 3, 5, tzinfo=UTC),
    )
    store.register(later)
    assert [r.release_id for r in store.history("prod")] == [later.release_id, first.release_id]


def test_bad_or_unknown_release_ids_are_one_clear_line(store: ReleaseStore) -> None:
    with pytest.raises(UsageError, match="is not <yyyymmddThhmmssZ>-<version>"):
        store.load("yesterday")
    with pytest.raises(UsageError, match="no release '20990101T000000Z-v9'"):
        store.load("20990101T000000Z-v9")


def test_deployments_are_recorded_as_they_start_and_end_and_a_rerun_resumes(store: ReleaseStore) -> None:
    clock = FakeClock(ctrl_c_at=100)
    backend = FakeBackend(
        clock, {"email": Script(duration=60), "video": Script(duration=400), "reports": Script(duration=30)}
    )
    groups = [group("email", 0), group("video", 0), group("reports", 1)]
    m = manifest([g.name for g in groups])
    store.save(m)
    store.register(m)
    plan = rollout_plan(release_id=m.release_id, version="v2", target="prod", groups=groups, revision=REVISION)
    writer = RecordWriter(store, m)
    with pytest.raises(KeyboardInterrupt):  # the orchestrator dies at t=100
        Orchestrator(backend, plan, reporter=writer, clock=clock).run()

    found = store.find("prod", "v2")
    assert found is not None
    assert {k: v["status"] for k, v in found.deployments.items()} == {"email": "Succeeded", "video": "InProgress"}
    assert store.history("prod")[0].outcome == "running"

    plan = rollout_plan(
        release_id=found.release_id,
        version="v2",
        target="prod",
        groups=groups,
        revision=found.revision,
        prior=prior_deployments(found),
    )
    result = Orchestrator(backend, plan, reporter=Fanout([RecordWriter(store, found)]), clock=clock).run()
    assert result.succeeded
    assert [r.group.name for r in backend.starts] == ["email", "video", "reports"]  # nothing started twice
    final = store.load(m.release_id)
    assert {k: v["status"] for k, v in final.deployments.items()} == {
        "email": "Succeeded",
        "video": "Succeeded",
        "reports": "Succeeded",
    }
    assert store.history("prod")[0].outcome == "succeeded"


def test_a_record_that_cannot_be_written_does_not_stop_the_rollout(store: ReleaseStore) -> None:
    missing = ReleaseStore(store.s3, bucket="no-such-bucket-here", prefix="deploytool", app="acme-workers")
    clock = FakeClock(ctrl_c_at=10**9)
    backend = FakeBackend(clock, {"email": Script(duration=30)})
    m = manifest(["email"])
    writer = RecordWriter(missing, m)
    plan = rollout_plan(
        release_id=m.release_id, version="v2", target="prod", groups=[group("email")], revision=REVISION
    )
    assert Orchestrator(backend, plan, reporter=writer, clock=clock).run().succeeded
    assert writer.errors and "no-such-bucket-here" in writer.errors[0] and "does not exist" in writer.errors[0]


def test_a_transient_failure_is_retried_then_reported_and_a_later_write_clears_it(store: ReleaseStore) -> None:
    """SlowDown on every manifest write: tried 4 times (pauses 1, 2, 4 s), then one warning and the manifest is
    stale; once S3 takes writes again, the next save writes the whole manifest and nothing is stale."""
    refuse = [True]
    attempts: list[str] = []

    def slow_down(model: object, params: dict[str, object], **_: object) -> None:
        if refuse[0] and "/releases/" in str(params.get("url_path")):
            attempts.append(str(params.get("url_path")))
            raise ClientError(
                {
                    "Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."},
                    "ResponseMetadata": {"HTTPStatusCode": 503},
                },
                "PutObject",
            )

    store.s3.client.meta.events.register("before-call.s3.PutObject", slow_down)
    slept: list[float] = []
    said: list[str] = []
    m = manifest(["email"])
    writer = RecordWriter(store, m, say=said.append, sleep=slept.append)
    writer.publish(Checkpoint(deployments={}, at=0.0))
    assert (len(attempts), slept) == (4, [1.0, 2.0, 4.0])
    assert writer.state().stale == ("manifest",) and not writer.state().written
    assert said == [f"warning: release record: the manifest write failed: {writer.errors[0]}"]
    assert "SlowDown" in writer.errors[0]

    refuse[0] = False
    writer.publish(Checkpoint(deployments={}, at=0.0))
    assert writer.state().written and writer.state().stale == () and len(writer.state().errors) == 1
    assert store.load(m.release_id) == m


def test_access_denied_is_not_retried(store: ReleaseStore) -> None:
    denied = ReleaseStore(store.s3, bucket="no-such-bucket-here", prefix="deploytool", app="acme-workers")
    slept: list[float] = []
    writer = RecordWriter(denied, manifest(["email"]), sleep=slept.append)
    writer.publish(Checkpoint(deployments={}, at=0.0))
    assert slept == [] and len(writer.errors) == 1 and writer.state().stale == ("manifest",)


def test_a_group_failed_after_its_group_finished_is_recorded_failed(store: ReleaseStore) -> None:
    """A follow-on deployment CodeDeploy ran after the group's own failed (deploytool.rollout.coexist): the
    result at ReleaseFinished fails the group the GroupFinished called succeeded; the record follows the result."""
    m = manifest(["video"])
    store.save(m)
    store.register(m)
    writer = RecordWriter(store, m)
    ok = GroupResult("video", 0, "OneAtATime", "succeeded", "d-1", "Succeeded", 3, 0, 0, 3)
    writer.publish(GroupFinished(ok, 10.0))
    writer.publish(Checkpoint({"video": DeploymentRef("d-1", "Succeeded")}, 10.0))
    assert [g["outcome"] for g in store.load(m.release_id).groups] == ["succeeded"]
    failed = replace(ok, outcome="failed", error="follow-on deployment d-2 ... Failed (1/1 failed)")
    writer.publish(ReleaseFinished(RolloutResult(m.release_id, "v2", "prod", "deploy", (failed,), 20.0), 20.0))
    assert [g["outcome"] for g in store.load(m.release_id).groups] == ["failed"]
    assert store.history("prod")[0].outcome == "failed"
