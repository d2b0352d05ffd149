"""The orchestrator against an in-memory backend on a simulated clock."""

from __future__ import annotations

from typing import Any

import pytest

from deploytool.config import Group
from deploytool.errors import UsageError
from deploytool.model import Revision
from deploytool.rollout.events import (
    Checkpoint,
    Collect,
    GroupFinished,
    GroupProgressed,
    GroupStarted,
    PollFailed,
    ReleaseFinished,
    ReleaseStarted,
    WaveFinished,
    WaveStarted,
)
from deploytool.rollout.orchestrator import Orchestrator
from deploytool.rollout.plan import PriorDeployment, RolloutOptions, rollout_plan
from tests.fakes import FakeBackend, FakeClock, Script

REVISION = Revision("bucket", "deploytool/app/v2/abc.tgz", '"etag"', "v2", "abc")


def group(name: str, wave: int = 0, strategy: Any = "OneAtATime") -> Group:
    return Group(name=name, asg=f"asg-{name}", queues=["q"], wave=wave, strategy=strategy)


def orchestrate(
    groups: list[Group],
    scripts: dict[str, Script] | None = None,
    *,
    clock: FakeClock | None = None,
    prior: dict[str, PriorDeployment] | None = None,
    backend: FakeBackend | None = None,
    last_good: Any = None,
    **options: Any,
) -> tuple[Orchestrator, FakeBackend, Collect]:
    clock = clock or FakeClock()
    backend = backend or FakeBackend(clock, scripts or {})
    plan = rollout_plan(
        release_id="20250101T000000Z-v2",
        version="v2",
        target="prod",
        groups=groups,
        revision=REVISION,
        options=RolloutOptions(**options),
        prior=prior,
    )
    events = Collect()
    return Orchestrator(backend, plan, reporter=events, clock=clock, last_good=last_good), backend, events


def test_waves_run_in_order_and_groups_of_a_wave_in_parallel() -> None:
    orch, backend, _ = orchestrate(
        [group("a", 0), group("b", 0), group("c", 1)],
        {"a": Script(duration=100), "b": Script(duration=300), "c": Script(duration=50)},
    )
    result = orch.run()
    assert result.succeeded
    [a], [b], [c] = backend.created("a"), backend.created("b"), backend.created("c")
    assert a.created_at == b.created_at == 0  # same wave: together
    assert c.created_at >= b.end()  # next wave: after the slowest group of the first
    assert c.created_at - b.end() <= 10  # noticed within one poll interval at most
    assert [r.outcome for r in result.groups] == ["succeeded"] * 3


def test_one_shared_poll_for_every_deployment_in_flight() -> None:
    orch, backend, _ = orchestrate([group(n) for n in "abcd"], {n: Script(duration=120) for n in "abcd"})
    orch.run()
    ids = {d.deployment_id for d in backend.deployments.values()}
    assert set(backend.polls[0]) == ids  # all four in one call
    assert len(backend.polls) <= 17  # 120 s: 1, 2, 4, 8, then every 10 s


def test_poll_interval_starts_short_and_backs_off_to_ten_seconds() -> None:
    clock = FakeClock(ctrl_c_at=10**9)
    orch, _, _ = orchestrate([group("a")], {"a": Script(duration=200)}, clock=clock)
    orch.run()
    assert clock.intervals[:6] == [1, 2, 4, 8, 10, 10]
    assert max(clock.intervals) == 10


def test_max_parallel_limits_deployments_in_flight() -> None:
    names = "abcde"
    orch, backend, _ = orchestrate([group(n) for n in names], {n: Script(duration=60) for n in names}, max_parallel=2)
    result = orch.run()
    assert result.succeeded
    spans = [(d.created_at, d.end()) for d in backend.deployments.values()]
    for start, _ in spans:
        assert sum(1 for s, e in spans if s <= start < e) <= 2
    assert sorted(s for s, _ in spans)[2] >= 60  # the third waited for a free slot


