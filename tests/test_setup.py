"""`fab setup` planning and applying against the CodeDeploy simulator, with ASGs in moto."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from deploytool.config import CodeDeployTarget, Fleet, Strategy, load_fleet
from deploytool.errors import AwsError
from deploytool.rollout.setup import SetupConflict, apply_setup, describe, plan_setup
from tests.cdsim.env import CodeDeployEnv, codedeploy_env

ROOT = Path(__file__).resolve().parent.parent
ASGS = {"acme-email-workers": 2, "acme-reports-workers": 3, "acme-video-workers": 2}
READS = {"GetApplication", "ListDeploymentGroups", "BatchGetDeploymentGroups", "GetDeploymentConfig"}


@pytest.fixture
def env() -> Iterator[CodeDeployEnv]:
    with codedeploy_env(ASGS) as env:
        yield env


def production(fleet: Fleet) -> CodeDeployTarget:
    _, target = fleet.target("production")
    assert isinstance(target, CodeDeployTarget)
    return target


def test_first_plan_creates_everything_and_reads_only(env: CodeDeployEnv) -> None:
    fleet = load_fleet(ROOT / "deploy.toml")
    plan = plan_setup(fleet, production(fleet), env.gateway)
    assert [(a.kind, a.name) for a in plan.actions] == [
        ("create-application", "acme-workers"),
        ("create-config", "deploytool-min-healthy-percent-50"),
        ("create-group", "email"),
        ("create-group", "reports"),
        ("create-group", "video"),
    ]
    assert set(env.sim.calls) <= READS  # planning never writes
    assert describe(plan)[0] == "application acme-workers: 5 change(s)"
    assert "  create deployment config deploytool-min-healthy-percent-50" in describe(plan)


def test_apply_creates_groups_as_planned_and_a_second_run_plans_nothing(env: CodeDeployEnv) -> None:
    fleet = load_fleet(ROOT / "deploy.toml")
    target = production(fleet)
    apply_setup(plan_setup(fleet, target, env.gateway), env.gateway)
    video = env.gateway.get_deployment_group("acme-workers", "video")
    assert video is not None
    assert video["deploymentConfigName"] == "CodeDeployDefault.HalfAtATime"
    assert [a["name"] for a in video["autoScalingGroups"]] == ["acme-video-workers"]
    assert video["autoRollbackConfiguration"] == {
        "enabled": True,
        "events": ["DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_REQUEST"],
    }
    assert video["outdatedInstancesStrategy"] == "UPDATE" and video["terminationHookEnabled"] is True
    assert video["serviceRoleArn"] == target.service_role_arn
    config = env.gateway.get_deployment_config("deploytool-min-healthy-percent-50")
    assert config is not None and config["minimumHealthyHosts"] == {"type": "FLEET_PERCENT", "value": 50}

    writes = sum(n for op, n in env.sim.calls.items() if op not in READS)
    again = plan_setup(fleet, target, env.gateway)
    assert again.empty and describe(again) == ["application acme-workers: everything is set up; nothing to do"]
    apply_setup(again, env.gateway)
    assert sum(n for op, n in env.sim.calls.items() if op not in READS) == writes


def test_changed_settings_plan_updates_naming_what_changed(env: CodeDeployEnv) -> None:
    fleet = load_fleet(ROOT / "deploy.toml")
    target = production(fleet)
    apply_setup(plan_setup(fleet, target, env.gateway), env.gateway)
    email = fleet.group("email").model_copy(update={"alarms": ["email-errors"]})
    video = fleet.group("video").model_copy(update={"strategy": Strategy("HostCount", 1)})
    changed = replace(fleet, groups=(email, fleet.group("reports"), video))
    plan = plan_setup(changed, target.model_copy(update={"outdated_instances": "IGNORE"}), env.gateway)
    lines = {a.name: a.changes for a in plan.actions}
    assert lines["deploytool-min-healthy-hosts-1"] == ()
    assert lines["email"] == ("autoRollbackConfiguration", "outdatedInstancesStrategy", "alarmConfiguration")
    assert lines["video"] == ("deploymentConfigName", "outdatedInstancesStrategy")
    apply_setup(plan, env.gateway)
    info = env.gateway.get_deployment_group("acme-workers", "email")
    assert info is not None and info["alarmConfiguration"]["alarms"] == [{"name": "email-errors"}]
    assert plan_setup(changed, target.model_copy(update={"outdated_instances": "IGNORE"}), env.gateway).empty


def test_another_group_on_the_same_asg_is_a_conflict(env: CodeDeployEnv) -> None:
    fleet = load_fleet(ROOT / "deploy.toml")
    target = production(fleet)
    env.gateway.create_application("acme-workers")
    env.gateway.create_deployment_group(
        "acme-workers",
        "legacy-video",
        {"serviceRoleArn": target.service_role_arn, "autoScalingGroups": ["acme-video-workers"]},
    )
    expected = "ASG acme-video-workers (group video) already belongs to deployment group legacy-video of application"
    with pytest.raises(SetupConflict, match=re.escape(expected)):
        plan_setup(fleet, target, env.gateway)


def test_a_config_of_our_name_with_other_minimum_is_a_conflict(env: CodeDeployEnv) -> None:
    fleet = load_fleet(ROOT / "deploy.toml")
    env.gateway.create_deployment_config("deploytool-min-healthy-percent-50", {"type": "HOST_COUNT", "value": 1})
    with pytest.raises(SetupConflict, match="configs cannot be changed"):
        plan_setup(fleet, production(fleet), env.gateway)


def test_a_missing_asg_is_one_clear_line(env: CodeDeployEnv) -> None:
    fleet = load_fleet(ROOT / "deploy.toml")
    gone = replace(fleet, groups=(fleet.group("email").model_copy(update={"asg": "acme-nope"}),))
    with pytest.raises(AwsError, match="CreateDeploymentGroup acme-workers/email: InvalidAutoScalingGroupException"):
        apply_setup(plan_setup(gone, production(fleet), env.gateway), env.gateway)
