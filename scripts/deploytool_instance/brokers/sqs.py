"""SQS: a broker without remote control (kombu's SQS transport has no fanout, so no inspect/control).

- Drain cannot ask the worker to stop consuming, so SIGTERM is the drain: SettleOnSigterm, installed by
  the launcher in front of celery's SIGTERM handler, cancels the task consumers and lets in-flight
  long-poll receives return before celery's warm shutdown starts.
- ValidateService sends the deploytool.canary task through a per-instance queue (canary_queue) that
  only this worker consumes.
- NO_FANOUT_SCHEMES lets drain answer "no remote control" from the URL alone (loading kombu's SQS
  transport imports boto3: 0.4 s).
"""

from __future__ import annotations

import hashlib
import re
import signal
import time
from collections.abc import Callable
from typing import Any

NO_FANOUT_SCHEMES = ("sqs",)  # answered without loading the transport (SQS's imports boto3: 0.4 s)
CANARY_TASK = "deploytool.canary"


def canary_queue(node: str) -> str:
    """The per-instance queue ValidateService sends its canary through where there is no remote control."""
    base = "deploytool-canary-" + re.sub(r"[^A-Za-z0-9_-]", "-", node.split("@", 1)[-1])
    if len(base) <= 80:
        return base
    return base[:71] + "-" + hashlib.sha256(base.encode()).hexdigest()[:8]


class SettleOnSigterm:
    """Without remote control (SQS) the worker drains itself when SIGTERM arrives, then shuts down.

    Celery's warm shutdown stops the event loop at once, so a long-poll ReceiveMessage still in flight is
    never read: SQS has handed its messages out, and they stay invisible for the visibility timeout (kombu
    polls for up to wait_time_seconds, 10 s by default). So the first SIGTERM only asks the event loop to
    cancel the task consumers (what remote control's cancel_consumer does) and to keep running: active
    and prefetched tasks go on, an in-flight receive returns and kombu makes its messages visible again.
    The warm shutdown itself must not start while the worker holds a task either: it drops prefetched
    tasks (and one written to a pool process but not yet accepted) from the pool, and at close kombu
    "restores" every unacknowledged message, which on SQS means sending a copy while the received
    original stays invisible until the visibility timeout, to run a second time then. So celery's own
    SIGTERM handler starts the warm shutdown once no receive is in flight (waited for at most
    wait_time_seconds + 1 s) and every task the worker received has finished and been acknowledged
    (deleted from the queue), which the event loop does as usual meanwhile. A second SIGTERM, or
    SIGQUIT, skips the wait. Receives from `ignored` (the per-instance canary queue, which only
    ValidateService writes to) are not waited for.
    """

    TICK_S = 0.05

    def __init__(self, log: Callable[[str], None], ignored: str) -> None:
        self.log = log
        self.ignored = ignored
        self.requested = False
        self.cancelled_at: float | None = None
        self.done = False
        self.inflight = 0
        self.settle_s = 11.0
        self.consumer: Any = None
        self.cancelled: list[str] = []  # the queues it stopped consuming
        self.reason = "SIGTERM"
        self.celery_handler: Any = None
        self.wake: Callable[[], None] = lambda: None

    def bootstep(self) -> type:
        from celery import bootsteps

        settle = self

        class SettleOnSigtermStep(bootsteps.StartStopStep):  # type: ignore[misc]
            requires = ("celery.worker.consumer.tasks:Tasks",)

            def start(self, consumer: Any) -> None:
                settle.attach(consumer)

        return SettleOnSigtermStep

    def attach(self, consumer: Any) -> None:
        self.consumer = consumer
        channel: Any = getattr(getattr(consumer, "task_consumer", None), "channel", None)
        self.settle_s = float(getattr(channel, "wait_time_seconds", 10) or 0) + 1.0
        original = getattr(channel, "_get_async", None)
        if callable(original) and not getattr(original, "deploytool_counted", False):

            def counted(queue: Any, count: int = 1, callback: Any = None) -> Any:
                if queue == self.ignored:
                    return original(queue, count, callback=callback)
                self.inflight += 1

                def returned(*args: Any, **kwargs: Any) -> Any:
                    self.inflight -= 1
                    return callback(*args, **kwargs) if callback is not None else None

                return original(queue, count, callback=returned)

            counted.deploytool_counted = True  # type: ignore[attr-defined]
            channel._get_async = counted
        if consumer.hub is not None:
            consumer.hub.call_repeatedly(self.TICK_S, self.tick)

    def install(self, wake: Callable[[], None]) -> None:
        """Put this in front of celery's SIGTERM handler (call once celery's handlers are in place)."""
        self.wake = wake
        self.celery_handler = signal.getsignal(signal.SIGTERM)
        if callable(self.celery_handler):
            signal.signal(signal.SIGTERM, self.on_sigterm)

    def on_sigterm(self, signum: int, frame: Any) -> None:
        if self.requested or self.consumer is None or self.consumer.hub is None:
            self.proceed()
            return
        self.requested = True
        self.wake()

    def proceed(self) -> None:
        if not self.done:
            self.done = True
            self.celery_handler(signal.SIGTERM, None)

    def tick(self) -> None:
        if not self.requested or self.done:
            return
        now = time.monotonic()
        if self.cancelled_at is None:
            self.cancelled_at = now
            queues = [q.name for q in list(getattr(self.consumer.task_consumer, "queues", []) or [])]
            for queue in queues:
                self.consumer.cancel_task_queue(queue)
            self.cancelled = queues
            self.log(
                f"deploytool: {self.reason}: stopped consuming from {', '.join(queues)}; warm shutdown once no "
                f"receive is in flight (at most {self.settle_s:.0f} s) and the {self.held()} task(s) held are "
                "finished and acknowledged"
            )
        receiving = self.inflight > 0 and now - self.cancelled_at < self.settle_s
        if not receiving and self.held() == 0:
            self.proceed()

    def held(self) -> int:
        """Tasks received and not yet acknowledged: running, prefetched, or between the two."""
        from celery.worker import state

        count = len(state.reserved_requests)
        qos = getattr(getattr(getattr(self.consumer, "task_consumer", None), "channel", None), "qos", None)
        delivered, acked = getattr(qos, "_delivered", None), getattr(qos, "_dirty", None)
        if delivered is not None and acked is not None:  # kombu's own count of what restore would copy
            count = max(count, len(delivered) - len(acked))
        return count
