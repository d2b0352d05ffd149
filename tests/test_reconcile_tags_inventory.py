"""Tagging and inventory against moto EC2 / Auto Scaling / S3, with the API calls counted by a botocore
event handler on the gateways' own clients."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploytool.reconcile.inventory import encode_rows, take_snapshot, write_snapshot
from deploytool.rollout.backend import InstanceProgress
from deploytool.rollout.tags import FinishedDeployment, tag_deployments
from tests.builders import make_fleet
from tests.reconcile_support import APP, BUCKET, PREFIX, T0, TARGETS, MotoFleet, mocked_aws


@pytest.fixture
def mf(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoFleet]:
    with mocked_aws(monkeypatch) as session:
        yield MotoFleet(session)


def count_calls(client: Any, operation: str) -> list[dict[str, Any]]:
    """Record every `operation` call's parameters made through this client."""
    seen: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.append(params)

    client.meta.events.register(f"provide-client-params.{client.meta.service_model.service_name}.{operation}", record)
    return seen


class KnownResults:
    """What tagging reads (deploytool.rollout.tags.InstanceResults): given per-deployment instance results. Not
    a Backend: tests/fakes.py FakeBackend is the one fake backend; this one reports a Pending instance too."""

    def __init__(self, results: dict[str, list[InstanceProgress]]) -> None:
        self.results = results

    def instance_results(self, deployment_id: str) -> list[InstanceProgress]:
        return self.results[deployment_id]


def _run(mf: MotoFleet, count: int) -> list[str]:
    image = mf.ec2.any_image_id()
    ids: list[str] = []
    while len(ids) < count:
        n = min(500, count - len(ids))
        reply = mf.ec2.client.run_instances(ImageId=image, MinCount=n, MaxCount=n)
        ids += [i["InstanceId"] for i in reply["Instances"]]
    return ids


def _tags(mf: MotoFleet, ids: list[str]) -> dict[str, dict[str, str]]:
    return {i.instance_id: dict(i.tags) for i in mf.ec2.describe_instances(ids)}


@pytest.mark.slow
def test_succeeded_instances_are_tagged_in_one_call_per_tag_set_per_1000(mf: MotoFleet) -> None:
    ids = _run(mf, 1205)
    big, small, failed = ids[:1190], ids[1190:1200], ids[1200:]
    mf.ec2.create_tags(failed, {"deploytool:version": "v1"})  # what they ran before
    backend = KnownResults(
        {
            "d-AAAAAAAAA": [InstanceProgress(i, "Succeeded") for i in big]
            + [InstanceProgress(i, "Failed", "ApplicationStart") for i in failed],
            "d-BBBBBBBBB": [InstanceProgress(i, "Succeeded") for i in small]
            + [InstanceProgress("i-pending", "Pending")],
        }
    )
    calls = count_calls(mf.ec2.client, "CreateTags")
    same_time = [
        FinishedDeployment("video", "d-AAAAAAAAA", "v2", "20240506T090000Z-v2", T0),
        FinishedDeployment("email", "d-BBBBBBBBB", "v2", "20240506T090000Z-v2", T0),
    ]
    result = tag_deployments(mf.ec2, backend, same_time)

    # 1200 instances share one tag set: ceil(1200 / 1000) = 2 calls, whatever the groups.
    assert result.calls == len(calls) == 2
    assert sorted(len(c["Resources"]) for c in calls) == [200, 1000]
    assert result.count == 1200 and result.tagged["email"] == tuple(sorted(small))
    tags = _tags(mf, ids)
    expected = {
        "deploytool:version": "v2",
        "deploytool:release": "20240506T090000Z-v2",
        "deploytool:deployed-at": "2024-05-06T09:00:00Z",
    }
    assert all(tags[i] == expected for i in big + small)
    assert all(tags[i] == {"deploytool:version": "v1"} for i in failed)

    # Groups finishing at different times are different tag sets: one more call.
    calls.clear()
    later = [
        FinishedDeployment("video", "d-AAAAAAAAA", "v3", "r3", T0),
        FinishedDeployment("email", "d-BBBBBBBBB", "v3", "r3", T0.replace(minute=5)),
    ]
    assert tag_deployments(mf.ec2, backend, later).calls == len(calls) == 3


