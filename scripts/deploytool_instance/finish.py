"""The worker's side of a hand-off (restart = "handoff"): finish what it holds, then exit by itself.

ApplicationStop does not wait for a long task: it writes "finish" to run/control/<pid> and sends the worker
SIGUSR2 (a signal Celery leaves alone unless CELERY_RDBSIG is set). HandOff, a consumer bootstep in the worker's
main process, reads the file on its event loop and then, on any broker:
- stops taking tasks at once: it cancels its task consumers (what remote control's cancel_consumer does);
  on SQS it also lets a long-poll receive in flight return, so kombu makes its messages visible again
  (SettleOnSigterm, which it extends);
- keeps running what it holds to the end (restart = "handoff" requires prefetch_multiplier = 1 and no
  autoscale, so everything a worker holds is running: it holds nothing it has not started);
- then starts celery's warm shutdown and exits 0;
- "resume" (ValidateService, when the new worker failed) consumes its queues again, as before;
- a worker still finishing task_time_limit + REAP_MARGIN_S after its hand-off reaps itself: a cold shutdown,
  which hands what it still holds back to the broker (the hooks reap it too should it not: handoff.py).
What it does is written to run/handoff/<pid>.json: {"pid", "version", "node", "state" (finishing, resumed,
finished, reaped), "since", "held" (the tasks it held at the hand-off), "ended_at"}, and one log line each.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from deploytool_instance.brokers.sqs import SettleOnSigterm
from deploytool_instance.layout import Layout, write_atomic

REAP_MARGIN_S = 60.0  # after task_time_limit: no task can still be running then, only a stuck worker


def held_labels() -> list[str]:
    from celery.worker import state

    return sorted(f"{r.name}[{r.id}]" for r in list(state.reserved_requests))


class HandOff(SettleOnSigterm):
    def __init__(
        self,
        log: Callable[[str], None],
        ignored: str,
        *,
        layout: Layout,
        pid: int,
        version: str,
        node: str,
        reap_after_s: float,
        sigterm: bool,
    ) -> None:
        super().__init__(log, ignored)
        self.layout = layout
        self.pid = pid
        self.version = version
        self.node = node
        self.reap_after_s = reap_after_s
        self.sigterm = sigterm  # SQS: SIGTERM is the drain's signal too (SettleOnSigterm)
        self.doorbell = False
        self.handoff_at: float | None = None  # monotonic
        self.since: float | None = None  # wall clock
        self.held_at_handoff: list[str] = []
        self.reaped = False

    def arm(self) -> None:
        """Take SIGUSR2 at once, before celery is up: its default action would end the process. A request that
        comes that early is read once the consumer runs."""
        signal.signal(signal.SIGUSR2, self.on_doorbell)

    def install(self, wake: Callable[[], None]) -> None:
        self.wake = wake
        self.celery_handler = signal.getsignal(signal.SIGTERM)
        if self.sigterm and callable(self.celery_handler):
            signal.signal(signal.SIGTERM, self.on_sigterm)
        signal.signal(signal.SIGUSR2, self.on_doorbell)
        if self.doorbell:
            wake()

    def on_doorbell(self, signum: int, frame: Any) -> None:
        self.doorbell = True
        self.wake()

    def on_sigterm(self, signum: int, frame: Any) -> None:
        if self.handoff_at is not None and not self.done:
            return  # already finishing: a stop of its unit changes nothing (the reaper bounds it)
        super().on_sigterm(signum, frame)

    def _write(self, state: str, **extra: Any) -> None:
        record = {
            "pid": self.pid,
            "version": self.version,
            "node": self.node,
            "state": state,
            "since": self.since,
            "held": self.held_at_handoff,
            **extra,
        }
        with contextlib.suppress(OSError):
            write_atomic(self.layout.handoff_state_file(self.pid), json.dumps(record) + "\n")

    def read_control(self) -> None:
        try:
            wanted = self.layout.control_file(self.pid).read_text().strip()
        except OSError:
            return
        if wanted == "finish" and self.handoff_at is None and not self.done:
            self.handoff_at, self.since = time.monotonic(), round(time.time(), 3)
            self.held_at_handoff = held_labels()
            self.reason, self.requested = "hand-off", True
            self._write("finishing")
            self.log(
                f"deploytool: hand-off: finishing {len(self.held_at_handoff)} task(s) on {self.version}, taking no "
                f"new ones; exits when they end (reaped after {self.reap_after_s:.0f} s)"
            )
        elif wanted == "resume" and self.handoff_at is not None and not self.done:
            for queue in self.cancelled:
                self.consumer.add_task_queue(queue)
            self.log(f"deploytool: hand-off undone: consuming {', '.join(self.cancelled)} again")
            self.handoff_at, self.requested, self.cancelled_at, self.cancelled = None, False, None, []
            self._write("resumed")

    def tick(self) -> None:
        if self.doorbell:
            self.doorbell = False
            self.read_control()
        overdue = self.handoff_at is not None and time.monotonic() - self.handoff_at >= self.reap_after_s
        if overdue and not self.done and not self.reaped:
            self.reaped = True
            self._write("reaped", ended_at=round(time.time(), 3))
            self.log(f"deploytool: hand-off: still busy after {self.reap_after_s:.0f} s: cold shutdown")
            os.kill(os.getpid(), signal.SIGQUIT)
            return
        super().tick()

    def proceed(self) -> None:
        if not self.done and self.handoff_at is not None:
            self._write("finished", ended_at=round(time.time(), 3))
        super().proceed()
