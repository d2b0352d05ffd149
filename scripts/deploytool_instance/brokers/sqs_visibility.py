"""SQS visibility in the worker: a heartbeat for held messages, and an explicit release when they go back.

kombu's SQS transport has no visibility heartbeat: a received message stays invisible for the queue's
visibility timeout, whatever the task does meanwhile. So a worker that dies without closing its channel (a
SIGKILL, the OOM killer, a spot power-off) leaves every message it held invisible for that whole timeout,
which had to exceed the longest task (task_time_limit + 120 s) lest a running task be redelivered.

- VisibilityHeartbeat (fleet file `visibility_heartbeat = true`, `visibility_heartbeat_step`): every step the
  worker's event loop lists the messages it holds (received, not yet acknowledged: running or prefetched)
  and a thread extends their visibility to `visibility_s` from now with ChangeMessageVisibilityBatch (at most
  10 entries a call). The queue's timeout can then be short (above the step plus a margin): after a hard kill
  a message comes back within `visibility_s` of the last beat. A task running for longer than
  task_time_limit plus a margin is no longer extended (the worker's time limit should have ended it). A
  failed call (throttling, a network error) is counted and retried at the next step; nothing here ever
  fails or blocks a task. Counters go to run/visibility.json after each round.
- ReleaseOnShutdown: once the worker shuts down, kombu's own restore of an unacknowledged message (a task a
  cold shutdown cut off, a prefetched one) hides it again for wait_time_seconds (10 s by default) on this
  transport; here it is made visible at once (ChangeMessageVisibility 0) instead, so another worker runs
  it within a receive. Before shutdown begins kombu's restore is left as it is.
Only stdlib and the transport's own client (`channel.sqs(queue)`) are used: scripts/ never imports boto3.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BATCH_MAX = 10  # ChangeMessageVisibilityBatch takes at most 10 entries
CAP_MARGIN_S = 60.0  # a task running longer than task_time_limit + this is no longer extended
HEARTBEAT_MARGIN_S = 10  # the group's visibility_timeout must exceed the step by more than this (fleet lint)


@dataclass
class Held:
    """A message the worker holds, as the heartbeat thread extends it."""

    queue_url: str
    queue: str | None  # kombu's queue name (for its client), when known
    started: float | None = None  # monotonic time its task was first seen running


@dataclass
class Counters:
    rounds: int = 0
    calls: int = 0
    extended: int = 0
    failed_calls: int = 0
    gone: int = 0  # handles SQS no longer knew (acknowledged meanwhile)
    capped: int = 0
    released: int = 0
    tasks_seen: int = 0
    task_seconds: float = 0.0  # held-message seconds covered by the heartbeat
    errors: list[str] = field(default_factory=list)


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Code") or type(exc).__name__)
    return type(exc).__name__


def delivered_messages(channel: Any) -> dict[str, Any]:
    """kombu's received-but-unacknowledged messages on this channel, by delivery tag (the receipt handle)."""
    qos = getattr(channel, "qos", None)
    delivered = getattr(qos, "_delivered", None)
    acked = getattr(qos, "_dirty", None) or set()
    if delivered is None:
        return {}
    for _ in range(3):  # the loop thread owns the dict; a copy can race with it in the rare cross-thread call
        try:
            return {tag: message for tag, message in list(delivered.items()) if tag not in acked}
        except RuntimeError:
            continue
    return {}


def running_tags() -> set[str]:
    """Delivery tags of the tasks running now (celery's active requests)."""
    from celery.worker import state

    tags = set()
    for request in list(state.active_requests):
        message = getattr(request, "message", None) or getattr(request, "_message", None)
        tag = getattr(message, "delivery_tag", None)
        if tag is not None:
            tags.add(str(tag))
    return tags