def test_failed_group_rolls_back_and_later_waves_do_not_start() -> None:
    orch, backend, events = orchestrate(
        [group("a", 0), group("b", 0), group("c", 1)],
        {"a": Script(duration=60, fail=1, instances=3, rollback_s=40), "b": Script(duration=200)},
    )
    result = orch.run()
    assert not result.succeeded
    a, b, c = result.group("a"), result.group("b"), result.group("c")
    assert a.outcome == "failed" and a.failed == 1 and a.total == 3
    assert a.rollback_deployment_id and a.rollback_status == "Succeeded"
    assert [f.instance_id for f in a.instance_failures] == ["i-a-0"]
    assert a.instance_failures[0].lifecycle_event == "ValidateService"
    assert b.outcome == "succeeded"  # stop-wave: the wave's other groups finish
    assert c.outcome == "not-started" and backend.created("c") == []
    assert backend.results_asked == [a.deployment_id]  # instance detail only for the failing group
    rollback = backend.deployments[a.rollback_deployment_id]
    assert any(
        isinstance(e, GroupProgressed) and e.rollback and e.snapshot.deployment_id == rollback.deployment_id
        for e in events.events
    )
    assert [e.succeeded for e in events.events if isinstance(e, WaveFinished)] == [False]


def test_failure_stops_starting_the_rest_of_its_wave_under_max_parallel() -> None:
    orch, backend, _ = orchestrate(
        [group("a"), group("b"), group("c")],
        {"a": Script(duration=30, fail=1), "b": Script(duration=100)},
        max_parallel=2,
    )
    result = orch.run()
    assert result.group("c").outcome == "not-started" and backend.created("c") == []
    assert result.group("b").outcome == "succeeded"


def test_stop_all_stops_the_waves_other_deployments_with_rollback() -> None:
    orch, backend, _ = orchestrate(
        [group("a"), group("b"), group("c", 1)],
        {"a": Script(duration=30, fail=1), "b": Script(duration=600)},
        on_failure="stop-all",
    )
    result = orch.run()
    b = result.group("b")
    assert backend.stops == [(b.deployment_id, True)]
    assert b.outcome == "stopped" and b.rollback_status == "Succeeded"
    assert result.elapsed_s < 200  # did not wait for b's 600 s
    assert result.group("c").outcome == "not-started"


def test_allatonce_partial_failure_is_a_failure() -> None:
    orch, _, _ = orchestrate(
        [group("a", 0, "AllAtOnce"), group("b", 1)],
        {"a": Script(duration=60, instances=4, fail=3, fail_status="Succeeded")},
    )
    result = orch.run()
    a = result.group("a")
    assert a.status == "Succeeded" and a.outcome == "failed"
    assert "3 of 4 instances failed" in a.error
    assert len(a.instance_failures) == 3 and a.rollback_deployment_id is None
    assert not result.succeeded and result.group("b").outcome == "not-started"


V1 = Revision("bucket", "deploytool/app/v1/old.tgz", '"etag1"', "v1", "old")
PARTIAL = Script(duration=60, instances=4, fail=1, fail_status="Succeeded")  # AllAtOnce: one of four failed


@pytest.mark.parametrize("strategy", ["AllAtOnce", "OneAtATime"])
def test_a_partial_failure_is_rolled_back_to_the_last_good_revision(strategy: str) -> None:
    asked: list[str] = []

    def last_good(g: Group) -> Revision:
        asked.append(g.name)
        return V1

    clock = FakeClock()
    backend = FakeBackend(clock, {"a": PARTIAL}, versions={"v1": Script(duration=30, instances=4)})
    orch, _, events = orchestrate(
        [group("a", 0, strategy), group("b", 1)], backend=backend, clock=clock, last_good=last_good
    )
    result = orch.run()
    a = result.group("a")
    rollback = backend.deployments[a.rollback_deployment_id or ""]
    assert asked == ["a"] and rollback.version == "v1"  # the group's last good revision, deployed anew
    assert [r.revision for r in backend.starts][-1] == V1 and backend.starts[-1].auto_rollback is False
    assert a.outcome == "failed" and a.status == "Succeeded" and a.rollback_status == "Succeeded"
    assert "1 of 4 instances failed (the backend called it Succeeded) (i-a-0); rolled back to v1 by" in a.error
    assert [f.instance_id for f in a.instance_failures] == ["i-a-0"]
    progress = [e for e in events.events if isinstance(e, GroupProgressed) and e.group == "a"]
    assert progress[-1].rollback and progress[-1].snapshot.status == "Succeeded"  # followed to its end
    assert result.group("b").outcome == "not-started" and not result.succeeded


