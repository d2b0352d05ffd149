"""Releases through the CodeDeploy backend against the service simulator (botocore-validated), moto ASGs."""

from __future__ import annotations

import pytest

from deploytool.rollout.events import Checkpoint, GroupFinished
from deploytool.rollout.plan import PriorDeployment
from tests.builders import make_fleet
from tests.cdsim import seeded_durations
from tests.cdsim.env import codedeploy_env
from tests.rollout_helpers import DieAt, orchestrator, release, set_up

FLEET = make_fleet(
    [
        {"name": "email", "strategy": "AllAtOnce", "wave": 0},
        {"name": "reports", "strategy": {"min_healthy_percent": 50}, "wave": 1, "suspend_terminate": True},
        {"name": "video", "strategy": "OneAtATime", "wave": 1},
    ]
)
SIZES = {"asg-email": 2, "asg-reports": 3, "asg-video": 3}


def test_a_release_goes_out_wave_by_wave_with_each_groups_config() -> None:
    with codedeploy_env(SIZES) as env:
        set_up(env.gateway, FLEET)
        result = release(env, FLEET, "v1")
        assert result.succeeded, result.to_dict()
        deployments = {d.group: d for d in env.sim.deployments.values()}
        email, reports, video = deployments["email"], deployments["reports"], deployments["video"]
        assert email.completed_at is not None and reports.created_at >= email.completed_at  # wave 1 after wave 0
        assert reports.created_at == video.created_at  # one wave: in parallel
        assert reports.config_name == "deploytool-min-healthy-percent-50"
        assert video.config_name == "CodeDeployDefault.OneAtATime"
        assert reports.request["revision"] == {
            "revisionType": "S3",
            "s3Location": {
                "bucket": "acme-deploy-artifacts",
                "key": "deploytool/acme-workers/v1/v1sha.tgz",
                "bundleType": "tgz",
                "eTag": "etag-v1",
            },
        }
        assert reports.request["ec2DeploymentOptions"] == {
            "autoScalingGroupProcessesToSuspend": ["AZRebalance", "ScheduledActions", "Terminate"]
        }
        assert video.request["ec2DeploymentOptions"] == {
            "autoScalingGroupProcessesToSuspend": ["AZRebalance", "ScheduledActions"]
        }
        assert env.sim.calls["RegisterApplicationRevision"] == 1
        assert env.sim.calls["GetDeployment"] == 0  # never a per-deployment waiter
        on_v1 = {i for i, key in env.sim.instance_revision.items() if "/v1/" in key}
        assert on_v1 == {i for ids in env.asg_instances.values() for i in ids}
        assert {g.group: (g.succeeded, g.total) for g in result.groups} == {
            "email": (2, 2),
            "reports": (3, 3),
            "video": (3, 3),
        }
        assert env.backend().group_state(FLEET.group("video")).last_successful_version == "v1"


def test_polling_batches_25_deployments_a_call() -> None:
    names = [f"g{n:02d}" for n in range(30)]
    fleet = make_fleet([{"name": n, "strategy": "AllAtOnce", "wave": 0} for n in names])
    with codedeploy_env({f"asg-{n}": 1 for n in names}) as env:
        set_up(env.gateway, fleet)
        orch = orchestrator(env, fleet, "v1")
        assert orch.run().succeeded
        batch = env.sim.calls["BatchGetDeployments"]
        assert orch.polls < batch <= 2 * orch.polls  # two calls a poll while more than 25 are in flight
        assert env.sim.calls["CreateDeployment"] == 30 and env.sim.calls["GetDeployment"] == 0


def test_a_failed_group_rolls_back_to_the_last_good_revision() -> None:
    fleet = make_fleet([{"name": "video", "strategy": "OneAtATime", "wave": 0}, {"name": "email", "wave": 1}])
    with codedeploy_env({"asg-video": 3, "asg-email": 1}) as env:
        set_up(env.gateway, fleet)
        assert release(env, fleet, "v1").succeeded
        bad = env.asg_instances["asg-video"][1]
        env.sim.inject_failure(bad, "ValidateService")
        result = release(env, fleet, "v2")
        video = result.group("video")
        assert video.outcome == "failed" and video.status == "Failed"
        assert video.rollback_deployment_id and video.rollback_status == "Succeeded"
        assert env.sim.deployments[video.rollback_deployment_id].creator == "codeDeployRollback"
        [failure] = video.instance_failures
        assert failure.instance_id == bad and failure.lifecycle_event == "ValidateService"
        assert "ScriptFailed deploytool/hooks/validateservice.sh" in failure.message
        assert result.group("email").outcome == "not-started"
        assert all("/v1/" in env.sim.instance_revision[i] for i in env.asg_instances["asg-video"])  # rolled back
        assert env.sim.calls["ListDeploymentTargets"] == 1  # instance detail for the failed group only


