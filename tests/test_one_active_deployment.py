"""CodeDeploy's one active deployment per deployment group, as `fab deploy` meets it: a CreateDeployment on a group
another deployment holds fails with DeploymentLimitExceededException; the rollout fails that group with one line
naming the active deployment (no traceback), and the other groups of its wave go on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rollout_helpers import World, sample_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with sample_world(tmp_path) as built:
        yield built


def test_a_group_with_an_active_deployment_fails_with_one_line_naming_it(world: World) -> None:
    world.deploy("v1")
    sim = world.env.sim
    (key,) = [k for k in sim.groups if k[1] == "reports"]
    group = sim.groups[key]
    active = sim.create(
        group,
        group.target_revision,
        creator="user",
        at=sim.now(),
        description="someone else's deployment",
        request={},
        instance_ids=sim.instances_of(group.asgs[0]) or [],
        config_name="CodeDeployDefault.OneAtATime",
    )
    start = len(world.out.getvalue())
    result = world.deploy("v2")
    shown = world.out.getvalue()[start:]
    assert result is not None and not result.succeeded
    unwrapped = shown.replace("\n", "")  # the test console wraps at 80 columns; fab's CI console never does
    assert (
        f"] reports: failed: deployment {active.deployment_id} (someone else's deployment) that someone else started "
        "is in progress on group reports; deploytool does not override it: wait for it to end, or run again with "
        "--wait["
    ) in unwrapped
    assert shown.count("reports: failed") == 1
    assert "Traceback" not in shown
    assert "video: succeeded (2/2 instances ok)" in shown  # the rest of the wave went on
