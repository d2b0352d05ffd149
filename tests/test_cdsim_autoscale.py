"""The simulator's fleet moves: launch, follow-on and termination deployments CodeDeploy starts of its own, each
a real deployment (ListDeployments / BatchGetDeployments with its creator) that blocks its group."""

from __future__ import annotations

from typing import Any

import pytest

from deploytool.errors import AwsError
from deploytool.rollout.backend import DeployRequest
from deploytool.rollout.codedeploy import create_params, s3_revision
from tests.builders import make_fleet
from tests.cdsim.autoscale import Autoscaler
from tests.cdsim.env import CodeDeployEnv, codedeploy_env
from tests.rollout_helpers import release, revision, set_up

FLEET = make_fleet([{"name": "video", "strategy": "OneAtATime"}])
APP = "acme-workers"


def deployments(env: CodeDeployEnv) -> list[dict[str, Any]]:
    ids = env.gateway.list_deployments(APP, "video", [])
    return sorted(env.gateway.get_deployments(ids).values(), key=lambda d: d["createTime"])


def start(env: CodeDeployEnv, version: str) -> str:
    request = DeployRequest(FLEET.group("video"), revision(version), f"r-{version}")
    return env.gateway.create_deployment(APP, "video", create_params(request))


def run_until_idle(env: CodeDeployEnv, step: float = 30.0, limit: float = 7200.0) -> None:
    while limit > 0:
        env.clock.advance(step)
        limit -= step
        if not env.gateway.list_deployments(APP, "video", ["Created", "InProgress"]):
            return
    raise AssertionError("deployments never ended")


def test_a_new_instance_gets_a_launch_deployment_of_the_last_good_revision_before_it_is_in_service() -> None:
    with codedeploy_env({"asg-video": 2}) as env:
        set_up(env.gateway, FLEET)
        assert release(env, FLEET, "v1").succeeded
        scaler = Autoscaler(env.sim, env.boto.client("autoscaling"))
        [new] = scaler.scale_out("asg-video")
        assert new not in (env.sim.instances_of("asg-video") or [])  # not InService yet
        [launch] = env.gateway.list_deployments(APP, "video", ["Created", "InProgress"])
        info = env.gateway.get_deployments([launch])[launch]
        assert info["creator"] == "autoscaling"
        assert info["revision"] == s3_revision(revision("v1"))
        with pytest.raises(AwsError, match="already has an active"):
            start(env, "v2")  # one active deployment per group, whoever created it
        run_until_idle(env)
        assert env.gateway.get_deployments([launch])[launch]["status"] == "Succeeded"
        assert new in (env.sim.instances_of("asg-video") or [])
        assert "/v1/" in env.sim.instance_revision[new]
        start(env, "v2")  # the group is free again


def test_an_instance_launched_during_a_deployment_gets_a_follow_on_deployment_after_it() -> None:
    with codedeploy_env({"asg-video": 2}) as env:
        set_up(env.gateway, FLEET)
        assert release(env, FLEET, "v1").succeeded
        scaler = Autoscaler(env.sim, env.boto.client("autoscaling"))
        v2 = start(env, "v2")
        env.clock.advance(30)
        [new] = scaler.scale_out("asg-video")
        run_until_idle(env)
        creators = [(d["creator"], d["status"], d["deploymentId"]) for d in deployments(env)]
        assert [c[:2] for c in creators[-3:]] == [
            ("user", "Succeeded"),
            ("autoscaling", "Succeeded"),
            ("CodeDeployAutoUpdate", "Succeeded"),
        ]
        follow_on = creators[-1][2]
        assert list(env.sim.deployments[follow_on].instances) == [new]
        assert new not in env.sim.deployments[v2].instances  # it was not InService when v2 started
        assert "/v2/" in env.sim.instance_revision[new]
        # the launch (of v1) ended after v2 succeeded: the group's revision, what the next launch gets, stays v2
        assert "/v2/" in str(env.sim.groups[(APP, "video")].target_revision)


def test_with_outdated_instances_strategy_ignore_there_is_no_follow_on() -> None:
    with codedeploy_env({"asg-video": 2}) as env:
        set_up(env.gateway, FLEET)
        assert release(env, FLEET, "v1").succeeded
        env.sim.groups[(APP, "video")].settings["outdatedInstancesStrategy"] = "IGNORE"
        scaler = Autoscaler(env.sim, env.boto.client("autoscaling"))
        start(env, "v2")
        env.clock.advance(30)
        [new] = scaler.scale_out("asg-video")
        run_until_idle(env)
        assert "CodeDeployAutoUpdate" not in [d["creator"] for d in deployments(env)]
        assert "/v1/" in env.sim.instance_revision[new]  # left stale


def test_scale_in_with_the_termination_hook_runs_a_termination_deployment_then_terminates() -> None:
    with codedeploy_env({"asg-video": 3}) as env:
        set_up(env.gateway, FLEET)
        assert release(env, FLEET, "v1").succeeded
        env.sim.groups[(APP, "video")].settings["terminationHookEnabled"] = True
        scaler = Autoscaler(env.sim, env.boto.client("autoscaling"))
        gone = env.asg_instances["asg-video"][0]
        termination = scaler.scale_in("asg-video", gone)
        assert termination is not None
        info = env.gateway.get_deployments([termination])[termination]
        assert info["creator"] == "autoscalingTermination" and info["status"] in ("Created", "InProgress")
        assert gone not in (env.sim.instances_of("asg-video") or [])
        with pytest.raises(AwsError, match="already has an active"):
            start(env, "v2")
        run_until_idle(env)
        events = [
            e["lifecycleEventName"]
            for e in env.gateway.get_targets(termination, [gone])[0]["instanceTarget"]["lifecycleEvents"]
        ]
        assert events == ["ApplicationStop"]
        assert scaler.terminated == [gone]
        asg = env.boto.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=["asg-video"])
        assert gone not in [i["InstanceId"] for i in asg["AutoScalingGroups"][0]["Instances"]]


def test_scale_in_without_the_termination_hook_terminates_at_once() -> None:
    with codedeploy_env({"asg-video": 3}) as env:
        set_up(env.gateway, FLEET)
        assert release(env, FLEET, "v1").succeeded
        env.sim.groups[(APP, "video")].settings["terminationHookEnabled"] = False  # fab setup turns it on
        scaler = Autoscaler(env.sim, env.boto.client("autoscaling"))
        gone = env.asg_instances["asg-video"][0]
        assert scaler.scale_in("asg-video", gone) is None
        assert gone not in (env.sim.instances_of("asg-video") or [])
        assert not env.gateway.list_deployments(APP, "video", ["Created", "InProgress"])
