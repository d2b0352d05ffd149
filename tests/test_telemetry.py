"""Worker telemetry (deploytool_instance.telemetry): a real Celery worker of the sample app on SQS (moto) counts
its task outcomes by release and publishes them, with a heartbeat, to CloudWatch on the same moto server; the
release's failure switch (acme_workers.FAILING) makes a share of one task fail while the rest works."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

from deploytool_instance import telemetry
from tests.broker_fixtures import BrokerSpec
from tests.hooktools import ProcessReaper, wait_for
from tests.test_hooks_brokers import BROKERS, make_fleet

pytestmark = pytest.mark.slow


def failing(task_id: str, share: float) -> bool:  # acme_workers.tasks.fails, as a user would predict it
    return int(hashlib.sha256(task_id.encode()).hexdigest()[:8], 16) % 10000 < share * 10000


def tasks_sum(cloudwatch: Any, dims: dict[str, str]) -> int:
    now = datetime.now(UTC)
    got = cloudwatch.get_metric_statistics(
        Namespace="deploytool", MetricName="Tasks",
        Dimensions=[{"Name": k, "Value": v} for k, v in sorted(dims.items())],
        StartTime=now - timedelta(minutes=10), EndTime=now + timedelta(minutes=1), Period=60, Statistics=["Sum"],
    )  # fmt: skip
    return int(sum(p["Sum"] for p in got["Datapoints"]))


@pytest.mark.parametrize("broker", BROKERS[2:], indirect=True)
def test_the_worker_publishes_its_task_outcomes_by_release_and_a_heartbeat(
    broker: BrokerSpec, tmp_path: Path, reaper: ProcessReaper
) -> None:
    fleet = make_fleet(broker, tmp_path, reaper, 1, ["reports"], concurrency=2)
    instance = fleet.instances[0]
    endpoint = f"http://127.0.0.1:{urlsplit(broker.url).port}"
    instance.write_env(
        broker.url, broker.options, tmp_path / "ledger.txt",
        {"DEPLOYTOOL_CLOUDWATCH_ENDPOINT": endpoint, "DEPLOYTOOL_TELEMETRY_INTERVAL_S": "1",
         "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
    )  # fmt: skip
    init = fleet.v2 / "app" / "acme_workers" / "__init__.py"
    init.write_text(init.read_text() + '\nFAILING = {"build_report": 0.5}\n')  # v2 is a bad release
    for run in instance.deploy(fleet.v2):
        run.check()  # validation passes: the canary is not affected

    reports = [fleet.load.send("build_report", fleet.queues[0], 0.05) for _ in range(20)]
    emails = [fleet.load.send("send_email", fleet.queues[0], 0.05) for _ in range(5)]
    assert fleet.load.wait_done(60, [t.task_id for t in reports + emails]) == (25, 0, 0)
    failed = sum(1 for t in reports if failing(t.task_id, 0.5))
    assert 0 < failed < 20

    cloudwatch = boto3.client(
        "cloudwatch", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    base = {"App": "acme-workers", "Group": "reports", "Release": "v2", "Queue": fleet.queues[0]}
    report = {**base, "Task": "acme_workers.tasks.build_report"}
    email = {**base, "Task": "acme_workers.tasks.send_email"}
    expected = {("failed", "report"): failed, ("succeeded", "report"): 20 - failed, ("succeeded", "email"): 5}

    def published() -> dict[tuple[str, str], int]:
        return {
            (outcome, which): tasks_sum(cloudwatch, {**dims, "Outcome": outcome})
            for (outcome, which), dims in (
                (("failed", "report"), report), (("succeeded", "report"), report), (("succeeded", "email"), email),
            )
        }  # fmt: skip

    assert wait_for(lambda: published() == expected, 30), (published(), expected)
    beats = cloudwatch.list_metrics(Namespace="deploytool", MetricName="WorkerHeartbeat")["Metrics"]
    seen = [{d["Name"]: d["Value"] for d in m["Dimensions"]} for m in beats]
    assert {"App": "acme-workers", "Group": "reports", "Release": "v2", "Instance": instance.instance_id,
            "State": "running"} in seen  # fmt: skip
    stats = json.loads((instance.install_dir / "run" / "telemetry.json").read_text())
    assert stats["calls"] > 0 and stats["failures"] == 0 and stats["interval_s"] == 1.0


def test_a_publisher_that_cannot_reach_cloudwatch_keeps_the_counts_and_says_so_once(tmp_path: Path) -> None:
    tally = telemetry.Tally()
    lines: list[str] = []
    publisher = telemetry.Publisher(
        tally, identity={"App": "a", "Group": "g", "Release": "v1", "Instance": "i-1"}, state=lambda: "running",
        region="us-east-1", environ={"DEPLOYTOOL_CLOUDWATCH_ENDPOINT": "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s", "DEPLOYTOOL_IMDS_ENDPOINT": "http://127.0.0.1:1"},
        stats_file=tmp_path / "telemetry.json", log=lines.append,
    )  # fmt: skip
    tally.add("q", "t", "failed")
    tally.add("q", "t", "failed")
    publisher.flush()
    publisher.flush()
    stats = json.loads((tmp_path / "telemetry.json").read_text())
    assert stats["failures"] == 2 and stats["data"] == 0 and "PutMetricData" in stats["last_error"]
    assert len(lines) == 1 and "counts kept for the next call" in lines[0]
    kept = [d for d in publisher.pending if d["MetricName"] == "Tasks"]
    assert [(d["Dimensions"]["Outcome"], d["Value"]) for d in kept] == [("failed", 2)]  # one datum: counted, not lost
    assert sum(1 for d in publisher.pending if d["MetricName"] == "WorkerHeartbeat") == 2
    params = telemetry.form("deploytool", publisher.pending[:1])
    assert params["MetricData.member.1.MetricName"] == "Tasks" and params["MetricData.member.1.Value"] == "2.0"
    assert (
        params["MetricData.member.1.Dimensions.member.6.Name"] == "Task"
    )  # sorted: App Group Outcome Queue Release Task
    from deploytool import iam

    assert telemetry.NAMESPACE == iam.TELEMETRY_NAMESPACE  # what the instance policy lets the workers write
