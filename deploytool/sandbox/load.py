"""A load generator: keeps submitting the sample app's tasks to every queue while a rollout runs.

Contract: `LoadGenerator(sender, kinds, ...).start()` runs one thread that submits tasks round-robin
over the kinds (one per queue) at `rate_per_s`, each with a random duration from the kind's range,
until `stop()`. Every submitted task is kept (`submitted`) and written, one line
`<task id> <queue> <task name> <seconds>`, to `log_path`, so a report can tell completed, lost and
duplicated tasks from the workers' ledgers. A send that fails is counted in `errors` (with the
last message) and the load goes on. `CelerySender` sends through Celery's send_task on the
sandbox's broker; tests may pass any Sender.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from deploytool.sandbox.clock import SYSTEM_CLOCK, Clock
from deploytool.sandbox.fleet import Broker


@dataclass(frozen=True)
class TaskKind:
    queue: str
    name: str
    first_arg: str  # the task's first positional argument, with {n} for a running number
    min_s: float
    max_s: float


# The sample app's tasks (sample_app/acme_workers/tasks.py), short enough for a one-minute sandbox run.
SAMPLE_TASKS: tuple[TaskKind, ...] = (
    TaskKind("video", "acme_workers.tasks.transcode_video", "{n}", 0.3, 1.2),
    TaskKind("email", "acme_workers.tasks.send_email", "user{n}@example.com", 0.05, 0.3),
    TaskKind("reports", "acme_workers.tasks.build_report", "{n}", 0.2, 1.0),
)


class Sender(Protocol):
    def send(self, name: str, args: list[Any], kwargs: dict[str, Any], queue: str) -> str:
        """Submit one task; returns its id."""
        ...


class CelerySender:
    """Celery's send_task on the sandbox's broker (the app need not be importable here)."""

    def __init__(self, broker: Broker) -> None:
        from celery import Celery

        self.app = Celery("deploytool-load", broker=broker.url, set_as_current=False)
        self.app.conf.broker_transport_options = dict(broker.transport_options)
        self.app.conf.broker_connection_retry_on_startup = True

    def send(self, name: str, args: list[Any], kwargs: dict[str, Any], queue: str) -> str:
        return str(self.app.send_task(name, args=args, kwargs=kwargs, queue=queue).id)

    def close(self) -> None:
        self.app.close()


@dataclass(frozen=True)
class Submitted:
    task_id: str
    queue: str
    name: str
    seconds: float


def kinds_for(queues: Sequence[str], catalogue: Sequence[TaskKind] = SAMPLE_TASKS) -> list[TaskKind]:
    """The task kinds for the fleet's queues (queues without a known task get no load)."""
    by_queue = {k.queue: k for k in catalogue}
    return [by_queue[q] for q in queues if q in by_queue]


@dataclass
class LoadGenerator:
    sender: Sender
    kinds: Sequence[TaskKind]
    log_path: Path
    rate_per_s: float = 6.0
    seed: int | None = None
    clock: Clock = SYSTEM_CLOCK
    submitted: list[Submitted] = field(default_factory=list)
    errors: int = 0
    last_error: str = ""

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def start(self) -> LoadGenerator:
        if not self.kinds:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="sandbox-load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def submit_one(self, n: int) -> None:
        kind = self.kinds[n % len(self.kinds)]
        seconds = round(self._rng.uniform(kind.min_s, kind.max_s), 3)
        try:
            task_id = self.sender.send(kind.name, [kind.first_arg.format(n=n)], {"seconds": seconds}, kind.queue)
        except Exception as exc:  # a broker hiccup must not end the load
            with self._lock:
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
            return
        with self._lock:
            self.submitted.append(Submitted(task_id, kind.queue, kind.name, seconds))
        with self.log_path.open("a") as out:
            out.write(f"{task_id} {kind.queue} {kind.name} {seconds}\n")

    def _run(self) -> None:
        interval = 1.0 / self.rate_per_s
        n = 0
        next_at = self.clock.now()
        while not self._stop.is_set():
            self.submit_one(n)
            n += 1
            next_at += interval
            delay = next_at - self.clock.now()
            if delay > 0:
                self._stop.wait(delay)

    def by_queue(self) -> Mapping[str, int]:
        with self._lock:
            counts: dict[str, int] = {}
            for task in self.submitted:
                counts[task.queue] = counts.get(task.queue, 0) + 1
            return counts
