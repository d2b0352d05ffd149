"""The `local` backend: CodeDeploy's strategies, failure thresholds and rollback, through real hooks.

Concurrency is what the hooks themselves observed: each instance's BeforeInstall writes a
`begin` timestamp and its ValidateService an `end`; the most overlapping [begin, end] windows is
the number of instances that were out of service at once. Facts from
../shared/reference/codedeploy.md and the MinimumHealthyHosts reference (nine instances,
HOST_COUNT 6: three at a time; FLEET_PERCENT 40: five at a time).
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from deploytool.aws.s3 import S3Gateway
from deploytool.aws.session import AwsSession
from deploytool.config import Strategy
from deploytool.model import Revision
from deploytool.rollout.backend import DeployRequest
from deploytool.rollout.events import Collect
from deploytool.rollout.orchestrator import Orchestrator
from deploytool.rollout.plan import PriorDeployment, RolloutOptions, rollout_plan
from deploytool.rollout.resume import resolve
from deploytool.sandbox.backend import LocalBackend
from deploytool.sandbox.errors import DeploymentLimitExceeded, SandboxError
from deploytool.sandbox.owner import Owner, process_start_time
from deploytool.sandbox.state import SandboxState
from tests.builders import make_fleet, sandbox_target
from tests.sandbox_helpers import FIXTURE_APP, aws, make_backend, sh, upload, write_bundle

__all__ = ["aws"]

WAIT_S = 120.0


def strategy_bundle(
    tmp_path: Path, tag: str, *, hold_s: float = 0.4, rendezvous: int = 0, fail_file: str = "fail", gate: str = ""
) -> Path:
    """Hooks that journal each instance's begin (BeforeInstall) and end (ValidateService). With `rendezvous`, an
    instance's BeforeInstall waits (up to 30 s) until that many instances of its deployment have begun, so that the
    instances the backend lets run at once overlap however slowly a loaded machine starts them: the concurrency
    measured is then the backend's, not the scheduler's (an instance that ended before the last of its batch had
    begun made this test flaky). With `gate`, BeforeInstall waits (up to 20 s) while the file tmp_path/gate exists."""
    journal, fail = tmp_path / "journal", tmp_path / fail_file
    stamp = f'echo "{{what}} $DEPLOYTOOL_INSTANCE_ID {tag} $DEPLOYMENT_ID $(date +%s.%N)" >> {journal}'
    wait = (
        f'\nn=0; while [ "$(grep -c "^begin [^ ]* [^ ]* $DEPLOYMENT_ID " {journal})" -lt {rendezvous} ] '
        '&& [ "$n" -lt 600 ]; do sleep 0.05; n=$((n+1)); done'
        if rendezvous > 1
        else ""
    )
    if gate:
        wait += f'\nn=0; while [ -e {tmp_path / gate} ] && [ "$n" -lt 400 ]; do sleep 0.05; n=$((n+1)); done'
    return write_bundle(
        tmp_path / f"{tag}.tgz",
        {
            "app/version.txt": tag,
            "hooks/stop.sh": sh(stamp.format(what="stop")),
            "hooks/begin.sh": sh(stamp.format(what="begin") + wait + f"\nsleep {hold_s}"),
            "hooks/end.sh": sh(
                stamp.format(what="end") + f'\ngrep -qx "$DEPLOYTOOL_INSTANCE_ID" {fail} 2>/dev/null && exit 1\nexit 0'
            ),
            "appspec.yml": "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: /opt/fixture/app\n"
            "file_exists_behavior: OVERWRITE\nhooks:\n"
            "  ApplicationStop:\n    - location: hooks/stop.sh\n      timeout: 30\n"
            "  BeforeInstall:\n    - location: hooks/begin.sh\n      timeout: 30\n"
            "  ValidateService:\n    - location: hooks/end.sh\n      timeout: 30\n",
        },
    )


def journal(tmp_path: Path) -> list[list[str]]:
    path = tmp_path / "journal"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def max_concurrency(tmp_path: Path, deployment_id: str) -> int:
    marks = sorted(
        (float(t), 1 if what == "begin" else -1)
        for what, _iid, _tag, did, t in journal(tmp_path)
        if did == deployment_id and what in ("begin", "end")
    )
    level = peak = 0
    for _, step in marks:
        level += step
        peak = max(peak, level)
    return peak


class Setup:
    def __init__(self, tmp_path: Path, aws: AwsSession, strategy: Any, size: int) -> None:
        self.tmp_path = tmp_path
        self.fleet = make_fleet(
            [{"name": "web", "strategy": strategy}],
            root=tmp_path,
            app=FIXTURE_APP,
            targets=sandbox_target({"web": size}),
        )
        self.group = self.fleet.group("web")
        self.backend: LocalBackend = make_backend(self.fleet, aws, tmp_path / "sb")
        self.s3 = S3Gateway(aws)
        self.ids = [i.instance_id for i in self.backend.fleet.instances(self.group)]

    def fail(self, indexes: list[int]) -> list[str]:
        chosen = [self.ids[i] for i in indexes]
        (self.tmp_path / "fail").write_text("".join(f"{iid}\n" for iid in chosen))
        return chosen

    def revision(self, tag: str, **kw: Any) -> Revision:
        return upload(self.s3, strategy_bundle(self.tmp_path, tag, **kw), tag)

    def deploy(self, revision: Revision | None, **kw: Any) -> str:
        return self.backend.start(
            DeployRequest(self.group, revision, release_id=f"r-{revision and revision.version}", **kw)
        )

    def installed(self, iid: str) -> str:
        return (self.tmp_path / "sb/instances/web" / iid / "opt/fixture/app/version.txt").read_text()


# (strategy, instances, failing instances in start order, status, succeeded, failed, skipped, at once)
CASES = [
    ("OneAtATime", 3, [], "Succeeded", 3, 0, 0, 1),
    ("OneAtATime", 3, [0], "Failed", 0, 1, 2, 1),
    ("OneAtATime", 3, [2], "Succeeded", 2, 1, 0, 1),  # a failure of the last instance still succeeds
    ("HalfAtATime", 4, [], "Succeeded", 4, 0, 0, 2),
    ("HalfAtATime", 5, [], "Succeeded", 5, 0, 0, 2),  # half rounded down at a time
    ("HalfAtATime", 4, [0], "Succeeded", 3, 1, 0, 2),  # success needs half rounded up
    ("HalfAtATime", 4, [0, 1], "Failed", 0, 2, 2, 2),
    ("AllAtOnce", 3, [0], "Succeeded", 2, 1, 0, 3),
    ("AllAtOnce", 3, [0, 1], "Succeeded", 1, 2, 0, 3),  # CodeDeploy: one success is enough
    ("AllAtOnce", 2, [0, 1], "Failed", 0, 2, 0, 2),
    ({"min_healthy_hosts": 6}, 9, [], "Succeeded", 9, 0, 0, 3),
    ({"min_healthy_percent": 40}, 9, [], "Succeeded", 9, 0, 0, 5),  # 40% of 9 rounds up to 4
    ({"min_healthy_percent": 50}, 3, [], "Succeeded", 3, 0, 0, 1),  # 50% of 3 rounds up to 2
    ({"min_healthy_hosts": 0}, 2, [0, 1], "Failed", 0, 2, 0, 2),  # at least one must succeed
]


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "size", "failing", "status", "ok", "failed", "skipped", "at_once"), CASES)
def test_strategy_batches_and_failure_thresholds(
    tmp_path: Path,
    aws: AwsSession,
    strategy: Any,
    size: int,
    failing: list[int],
    status: str,
    ok: int,
    failed: int,
    skipped: int,
    at_once: int,
) -> None:
    setup = Setup(tmp_path, aws, strategy, size)
    bad = setup.fail(failing)
    did = setup.deploy(setup.revision("v1", rendezvous=at_once))
    snap = setup.backend.wait(did, WAIT_S)
    assert (snap.status, snap.succeeded, snap.failed, snap.skipped) == (status, ok, failed, skipped), snap.error
    assert max_concurrency(tmp_path, did) == at_once
    results = {r.instance_id: r for r in setup.backend.instance_results(did)}
    assert sorted(i for i, r in results.items() if r.status == "Failed") == sorted(bad)
    ran = {iid for what, iid, *_ in journal(tmp_path) if what == "begin"}
    assert ran == {i for i, r in results.items() if r.status != "Skipped"}
    assert snap.all_succeeded == (failed == 0 and skipped == 0)
    if status == "Failed":
        assert snap.error.startswith(f"{failed} of {size} instances failed")
        assert (
            "failed at ValidateService: Script at specified location: hooks/end.sh failed with exit code 1"
            in snap.error
        )


def test_a_minimum_not_below_the_fleet_fails_at_once(tmp_path: Path, aws: AwsSession) -> None:
    setup = Setup(tmp_path, aws, "OneAtATime", 3)
    # The fleet file refuses this minimum on a target of 3 (deploytool.config); the backend still fails it at once,
    # as CodeDeploy does, should a deployment ask for it (e.g. after the group shrank).
    setup.group = setup.group.model_copy(update={"strategy": Strategy("HostCount", 3)})
    snap = setup.backend.wait(setup.deploy(setup.revision("v1")), WAIT_S)
    assert (snap.status, snap.skipped) == ("Failed", 3)
    assert snap.error.startswith("minimum healthy hosts 3 (min 3 hosts) is not below the fleet size 3")
    assert journal(tmp_path) == []


@pytest.mark.slow
def test_a_failing_validate_service_fails_the_group_per_its_minimum_and_rolls_back(
    tmp_path: Path, aws: AwsSession
) -> None:
    setup = Setup(tmp_path, aws, "OneAtATime", 3)
    v1 = setup.revision("v1")
    first = setup.backend.wait(setup.deploy(v1), WAIT_S)
    assert first.all_succeeded
    bad = setup.fail([0])[0]
    failed_id = setup.deploy(setup.revision("v2"))
    failed = setup.backend.wait(failed_id, WAIT_S)
    assert (failed.status, failed.failed, failed.skipped) == ("Failed", 1, 2)
    assert failed.rollback_deployment_id is not None
    (tmp_path / "fail").write_text("")  # v1 is healthy on that instance
    rollback = setup.backend.wait(failed.rollback_deployment_id, WAIT_S)
    assert (rollback.status, rollback.creator, rollback.succeeded) == ("Succeeded", "codeDeployRollback", 3)
    assert [setup.installed(iid) for iid in setup.ids] == ["v1", "v1", "v1"]
    stops = [
        (iid, tag) for what, iid, tag, did, _ in journal(tmp_path) if what == "stop" and did == rollback.deployment_id
    ]
    assert (bad, "v2") in stops  # v2 was installed there: its own stop script runs first
    state = setup.backend.group_state(setup.group)
    assert state.last_successful_version == "v1" and state.active_deployment_id is None
    details = {p.instance_id: p for p in setup.backend.instance_results(failed_id)}
    assert details[bad].lifecycle_event == "ValidateService"
    assert "hooks/end.sh failed with exit code 1" in details[bad].message

    # The next fab task (another process) attaches anew: it reads these finished deployments from the records.
    later = LocalBackend(
        setup.backend.fleet, SandboxState(tmp_path / "sb/state", "fixture-app"), s3=setup.s3, app=setup.fleet.app
    )
    ids = [failed_id, rollback.deployment_id]
    assert later.poll([*ids, "d-UNKNOWN00"]) == setup.backend.poll(ids)
    assert [(p.instance_id, p.status) for p in later.instance_results(failed_id)] == [
        (p.instance_id, p.status) for p in setup.backend.instance_results(failed_id)
    ]


@pytest.mark.slow
def test_one_failure_within_the_minimum_keeps_the_group_and_does_not_roll_back(tmp_path: Path, aws: AwsSession) -> None:
    setup = Setup(tmp_path, aws, "HalfAtATime", 4)
    setup.backend.wait(setup.deploy(setup.revision("v1")), WAIT_S)
    setup.fail([3])
    snap = setup.backend.wait(setup.deploy(setup.revision("v2")), WAIT_S)
    assert (snap.status, snap.succeeded, snap.failed, snap.rollback_deployment_id) == ("Succeeded", 3, 1, None)
    assert not snap.all_succeeded  # deploytool's own verdict


@pytest.mark.slow
def test_no_rollback_without_an_earlier_success(tmp_path: Path, aws: AwsSession) -> None:
    setup = Setup(tmp_path, aws, "OneAtATime", 1)
    setup.fail([0])
    snap = setup.backend.wait(setup.deploy(setup.revision("v1", hold_s=0)), WAIT_S)
    assert snap.status == "Failed" and snap.rollback_deployment_id is None
    assert snap.error.endswith("; no earlier successful revision to roll back to")


def test_group_deployments_are_its_own_active_then_ended_ones(tmp_path: Path, aws: AwsSession) -> None:
    """The sandbox's minimal Backend.group_deployments: the deployments this backend started (the orchestrator
    asks it when a start is refused: deploytool.rollout.coexist)."""
    setup = Setup(tmp_path, aws, "OneAtATime", 1)
    before = time.time() - 1
    did = setup.deploy(setup.revision("v1", hold_s=0.5), description="deploytool deploy r-v1")
    [active] = setup.backend.group_deployments(setup.group, active_only=True)
    assert (active.deployment_id, active.creator, active.version) == (did, "user", "v1")
    assert active.description == "deploytool deploy r-v1" and (active.created_at or 0) >= before
    setup.backend.wait(did, WAIT_S)
    assert setup.backend.group_deployments(setup.group, active_only=True) == []
    assert [s.deployment_id for s in setup.backend.group_deployments(setup.group, active_only=False)] == [did]
    assert setup.backend.group_deployments(setup.group, active_only=False, created_after=time.time() + 5) == []


@pytest.mark.slow
def test_stop_lets_the_running_script_finish_and_starts_nothing_more(tmp_path: Path, aws: AwsSession) -> None:
    setup = Setup(tmp_path, aws, "OneAtATime", 3)
    did = setup.deploy(setup.revision("v1", hold_s=1.0))
    with pytest.raises(
        DeploymentLimitExceeded, match=f"^The Deployment Group 'web' already has an active Deployment '{did}'"
    ):
        setup.deploy(setup.revision("v1b"))
    while (snap := setup.backend.poll([did])[did]).current_event != "BeforeInstall":
        time.sleep(0.01)
    assert snap.in_progress == 1
    setup.backend.stop(did, rollback=False)
    snap = setup.backend.wait(did, WAIT_S)
    assert (snap.status, snap.succeeded, snap.failed, snap.skipped) == ("Stopped", 0, 1, 2)  # stopped counts as failed
    assert snap.rollback_deployment_id is None
    stopped = next(p for p in setup.backend.instance_results(did) if p.status == "Failed")
    assert stopped.message.startswith("stopped: the deployment was stopped")
    assert [w for w, iid, *_ in journal(tmp_path) if iid == stopped.instance_id] == ["begin"]  # its script finished


@pytest.mark.slow
def test_restart_target_instances_and_scale_out(tmp_path: Path, aws: AwsSession) -> None:
    setup = Setup(tmp_path, aws, "AllAtOnce", 2)
    with pytest.raises(SandboxError, match="nothing to restart"):
        setup.deploy(None, mode="restart")
    setup.backend.wait(setup.deploy(setup.revision("v1", hold_s=0)), WAIT_S)
    restart = setup.backend.wait(setup.deploy(None, mode="restart"), WAIT_S)
    assert restart.all_succeeded
    events = [(what, did) for what, _i, _t, did, _ in journal(tmp_path) if did == restart.deployment_id]
    assert sorted(w for w, _ in events) == ["end", "end", "stop", "stop"]  # no BeforeInstall: no download/install

    only = setup.backend.wait(setup.deploy(setup.revision("v2", hold_s=0), target_instances=(setup.ids[1],)), WAIT_S)
    assert only.total == 1 and only.all_succeeded
    assert [setup.installed(iid) for iid in setup.ids] == ["v1", "v2"]

    setup.backend.fleet.scale_out(setup.group, 1)
    launched = setup.backend.sync()
    assert len(launched) == 1
    snap = setup.backend.wait(launched[0], WAIT_S)
    assert (snap.creator, snap.succeeded) == ("autoscaling", 1)
    new = (set(i.instance_id for i in setup.backend.fleet.instances(setup.group)) - set(setup.ids)).pop()
    assert setup.installed(new) == "v2"  # the group's last successful revision


def _in_flight_elsewhere(setup: Setup, deployment_id: str, owner: Owner, creator: str = "user") -> None:
    """What `fab deploy` (or, creator autoscaling, the churn of `fab sandbox --churn`) in another process records
    when it starts a deployment of the group."""
    setup.backend.state.started(
        "web",
        {
            "deployment_id": deployment_id,
            "owner": owner.to_dict(),
            "creator": creator,
            "mode": "deploy",
            "version": "v1",
            "release_id": "r-v1" if creator == "user" else "",
            "exclusive": creator == "user",
        },
    )


@pytest.mark.slow
def test_a_launch_deployment_another_process_runs_blocks_a_user_deployment_and_is_listed(
    tmp_path: Path, aws: AwsSession
) -> None:
    """One active deployment per group across the processes attached to the sandbox, CodeDeploy's own included: a
    launch deployment the autoscaler of another process runs refuses `fab deploy` here, and ListDeployments (what
    the release's coexist logic reads to wait for it) shows it with its creator."""
    setup = Setup(tmp_path, aws, "OneAtATime", 1)
    revision = setup.revision("v1", hold_s=0)
    live = subprocess.Popen(["sleep", "60"])
    try:
        owner = Owner(socket.gethostname(), live.pid, process_start_time(live.pid))
        _in_flight_elsewhere(setup, "d-LAUNCH001", owner, creator="autoscaling")
        with pytest.raises(DeploymentLimitExceeded, match="already has an active Deployment 'd-LAUNCH001'"):
            setup.deploy(revision)
        [active] = setup.backend.group_deployments(setup.group, active_only=True)
        assert (active.deployment_id, active.creator, active.status) == ("d-LAUNCH001", "autoscaling", "InProgress")
        assert setup.backend.instance_results("d-LAUNCH001") == []  # its instances' statuses are the other's
    finally:
        live.kill()
        live.wait()
    assert setup.backend.group_deployments(setup.group, active_only=True) == []  # its process is gone: abandoned
    assert setup.backend.wait(setup.deploy(revision), WAIT_S).all_succeeded


@pytest.mark.slow
def test_a_deployment_whose_process_is_gone_is_abandoned_and_a_resume_deploys_the_group_again(
    tmp_path: Path, aws: AwsSession
) -> None:
    setup = Setup(tmp_path, aws, "OneAtATime", 1)
    revision = setup.revision("v1", hold_s=0)
    host = socket.gethostname()
    live = subprocess.Popen(["sleep", "60"])
    try:
        _in_flight_elsewhere(setup, "d-LIVE00001", Owner(host, live.pid, process_start_time(live.pid)))
        snap = setup.backend.poll(["d-LIVE00001"])["d-LIVE00001"]
        assert (snap.status, snap.done) == ("InProgress", False)  # its process still runs it
        with pytest.raises(
            DeploymentLimitExceeded,
            match="^The Deployment Group 'web' already has an active Deployment 'd-LIVE00001' "
            f".run by another process: pid {live.pid}",
        ):
            setup.deploy(revision)
    finally:
        live.kill()
        live.wait()
    snap = setup.backend.poll(["d-LIVE00001"])["d-LIVE00001"]
    assert (snap.status, snap.done, snap.all_succeeded) == ("Abandoned", True, False)
    assert snap.error == f"the process that ran it (pid {live.pid} on host {host}) is gone"
    me = Owner.current()
    _in_flight_elsewhere(setup, "d-REUSED001", Owner(host, me.pid, (me.started or 0) + 1))  # pid since reused
    assert setup.backend.poll(["d-REUSED001"])["d-REUSED001"].status == "Abandoned"

    plan = rollout_plan(
        release_id="20250101T000000Z-v1",
        version="v1",
        target="sandbox",
        groups=[setup.group],
        revision=revision,
        options=RolloutOptions(poll_min_s=0.1, poll_max_s=0.2),
        prior={"web": PriorDeployment("d-LIVE00001", "InProgress")},
    )
    assert resolve(setup.backend, plan) == {}  # neither followed nor done: deployed again
    result = Orchestrator(setup.backend, plan, reporter=Collect()).run()
    [group] = result.groups
    assert (group.outcome, group.attached) == ("succeeded", False) and group.deployment_id != "d-LIVE00001"
    assert setup.installed(setup.ids[0]) == "v1"


def version_bundle(tmp_path: Path, tag: str, *, stop: str = "exit 0", validate: str = "exit 0") -> Path:
    return write_bundle(
        tmp_path / f"{tag}.tgz",
        {
            "app/version.txt": tag,
            "hooks/stop.sh": sh(stop),
            "hooks/end.sh": sh(validate),
            "appspec.yml": "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: /opt/fixture/app\n"
            "file_exists_behavior: OVERWRITE\nhooks:\n"
            "  ApplicationStop:\n    - location: hooks/stop.sh\n      timeout: 30\n"
            "  ValidateService:\n    - location: hooks/end.sh\n      timeout: 30\n",
        },
    )


@pytest.mark.slow
def test_a_failing_previous_stop_script_fails_the_instance_unless_stop_failures_are_ignored(
    tmp_path: Path, aws: AwsSession
) -> None:
    setup = Setup(tmp_path, aws, "AllAtOnce", 2)
    v1 = upload(setup.s3, version_bundle(tmp_path, "v1", stop="echo cannot drain >&2; exit 5"), "v1")
    assert setup.backend.wait(setup.deploy(v1), WAIT_S).all_succeeded  # first install: no ApplicationStop
    v2 = upload(setup.s3, version_bundle(tmp_path, "v2"), "v2")
    failed = setup.backend.wait(setup.deploy(v2, auto_rollback=False), WAIT_S)
    assert (failed.status, failed.failed) == ("Failed", 2)
    details = setup.backend.instance_results(failed.deployment_id)
    assert {(p.lifecycle_event, p.message.splitlines()[0]) for p in details} == {
        ("ApplicationStop", "Script at specified location: hooks/stop.sh failed with exit code 5")
    }
    assert [setup.installed(i) for i in setup.ids] == ["v1", "v1"]

    ignored = setup.backend.wait(setup.deploy(v2, auto_rollback=False, ignore_stop_failures=True), WAIT_S)
    assert ignored.all_succeeded and [setup.installed(i) for i in setup.ids] == ["v2", "v2"]
    assert sorted(ignored.warnings) == [
        f"{i}: ApplicationStop failed and was ignored (ignoreApplicationStopFailures): Script at specified location: "
        "hooks/stop.sh failed with exit code 5; the previous revision's worker may still run"
        for i in sorted(setup.ids)
    ]


@pytest.mark.slow
def test_allatonce_succeeded_with_a_failed_instance_is_rolled_back_by_the_orchestrator(
    tmp_path: Path, aws: AwsSession
) -> None:
    """The sandbox produces CodeDeploy's partial success (AllAtOnce: one of two instances failed, Succeeded); the
    orchestrator rolls the group back to its last good revision (partial_failure "rollback")."""
    setup = Setup(tmp_path, aws, "AllAtOnce", 2)
    v1 = upload(setup.s3, version_bundle(tmp_path, "v1"), "v1")
    assert setup.backend.wait(setup.deploy(v1), WAIT_S).all_succeeded
    bad = setup.ids[0]
    v2 = upload(setup.s3, version_bundle(tmp_path, "v2", validate=f'[ "$DEPLOYTOOL_INSTANCE_ID" != {bad} ]'), "v2")
    plan = rollout_plan(
        release_id="20250101T000000Z-v2",
        version="v2",
        target="sandbox",
        groups=[setup.group],
        revision=v2,
        options=RolloutOptions(poll_min_s=0.05, poll_max_s=0.2),
    )
    result = Orchestrator(setup.backend, plan, reporter=Collect(), last_good=lambda group: v1).run()
    web = result.group("web")
    assert (web.status, web.succeeded, web.failed, web.outcome) == ("Succeeded", 1, 1, "failed")
    assert web.rollback_deployment_id and web.rollback_status == "Succeeded"
    assert f"(the backend called it Succeeded) ({bad}); rolled back to v1 by {web.rollback_deployment_id}" in web.error
    assert [setup.installed(i) for i in setup.ids] == ["v1", "v1"]


def another_process(setup: Setup) -> LocalBackend:
    """A backend with its own state reader, as a second `fab` process attached to the same sandbox has."""
    b = setup.backend
    return LocalBackend(
        b.fleet,
        SandboxState(setup.tmp_path / "sb" / "state", b.app.name),
        s3=b.s3,
        app=b.app,
        timing=b.timing,
        worker_stop_grace_s=1.0,
    )


def begun(tmp_path: Path, deployment_id: str) -> list[str]:
    return [iid for what, iid, _tag, did, _t in journal(tmp_path) if what == "begin" and did == deployment_id]


@pytest.mark.slow
def test_failed_instances_go_first_next_time_and_do_not_count_toward_the_minimum(
    tmp_path: Path, aws: AwsSession
) -> None:
    """min 3 hosts of 5: two at a time. The last two fail the first deployment (3 successes: it succeeds). In the
    next one, started by another process, they are unhealthy (the state keeps per-instance health): both go first,
    alone, since only 3 healthy instances are in service, not above the minimum."""
    setup = Setup(tmp_path, aws, {"min_healthy_hosts": 3}, 5)
    bad = setup.fail([3, 4])
    first = setup.backend.wait(setup.deploy(setup.revision("v1", hold_s=0.2)), WAIT_S)
    assert (first.status, first.succeeded, first.failed) == ("Succeeded", 3, 2)
    assert setup.backend.state.instance_health("web") == {
        iid: "Unhealthy" if iid in bad else "Healthy" for iid in setup.ids
    }
    setup.fail([])
    later = another_process(setup)
    did = later.start(DeployRequest(setup.group, setup.revision("v2", hold_s=0.2), release_id="r-v2"))
    second = later.wait(did, WAIT_S)
    assert second.all_succeeded
    assert sorted(begun(tmp_path, did)[:2]) == sorted(bad)
    assert max_concurrency(tmp_path, did) == 2
    assert set(later.state.instance_health("web").values()) == {"Healthy"}


@pytest.mark.slow
def test_a_failed_last_instance_goes_first_next_time_and_fails_one_at_a_time(tmp_path: Path, aws: AwsSession) -> None:
    """OneAtATime: the last instance failing still succeeds; next time it is unhealthy and goes first, and its
    failing again fails the deployment at once (CodeDeploy's verdict: 2 healthy left, not above the minimum 2)."""
    setup = Setup(tmp_path, aws, "OneAtATime", 3)
    (bad,) = setup.fail([2])
    first = setup.backend.wait(setup.deploy(setup.revision("v1", hold_s=0)), WAIT_S)
    assert (first.status, first.succeeded, first.failed) == ("Succeeded", 2, 1)
    second = setup.backend.wait(setup.deploy(setup.revision("v2", hold_s=0)), WAIT_S)
    assert (second.status, second.succeeded, second.failed, second.skipped) == ("Failed", 0, 1, 2)
    assert begun(tmp_path, second.deployment_id) == [bad]


@pytest.mark.slow
def test_two_processes_starting_a_group_at_once_get_one_deployment_and_codedeploys_refusal(
    tmp_path: Path, aws: AwsSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's two `fab deploy` started together: each process reads the group's record, then records its
    deployment. Reads are slowed so that both check before either records: only the state's lock keeps the second
    from running on the same instances at once. It is refused as CodeDeploy refuses CreateDeployment."""
    setup = Setup(tmp_path, aws, "AllAtOnce", 2)
    revision = setup.revision("v1", hold_s=0.5)
    backends = [setup.backend, another_process(setup)]
    read = SandboxState._read

    def slow_read(self: SandboxState, group: str) -> dict[str, Any]:
        data = read(self, group)
        time.sleep(0.3)
        return data

    monkeypatch.setattr(SandboxState, "_read", slow_read)
    together = threading.Barrier(2)
    outcomes: dict[int, str | BaseException] = {}

    def start(n: int) -> None:
        together.wait()
        try:
            outcomes[n] = backends[n].start(DeployRequest(setup.group, revision, release_id=f"r-{n}"))
        except SandboxError as exc:
            outcomes[n] = exc

    threads = [threading.Thread(target=start, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    monkeypatch.setattr(SandboxState, "_read", read)
    started = {n: got for n, got in outcomes.items() if isinstance(got, str)}
    refused = [got for got in outcomes.values() if isinstance(got, DeploymentLimitExceeded)]
    for n, did in started.items():
        backends[n].wait(did, WAIT_S)
    assert len(started) == 1 and len(refused) == 1, outcomes
    (did,) = started.values()
    assert str(refused[0]).startswith(f"The Deployment Group 'web' already has an active Deployment '{did}' (")
    assert refused[0].code == "DeploymentLimitExceededException"


@pytest.mark.slow
def test_a_release_meeting_a_deployment_another_process_runs_fails_the_group_with_one_line(
    tmp_path: Path, aws: AwsSession
) -> None:
    """The second of two `fab deploy` on the sandbox: the group is refused, not deployed on top of the first; the
    group's error is one line naming the active deployment, as on CodeDeploy (the release lists the group's
    deployments, the other process's included, and does not override someone else's); nothing is rolled back."""
    setup = Setup(tmp_path, aws, "AllAtOnce", 2)
    first = setup.deploy(setup.revision("v1", hold_s=2.0))
    plan = rollout_plan(
        release_id="20250101T000000Z-v2",
        version="v2",
        target="sandbox",
        groups=[setup.group],
        revision=setup.revision("v2", hold_s=0),
        options=RolloutOptions(poll_min_s=0.05, poll_max_s=0.2),
    )
    result = Orchestrator(another_process(setup), plan, reporter=Collect()).run()
    web = result.group("web")
    assert web.outcome == "failed" and web.deployment_id is None and web.rollback_deployment_id is None
    assert web.error == (
        f"deployment {first} that someone else started is in progress on group web; deploytool does not override "
        "it: wait for it to end, or run again with --wait"
    )
    assert setup.backend.wait(first, WAIT_S).all_succeeded
    assert {tag for _w, _i, tag, did, _t in journal(tmp_path) if did != first} == set()  # v2 ran nowhere


@pytest.mark.slow
def test_a_rollback_deploys_first_the_instance_the_failed_deployment_left_unhealthy(
    tmp_path: Path, aws: AwsSession
) -> None:
    """OneAtATime: v2 fails on the second instance (the third is Skipped, still healthy on v1); the rollback to v1
    starts with the failed one, unhealthy now, then the others in order."""
    setup = Setup(tmp_path, aws, "OneAtATime", 3)
    assert setup.backend.wait(setup.deploy(setup.revision("v1", hold_s=0)), WAIT_S).all_succeeded
    bad = setup.ids[1]
    (tmp_path / "fail-v2").write_text(f"{bad}\n")  # only v2 fails there: the rollback to v1 does not
    v2 = setup.revision("v2", hold_s=0, fail_file="fail-v2")
    failed = setup.backend.wait(setup.deploy(v2, auto_rollback=True), WAIT_S)
    assert (failed.status, failed.succeeded, failed.failed, failed.skipped) == ("Failed", 1, 1, 1)
    assert failed.rollback_deployment_id
    rollback = setup.backend.wait(failed.rollback_deployment_id, WAIT_S)
    assert rollback.all_succeeded
    assert begun(tmp_path, rollback.deployment_id) == [bad, setup.ids[0], setup.ids[2]]


@pytest.mark.slow
def test_codedeploys_own_deployments_run_one_at_a_time_whatever_the_groups_strategy(
    tmp_path: Path, aws: AwsSession
) -> None:
    """A launch or termination deployment targets one instance: with the group's FleetPercent 50 it would fail at once
    (minimum healthy 1 of 1); CodeDeploy's own deployments run OneAtATime."""
    from deploytool.sandbox.autoscaler import Autoscaler

    setup = Setup(tmp_path, aws, {"min_healthy_percent": 50}, 2)
    assert setup.backend.wait(setup.deploy(setup.revision("v1", hold_s=0)), WAIT_S).all_succeeded
    scaler = Autoscaler(setup.backend)
    [new] = scaler.scale_out("web", 1)
    [launch_id] = scaler.launches
    launch = setup.backend.wait(launch_id, WAIT_S)
    assert (launch.status, launch.creator, launch.succeeded) == ("Succeeded", "autoscaling", 1)
    assert setup.installed(new) == "v1"
    action = scaler.scale_in("web", new)
    assert action.during == ""  # the group's own deployment had ended
    term = setup.backend.poll([action.deployment_id])[action.deployment_id]
    assert (term.status, term.creator, term.succeeded) == ("Succeeded", "autoscalingTermination", 1)


@pytest.mark.slow
def test_an_instance_launched_during_a_deployment_gets_a_follow_on_of_the_new_revision(
    tmp_path: Path, aws: AwsSession
) -> None:
    """outdatedInstancesStrategy UPDATE in the sandbox: the launch during v2 installs v1 (the last successful
    revision then); once the group is idle the autoscaler's follow_on deploys v2 there (creator
    CodeDeployAutoUpdate)."""
    from deploytool.sandbox.autoscaler import Autoscaler

    setup = Setup(tmp_path, aws, "OneAtATime", 2)
    assert setup.backend.wait(setup.deploy(setup.revision("v1", hold_s=0)), WAIT_S).all_succeeded
    scaler = Autoscaler(setup.backend)
    v2 = setup.deploy(setup.revision("v2", hold_s=0.5))
    [new] = scaler.scale_out("web", 1)
    assert scaler.actions[0].during == v2  # the scale-out landed while the group's own deployment ran
    assert scaler.follow_on() is None  # deployments in flight: not yet
    assert setup.backend.wait(scaler.launches[0], WAIT_S).status == "Succeeded"
    assert setup.backend.wait(v2, WAIT_S).total == 2  # the new instance is not in it
    assert setup.installed(new) == "v1"
    [follow] = scaler.settle(WAIT_S)  # what fab sandbox --churn does after the release
    snap = setup.backend.wait(follow, WAIT_S)
    assert (snap.status, snap.creator, snap.total) == ("Succeeded", "CodeDeployAutoUpdate", 1)
    assert setup.installed(new) == "v2"
    summary = scaler.summary()
    assert scaler.follow_on() is None and summary["followon_deployments"] == 1
    assert (summary["scale_out_while_deploying"], summary["scale_in_while_deploying"]) == (1, 0)


@pytest.mark.slow
def test_a_launch_ending_after_the_release_leaves_the_new_revision_the_groups(tmp_path: Path, aws: AwsSession) -> None:
    """A launch deployment started while v2 rolls out installs v1 (the group's revision then) and ends after v2
    succeeded: the group's revision stays v2 (a launch deploys the revision as it was; it does not bring the old one
    back), so the follow-on deploys v2 to the new instance and a later launch gets v2."""
    from deploytool.sandbox.autoscaler import Autoscaler

    setup = Setup(tmp_path, aws, "OneAtATime", 2)
    assert setup.backend.wait(setup.deploy(setup.revision("v1", hold_s=0, gate="gate")), WAIT_S).all_succeeded
    scaler = Autoscaler(setup.backend)
    v2 = setup.deploy(setup.revision("v2", hold_s=0.3))
    (tmp_path / "gate").touch()  # the launch's BeforeInstall (v1's hook) waits until the gate goes
    [new] = scaler.scale_out("web", 1)
    assert setup.backend.wait(v2, WAIT_S).status == "Succeeded"
    (tmp_path / "gate").unlink()
    assert setup.backend.wait(scaler.launches[0], WAIT_S).status == "Succeeded"
    assert setup.installed(new) == "v1"
    last = setup.backend.state.last_successful("web")
    assert last is not None and last[1].version == "v2"
    [follow] = scaler.settle(WAIT_S)
    assert setup.backend.wait(follow, WAIT_S).all_succeeded and setup.installed(new) == "v2"
    [later] = scaler.scale_out("web", 1)
    assert setup.backend.wait(scaler.launches[-1], WAIT_S).all_succeeded and setup.installed(later) == "v2"