class VisibilityHeartbeat:
    """Extends the visibility of every message the worker holds, in steps (see the module)."""

    def __init__(
        self,
        step_s: float,
        visibility_s: int,
        cap_s: float,
        stats_file: Path | None,
        log: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.step_s = step_s
        self.visibility_s = visibility_s
        self.cap_s = cap_s
        self.stats_file = stats_file
        self.log = log
        self.clock = clock
        self.channel: Any = None
        self.held: dict[str, Held] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.counters = Counters()
        self.thread: threading.Thread | None = None
        self.scheduled = False
        self.last_round: float | None = None

    # -- in the worker's event loop ------------------------------------------------------------------
    def bootstep(self) -> type:
        from celery import bootsteps

        heartbeat = self

        class VisibilityHeartbeatStep(bootsteps.StartStopStep):  # type: ignore[misc]
            requires = ("celery.worker.consumer.tasks:Tasks",)

            def start(self, consumer: Any) -> None:
                heartbeat.attach(consumer)

        return VisibilityHeartbeatStep

    def attach(self, consumer: Any) -> None:
        self.channel = getattr(getattr(consumer, "task_consumer", None), "channel", None)
        if self.channel is None:
            return
        if consumer.hub is not None and not self.scheduled:  # once: the hub outlives a consumer restart
            self.scheduled = True
            consumer.hub.call_repeatedly(min(1.0, self.step_s / 2), self.snapshot)
        if self.thread is None:
            self.thread = threading.Thread(target=self.run, name="deploytool-visibility", daemon=True)
            self.thread.start()

    def snapshot(self) -> None:
        """What the worker holds now (runs in the event loop, which owns kombu's structures)."""
        if self.stopped.is_set() or self.channel is None:
            return
        delivered = delivered_messages(self.channel)
        running = running_tags()
        now = self.clock()
        with self.lock:
            for tag in list(self.held):
                if tag not in delivered:
                    del self.held[tag]
            for tag, message in delivered.items():
                info = getattr(message, "delivery_info", None) or {}
                url = info.get("sqs_queue")
                if not url:
                    continue
                entry = self.held.get(tag)
                if entry is None:
                    entry = self.held[tag] = Held(str(url), info.get("routing_key"))
                    self.counters.tasks_seen += 1
                if entry.started is None and tag in running:
                    entry.started = now

    def forget(self, tag: str) -> None:
        with self.lock:
            self.held.pop(tag, None)

    def stop(self) -> None:
        self.stopped.set()

    # -- in the heartbeat thread ---------------------------------------------------------------------
    def run(self) -> None:
        while not self.stopped.wait(self.step_s):
            try:
                self.beat()
            except Exception as exc:  # never let the thread die: the next step tries again
                self.note(f"heartbeat round failed: {error_code(exc)}: {exc}")

    def due(self) -> dict[str, Held]:
        now = self.clock()
        with self.lock:
            for tag, entry in list(self.held.items()):
                if entry.started is not None and now - entry.started > self.cap_s:
                    del self.held[tag]
                    self.counters.capped += 1
                    self.log(
                        f"deploytool: visibility heartbeat: stopped extending a message whose task has run for "
                        f"more than {self.cap_s:.0f} s (task_time_limit + {CAP_MARGIN_S:.0f} s)"
                    )
            return dict(self.held)

    def beat(self) -> None:
        entries = self.due()
        now = self.clock()
        if self.last_round is not None:
            self.counters.task_seconds += len(entries) * (now - self.last_round)
        self.last_round = now
        self.counters.rounds += 1
        by_queue: dict[tuple[str, str | None], list[str]] = {}
        for tag, entry in entries.items():
            by_queue.setdefault((entry.queue_url, entry.queue), []).append(tag)
        for (url, queue), tags in by_queue.items():
            for start in range(0, len(tags), BATCH_MAX):
                self.extend(url, queue, tags[start : start + BATCH_MAX])
        self.write_stats()

    def extend(self, url: str, queue: str | None, tags: list[str]) -> None:
        if self.stopped.is_set():
            return
        entries = [
            {"Id": str(i), "ReceiptHandle": tag, "VisibilityTimeout": self.visibility_s} for i, tag in enumerate(tags)
        ]
        self.counters.calls += 1
        try:
            client = self.client(queue)
            with self.lock:  # a release (forget + visibility 0) never interleaves with an extension
                live = [e for e in entries if e["ReceiptHandle"] in self.held]
                if not live or self.stopped.is_set():
                    return
                answer = client.change_message_visibility_batch(QueueUrl=url, Entries=live)
        except Exception as exc:  # throttling, a network error: counted, retried at the next step
            self.counters.failed_calls += 1
            self.note(f"ChangeMessageVisibilityBatch on {url} failed: {error_code(exc)}")
            return
        failed = {str(f.get("Id")) for f in answer.get("Failed") or []}
        self.counters.extended += len(live) - len(failed)
        if failed:
            self.counters.gone += len(failed)
            with self.lock:
                for entry in live:
                    if entry["Id"] in failed:
                        self.held.pop(str(entry["ReceiptHandle"]), None)

    def client(self, queue: str | None) -> Any:
        channel = self.channel
        name = channel.canonical_queue_name(queue) if queue else None
        return channel.sqs(queue=name)

    def note(self, line: str) -> None:
        errors = self.counters.errors
        if line not in errors:
            errors.append(line)
            del errors[:-5]
            self.log(f"deploytool: visibility heartbeat: {line}")

    def write_stats(self) -> None:
        if self.stats_file is None:
            return
        c = self.counters
        stats = {
            "step_s": self.step_s,
            "visibility_s": self.visibility_s,
            "rounds": c.rounds,
            "calls": c.calls,
            "extended": c.extended,
            "failed_calls": c.failed_calls,
            "gone": c.gone,
            "capped": c.capped,
            "released": c.released,
            "tasks_seen": c.tasks_seen,
            "task_seconds": round(c.task_seconds, 1),
        }
        try:
            tmp = self.stats_file.with_name(self.stats_file.name + ".tmp")
            tmp.write_text(json.dumps(stats) + "\n")
            tmp.replace(self.stats_file)
        except OSError:
            pass


class ReleaseOnShutdown:
    """Once the worker shuts down, kombu's restore of a message makes it visible at once (see the module)."""

    def __init__(self, log: Callable[[str], None], heartbeat: VisibilityHeartbeat | None = None) -> None:
        self.log = log
        self.heartbeat = heartbeat
        self.shutting_down = False
        self.released: list[str] = []

    def bootstep(self) -> type:
        from celery import bootsteps

        release = self

        class ReleaseOnShutdownStep(bootsteps.StartStopStep):  # type: ignore[misc]
            requires = ("celery.worker.consumer.tasks:Tasks",)

            def start(self, consumer: Any) -> None:
                release.attach(getattr(getattr(consumer, "task_consumer", None), "channel", None))

        return ReleaseOnShutdownStep

    def attach(self, channel: Any) -> None:
        original = getattr(channel, "_restore", None)
        if not callable(original) or getattr(original, "deploytool_release", False):
            return

        def restore(message: Any, *args: Any, **kwargs: Any) -> Any:
            tag = str(getattr(message, "delivery_tag", "") or "")
            info = dict(getattr(message, "delivery_info", None) or {})
            # Under the heartbeat's lock, so no extension of this message lands between forgetting and releasing it.
            with self.heartbeat.lock if self.heartbeat is not None else contextlib.nullcontext():
                if self.heartbeat is not None:
                    self.heartbeat.held.pop(tag, None)
                if self.shutting_down and tag and self.release(channel, tag, info):
                    return None
            return original(message, *args, **kwargs)

        restore.deploytool_release = True  # type: ignore[attr-defined]
        channel._restore = restore

    def begin(self) -> None:
        """The worker started shutting down (SIGQUIT arrived, or celery's worker_shutting_down)."""
        self.shutting_down = True  # the heartbeat goes on: a warm shutdown still runs its active tasks to the end

    def release(self, channel: Any, tag: str, info: dict[str, Any]) -> bool:
        url = info.get("sqs_queue")
        if not url:
            return False
        queue = info.get("routing_key")
        try:
            client = channel.sqs(queue=channel.canonical_queue_name(queue) if queue else None)
            client.change_message_visibility(QueueUrl=url, ReceiptHandle=tag, VisibilityTimeout=0)
        except Exception as exc:  # kombu's own restore then: visible again after wait_time_seconds
            self.log(f"deploytool: could not release a message at shutdown ({error_code(exc)}); kombu restores it")
            return False
        self.released.append(tag)
        if self.heartbeat is not None:
            self.heartbeat.counters.released += 1
            self.heartbeat.write_stats()
        return True
