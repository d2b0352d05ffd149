"""SQS visibility, with real Celery workers of the sample app on a moto SQS server (tests/hooktools.py):
the heartbeat that lets a group run long tasks with a short visibility timeout, the hard kill it makes
cheap, and the explicit release of what a cold shutdown cuts off."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.broker_fixtures import BrokerSpec, queue_counts
from tests.hooktools import Instance, ProcessReaper, wait_for
from tests.test_hooks_brokers import BROKERS, make_fleet, worker_log_has

pytestmark = pytest.mark.slow
SQS = BROKERS[2:]


def received(instance: Instance, task_id: str) -> int:
    """How many times the instance's worker logged the task as received."""
    if not instance.worker_log.exists():
        return 0
    return instance.worker_log.read_text(errors="replace").count(f"[{task_id}] received")


def hard_kill(pid: int) -> None:
    """SIGKILL the worker's whole process group, as a power-off would: no shutdown code runs."""
    os.killpg(os.getpgid(pid), signal.SIGKILL)


@pytest.mark.parametrize("broker", SQS, indirect=True)
def test_a_task_cut_off_by_the_cold_shutdown_is_visible_again_at_once(
    broker: BrokerSpec, tmp_path: Path, reaper: ProcessReaper
) -> None:
    """kombu's own restore of an unacknowledged SQS message hides it again for wait_time_seconds (here 20 s);
    the worker releases it instead (visibility 0), so the next worker's receive gets it at once."""
    broker.options = dict(broker.options or {}, wait_time_seconds=20)
    fleet = make_fleet(broker, tmp_path, reaper, 1, ["video"], concurrency=1, drain_timeout=2)
    instance = fleet.instances[0]
    long = fleet.load.send("transcode_video", fleet.queues[0], 30.0)
    assert wait_for(lambda: worker_log_has(instance, f"[{long.task_id}] received"), 30)

    stop = instance.stop()
    assert stop is not None
    stop.check()
    assert "SIGQUIT: drain_timeout spent" in stop.output, stop.output
    # Straight after the worker exited: the one message is back in the queue, not hidden, and not copied.
    assert queue_counts(broker, fleet.queues[0]) == (1, 0)
    assert fleet.load.runs()[long.task_id] == 0


@pytest.mark.parametrize("broker", SQS, indirect=True)
def test_the_heartbeat_keeps_a_long_task_from_running_twice_and_a_hard_kill_hands_it_on_within_a_step(
    broker: BrokerSpec, tmp_path: Path, reaper: ProcessReaper
) -> None:
    """visibility_timeout 13 s, tasks of 25 and 40 s. Without the heartbeat the 25 s task would be delivered
    again at 13 s to the other instance and run twice. With it, it runs once; and when the worker running
    the 40 s task is SIGKILLed, the other instance receives it again within the visibility timeout, not
    after task_time_limit + 120 s."""
    fleet = make_fleet(
        broker, tmp_path, reaper, 2, ["video"], concurrency=1, task_time_limit=120, visibility_timeout=13,
        visibility_heartbeat=True, visibility_heartbeat_step=2,
    )  # fmt: skip
    first = fleet.load.send("transcode_video", fleet.queues[0], 25.0)
    assert fleet.load.wait_done(60, [first.task_id]) == (1, 0, 0)
    time.sleep(2.0)
    # Delivered once: a second delivery (at 13 s without the heartbeat) would show in a worker's log by now.
    assert sum(received(i, first.task_id) for i in fleet.instances) == 1

    stats: list[dict[str, Any]] = [
        json.loads(i.install_dir.joinpath("run", "visibility.json").read_text())
        for i in fleet.instances
        if i.install_dir.joinpath("run", "visibility.json").exists()
    ]
    assert stats and sum(s["extended"] for s in stats) >= 5, stats  # a beat every 2 s over 25 s
    assert all(s["failed_calls"] == 0 for s in stats), stats

    long = fleet.load.send("transcode_video", fleet.queues[0], 40.0)
    assert wait_for(lambda: any(worker_log_has(i, f"[{long.task_id}] received") for i in fleet.instances), 30)
    victim = next(i for i in fleet.instances if worker_log_has(i, f"[{long.task_id}] received"))
    other = next(i for i in fleet.instances if i is not victim)
    pid = victim.worker_pid()
    assert pid is not None
    time.sleep(5.0)  # a few beats in: the message's visibility now runs 13 s from the last one
    hard_kill(pid)
    # Within the 13 s timeout and a receive (40 s allows for a slow machine); the old rule's timeout: 240 s.
    assert wait_for(lambda: worker_log_has(other, f"[{long.task_id}] received"), 40)
    assert fleet.load.wait_done(60, [long.task_id]) == (1, 0, 0)
