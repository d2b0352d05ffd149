"""The worker's side of a hand-off (deploytool_instance.finish.HandOff) with a fake consumer: it reads what the
hooks ask only when signalled, stops consuming, ends warm once it holds nothing, takes work again on "resume",
ignores a stop of its unit while finishing, and reaps itself (cold shutdown) when still busy past its limit."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from deploytool_instance import finish
from deploytool_instance.layout import Layout
from tests.test_hooks_drain_logic import FakeConsumer


class Consumer(FakeConsumer):
    def __init__(self, queues: list[str]) -> None:
        super().__init__(queues)
        self.added: list[str] = []

    def add_task_queue(self, queue: str) -> None:
        self.added.append(queue)


def hand_off(tmp_path: Path, held: int = 1) -> tuple[finish.HandOff, Consumer, list[str], Layout]:
    layout = Layout(root="", install_dir=tmp_path)
    lines: list[str] = []
    consumer = Consumer(["video", "deploytool-canary-x"])
    worker = finish.HandOff(
        lines.append, "deploytool-canary-x", layout=layout, pid=4242, version="v1", node="celery@video.i-1.v1.a",
        reap_after_s=180.0, sigterm=True,
    )  # fmt: skip
    worker.celery_handler = lambda signum, frame: lines.append("celery warm shutdown")
    worker.attach(consumer)
    worker.held = lambda: held  # type: ignore[method-assign]
    return worker, consumer, lines, layout


def ask(layout: Layout, worker: finish.HandOff, what: str) -> None:
    path = layout.control_file(4242)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(what + "\n")
    worker.on_doorbell(signal.SIGUSR2, None)


def state(layout: Layout) -> dict[str, Any]:
    return dict(json.loads(layout.handoff_state_file(4242).read_text()))


def test_finish_then_resume_then_finish_and_end_warm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(finish, "held_labels", lambda: ["acme.transcode[t-1]"])
    worker, consumer, lines, layout = hand_off(tmp_path)
    worker.tick()
    assert consumer.cancelled == [] and not layout.handoff_state_file(4242).exists()  # nothing asked yet

    ask(layout, worker, "finish")
    worker.tick()
    assert consumer.cancelled == ["video", "deploytool-canary-x"]
    assert state(layout)["state"] == "finishing" and state(layout)["held"] == ["acme.transcode[t-1]"]
    assert "celery warm shutdown" not in lines  # it still holds a task
    worker.on_sigterm(signal.SIGTERM, None)  # a stop of its unit while finishing changes nothing
    worker.tick()
    assert "celery warm shutdown" not in lines

    ask(layout, worker, "resume")
    worker.tick()
    assert consumer.added == ["video", "deploytool-canary-x"] and state(layout)["state"] == "resumed"
    assert any("hand-off undone" in line for line in lines)

    ask(layout, worker, "finish")
    worker.tick()
    assert consumer.cancelled == ["video", "deploytool-canary-x"] * 2
    worker.held = lambda: 0  # type: ignore[method-assign]
    worker.tick()
    assert lines.count("celery warm shutdown") == 1 and state(layout)["state"] == "finished"


def test_a_worker_still_busy_past_its_limit_reaps_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(finish, "held_labels", lambda: ["acme.transcode[t-1]"])
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    now = [1000.0]
    monkeypatch.setattr(finish.time, "monotonic", lambda: now[0])
    worker, _, lines, layout = hand_off(tmp_path)
    ask(layout, worker, "finish")
    worker.tick()
    now[0] += 179.0
    worker.tick()
    assert sent == []
    now[0] += 1.0
    worker.tick()
    worker.tick()
    assert sent == [(os.getpid(), signal.SIGQUIT)]  # once: celery's cold shutdown hands the task back
    assert state(layout)["state"] == "reaped" and "celery warm shutdown" not in lines


def test_without_a_request_file_the_doorbell_does_nothing(tmp_path: Path) -> None:
    worker, consumer, lines, layout = hand_off(tmp_path)
    worker.on_doorbell(signal.SIGUSR2, None)
    worker.tick()
    ask(layout, worker, "resume")  # nothing to resume
    worker.tick()
    assert consumer.cancelled == [] and consumer.added == [] and lines == []
