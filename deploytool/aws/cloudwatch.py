"""CloudWatch gateway: what the workers' telemetry says (deploytool_instance.telemetry publishes it).

- `heartbeats(app, since, until)`: every worker that sent a heartbeat in the window, one `Heartbeat` per
  (group, release, instance, state) with the last minute it was heard in. ListMetrics finds the series (by the
  App dimension), GetMetricData reads their one-minute sums (up to 500 series a call).
- `task_counts(app, since, until, release=None)`: the task outcomes the workers reported, per (release, group,
  queue, task, outcome): the health gate's input (rollout/gate.py).
Both read only; a CloudWatch error is an AwsError naming the call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deploytool.aws.session import AwsSession, describe_aws_error

NAMESPACE = "deploytool"  # deploytool_instance.telemetry.NAMESPACE
QUERIES_PER_CALL = 500  # GetMetricData's limit


@dataclass(frozen=True)
class Heartbeat:
    group: str
    release: str
    instance: str
    state: str  # running | draining
    last_seen: datetime


class CloudWatchGateway:
    def __init__(self, session: AwsSession) -> None:
        self.client = session.client("cloudwatch")

    def _metrics(self, name: str, dimensions: Mapping[str, str]) -> list[dict[str, str]]:
        """Each series of `name` with these dimensions, once (moto's ListMetrics lists a series once per datum put;
        read as distinct series, every count would be multiplied by the number of calls that sent it)."""
        unique: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        for dims in self._list(name, dimensions):
            unique.setdefault(tuple(sorted(dims.items())), dims)
        return list(unique.values())

    def _list(self, name: str, dimensions: Mapping[str, str]) -> Iterator[dict[str, str]]:
        try:
            pages = self.client.get_paginator("list_metrics").paginate(
                Namespace=NAMESPACE,
                MetricName=name,
                Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()],
            )
            for page in pages:
                for metric in page.get("Metrics", []):
                    yield {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
        except (ClientError, BotoCoreError) as exc:
            raise describe_aws_error(exc, f"CloudWatch ListMetrics {NAMESPACE}/{name}") from exc

    def _sums(
        self, name: str, series: list[dict[str, str]], since: datetime, until: datetime
    ) -> list[list[tuple[datetime, float]]]:
        """Each series' one-minute sums in the window, oldest first."""
        out: list[list[tuple[datetime, float]]] = []
        for start in range(0, len(series), QUERIES_PER_CALL):
            chunk = series[start : start + QUERIES_PER_CALL]
            queries: list[dict[str, Any]] = [
                {
                    "Id": f"m{n}",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": NAMESPACE,
                            "MetricName": name,
                            "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(dims.items())],
                        },
                        "Period": 60,
                        "Stat": "Sum",
                    },
                    "ReturnData": True,
                }
                for n, dims in enumerate(chunk)
            ]
            found: dict[str, list[tuple[datetime, float]]] = {q["Id"]: [] for q in queries}
            try:
                pages = self.client.get_paginator("get_metric_data").paginate(
                    MetricDataQueries=queries, StartTime=since, EndTime=until
                )
                for page in pages:
                    for result in page.get("MetricDataResults", []):
                        found[result["Id"]] += list(
                            zip(result.get("Timestamps", []), result.get("Values", []), strict=True)
                        )
            except (ClientError, BotoCoreError) as exc:
                raise describe_aws_error(exc, f"CloudWatch GetMetricData {NAMESPACE}/{name}") from exc
            out += [sorted(found[q["Id"]]) for q in queries]
        return out

    def heartbeats(self, app: str, since: datetime, until: datetime) -> list[Heartbeat]:
        series = self._metrics("WorkerHeartbeat", {"App": app})
        beats = []
        for dims, points in zip(series, self._sums("WorkerHeartbeat", series, since, until), strict=True):
            heard = [moment for moment, value in points if value > 0]
            if heard:
                beats.append(
                    Heartbeat(dims.get("Group", "?"), dims.get("Release", "?"), dims.get("Instance", "?"),
                              dims.get("State", "?"), max(heard))
                )  # fmt: skip
        return sorted(beats, key=lambda b: (b.group, b.instance, b.release, b.state))

    def task_counts(
        self, app: str, since: datetime, until: datetime, release: str | None = None
    ) -> dict[tuple[str, ...], int]:
        """(release, group, queue, task, outcome) -> tasks the workers reported in the window (of `release` only
        when given)."""
        wanted = {"App": app, **({"Release": release} if release else {})}
        series = self._metrics("Tasks", wanted)
        counts: dict[tuple[str, ...], int] = {}
        for dims, points in zip(series, self._sums("Tasks", series, since, until), strict=True):
            key = tuple(dims.get(name, "?") for name in ("Release", "Group", "Queue", "Task", "Outcome"))
            counts[key] = counts.get(key, 0) + int(sum(value for _, value in points))
        return counts
