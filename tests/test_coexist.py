"""The orchestrator coexists with the deployments CodeDeploy starts of its own while the fleet scales, on the
simulator with its simulated clock: a scale-out landing before, during and after a group's deployment, a
termination during a release, someone else's deployment in a group's way (refused, or waited for with --wait)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from deploytool.aws.ec2 import Ec2Gateway
from deploytool.errors import AwsError, DeployFailed
from deploytool.model import TAG_RELEASE
from deploytool.rollout.backend import DeploymentSnapshot, DeploymentStatus, DeployRequest
from deploytool.rollout.codedeploy import CodeDeployBackend, create_params
from deploytool.rollout.coexist import FOLLOW_ON_GRACE_S, Coexist
from deploytool.rollout.commands import verdict
from deploytool.rollout.events import (
    Collect,
    Event,
    Fanout,
    GroupFinished,
    GroupStarted,
    GroupWaiting,
    PlannedGroup,
    ReleaseStarted,
    WaveStarted,
)
from deploytool.rollout.orchestrator import Orchestrator
from deploytool.rollout.plan import RolloutOptions, RolloutPlan, WavePlan, rollout_plan
from deploytool.rollout.progress import Board, PlainLines
from deploytool.rollout.result import GroupResult, RolloutResult
from deploytool.rollout.tagger import DeploymentTagger
from tests.builders import make_fleet
from tests.cdsim.autoscale import Autoscaler
from tests.cdsim.env import CodeDeployEnv, codedeploy_env
from tests.rollout_helpers import orchestrator, release, revision, sample_world, set_up
from tests.test_deploy_reconcile import Flow

FLEET = make_fleet(
    [
        {"name": "email", "strategy": "AllAtOnce", "wave": 0},
        {"name": "video", "strategy": "OneAtATime", "wave": 1},
    ]
)
SIZES = {"asg-email": 2, "asg-video": 3}
APP = "acme-workers"


class On:
    """A reporter that acts once, at the first event `when` accepts (the fleet moving at that moment)."""

    def __init__(self, when: Callable[[Event], bool], act: Callable[[], Any]) -> None:
        self.when, self.act, self.done = when, act, False
        self.value: Any = None

    def publish(self, event: Event) -> None:
        if not self.done and self.when(event):
            self.done = True
            self.value = self.act()


def wave(n: int) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, WaveStarted) and e.wave == n


def started(group: str) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, GroupStarted) and e.group == group


def finished(group: str) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, GroupFinished) and e.result.group == group


def run(env: CodeDeployEnv, version: str, *reporters: Any, **options: Any) -> tuple[RolloutResult, Collect, str]:
    """A release of `version` with plain progress lines, the tagger and `reporters`; its result, events, lines."""
    events, out = Collect(), io.StringIO()
    tagger = DeploymentTagger(Ec2Gateway(env.aws), env.backend(), now=lambda: _now(), say=lambda _: None)
    fanout = Fanout([events, PlainLines(Console(file=out, width=300)), *reporters])
    result = orchestrator(env, FLEET, version, reporter=fanout, **options).run()
    for event in events.events:  # tag as the wiring does, after the fact (same events, same order)
        tagger.publish(event)
    return result, events, out.getvalue()


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime(2025, 5, 1, tzinfo=UTC)


def on_version(env: CodeDeployEnv, instance_id: str, version: str) -> bool:
    return f"/{version}/" in env.sim.instance_revision.get(instance_id, "")


def release_tag(env: CodeDeployEnv, instance_id: str) -> str | None:
    [info] = Ec2Gateway(env.aws).describe_instances([instance_id])
    return info.tags.get(TAG_RELEASE)


def scaler(env: CodeDeployEnv) -> Autoscaler:
    return Autoscaler(env.sim, env.boto.client("autoscaling"))


def test_a_launch_deployment_in_a_groups_way_is_waited_for_shown_then_the_group_deploys() -> None:
    with codedeploy_env(SIZES) as env:
        set_up(env.gateway, FLEET)
        assert release(env, FLEET, "v1").succeeded
        fleet = scaler(env)
        out_before = On(wave(1), lambda: fleet.scale_out("asg-video"))  # just before video's deployment
        result, events, lines = run(env, "v2", out_before)
        [new] = out_before.value
        assert result.succeeded, result.to_dict()
        [waiting] = [e for e in events.events if isinstance(e, GroupWaiting)]
        launch = env.sim.deployments[waiting.deployment_id]
        assert launch.creator == "autoscaling" and waiting.what == "launch deployment"
        assert f"video: waiting for launch deployment {launch.deployment_id} on group video" in lines
        video = env.sim.deployments[result.group("video").deployment_id or ""]
        assert launch.completed_at is not None and video.created_at >= launch.completed_at
        assert new in video.instances  # in service once launched: the release reached it
        assert on_version(env, new, "v2") and release_tag(env, new) == "20250101T000000Z-v2"


def test_a_scale_out_during_a_groups_deployment_gets_a_follow_on_in_the_result_and_the_tags() -> None:
    with codedeploy_env(SIZES) as env:
        set_up(env.gateway, FLEET)
        assert release(env, FLEET, "v1").succeeded
        fleet = scaler(env)
        during = On(started("video"), lambda: fleet.scale_out("asg-video"))
        result, _, lines = run(env, "v2", during)
        [new] = during.value
        assert result.succeeded, result.to_dict()
        video = result.group("video")
        assert new not in env.sim.deployments[video.deployment_id or ""].instances  # launched on v1 meanwhile
        [follow_on] = video.follow_ons
        assert (follow_on.creator, follow_on.status, follow_on.succeeded) == ("CodeDeployAutoUpdate", "Succeeded", 1)
        assert list(env.sim.deployments[follow_on.deployment_id].instances) == [new]
        assert result.to_dict()["groups"][1]["follow_ons"][0]["deployment_id"] == follow_on.deployment_id
        assert on_version(env, new, "v2") and release_tag(env, new) == "20250101T000000Z-v2"
        assert f"video: CodeDeployAutoUpdate {follow_on.deployment_id} Succeeded (1/1 ok)" in lines


def test_a_scale_out_after_a_groups_deployment_gets_the_release_by_its_launch_deployment_and_tags() -> None:
    with codedeploy_env(SIZES) as env:
        set_up(env.gateway, FLEET)
        assert release(env, FLEET, "v1").succeeded
        fleet = scaler(env)
        after = On(finished("email"), lambda: fleet.scale_out("asg-email"))
        result, _, _ = run(env, "v2", after)
        [new] = after.value
        assert result.succeeded, result.to_dict()
        [launch] = result.group("email").follow_ons
        assert (launch.creator, launch.status) == ("autoscaling", "Succeeded")
        assert on_version(env, new, "v2") and release_tag(env, new) == "20250101T000000Z-v2"


def test_a_failed_follow_on_fails_its_group() -> None:
    with codedeploy_env(SIZES) as env:
        set_up(env.gateway, FLEET)
        assert release(env, FLEET, "v1").succeeded
        fleet = scaler(env)

        def scale_and_break() -> list[str]:
            new = fleet.scale_out("asg-video")
            env.sim.inject_failure(new[0], "ApplicationStart", creators=("CodeDeployAutoUpdate",))
            return new

        result, _, _ = run(env, "v2", On(started("video"), scale_and_break))
        video = result.group("video")
        assert video.outcome == "failed" and not result.succeeded
        assert "follow-on deployment" in video.error and "Failed (1/1 failed)" in video.error
        with pytest.raises(DeployFailed):
            verdict(result)


def test_a_launch_deployment_that_outlasts_the_wait_fails_the_group_with_one_line() -> None:
    with codedeploy_env(SIZES) as env:
        set_up(env.gateway, FLEET)
        assert release(env, FLEET, "v1").succeeded
        fleet = scaler(env)
        result, _, _ = run(env, "v2", On(wave(1), lambda: fleet.scale_out("asg-video")), wait_s=5.0)
        video = result.group("video")
        assert video.outcome == "failed" and video.deployment_id is None
        assert video.error.startswith("waited ") and "for launch deployment d-" in video.error
        assert "(--max-wait 5)" in video.error


def start_someone_elses(env: CodeDeployEnv) -> str:
    request = DeployRequest(FLEET.group("video"), revision("hotfix"), "x", description="hotfix by alice")
    return env.gateway.create_deployment(APP, "video", create_params(request))


def test_someone_elses_deployment_is_not_overridden_one_line_and_exit_1() -> None:
    with codedeploy_env(SIZES) as env:
        set_up(env.gateway, FLEET)
        assert release(env, FLEET, "v1").succeeded
        theirs = start_someone_elses(env)
        result, _, lines = run(env, "v2")
        video = result.group("video")
        assert video.outcome == "failed" and video.deployment_id is None
        assert video.error == (
            f"deployment {theirs} (hotfix by alice) that someone else started is in progress on group video; "
            "deploytool does not override it: wait for it to end, or run again with --wait"
        )
        assert sum(theirs in line for line in lines.splitlines()) == 1 and "Traceback" not in lines
        assert env.sim.deployments[theirs].status in ("Created", "InProgress")  # untouched
        assert env.sim.calls["StopDeployment"] == 0
        with pytest.raises(DeployFailed):
            verdict(result)


def test_with_wait_someone_elses_deployment_is_waited_for() -> None:
    with codedeploy_env(SIZES) as env:
        set_up(env.gateway, FLEET)
        assert release(env, FLEET, "v1").succeeded
        theirs = start_someone_elses(env)
        result, events, lines = run(env, "v2", wait_for_others=True)
        assert result.succeeded, result.to_dict()
        assert any(isinstance(e, GroupWaiting) and e.deployment_id == theirs for e in events.events)
        assert f"waiting for deployment someone else started {theirs} on group video" in lines
        ended = env.sim.deployments[theirs].completed_at
        assert ended is not None
        assert env.sim.deployments[result.group("video").deployment_id or ""].created_at >= ended


def test_a_termination_during_a_release_is_waited_for_and_the_instance_left_out() -> None:
    with codedeploy_env(SIZES) as env:
        set_up(env.gateway, FLEET)  # fab setup turns the termination hook on
        assert release(env, FLEET, "v1").succeeded
        fleet = scaler(env)
        gone = env.asg_instances["asg-video"][0]
        scale_in = On(wave(1), lambda: fleet.scale_in("asg-video", gone))
        result, _, lines = run(env, "v2", scale_in)
        assert result.succeeded, result.to_dict()
        termination = env.sim.deployments[scale_in.value]
        assert termination.creator == "autoscalingTermination"
        assert f"video: waiting for termination deployment {termination.deployment_id} on group video" in lines
        video = env.sim.deployments[result.group("video").deployment_id or ""]
        assert gone not in video.instances and fleet.terminated == [gone]
        assert sorted(video.instances) == sorted(env.asg_instances["asg-video"][1:])


class LostAnswer(CodeDeployBackend):
    """CreateDeployment reaches the service, but its answer is lost once (a read timeout after the write)."""

    lost = False

    def start(self, request: DeployRequest) -> str:
        deployment_id = super().start(request)
        if not self.lost and request.group.name == "video":
            self.lost = True
            raise AwsError(f"CreateDeployment acme-workers/video: read timeout (created {deployment_id})")
        return deployment_id


def test_a_deployment_of_this_very_request_whose_answer_was_lost_is_adopted_not_started_twice() -> None:
    with codedeploy_env(SIZES) as env:
        set_up(env.gateway, FLEET)
        plan = rollout_plan(
            release_id="20250101T000000Z-v1",
            version="v1",
            target="production",
            groups=FLEET.groups,
            revision=revision("v1"),
        )
        backend = LostAnswer(env.gateway, application=APP)
        result = Orchestrator(backend, plan, clock=env.clock).run()
        assert backend.lost and result.succeeded, result.to_dict()
        [video] = [d for d in env.sim.deployments.values() if d.group == "video"]
        assert result.group("video").deployment_id == video.deployment_id


def test_fab_deploy_with_a_scale_out_mid_release_tags_the_follow_on_and_ends_with_a_clean_reconcile(
    tmp_path: Path,
) -> None:
    """The whole `fab deploy` (publish, rollout, tags, final reconcile on DuckDB): an instance the ASG adds while
    video deploys comes up on v1, gets CodeDeploy's follow-on to v2, and the release's tags: no drift."""
    with sample_world(tmp_path) as world:
        flow = Flow(world, tmp_path / "mirror")
        flow.deploy("v1")
        fleet = Autoscaler(world.env.sim, world.env.boto.client("autoscaling"))
        during = On(started("video"), lambda: fleet.scale_out("acme-video-workers"))
        world.services.extra_reporters.append(during)
        done = flow.deploy("v2")
        [new] = during.value
        assert done.result is not None and done.result.succeeded, done.result
        [follow_on] = done.result.group("video").follow_ons
        assert follow_on.creator == "CodeDeployAutoUpdate" and follow_on.status == "Succeeded"
        assert done.report is not None and not done.report.has_drift
        video = next(g for g in done.report.groups if g.group == "video")
        assert (video.expected_version, video.instances, video.on_expected) == ("v2", 3, 3)
        assert on_version(world.env, new, "v2") and release_tag(world.env, new) == done.result.release_id
        text = world.out.getvalue()
        assert f"video: CodeDeployAutoUpdate {follow_on.deployment_id} Succeeded (1/1 ok)" in text
        assert "tags: video: 1 instance(s) tagged deploytool:version=v2" in text


def test_the_live_table_shows_what_a_group_waits_for() -> None:
    board = Board()
    board.apply(ReleaseStarted("r1", "v2", "production", "deploy", (PlannedGroup("video", 1, "OneAtATime", "a"),), 0.0))
    board.apply(GroupWaiting("video", "d-000000042", "launch deployment", 1.0))
    assert board.rows["video"].status == "waiting for launch deployment d-000000042"
    board.apply(GroupStarted("video", 1, "d-000000043", False, 50.0))
    assert board.rows["video"].status == "Created"


class ScriptedDeployments:
    """A backend whose group_deployments answers from a script, one answer a call (the last one repeats)."""

    def __init__(self, *answers: list[DeploymentSnapshot]) -> None:
        self.answers, self.calls = list(answers), 0

    def group_deployments(self, group: Any, *, active_only: bool, created_after: float | None = None) -> Any:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return [s for s in answer if created_after is None or (s.created_at or 0) >= created_after]


def settle_after(backend: ScriptedDeployments, own: DeploymentSnapshot) -> tuple[GroupResult, float]:
    clock = {"now": 100.0}

    def sleep(seconds: float) -> None:
        clock["now"] += seconds

    group = FLEET.group("video")
    plan = RolloutPlan("r-v2", "v2", "production", revision("v2"), (WavePlan(0, (group,)),), RolloutOptions())
    coexist = Coexist(backend, plan, emit=lambda _: None, now=lambda: clock["now"], sleep=sleep)  # type: ignore[arg-type]
    mine = GroupResult("video", 0, "OneAtATime", "succeeded", own.deployment_id, "Succeeded", 3, 0, 0, 3)
    [result] = coexist.settle([(mine, own)], skip=False)
    return result, clock["now"] - 100.0


def snap(did: str, creator: str, status: DeploymentStatus, version: str, created_at: float) -> DeploymentSnapshot:
    done = status != "InProgress"
    return DeploymentSnapshot(
        did, "video", status, succeeded=int(done), in_progress=int(not done), creator=creator,
        version=version, created_at=created_at,
    )  # fmt: skip


def test_a_follow_on_that_appears_after_the_launch_it_follows_ended_is_still_followed() -> None:
    """A launch of v1 (an instance launched while video deployed v2) ends; CodeDeploy creates the follow-on a few
    seconds later, not in the same instant. The release looks again until it appears and keeps it in the result."""
    own = snap("d-own", "user", "Succeeded", "v2", 10.0)
    launch_running = snap("d-launch", "autoscaling", "InProgress", "v1", 20.0)
    launch_done = snap("d-launch", "autoscaling", "Succeeded", "v1", 20.0)
    follow_running = snap("d-follow", "CodeDeployAutoUpdate", "InProgress", "v2", 40.0)
    follow_done = snap("d-follow", "CodeDeployAutoUpdate", "Succeeded", "v2", 40.0)
    backend = ScriptedDeployments(
        [launch_running], [launch_done], [launch_done], [launch_done, follow_running], [launch_done, follow_done]
    )
    result, _ = settle_after(backend, own)
    assert [(f.deployment_id, f.creator, f.status) for f in result.follow_ons] == [
        ("d-follow", "CodeDeployAutoUpdate", "Succeeded")
    ]
    assert result.outcome == "succeeded"


def test_a_launch_of_the_old_revision_with_no_follow_on_is_waited_for_only_the_grace() -> None:
    """outdatedInstancesStrategy IGNORE: no follow-on ever comes; the release stops looking after the grace (the
    reconcile then reports the instance), instead of waiting --max-wait."""
    own = snap("d-own", "user", "Succeeded", "v2", 10.0)
    backend = ScriptedDeployments([snap("d-launch", "autoscaling", "Succeeded", "v1", 20.0)])
    result, waited = settle_after(backend, own)
    assert result.follow_ons == () and result.outcome == "succeeded"
    assert FOLLOW_ON_GRACE_S <= waited <= FOLLOW_ON_GRACE_S + RolloutOptions().poll_max_s