def test_a_partial_failure_is_kept_when_the_fleet_says_keep() -> None:
    orch, backend, _ = orchestrate(
        [group("a", 0, "AllAtOnce")], {"a": PARTIAL}, last_good=lambda g: V1, partial_failure="keep"
    )
    a = orch.run().group("a")
    assert a.outcome == "failed" and a.rollback_deployment_id is None and len(backend.starts) == 1
    assert a.error == (
        "1 of 4 instances failed (the backend called it Succeeded) (i-a-0); kept as they are ([rollout] "
        'partial_failure = "keep")'
    )


def test_a_partial_failure_without_a_last_good_revision_says_so() -> None:
    orch, backend, _ = orchestrate([group("a", 0, "AllAtOnce")], {"a": PARTIAL}, last_good=lambda g: None)
    a = orch.run().group("a")
    assert a.outcome == "failed" and a.rollback_deployment_id is None and len(backend.starts) == 1
    assert a.error.endswith("not rolled back: no earlier release succeeded for this group (its first release?)")


def test_a_resumed_release_follows_the_partial_rollback_an_earlier_run_started() -> None:
    clock = FakeClock(ctrl_c_at=100)  # the orchestrator "dies" while the rollback (60..360 s) runs
    backend = FakeBackend(clock, {"a": PARTIAL}, versions={"v1": Script(duration=300, instances=4)})
    orch, _, events = orchestrate([group("a", 0, "AllAtOnce")], backend=backend, clock=clock, last_good=lambda g: V1)
    with pytest.raises(KeyboardInterrupt):
        orch.run()
    prior = _record(events)
    assert prior["a"].rollback_deployment_id is not None
    started = len(backend.starts)
    again, _, _ = orchestrate(
        [group("a", 0, "AllAtOnce")], backend=backend, clock=clock, prior=prior, last_good=lambda g: V1
    )
    a = again.run().group("a")
    assert len(backend.starts) == started  # no second rollback: the recorded one is followed to its end
    assert a.rollback_deployment_id == prior["a"].rollback_deployment_id and a.rollback_status == "Succeeded"
    assert "rolled back to its last good revision by" in a.error


def test_partial_failure_option_is_checked() -> None:
    with pytest.raises(UsageError, match="partial_failure 'undo' is not allowed; allowed: rollback, keep"):
        RolloutOptions(partial_failure="undo")  # type: ignore[arg-type]


def test_start_error_fails_the_group_with_the_reason() -> None:
    orch, _, _ = orchestrate(
        [group("a"), group("b", 1)], {"a": Script(start_error="DeploymentGroupDoesNotExistException: run fab setup")}
    )
    result = orch.run()
    assert result.group("a").outcome == "failed"
    assert "DeploymentGroupDoesNotExistException" in result.group("a").error
    assert result.group("b").outcome == "not-started"


def test_throttled_polls_slow_the_release_but_do_not_fail_it() -> None:
    clock = FakeClock()
    backend = FakeBackend(clock, {"a": Script(duration=60)}, poll_errors=5)
    orch, _, events = orchestrate([group("a")], clock=clock, backend=backend)
    result = orch.run()
    assert result.succeeded
    assert sum(isinstance(e, PollFailed) for e in events.events) == 5


