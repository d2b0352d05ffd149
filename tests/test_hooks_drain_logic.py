"""The drain algorithm of deploytool_instance.drain, and the SQS worker's own drain (brokers/sqs.py),
on a simulated clock, with fakes at its two seams
(the worker process and the broker's remote control)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from deploytool_instance import base, drain
from deploytool_instance.brokers import sqs
from tests.fakes import FakeClock


class FakeWorker:
    """Exits `after_term` s after SIGTERM and `after_quit` s after SIGQUIT (None: never)."""

    pid = 4242

    def __init__(self, clock: FakeClock, after_term: float | None = 0.2, after_quit: float | None = 0.3) -> None:
        self.clock = clock
        self.after_term = after_term
        self.after_quit = after_quit
        self.exit_at: float | None = None
        self.signals: list[tuple[str, float]] = []

    def exited(self) -> bool:
        return self.exit_at is not None and self.clock.now() >= self.exit_at

    def _schedule(self, delay: float | None) -> None:
        if delay is not None:
            at = self.clock.now() + delay
            self.exit_at = at if self.exit_at is None else min(self.exit_at, at)

    def warm_shutdown(self) -> None:
        self.signals.append(("SIGTERM", self.clock.now()))
        self._schedule(self.after_term)

    def cold_shutdown(self) -> None:
        self.signals.append(("SIGQUIT", self.clock.now()))
        self._schedule(self.after_quit)


class FakeControl:
    """A worker consuming `queues` whose last task finishes at `idle_at` (None: never)."""

    def __init__(self, clock: FakeClock, queues: list[str], idle_at: float | None, answers: bool = True) -> None:
        self.clock = clock
        self.queues = queues
        self.idle_at = idle_at
        self.answers = answers
        self.cancelled: list[str] = []
        self.polls = 0

    def active_queues(self) -> list[str] | None:
        self.clock.advance(0.01 if self.answers else 1.0)
        return list(self.queues) if self.answers else None

    def cancel_consumer(self, queue: str) -> bool:
        self.clock.advance(0.005)
        self.cancelled.append(queue)
        return True

    def busy(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        self.polls += 1
        self.clock.advance(0.01)
        if self.idle_at is not None and self.clock.now() >= self.idle_at:
            return [], []
        return [{"name": "acme_workers.tasks.transcode_video", "id": "t-1"}], [{"name": "x.y", "id": "t-2"}]

    def ping(self) -> bool:
        return self.answers

    def close(self) -> None:
        pass


def run_drain(worker: FakeWorker, control: FakeControl | None, clock: FakeClock, budget: float) -> Any:
    log = base.Log("drain", clock, out=io.StringIO())
    result = drain.drain_worker(worker, control, "celery@g.i-1", clock.now() + budget, clock, log)
    return result, log.lines


def test_waits_until_idle_then_sends_sigterm_and_nothing_else() -> None:
    clock = FakeClock(1000.0)
    worker = FakeWorker(clock)
    control = FakeControl(clock, ["video", "email"], idle_at=clock.now() + 3.0)
    result, lines = run_drain(worker, control, clock, budget=30)
    assert control.cancelled == ["video", "email"]
    assert [name for name, _ in worker.signals] == ["SIGTERM"]
    assert worker.signals[0][1] >= control.idle_at  # type: ignore[operator]
    assert result.outcome == "drained"
    assert 3.0 <= result.seconds <= 3.0 + drain.INSPECT_POLL_S + 0.2 + 0.1
    assert any("waiting: 1 active, 1 reserved" in line for line in lines)
    assert any(" SIGTERM: pid 4242 exited" in line for line in lines)


def test_polls_inspect_at_the_configured_rate() -> None:
    clock = FakeClock(1000.0)
    control = FakeControl(clock, ["q"], idle_at=clock.now() + 2.0)
    run_drain(FakeWorker(clock), control, clock, budget=30)
    assert 2.0 / drain.INSPECT_POLL_S - 1 <= control.polls <= 2.0 / drain.INSPECT_POLL_S + 2


def test_budget_spent_while_busy_sends_sigquit_and_names_the_interrupted_tasks() -> None:
    clock = FakeClock(1000.0)
    worker = FakeWorker(clock)
    control = FakeControl(clock, ["video"], idle_at=None)
    started = clock.now()
    result, _ = run_drain(worker, control, clock, budget=5)
    assert [name for name, _ in worker.signals] == ["SIGQUIT"]
    assert worker.signals[0][1] == pytest.approx(started + 5, abs=0.3)
    assert result.outcome == "cold"
    assert result.interrupted == ["acme_workers.tasks.transcode_video[t-1]"]


def test_without_remote_control_sigterm_is_the_drain_and_sigquit_ends_it() -> None:
    clock = FakeClock(1000.0)
    worker = FakeWorker(clock, after_term=None)
    started = clock.now()
    result, lines = run_drain(worker, None, clock, budget=4)
    assert [name for name, _ in worker.signals] == ["SIGTERM", "SIGQUIT"]
    assert worker.signals[0][1] == pytest.approx(started, abs=0.01)
    assert worker.signals[1][1] == pytest.approx(started + 4, abs=0.06)
    assert result.outcome == "cold"
    assert any("still running when drain_timeout was spent" in line for line in lines)


def test_sqs_worker_that_finishes_in_time_gets_only_sigterm() -> None:
    clock = FakeClock(1000.0)
    worker = FakeWorker(clock, after_term=2.5)
    result, _ = run_drain(worker, None, clock, budget=4)
    assert [name for name, _ in worker.signals] == ["SIGTERM"]
    assert result.outcome == "drained"
    assert result.seconds == pytest.approx(2.5, abs=drain.EXIT_POLL_S + 0.01)


def test_worker_that_survives_sigquit_is_reported_stuck_not_killed() -> None:
    clock = FakeClock(1000.0)
    worker = FakeWorker(clock, after_term=None, after_quit=None)
    result, lines = run_drain(worker, None, clock, budget=2)
    assert [name for name, _ in worker.signals] == ["SIGTERM", "SIGQUIT"]
    assert result.outcome == "stuck"
    assert any("STILL RUNNING" in line for line in lines)


def test_worker_that_does_not_answer_goes_straight_to_sigterm() -> None:
    clock = FakeClock(1000.0)
    worker = FakeWorker(clock)
    control = FakeControl(clock, ["q"], idle_at=None, answers=False)
    result, lines = run_drain(worker, control, clock, budget=30)
    assert control.cancelled == []
    assert [name for name, _ in worker.signals] == ["SIGTERM"]
    assert result.outcome == "drained"
    assert any("did not answer" in line for line in lines)


def test_worker_that_exits_on_its_own_while_waiting_is_drained() -> None:
    clock = FakeClock(1000.0)
    worker = FakeWorker(clock)
    worker.exit_at = clock.now() + 1.0
    control = FakeControl(clock, ["q"], idle_at=None)
    result, _ = run_drain(worker, control, clock, budget=30)
    assert worker.signals == []
    assert result.outcome == "drained"


# --- the SQS worker's own drain on SIGTERM (SettleOnSigterm), with a fake consumer -------------------


class FakeChannel:
    wait_time_seconds = 5

    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def _get_async(self, queue: str, count: int = 1, callback: Any = None) -> None:
        self.callbacks.append(callback)


class FakeConsumer:
    def __init__(self, queues: list[str]) -> None:
        class Queue:
            def __init__(self, name: str) -> None:
                self.name = name

        class TaskConsumer:
            pass

        self.task_consumer = TaskConsumer()
        self.task_consumer.queues = [Queue(q) for q in queues]  # type: ignore[attr-defined]
        self.task_consumer.channel = FakeChannel()  # type: ignore[attr-defined]
        self.cancelled: list[str] = []
        self.timers: list[tuple[float, Any]] = []
        consumer = self

        class Hub:
            def call_repeatedly(self, seconds: float, function: Any) -> None:
                consumer.timers.append((seconds, function))

        self.hub = Hub()

    def cancel_task_queue(self, queue: str) -> None:
        self.cancelled.append(queue)


def settle_with(consumer: FakeConsumer) -> tuple[Any, list[str]]:
    lines: list[str] = []
    settle = sqs.SettleOnSigterm(lines.append, "deploytool-canary-g-i-1")
    settle.celery_handler = lambda signum, frame: lines.append("celery warm shutdown")
    settle.attach(consumer)
    return settle, lines


def test_sigterm_cancels_consumers_and_waits_for_the_receive_in_flight() -> None:
    consumer = FakeConsumer(["video", "email"])
    settle, lines = settle_with(consumer)
    channel = consumer.task_consumer.channel  # type: ignore[attr-defined]
    assert settle.settle_s == 6.0 and consumer.timers[0][0] == settle.TICK_S
    returned: list[Any] = []
    channel._get_async("video", 4, callback=returned.append)  # a long poll goes out
    channel._get_async("deploytool-canary-g-i-1", 1, callback=returned.append)  # not waited for
    assert settle.inflight == 1

    settle.on_sigterm(15, None)
    settle.tick()
    assert consumer.cancelled == ["video", "email"]
    assert "celery warm shutdown" not in lines  # the long poll has not returned yet
    channel.callbacks[0]({"Messages": []})  # it returns; kombu's own callback still runs
    assert returned == [{"Messages": []}] and settle.inflight == 0
    settle.tick()
    assert lines.count("celery warm shutdown") == 1
    settle.tick()
    settle.on_sigterm(15, None)
    assert lines.count("celery warm shutdown") == 1  # celery's handler runs once


def test_a_second_sigterm_or_the_time_cap_ends_the_wait() -> None:
    consumer = FakeConsumer(["video"])
    settle, lines = settle_with(consumer)
    consumer.task_consumer.channel._get_async("video", 1, callback=None)  # type: ignore[attr-defined]
    settle.on_sigterm(15, None)
    settle.tick()
    assert lines.count("celery warm shutdown") == 0
    settle.on_sigterm(15, None)
    assert lines.count("celery warm shutdown") == 1

    consumer = FakeConsumer(["video"])
    settle, lines = settle_with(consumer)
    consumer.task_consumer.channel._get_async("video", 1, callback=None)  # type: ignore[attr-defined]
    settle.settle_s = 0.0
    settle.on_sigterm(15, None)
    settle.tick()
    assert lines.count("celery warm shutdown") == 1


def test_sigterm_before_the_consumer_started_goes_straight_to_celery() -> None:
    lines: list[str] = []
    settle = sqs.SettleOnSigterm(lines.append, "c")
    settle.celery_handler = lambda signum, frame: lines.append("celery warm shutdown")
    settle.on_sigterm(15, None)
    assert lines == ["celery warm shutdown"]


class _TerminatedDuringBrokerCall:
    """A Celery app whose remote-control request is where the agent's SIGTERM lands (the hook's SIGTERM
    handler raises HookTerminated from inside whatever the hook is doing, most often waiting on the broker)."""

    def connection_for_write(self) -> Any:
        return self

    @property
    def control(self) -> Any:
        return self

    def inspect(self, **kwargs: Any) -> Any:
        return self

    def active(self) -> Any:
        raise base.HookTerminated()


def test_the_agents_sigterm_during_a_broker_call_is_not_taken_for_a_broker_error() -> None:
    """Found under CI load: the SIGTERM at the agent's timeout landed inside `inspect active`, the broker
    adapter's catch-all for broker errors swallowed it as "no answer", and the drain waited out the task
    (exit 0 after the timeout) instead of handing the worker's tasks back with SIGQUIT and exiting 143."""
    from deploytool_instance.brokers.remote import RemoteControl

    control = RemoteControl(_TerminatedDuringBrokerCall(), "celery@node")
    with pytest.raises(base.HookTerminated):
        control.busy()
    assert not isinstance(base.HookTerminated(), Exception)  # no `except Exception` anywhere can swallow it