def test_stop_all_stops_the_other_deployments_with_rollback() -> None:
    fleet = make_fleet([{"name": "video", "strategy": "AllAtOnce"}, {"name": "reports", "strategy": "OneAtATime"}])
    with codedeploy_env({"asg-video": 1, "asg-reports": 4}) as env:
        set_up(env.gateway, fleet)
        assert release(env, fleet, "v1").succeeded
        env.sim.inject_failure(env.asg_instances["asg-video"][0], "ApplicationStart")
        result = release(env, fleet, "v2", on_failure="stop-all")
        reports = result.group("reports")
        assert reports.outcome == "stopped" and reports.status == "Stopped"
        stopped = env.sim.deployments[reports.deployment_id or ""]
        assert stopped.request["_stop_rollback"] is True and env.sim.calls["StopDeployment"] == 1
        assert reports.rollback_status == "Succeeded"
        assert not result.succeeded


def test_resume_after_the_orchestrator_dies_creates_no_second_deployment() -> None:
    fleet = make_fleet(
        [
            {"name": "email", "strategy": "AllAtOnce", "wave": 0},
            {"name": "reports", "wave": 1},
            {"name": "video", "wave": 1},
            {"name": "last", "wave": 2},
        ]
    )
    with codedeploy_env({"asg-email": 1, "asg-reports": 2, "asg-video": 4, "asg-last": 1}) as env:
        set_up(env.gateway, fleet)
        dying = DieAt(GroupFinished, nth=2)  # email done, reports done, video still running
        with pytest.raises(KeyboardInterrupt):
            release(env, fleet, "v1", reporter=dying)
        last = [e for e in dying.events.events if isinstance(e, Checkpoint)][-1]
        prior = {
            g: PriorDeployment(r.deployment_id, r.status, r.rollback_deployment_id) for g, r in last.deployments.items()
        }
        assert set(prior) == {"email", "reports", "video"}
        created = env.sim.calls["CreateDeployment"]
        result = release(env, fleet, "v1", prior=prior)
        assert result.succeeded
        assert env.sim.calls["CreateDeployment"] == created + 1  # only "last", never started before
        assert result.group("email").outcome == "already-deployed"
        assert result.group("video").attached and result.group("video").deployment_id == prior["video"].deployment_id


@pytest.mark.slow
def test_throttling_30_percent_of_calls_slows_but_never_fails_a_release() -> None:
    # botocore's retry backoff sleeps in real time: short lifecycles keep the number of calls (and the test) small.
    with codedeploy_env(SIZES, durations=seeded_durations(low=20, high=40)) as env:
        set_up(env.gateway, FLEET)
        env.sim.throttle_rate = 0.3
        before = sum(env.sim.calls.values())
        result = release(env, FLEET, "v1")
        assert result.succeeded
        calls, throttled = sum(env.sim.calls.values()) - before, sum(env.sim.throttled.values())
        assert throttled >= 5 and 0.25 < throttled / calls < 0.35  # 30% of the release's calls
        assert env.sim.throttled["BatchGetDeployments"] > 0


def test_allatonce_partial_failure_is_reported_as_a_failure() -> None:
    fleet = make_fleet([{"name": "email", "strategy": "AllAtOnce", "wave": 0}, {"name": "video", "wave": 1}])
    with codedeploy_env({"asg-email": 4, "asg-video": 1}) as env:
        set_up(env.gateway, fleet)
        env.sim.inject_failure(env.asg_instances["asg-email"][2], "ValidateService")
        result = release(env, fleet, "v1")
        email = result.group("email")
        assert email.status == "Succeeded"  # what CodeDeploy says
        assert email.outcome == "failed" and (email.succeeded, email.failed, email.total) == (3, 1, 4)
        assert email.rollback_deployment_id is None and len(email.instance_failures) == 1
        assert not result.succeeded and result.group("video").outcome == "not-started"


def test_restart_uses_restart_mode_without_a_revision() -> None:
    fleet = make_fleet([{"name": "video", "strategy": "HalfAtATime"}])
    with codedeploy_env({"asg-video": 4}) as env:
        set_up(env.gateway, fleet)
        assert release(env, fleet, "v1").succeeded
        result = release(env, fleet, "v1", mode="restart")
        assert result.succeeded
        restart = env.sim.deployments[result.group("video").deployment_id or ""]
        assert restart.mode == "RESTART" and "revision" not in restart.request
        assert restart.revision is not None and "/v1/" in restart.revision["s3Location"]["key"]
        assert [name for name, _ in next(iter(restart.instances.values())).plan] == [
            "ApplicationStop",
            "ApplicationStart",
            "ValidateService",
        ]


def test_redeploy_to_some_instances_updates_only_the_outdated_ones() -> None:
    fleet = make_fleet([{"name": "video", "strategy": "OneAtATime"}])
    with codedeploy_env({"asg-video": 3}) as env:
        set_up(env.gateway, fleet)
        assert release(env, fleet, "v1").succeeded
        stale = env.asg_instances["asg-video"][0]
        env.sim.instance_revision[stale] = "s3://elsewhere/old.tgz#x"  # drifted
        result = release(env, fleet, "v1", target_instances={"video": (stale,)})
        assert result.succeeded
        redeploy = env.sim.deployments[result.group("video").deployment_id or ""]
        assert list(redeploy.instances) == [stale] and redeploy.request["updateOutdatedInstancesOnly"] is True