def test_events_of_a_two_wave_release_in_order() -> None:
    orch, _, events = orchestrate([group("a", 0), group("b", 1)], {"a": Script(duration=5), "b": Script(duration=5)})
    orch.run()

    def name(e: object) -> str | None:
        if isinstance(e, GroupStarted):
            return e.group
        return e.result.group if isinstance(e, GroupFinished) else None

    kinds = [(type(e).__name__, name(e)) for e in events.events if not isinstance(e, GroupProgressed)]
    assert kinds == [
        ("ReleaseStarted", None),
        ("WaveStarted", None),
        ("GroupStarted", "a"),
        ("Checkpoint", None),
        ("GroupFinished", "a"),
        ("Checkpoint", None),
        ("WaveFinished", None),
        ("WaveStarted", None),
        ("GroupStarted", "b"),
        ("Checkpoint", None),
        ("GroupFinished", "b"),
        ("Checkpoint", None),
        ("WaveFinished", None),
        ("ReleaseFinished", None),
    ]
    assert isinstance(events.events[0], ReleaseStarted)
    assert [g.name for g in events.events[0].groups] == ["a", "b"]
    final = events.events[-1]
    assert isinstance(final, ReleaseFinished) and final.result.succeeded


def _record(events: Collect) -> dict[str, PriorDeployment]:
    last = [e for e in events.events if isinstance(e, Checkpoint)][-1]
    return {
        name: PriorDeployment(ref.deployment_id, ref.status, ref.rollback_deployment_id)
        for name, ref in last.deployments.items()
    }


def test_resume_attaches_to_deployments_in_flight_and_skips_done_groups() -> None:
    clock = FakeClock(ctrl_c_at=150)  # the orchestrator "dies" at t=150
    scripts = {"a": Script(duration=100), "b": Script(duration=120), "c": Script(duration=400), "d": Script(60)}
    groups = [group("a", 0), group("b", 1), group("c", 1), group("d", 2)]
    orch, backend, events = orchestrate(groups, scripts, clock=clock)
    with pytest.raises(KeyboardInterrupt):
        orch.run()
    prior = _record(events)
    assert set(prior) == {"a", "b", "c"}
    started = len(backend.starts)

    again, _, events2 = orchestrate(groups, clock=clock, prior=prior, backend=backend)
    result = again.run()
    assert result.succeeded
    assert [r.group.name for r in backend.starts[started:]] == ["d"]  # no second deployment for a, b, c
    assert result.group("a").outcome == "already-deployed"
    assert result.group("c").outcome == "succeeded" and result.group("c").attached
    assert result.group("c").deployment_id == prior["c"].deployment_id
    attached = [e.group for e in events2.events if isinstance(e, GroupStarted) and e.attached]
    assert sorted(attached) == ["b", "c"]


def test_resume_redeploys_a_group_that_failed_or_moved_to_another_version() -> None:
    clock = FakeClock()
    backend = FakeBackend(clock, {"a": Script(duration=10, fail=1, rollback_s=5), "b": Script(duration=10)})
    orch, _, events = orchestrate([group("a"), group("b")], clock=clock, backend=backend)
    assert not orch.run().succeeded
    prior = _record(events)
    backend.last_good["b"] = "v3"  # someone deployed v3 to b since
    backend.scripts = {}
    again, _, _ = orchestrate([group("a"), group("b")], clock=clock, prior=prior, backend=backend)
    result = again.run()
    assert result.succeeded
    assert [r.group.name for r in backend.starts] == ["a", "b", "a", "b"]


def test_ctrl_c_then_stop_all_stops_and_rolls_back_everything_in_flight() -> None:
    clock = FakeClock(ctrl_c_at=30)
    orch, backend, _ = orchestrate(
        [group("a"), group("b"), group("c", 1)], {"a": Script(duration=300), "b": Script(duration=300)}, clock=clock
    )
    with pytest.raises(KeyboardInterrupt):
        orch.run()
    orch.stop_all()
    result = orch.run()
    assert result.stopped and not result.succeeded
    assert sorted(backend.stops) == sorted(
        (d.deployment_id, True) for d in backend.deployments.values() if d.rollback_of is None
    )
    assert {g.group: g.outcome for g in result.groups} == {"a": "stopped", "b": "stopped", "c": "not-started"}
    assert result.group("a").rollback_status == "Succeeded"


