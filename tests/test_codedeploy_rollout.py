"""Releases through the CodeDeploy backend against the service simulator (botocore-validated), moto ASGs."""

from __future__ import annotations

import pytest

from deploytool.rollout.codedeploy import STOP_FAILURES_IGNORED
from deploytool.rollout.events import Checkpoint, GroupFinished
from deploytool.rollout.plan import PriorDeployment
from tests.builders import make_fleet
from tests.cdsim import seeded_durations
from tests.cdsim.env import codedeploy_env
from tests.rollout_helpers import DieAt, orchestrator, release, revision, set_up

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
        bad = env.asg_instances["asg-video"][0]  # the first: OneAtATime fails and rolls back
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
    fleet = make_fleet([{"name": "video", "strategy": "HalfAtATime"}], app={"codedeploy_agent": "2.1"})  # agents 2.1.0+
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


FULL_LIFECYCLE = ["ApplicationStop", "DownloadBundle", "BeforeInstall", "Install", "AfterInstall", "ApplicationStart"]


@pytest.mark.parametrize("agent", [None, "1.7.1"])
def test_restart_below_agent_2_1_redeploys_the_last_good_revision(agent: str | None) -> None:
    """deploymentMode RESTART needs CodeDeploy agent 2.1.0+: on an older (or undeclared) agent a restart is a normal
    deployment of the revision of the group's last SUCCESSFUL deployment, not of the latest one."""
    app = {"codedeploy_agent": agent} if agent else {}
    fleet = make_fleet([{"name": "video", "strategy": "OneAtATime"}], app=app)
    with codedeploy_env({"asg-video": 2}) as env:
        set_up(env.gateway, fleet)
        assert release(env, fleet, "v1").succeeded
        bad = env.asg_instances["asg-video"][0]  # the first: OneAtATime fails and rolls back
        env.sim.inject_failure(bad, "ValidateService")
        failed = release(env, fleet, "v2")
        assert not failed.succeeded and failed.group("video").rollback_deployment_id  # rolled back to v1
        env.sim.failures.pop(bad)
        registered = env.sim.calls["RegisterApplicationRevision"]
        result = release(env, fleet, "v2", mode="restart")
        assert result.succeeded, result.to_dict()
        restart = env.sim.deployments[result.group("video").deployment_id or ""]
        assert restart.mode == "STANDARD" and "deploymentMode" not in restart.request
        location = restart.request["revision"]["s3Location"]
        assert location["key"] == "deploytool/acme-workers/v1/v1sha.tgz" and location["eTag"] == "etag-v1"
        assert location["bundleType"] == "tgz"
        assert restart.request["ec2DeploymentOptions"] == {
            "autoScalingGroupProcessesToSuspend": ["AZRebalance", "ScheduledActions"]
        }
        assert env.sim.calls["RegisterApplicationRevision"] == registered  # a known revision: nothing registered
        for instance in restart.instances.values():  # every hook runs: the same code, restarted
            assert [name for name, _ in instance.plan][: len(FULL_LIFECYCLE)] == FULL_LIFECYCLE
        assert all("/v1/" in env.sim.instance_revision[i] for i in env.asg_instances["asg-video"])


def test_restart_of_a_group_never_deployed_is_refused_naming_it() -> None:
    fleet = make_fleet([{"name": "video", "strategy": "OneAtATime"}])
    with codedeploy_env({"asg-video": 2}) as env:
        set_up(env.gateway, fleet)
        result = release(env, fleet, "v1", mode="restart")
        assert not result.succeeded and env.sim.calls["CreateDeployment"] == 0
        assert "group video: nothing to restart: no deployment of it has succeeded yet" in result.group("video").error


