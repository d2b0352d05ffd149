"""The CloudWatch gateway (deploytool.aws.cloudwatch) on moto: what the health gate and `reconcile --live` read back
is what the workers sent, however many PutMetricData calls it took."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from deploytool.aws.cloudwatch import CloudWatchGateway
from tests.reconcile_support import mocked_aws


def put(client: object, name: str, dims: dict[str, str], value: float) -> None:
    """One datum, its dimensions sorted as the worker sends them (deploytool_instance.telemetry.form)."""
    client.put_metric_data(  # type: ignore[attr-defined]
        Namespace="deploytool",
        MetricData=[{"MetricName": name, "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(dims.items())],
                     "Value": value, "Unit": "Count"}],
    )  # fmt: skip


def test_task_counts_add_up_what_every_call_sent_once(monkeypatch: pytest.MonkeyPatch) -> None:
    with mocked_aws(monkeypatch) as session:
        client = session.client("cloudwatch")
        base = {"App": "acme", "Group": "email", "Queue": "email", "Task": "send_email"}
        for n in range(6):  # six publishing rounds of the same series, as a worker sends them
            put(client, "Tasks", {**base, "Release": "v2", "Outcome": "succeeded"}, 10)
            put(client, "Tasks", {**base, "Release": "v2", "Outcome": "failed"}, n % 2)
            put(client, "Tasks", {**base, "Release": "v1", "Outcome": "succeeded"}, 4)
            put(client, "WorkerHeartbeat", {"App": "acme", "Group": "email", "Release": "v2", "Instance": "i-1",
                                            "State": "running"}, 1)  # fmt: skip
        put(client, "Tasks", {**base, "App": "other", "Release": "v2", "Outcome": "succeeded"}, 99)
        gateway = CloudWatchGateway(session)
        now = datetime.now(UTC)
        counts = gateway.task_counts("acme", now - timedelta(minutes=10), now + timedelta(minutes=1))
        assert counts == {
            ("v2", "email", "email", "send_email", "succeeded"): 60,
            ("v2", "email", "email", "send_email", "failed"): 3,
            ("v1", "email", "email", "send_email", "succeeded"): 24,
        }
        only_v2 = gateway.task_counts("acme", now - timedelta(minutes=10), now + timedelta(minutes=1), release="v2")
        assert sum(only_v2.values()) == 63
        beats = gateway.heartbeats("acme", now - timedelta(minutes=10), now + timedelta(minutes=1))
        assert [(b.instance, b.release, b.state) for b in beats] == [("i-1", "v2", "running")]
