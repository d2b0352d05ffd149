"""Worker telemetry by release: task outcomes and a liveness heartbeat, published to CloudWatch from the worker.

The health gate between waves compares a new release's failure rate with the previous release's; only the
workers can say which release ran what (on SQS Celery has no events). In the worker's main process:
- `Tally` counts task outcomes per (queue, task name, outcome): succeeded, failed, retried, lost (the pool process
  died under the task), from the main process's own view of each task's end (`count_outcomes`: the Request class
  Celery builds for each task counts in on_success / on_failure; nothing runs in the task itself), and
  unregistered / rejected from Celery's task_unknown / task_rejected signals.
- `Publisher`, a daemon thread, every `interval_s` (30 s; DEPLOYTOOL_TELEMETRY_INTERVAL_S) sends what was counted
  since its last call and one heartbeat (instance, release, state: running or draining) in PutMetricData calls
  (namespace `deploytool`; metric `Tasks` with dimensions App, Group, Release, Queue, Task, Outcome; metric
  `WorkerHeartbeat` with App, Group, Release, Instance, State; at most 1000 data a call, as CloudWatch allows), signed
  with the instance profile's credentials (s3put: SigV4, stdlib only). Endpoint: DEPLOYTOOL_CLOUDWATCH_ENDPOINT (the
  sandbox's moto server), else https://monitoring.<region>.amazonaws.com. A failed call is counted and its counts are
  sent with the next one (up to MAX_PENDING data, the oldest dropped beyond); a task never waits on it and never fails
  because of it.
  DEPLOYTOOL_TELEMETRY=0 turns it off. What it did: run/telemetry.json (calls, failures, last error, data sent).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from deploytool_instance.imds import Imds, endpoint_of
from deploytool_instance.layout import write_atomic
from deploytool_instance.s3put import Credentials, credentials, sign

NAMESPACE = "deploytool"
INTERVAL_S = 30.0  # 300 workers: 864,000 PutMetricData calls a day (about $8.6 at $0.01 per 1,000)
MAX_DATA_PER_CALL = 1000  # CloudWatch PutMetricData's limit
MAX_PENDING = 5000  # data kept for a later call while CloudWatch does not answer
CREDENTIALS_TTL_S = 300.0
OUTCOMES = ("succeeded", "failed", "retried", "lost", "unregistered", "rejected")

Key = tuple[str, str, str]  # queue, task name, outcome


class Tally:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[Key] = Counter()

    def add(self, queue: str, task: str, outcome: str) -> None:
        with self._lock:
            self._counts[(queue or "?", task or "?", outcome)] += 1

    def take(self) -> Counter[Key]:
        """What was counted since the last take."""
        with self._lock:
            taken, self._counts = self._counts, Counter()
        return taken


def outcome_of(exc: BaseException | None) -> str:
    name = type(exc).__name__ if exc is not None else ""
    if name == "Retry":
        return "retried"
    if name == "WorkerLostError":
        return "lost"
    return "failed"


def count_outcomes(tally: Tally, skip: Callable[[str], bool]) -> bool:
    """Count each task's outcome where the main process learns it: Celery builds one Request class per task
    (celery.worker.strategy calls celery.worker.request.create_request_cls when the consumer starts); each built
    class is given a subclass whose on_success / on_failure count, then do what Celery's do. False (and only the
    heartbeat is published) when this Celery builds its requests another way."""
    try:
        from celery.worker import strategy
    except ImportError:
        return False
    build = getattr(strategy, "create_request_cls", None)
    if build is None or getattr(build, "deploytool_counting", False):
        return build is not None

    def counting(base: Any, task: Any, *args: Any, **kwargs: Any) -> Any:
        built = build(base, task, *args, **kwargs)
        if skip(str(task.name)):
            return built

        class Counted(built):  # type: ignore[misc, valid-type]
            def on_success(self, failed__retval__runtime: Any, **kw: Any) -> Any:
                if not failed__retval__runtime[0]:
                    tally.add(self.delivery_info.get("routing_key") or "", self.name, "succeeded")
                return super().on_success(failed__retval__runtime, **kw)

            def on_failure(self, exc_info: Any, *a: Any, **kw: Any) -> Any:
                exc = getattr(exc_info, "exception", None)
                exc = getattr(exc, "exc", exc)  # celery's ExceptionWithTraceback
                tally.add(self.delivery_info.get("routing_key") or "", self.name, outcome_of(exc))
                return super().on_failure(exc_info, *a, **kw)

        return Counted

    counting.deploytool_counting = True  # type: ignore[attr-defined]
    strategy.create_request_cls = counting
    return True


def count_signals(tally: Tally) -> None:
    """Unregistered and rejected tasks, which never get a Request of their task."""
    from celery import signals

    def unknown(sender: Any = None, message: Any = None, name: Any = None, **_: Any) -> None:
        routing = getattr(message, "delivery_info", None) or {}
        tally.add(str(routing.get("routing_key") or ""), str(name or "?"), "unregistered")

    def rejected(sender: Any = None, message: Any = None, **_: Any) -> None:
        routing = getattr(message, "delivery_info", None) or {}
        headers = getattr(message, "headers", None) or {}
        tally.add(str(routing.get("routing_key") or ""), str(headers.get("task") or "?"), "rejected")

    signals.task_unknown.connect(unknown, weak=False)
    signals.task_rejected.connect(rejected, weak=False)


def datum(name: str, dimensions: Mapping[str, str], value: float, when: str) -> dict[str, Any]:
    return {"MetricName": name, "Dimensions": dict(dimensions), "Value": value, "Unit": "Count", "Timestamp": when}


def form(namespace: str, data: list[dict[str, Any]]) -> dict[str, str]:
    """PutMetricData's query-protocol parameters."""
    params = {"Action": "PutMetricData", "Version": "2010-08-01", "Namespace": namespace}
    for n, item in enumerate(data, 1):
        prefix = f"MetricData.member.{n}"
        params[f"{prefix}.MetricName"] = item["MetricName"]
        params[f"{prefix}.Value"] = repr(float(item["Value"]))
        params[f"{prefix}.Unit"] = item["Unit"]
        params[f"{prefix}.Timestamp"] = item["Timestamp"]
        for m, (key, value) in enumerate(sorted(item["Dimensions"].items()), 1):
            params[f"{prefix}.Dimensions.member.{m}.Name"] = key
            params[f"{prefix}.Dimensions.member.{m}.Value"] = value
    return params