def test_oneatatime_failing_on_its_last_instance_is_rolled_back_to_the_last_good_revision() -> None:
    """CodeDeploy calls OneAtATime with a failed LAST instance Succeeded (and makes it the group's last successful
    deployment, so its own rollback could only redeploy v2): deploytool deploys the last good revision itself."""
    fleet = make_fleet([{"name": "video", "strategy": "OneAtATime"}])
    with codedeploy_env({"asg-video": 3}) as env:
        set_up(env.gateway, fleet)
        assert release(env, fleet, "v1").succeeded
        last = env.asg_instances["asg-video"][-1]
        env.sim.inject_failure(last, "AfterInstall", version="v2")
        result = release(env, fleet, "v2", last_good=lambda group: revision("v1"))
        video = result.group("video")
        deployment = env.sim.deployments[video.deployment_id or ""]
        assert deployment.status == "Succeeded" and deployment.count("Failed") == 1  # CodeDeploy's word
        assert not deployment.rollback_info  # CodeDeploy did not roll it back
        rollback = env.sim.deployments[video.rollback_deployment_id or ""]
        assert "/v1/" in rollback.revision["s3Location"]["key"] and rollback.status == "Succeeded"
        assert rollback.request["autoRollbackConfiguration"] == {"enabled": False, "events": []}
        assert video.outcome == "failed" and video.rollback_status == "Succeeded"
        assert (
            f"1 of 3 instances failed (the backend called it Succeeded) ({last}); rolled back to v1 by" in video.error
        )
        assert [f.lifecycle_event for f in video.instance_failures] == ["AfterInstall"]
        assert all("/v1/" in env.sim.instance_revision[i] for i in env.asg_instances["asg-video"])


def test_a_group_without_instances_fails_with_one_clear_line() -> None:
    fleet = make_fleet([{"name": "email", "wave": 0}, {"name": "video", "wave": 1}])
    with codedeploy_env({"asg-email": 0, "asg-video": 1}) as env:
        set_up(env.gateway, fleet)
        result = release(env, fleet, "v1")
        email = result.group("email")
        assert (email.outcome, email.status, email.total) == ("failed", "Failed", 0)
        assert email.error == (
            "no instances to deploy to: the deployment group's ASG asg-email has none in service "
            "(CodeDeploy NO_INSTANCES); scale it up, or leave the group out with --groups"
        )
        assert result.group("video").outcome == "not-started"


def test_a_pending_stop_is_followed_until_the_deployment_is_stopped_and_rolled_back() -> None:
    """StopDeployment answers Pending while instances are in flight; the deployment says InProgress until they end
    their current event, then Stopped, and its rollback follows: the orchestrator waits for all of it."""
    fleet = make_fleet([{"name": "video", "strategy": "AllAtOnce"}, {"name": "reports", "strategy": "OneAtATime"}])
    with codedeploy_env({"asg-video": 1, "asg-reports": 4}) as env:
        set_up(env.gateway, fleet)
        assert release(env, fleet, "v1").succeeded
        env.sim.inject_failure(env.asg_instances["asg-video"][0], "DownloadBundle")  # fails early
        answers: list[str] = []
        stop = env.gateway.stop_deployment

        def recording_stop(deployment_id: str, *, rollback: bool) -> str:
            answers.append(stop(deployment_id, rollback=rollback))
            return answers[-1]

        env.gateway.stop_deployment = recording_stop  # type: ignore[method-assign]  # the backend's gateway
        result = release(env, fleet, "v2", on_failure="stop-all")
        reports = result.group("reports")
        assert answers == ["Pending"]
        stopped = env.sim.deployments[reports.deployment_id or ""]
        video_done = env.sim.deployments[result.group("video").deployment_id or ""].completed_at or 0.0
        assert stopped.completed_at is not None and stopped.completed_at > video_done  # stopped later, not at once
        assert (reports.outcome, reports.status, stopped.count("Failed")) == ("stopped", "Stopped", 1)
        assert reports.rollback_status == "Succeeded" and reports.rollback_deployment_id
        assert env.sim.deployments[reports.rollback_deployment_id].status == "Succeeded"


def test_ignore_stop_failures_sends_ignore_application_stop_failures_and_warns() -> None:
    fleet = make_fleet([{"name": "video", "strategy": "AllAtOnce"}])
    with codedeploy_env({"asg-video": 2}) as env:
        set_up(env.gateway, fleet)
        assert release(env, fleet, "v1").succeeded
        broken = env.asg_instances["asg-video"][0]
        env.sim.inject_failure(broken, "ApplicationStop")  # v1's stop script fails there
        failed = release(env, fleet, "v2").group("video")
        assert [(f.instance_id, f.lifecycle_event) for f in failed.instance_failures] == [(broken, "ApplicationStop")]
        assert "ignoreApplicationStopFailures" not in env.sim.deployments[failed.deployment_id or ""].request
        result = release(env, fleet, "v3", ignore_stop_failures=True)
        video = result.group("video")
        assert result.succeeded and (video.succeeded, video.failed) == (2, 0)
        assert env.sim.deployments[video.deployment_id or ""].request["ignoreApplicationStopFailures"] is True
        assert video.warnings == (STOP_FAILURES_IGNORED,)
        assert all("/v3/" in env.sim.instance_revision[i] for i in env.asg_instances["asg-video"])