def test_ctrl_c_then_detach_leaves_deployments_running() -> None:
    clock = FakeClock(ctrl_c_at=30)
    orch, backend, events = orchestrate([group("a"), group("b", 1)], {"a": Script(duration=300)}, clock=clock)
    with pytest.raises(KeyboardInterrupt):
        orch.run()
    result = orch.detach()
    assert result.detached and not result.succeeded
    assert result.group("a").outcome == "detached" and result.group("b").outcome == "not-started"
    assert backend.stops == []
    assert isinstance(events.events[-1], ReleaseFinished)


def test_ctrl_c_then_run_again_keeps_following() -> None:
    clock = FakeClock(ctrl_c_at=30)
    orch, backend, _ = orchestrate([group("a")], {"a": Script(duration=100)}, clock=clock)
    with pytest.raises(KeyboardInterrupt):
        orch.run()
    assert orch.run().succeeded and len(backend.starts) == 1


def test_restart_mode_sends_no_revision() -> None:
    clock = FakeClock()
    backend = FakeBackend(clock)
    plan = rollout_plan(
        release_id="r", version="v2", target="prod", groups=[group("a")], revision=REVISION, mode="restart"
    )
    Orchestrator(backend, plan, clock=clock).run()
    assert backend.starts[0].mode == "restart" and backend.starts[0].revision is None


def test_bad_options_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="--on-failure"):
        RolloutOptions(on_failure="explode")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="--max-parallel"):
        RolloutOptions(max_parallel=-1)


def test_group_finished_event_carries_the_result() -> None:
    orch, _, events = orchestrate([group("a")], {"a": Script(duration=10, instances=3)})
    orch.run()
    finished = [e for e in events.events if isinstance(e, GroupFinished)]
    assert finished[0].result.succeeded == 3 and finished[0].result.total == 3
    assert [e.wave for e in events.events if isinstance(e, WaveStarted)] == [0]


@pytest.mark.parametrize("answer, outcome", [("stop", "stopped"), ("detach", "detached"), ("continue", "succeeded")])
def test_follow_asks_on_ctrl_c_and_does_what_was_answered(answer: str, outcome: str) -> None:
    from deploytool.rollout.interrupt import follow

    clock = FakeClock(ctrl_c_at=20)
    orch, backend, _ = orchestrate([group("a")], {"a": Script(duration=100)}, clock=clock)
    asked: list[bool] = []

    def ask() -> Any:
        asked.append(True)
        return answer

    result = follow(orch, ask)
    assert asked == [True] and result.group("a").outcome == outcome
    assert backend.stops == ([(result.group("a").deployment_id, True)] if answer == "stop" else [])


def test_a_second_ctrl_c_while_asking_detaches() -> None:
    from deploytool.rollout.interrupt import follow

    orch, _, _ = orchestrate([group("a")], {"a": Script(duration=100)}, clock=FakeClock(ctrl_c_at=20))

    def ask() -> Any:
        raise KeyboardInterrupt

    assert follow(orch, ask).detached


@pytest.mark.parametrize("second_ctrl_c", [False, True])
def test_deployments_of_this_process_are_stopped_and_followed_never_detached(second_ctrl_c: bool) -> None:
    """The sandbox's deployments run in this process (detachable=False): a detach would cut them off."""
    from io import StringIO

    from rich.console import Console

    from deploytool.rollout.interrupt import STOPPING_IN_PROCESS, console_prompt, follow

    orch, backend, _ = orchestrate([group("a")], {"a": Script(duration=100)}, clock=FakeClock(ctrl_c_at=20))
    out = StringIO()
    prompt = console_prompt(Console(file=out, width=300), interactive=False, detachable=False)

    def ask() -> Any:
        if second_ctrl_c:
            raise KeyboardInterrupt
        return prompt()

    result = follow(orch, ask, detachable=False)
    assert not result.detached and result.group("a").outcome == "stopped"
    assert backend.stops == [(result.group("a").deployment_id, True)]
    assert out.getvalue() == ("" if second_ctrl_c else STOPPING_IN_PROCESS + "\n")