class Publisher(threading.Thread):
    def __init__(
        self,
        tally: Tally,
        *,
        identity: Mapping[str, str],  # App, Group, Release, Instance
        state: Callable[[], str],
        region: str,
        environ: Mapping[str, str],
        stats_file: Path,
        log: Callable[[str], None],
        interval_s: float = INTERVAL_S,
    ) -> None:
        super().__init__(name="deploytool-telemetry", daemon=True)
        self.tally, self.identity, self.state = tally, dict(identity), state
        self.region, self.environ, self.stats_file, self.log = region, environ, stats_file, log
        self.interval_s = interval_s
        endpoint = environ.get("DEPLOYTOOL_CLOUDWATCH_ENDPOINT") or f"https://monitoring.{region}.amazonaws.com"
        self.url = endpoint.rstrip("/") + "/"
        self.imds = Imds(endpoint_of(environ))
        self.stop_event = threading.Event()
        self.pending: list[dict[str, Any]] = []
        self.stats: dict[str, Any] = {
            "calls": 0, "failures": 0, "data": 0, "dropped": 0, "last_error": None, "since": round(time.time(), 3)
        }  # fmt: skip
        self._creds: tuple[float, Credentials | None] = (0.0, None)
        self._said: set[str] = set()

    def collect(self) -> None:
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        base = {k: self.identity[k] for k in ("App", "Group", "Release")}
        for (queue, task, outcome), count in sorted(self.tally.take().items()):
            dims = {**base, "Queue": queue, "Task": task, "Outcome": outcome}
            self.pending.append(datum("Tasks", dims, count, when))
        beat = {**base, "Instance": self.identity["Instance"], "State": self.state()}
        self.pending.append(datum("WorkerHeartbeat", beat, 1, when))
        if len(self.pending) > MAX_PENDING:
            self.stats["dropped"] += len(self.pending) - MAX_PENDING
            self.pending = self.pending[-MAX_PENDING:]

    def credentials(self) -> Credentials | None:
        fetched_at, creds = self._creds
        if creds is None or time.monotonic() - fetched_at > CREDENTIALS_TTL_S:
            creds = credentials(self.imds, self.environ)
            self._creds = (time.monotonic(), creds)
        return creds

    def send(self) -> None:
        while self.pending:
            batch = self.pending[:MAX_DATA_PER_CALL]
            error = self.put(batch)
            self.stats["calls"] += 1
            if error is not None:
                self.stats["failures"] += 1
                self.stats["last_error"] = error
                if error not in self._said:
                    self._said.add(error)
                    self.log(f"deploytool: telemetry: {error} (counts kept for the next call)")
                return
            del self.pending[: len(batch)]
            self.stats["data"] += len(batch)

    def put(self, batch: list[dict[str, Any]]) -> str | None:
        creds = self.credentials()
        if creds is None:
            return "no credentials (no instance profile, no AWS_ACCESS_KEY_ID)"
        body = urllib.parse.urlencode(form(NAMESPACE, batch)).encode()
        headers = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
        now = datetime.datetime.now(datetime.timezone.utc)
        signed = sign("POST", self.url, headers, body, creds, self.region, now, service="monitoring")
        request = urllib.request.Request(self.url, data=body, method="POST", headers=signed)
        try:
            with urllib.request.urlopen(request, timeout=5.0) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            return f"PutMetricData: HTTP {exc.code} {exc.read(200).decode(errors='replace')}".replace("\n", " ")
        except (OSError, ValueError) as exc:
            return f"PutMetricData: {exc}"
        return None

    def flush(self) -> None:
        self.collect()
        self.send()
        with contextlib.suppress(OSError):
            stats = {**self.stats, "interval_s": self.interval_s, "at": round(time.time(), 3)}
            write_atomic(self.stats_file, json.dumps(stats) + "\n")

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            try:
                self.flush()
            except Exception as exc:  # never let the thread die: the next round tries again
                self.stats["last_error"] = f"{type(exc).__name__}: {exc}"

    def stop(self) -> None:
        """The worker is shutting down: one last call with what is left."""
        self.stop_event.set()
        with contextlib.suppress(Exception):
            self.flush()
