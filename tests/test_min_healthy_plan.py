"""A minimum of healthy hosts not below a group's size fails every deployment at once (CodeDeploy's rule): on a
codedeploy target, where the size is only known remotely, the rollout tasks refuse it before anything is
published or started (the fleet file refuses it on a local target: tests/test_config.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploytool import targets
from deploytool.config import Strategy
from deploytool.errors import UsageError
from deploytool.rollout import commands
from deploytool.rollout.plan import RolloutOptions, check_min_healthy
from deploytool.rollout.wiring import Output
from deploytool.strategy import (
    HEALTHY,
    UNHEALTHY,
    HealthPolicy,
    Verdict,
    batches,
    health_batches,
    health_policy,
    next_health,
    startable_split,
    unhealthy_first,
    verdict,
)
from tests.builders import make_fleet
from tests.rollout_helpers import World, sample_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with sample_world(tmp_path) as built:
        yield built


def with_strategy(world: World, group: str, strategy: Strategy) -> World:
    groups = tuple(g.model_copy(update={"strategy": strategy}) if g.name == group else g for g in world.fleet.groups)
    return dataclasses.replace(world, fleet=dataclasses.replace(world.fleet, groups=groups))


@pytest.mark.parametrize(
    ("strategy", "label", "minimum"),
    [
        (Strategy("HostCount", 3), "min 3 hosts", 3),
        (Strategy("FleetPercent", 70), "min 70%", 3),  # 70% of 3 rounds up to 3
    ],
)
@pytest.mark.parametrize("task", ["deploy", "restart"])
def test_a_minimum_not_below_the_asg_is_refused_before_anything_is_published_or_started(
    world: World, strategy: Strategy, label: str, minimum: int, task: str
) -> None:
    bad = with_strategy(world, "reports", strategy)  # the sample's reports ASG has 3 instances
    with pytest.raises(UsageError) as refused:
        if task == "deploy":
            bad.deploy("v1")
        else:
            commands.restart(bad.fleet, "production", bad.fleet.groups, RolloutOptions(), bad.services, Output(ci=True))
    assert str(refused.value) == (
        f"group 'reports' on target 'production': {label} needs {minimum} healthy host(s), not below the 3 "
        "instance(s) in service in ASG 'acme-reports-workers': CodeDeploy would fail the deployment at once; lower "
        "the group's strategy in the fleet file or scale the ASG"
    )
    assert world.env.sim.calls["CreateDeployment"] == 0
    assert world.services.store.history("production") == []  # nothing published, no release recorded


def test_a_minimum_below_the_asg_deploys(world: World) -> None:
    fine = with_strategy(world, "reports", Strategy("HostCount", 2))
    commands.setup(
        fine.fleet,
        targets.codedeploy(fine.fleet, "production"),
        world.env.gateway,
        world.services.console,
        dry_run=False,
    )
    result = fine.deploy("v1")
    assert result is not None and result.succeeded


def test_named_strategies_and_unknown_sizes_pass() -> None:
    fleet = make_fleet(
        [
            {"name": "a", "strategy": "HalfAtATime"},
            {"name": "b", "strategy": "OneAtATime"},
            {"name": "c", "strategy": {"min_healthy_hosts": 5}},
        ]
    )
    check_min_healthy("production", fleet.groups, {"a": 1, "b": 1})  # c: size not known, nothing to say
    with pytest.raises(UsageError, match=r"^group 'c' on target 'production': min 5 hosts needs 5"):
        check_min_healthy("production", fleet.groups, {"c": 5})


# --- per-instance health (deploytool.strategy): unhealthy first, not counted toward the minimum ------------------

STRATEGIES = st.one_of(
    st.sampled_from([Strategy("AllAtOnce"), Strategy("HalfAtATime"), Strategy("OneAtATime")]),
    st.integers(0, 12).map(lambda n: Strategy("HostCount", n)),
    st.integers(0, 99).map(lambda p: Strategy("FleetPercent", p)),
)


@pytest.mark.parametrize(
    ("strategy", "size", "unhealthy", "expected"),
    [
        # The API reference's nine instances: FLEET_PERCENT 40 keeps 4, five at a time; 2 unhealthy go first and
        # only 7 - 4 = 3 healthy ones may join them.
        (Strategy("FleetPercent", 40), 9, 2, [(2, 3), (0, 4)]),
        (Strategy("HostCount", 6), 9, 2, [(2, 1), (0, 3), (0, 3)]),  # 7 healthy - 6: one healthy with them
        (Strategy("HostCount", 6), 9, 4, [(3, 0), (1, 2), (0, 3)]),  # 5 healthy < 6: unhealthy only, 3 at a time
        (Strategy("OneAtATime"), 3, 1, [(1, 0), (0, 1), (0, 1)]),
        (Strategy("HalfAtATime"), 4, 4, [(2, 0), (2, 0)]),  # a fresh fleet: never deployed, all unhealthy
    ],
)
def test_the_plan_puts_unhealthy_instances_first_and_takes_down_healthy_ones_down_to_the_minimum(
    strategy: Strategy, size: int, unhealthy: int, expected: list[tuple[int, int]]
) -> None:
    assert health_batches(strategy, size, unhealthy) == expected
    assert batches(strategy, size, unhealthy) == [u + h for u, h in expected]


def test_unhealthy_first_keeps_each_part_in_order_and_counts_the_never_deployed_unhealthy() -> None:
    health = {"i-1": HEALTHY, "i-2": UNHEALTHY, "i-4": HEALTHY}  # i-3: never deployed
    assert unhealthy_first(["i-1", "i-2", "i-3", "i-4"], health) == ["i-2", "i-3", "i-1", "i-4"]
    assert next_health(None, "Succeeded") == HEALTHY
    assert next_health(HEALTHY, "Failed") == UNHEALTHY
    assert next_health(UNHEALTHY, "Skipped") == UNHEALTHY
    assert next_health(None, "Skipped") is None


def test_a_failed_instance_retried_first_under_one_at_a_time_fails_the_deployment_at_once() -> None:
    """Last time i-3 (the last instance) failed and OneAtATime still succeeded; now it is unhealthy, goes first,
    and failing again stops the deployment: the healthy instances left (2) are not above the minimum (2)."""
    policy = health_policy(Strategy("OneAtATime"), 3)
    assert startable_split(policy, failed=0, in_flight=0, pending=3, pending_unhealthy=1) == (1, 0)
    assert verdict(policy, succeeded=0, failed=1, in_flight=0, pending=2, pending_unhealthy=0) is Verdict.FAILED
    # had it succeeded, the other two follow one at a time
    assert startable_split(policy, failed=0, in_flight=0, pending=2, pending_unhealthy=0) == (0, 1)


def old_startable(policy: HealthPolicy, failed: int, in_flight: int, pending: int) -> int:
    """The rule before per-instance health (every instance healthy until it fails in this deployment)."""
    if policy.error or policy.fleet_size - failed < policy.required_successes:
        return 0
    return max(0, min(pending, policy.fleet_size - failed - in_flight - policy.min_healthy))


@settings(max_examples=300, deadline=None)
@given(strategy=STRATEGIES, size=st.integers(1, 15), data=st.data())
def test_a_simulated_deployment_keeps_the_minimum_of_healthy_instances_in_service(
    strategy: Strategy, size: int, data: st.DataObject
) -> None:
    """Drive a deployment with random per-instance outcomes and finish order: unhealthy instances all start before
    any healthy one, the healthy in service never drop below the minimum through a start, at most
    `fleet - minimum` are out of service, something starts whenever nothing runs and the verdict is not final,
    and the verdict is CodeDeploy's: at least the required successes (>= 1)."""
    policy = health_policy(strategy, size)
    health = data.draw(st.lists(st.booleans(), min_size=size, max_size=size), label="healthy at start")
    fails = data.draw(st.lists(st.booleans(), min_size=size, max_size=size), label="fails")
    order = unhealthy_first(list(range(size)), {i: HEALTHY if ok else None for i, ok in enumerate(health)})
    pending, running, done = list(order), [], {}
    while True:
        counts = {
            "succeeded": sum(1 for ok in done.values() if ok),
            "failed": sum(1 for ok in done.values() if not ok),
            "in_flight": len(running),
            "pending": len(pending),
            "pending_unhealthy": sum(1 for i in pending if not health[i]),
        }
        v = verdict(policy, **counts)
        if v is not Verdict.RUNNING:
            break
        del counts["succeeded"]
        u, h = startable_split(policy, **counts)
        assert u + h == old_startable(policy, counts["failed"], counts["in_flight"], counts["pending"])
        assert u <= counts["pending_unhealthy"] and (h == 0 or u == counts["pending_unhealthy"])
        healthy_in_service = size - counts["failed"] - len(running) - counts["pending_unhealthy"]
        assert h == 0 or healthy_in_service - h >= policy.min_healthy
        started, pending = pending[: u + h], pending[u + h :]
        running += started
        assert len(running) <= max(1, size - policy.min_healthy)
        assert running, "nothing runs and nothing may start, yet the verdict is not final"
        finished = running.pop(data.draw(st.integers(0, len(running) - 1), label="finishes"))
        done[finished] = not fails[finished]
    succeeded = sum(1 for ok in done.values() if ok)
    if v is Verdict.SUCCEEDED:
        assert not pending and not running and succeeded >= max(1, policy.required_successes)
    elif policy.error is None and not running and not pending:
        assert succeeded < policy.required_successes
