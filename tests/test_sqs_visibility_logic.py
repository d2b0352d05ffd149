"""The SQS visibility heartbeat's and the explicit release's own rules, with a stand-in for the transport's
client: batches of at most 10, a throttled call counted and retried at the next step, the cap on a task that
runs too long, handles SQS no longer knows dropped, and kombu's restore replaced only once shutdown began.
(tests/test_sqs_visibility.py runs both with real workers on a moto SQS server.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deploytool_instance.brokers.sqs_visibility import Held, ReleaseOnShutdown, VisibilityHeartbeat


class Throttled(Exception):
    response = {"Error": {"Code": "AWS.SimpleQueueService.RequestThrottled"}}


class Client:
    def __init__(self, fail: int = 0, gone: tuple[str, ...] = ()) -> None:
        self.fail = fail
        self.gone = gone
        self.batches: list[list[dict[str, Any]]] = []
        self.released: list[tuple[str, str, int]] = []

    def change_message_visibility_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        if self.fail:
            self.fail -= 1
            raise Throttled("slow down")
        self.batches.append(Entries)
        failed = [{"Id": e["Id"], "Code": "ReceiptHandleIsInvalid"} for e in Entries if e["ReceiptHandle"] in self.gone]
        return {"Successful": [], "Failed": failed}

    def change_message_visibility(self, QueueUrl: str, ReceiptHandle: str, VisibilityTimeout: int) -> None:
        self.released.append((QueueUrl, ReceiptHandle, VisibilityTimeout))


class Channel:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.restored: list[str] = []

    def canonical_queue_name(self, name: str) -> str:
        return name

    def sqs(self, queue: str | None = None) -> Client:
        return self.client

    def _restore(self, message: Any) -> None:
        self.restored.append(message.delivery_tag)


class Message:
    def __init__(self, tag: str) -> None:
        self.delivery_tag = tag
        self.delivery_info = {"sqs_queue": "http://sqs/q", "routing_key": "q"}


def heartbeat(tmp_path: Path, client: Client, now: list[float], held: int) -> tuple[VisibilityHeartbeat, list[str]]:
    lines: list[str] = []
    beat = VisibilityHeartbeat(10.0, 30, 360.0, tmp_path / "visibility.json", lines.append, clock=lambda: now[0])
    beat.channel = Channel(client)
    beat.held = {f"h{n}": Held("http://sqs/q", "q") for n in range(held)}
    return beat, lines


def test_held_messages_are_extended_in_batches_of_ten(tmp_path: Path) -> None:
    client = Client()
    beat, _ = heartbeat(tmp_path, client, [0.0], 23)
    beat.beat()
    assert [len(b) for b in client.batches] == [10, 10, 3]
    assert {e["VisibilityTimeout"] for b in client.batches for e in b} == {30}
    stats = json.loads((tmp_path / "visibility.json").read_text())
    assert (stats["calls"], stats["extended"], stats["failed_calls"]) == (3, 23, 0)


def test_a_throttled_call_is_counted_and_the_next_step_extends_again(tmp_path: Path) -> None:
    client = Client(fail=1)
    beat, lines = heartbeat(tmp_path, client, [0.0], 2)
    beat.beat()
    assert (beat.counters.failed_calls, beat.counters.extended) == (1, 0)
    assert lines == ["deploytool: visibility heartbeat: ChangeMessageVisibilityBatch on http://sqs/q failed: "
                     "AWS.SimpleQueueService.RequestThrottled"]  # fmt: skip
    beat.beat()
    assert (beat.counters.failed_calls, beat.counters.extended) == (1, 2)


def test_a_handle_sqs_no_longer_knows_is_dropped(tmp_path: Path) -> None:
    client = Client(gone=("h1",))
    beat, _ = heartbeat(tmp_path, client, [0.0], 3)
    beat.beat()
    assert sorted(beat.held) == ["h0", "h2"] and beat.counters.gone == 1


def test_a_task_running_past_its_time_limit_and_margin_is_no_longer_extended(tmp_path: Path) -> None:
    now = [0.0]
    client = Client()
    beat, lines = heartbeat(tmp_path, client, now, 2)
    beat.held["h0"].started = 0.0  # running; h1 is prefetched, not started: extended as long as the worker holds it
    now[0] = 361.0
    beat.beat()
    assert [e["ReceiptHandle"] for b in client.batches for e in b] == ["h1"]
    assert beat.counters.capped == 1 and "more than 360 s" in lines[0]


def test_kombus_restore_is_kept_until_shutdown_then_the_message_is_released_at_once(tmp_path: Path) -> None:
    client = Client()
    beat, _ = heartbeat(tmp_path, client, [0.0], 2)
    channel = Channel(client)
    release = ReleaseOnShutdown(lambda _: None, beat)
    release.attach(channel)
    channel._restore(Message("h0"))  # a task rejected with requeue while the worker runs: kombu's own restore
    assert channel.restored == ["h0"] and client.released == [] and "h0" not in beat.held
    release.begin()
    channel._restore(Message("h1"))  # cut off by the cold shutdown
    assert channel.restored == ["h0"] and client.released == [("http://sqs/q", "h1", 0)]
    assert beat.held == {} and beat.counters.released == 1
    release.attach(channel)  # a consumer restart attaches again: still one wrapper
    channel._restore(Message("h2"))
    assert len(client.released) == 2
