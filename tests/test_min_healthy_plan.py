"""A minimum of healthy hosts not below a group's size fails every deployment at once (CodeDeploy's rule): on a
codedeploy target, where the size is only known remotely, the rollout tasks refuse it before anything is
published or started (the fleet file refuses it on a local target: tests/test_config.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploytool import targets
from deploytool.config import Strategy
from deploytool.errors import UsageError
from deploytool.rollout import commands
from deploytool.rollout.plan import RolloutOptions, check_min_healthy
from deploytool.rollout.wiring import Output
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