def test_snapshot_rows_and_s3_objects(mf: MotoFleet, tmp_path: Path) -> None:
    fleet = make_fleet(["email", "video", "idle", "gone"], root=tmp_path, targets=TARGETS, asg="acme-{}-workers")
    email, video, idle, _ = fleet.groups
    email_ids = mf.create_group(email, 2)
    mf.create_group(video, 1)
    mf.create_group(idle, 0)
    spot = mf.ec2.client.run_instances(
        ImageId=mf.ec2.any_image_id(), MinCount=1, MaxCount=1, InstanceMarketOptions={"MarketType": "spot"}
    )["Instances"][0]["InstanceId"]
    mf.asg.client.attach_instances(InstanceIds=[spot], AutoScalingGroupName=video.asg)
    mf.ec2.create_tags(
        email_ids,
        {"deploytool:version": "v7", "deploytool:release": "r7", "deploytool:deployed-at": "2024-05-06T08:00:00Z"},
    )
    asg_calls = count_calls(mf.asg.client, "DescribeAutoScalingGroups")
    ec2_calls = count_calls(mf.ec2.client, "DescribeInstances")

    snap = take_snapshot(mf.asg, mf.ec2, app=APP, groups=fleet.groups, now=T0)

    assert len(asg_calls) == 1 and len(ec2_calls) == 1  # 4 names, 4 instances: one call each
    assert snap.missing_asgs == ("acme-gone-workers",)
    assert snap.instances == 4
    rows = {(r.group, r.instance_id): r for r in snap.rows}
    assert rows[("idle", None)].asg == "acme-idle-workers" and rows[("gone", None)].lifecycle_state is None
    tagged = rows[("email", email_ids[0])]
    assert (tagged.version, tagged.release, tagged.deployed_at) == ("v7", "r7", "2024-05-06T08:00:00Z")
    assert (tagged.lifecycle_state, tagged.health, tagged.state, tagged.market) == (
        "InService",
        "Healthy",
        "running",
        "on-demand",
    )
    assert tagged.az in ("us-east-1a", "us-east-1b") and tagged.launch_time is not None
    assert rows[("video", spot)].market == "spot" and rows[("video", spot)].version is None
    assert {r.snapshot_at for r in snap.rows} == {"2024-05-06T09:00:00.000000Z"}

    keys = write_snapshot(mf.s3, BUCKET, PREFIX, snap)
    assert keys == [f"{PREFIX}/{APP}/inventory/dt=2024-05-06/20240506T090000.000000Z-0.json.gz"]
    body = mf.s3.get_bytes(BUCKET, keys[0])
    assert body is not None and body == encode_rows(snap.rows)  # byte-reproducible
    lines = [json.loads(line) for line in gzip.decompress(body).decode().splitlines()]
    assert len(lines) == len(snap.rows) == 6
    assert set(lines[0]) == {
        "snapshot_at",
        "app",
        "instance_id",
        "asg",
        "group",
        "az",
        "lifecycle_state",
        "health",
        "state",
        "market",
        "launch_time",
        "version",
        "release",
        "deployed_at",
    }


def test_more_than_50_groups_take_two_describe_calls(mf: MotoFleet, tmp_path: Path) -> None:
    fleet = make_fleet(
        [{"name": f"g{n:02d}", "asg": f"asg-{n:02d}"} for n in range(51)], root=tmp_path, targets=TARGETS
    )
    for group in fleet.groups:
        mf.create_group(group, 0)
    calls = count_calls(mf.asg.client, "DescribeAutoScalingGroups")
    snap = take_snapshot(mf.asg, mf.ec2, app=APP, groups=fleet.groups, now=T0)
    assert [len(c["AutoScalingGroupNames"]) for c in calls] == [50, 1]
    assert snap.missing_asgs == () and len(snap.rows) == 51
