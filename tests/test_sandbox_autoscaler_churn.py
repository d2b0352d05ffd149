"""The sandbox autoscaler's churn loop (deploytool.sandbox.autoscaler): bounds, seeded choices, stop; a fake
fleet and a fake clock stand in for the sandbox (the scale actions themselves: tests/test_sandbox_churn.py)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from deploytool.sandbox.autoscaler import Action, Autoscaler
from deploytool.sandbox.errors import SandboxError


class FakeClock:
    """sleep() advances the time; the sleep after `steps` of them blocks until the test releases it (stopping
    the loop first): the loop then runs exactly `steps` steps."""

    def __init__(self, steps: int) -> None:
        self.t = 0.0
        self.steps = steps
        self.slept = 0
        self.done = threading.Event()
        self.hold = threading.Event()

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        self.slept += 1
        if self.slept > self.steps:
            self.done.set()
            self.hold.wait(10)


class CountingScaler(Autoscaler):
    """Group sizes in memory: every other part is the real Autoscaler's (step, churn, stop, summary)."""

    def __init__(self, sizes: dict[str, int], clock: FakeClock) -> None:
        super().__init__(backend=None, clock=clock)  # type: ignore[arg-type]
        self.sizes = dict(sizes)
        self.history: list[dict[str, int]] = []

    def asg_max(self, group: str) -> int:
        return 7

    def size(self, group: str) -> int:
        return self.sizes[group]

    def idle(self, group: str) -> list[str]:
        return ["i-idle"]

    def scale_out(self, group: str, n: int = 1) -> list[str]:
        self.sizes[group] += n
        self.actions.append(Action(self.clock.now(), "scale_out", group, f"i-{len(self.actions)}"))
        self.history.append(dict(self.sizes))
        return [f"i-{len(self.actions)}"]

    def scale_in(self, group: str, instance_id: str | None = None, *, wait: bool = True) -> Action:
        self.sizes[group] -= 1
        action = Action(self.clock.now(), "scale_in", group, f"i-{len(self.actions)}")
        self.actions.append(action)
        self.history.append(dict(self.sizes))
        return action


def run(seed: int, steps: int = 60) -> CountingScaler:
    clock = FakeClock(steps)
    scaler = CountingScaler({"email": 2, "video": 2}, clock)
    scaler.churn(5.0, seed=seed, bounds={"email": (1, 3), "video": (2, 4)}, follow_on_every_s=None)
    assert clock.done.wait(10)
    scaler._stop.set()
    clock.hold.set()
    scaler.stop(10)
    assert scaler._thread is not None and not scaler._thread.is_alive()
    return scaler


def test_churn_keeps_every_group_within_its_bounds_and_moves_both_ways() -> None:
    scaler = run(seed=7)
    assert len(scaler.history) == 60
    for sizes in scaler.history:
        assert 1 <= sizes["email"] <= 3 and 2 <= sizes["video"] <= 4
    summary = scaler.summary()
    assert summary["scale_out"] == summary["scale_in"] == 30  # they alternate: a release sees as many of each
    assert {a.group for a in scaler.actions} == {"email", "video"}
    assert all(b.at - a.at >= 5.0 for a, b in zip(scaler.actions, scaler.actions[1:], strict=False))


def test_churn_is_reproducible_with_its_seed() -> None:
    one, two = run(seed=3, steps=20), run(seed=3, steps=20)
    assert [(a.kind, a.group) for a in one.actions] == [(a.kind, a.group) for a in two.actions]
    assert len(one.actions) == 20  # one action a step: within these bounds a step never has nothing to do
    other = run(seed=4, steps=20)
    assert [(a.kind, a.group) for a in other.actions] != [(a.kind, a.group) for a in one.actions]


@pytest.mark.parametrize(
    ("bounds", "message"),
    [({"email": (3, 2)}, "need 0 <= min <= max"), ({"email": (1, 9)}, "above its ASG's MaxSize 7")],
)
def test_churn_refuses_bad_bounds(bounds: Any, message: str) -> None:
    scaler = CountingScaler({"email": 2}, FakeClock(1))
    with pytest.raises(SandboxError, match=message):
        scaler.churn(1.0, bounds=bounds)


def test_the_churn_halts_when_the_releases_last_wave_ends() -> None:
    """`fab sandbox --churn` scales only while the release's waves run: an instance launched after the release's
    last look would be the next release's (untagged), not this one's."""
    from deploytool.rollout.events import PlannedGroup, ReleaseStarted, WaveFinished
    from deploytool.sandbox.run import HaltAfterLastWave

    class Halts:
        halted = 0

        def halt(self) -> None:
            self.halted += 1

    scaler = Halts()
    watcher = HaltAfterLastWave(scaler)  # type: ignore[arg-type]
    groups = (PlannedGroup("email", 0, "AllAtOnce", "a"), PlannedGroup("video", 1, "OneAtATime", "b"))
    watcher.publish(ReleaseStarted("r", "v2", "sandbox", "deploy", groups, 0.0))
    watcher.publish(WaveFinished(0, True, 1.0))
    assert scaler.halted == 0
    watcher.publish(WaveFinished(1, True, 2.0))
    assert scaler.halted == 1
    failed = HaltAfterLastWave(Halts())  # type: ignore[arg-type]
    failed.publish(ReleaseStarted("r", "v2", "sandbox", "deploy", groups, 0.0))
    failed.publish(WaveFinished(0, False, 1.0))  # the release stops at a failed wave
    assert failed.scaler.halted == 1  # type: ignore[attr-defined]
