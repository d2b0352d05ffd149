"""The sandbox autoscaler (deploytool.sandbox.autoscaler) on a running sandbox: a scale-out during a release gets a
launch deployment that blocks its group (the release waits for it, then deploys the new instance too); a scale-in
runs the termination deployment (the drain) with the termination hook on, and kills the worker outright with it off.
The fixture hooks of tests/test_sandbox_target.py (no Celery worker)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from deploytool import targets
from deploytool.rollout.events import Collect, Event, GroupFinished, GroupWaiting, ReleaseStarted
from deploytool.sandbox.autoscaler import Autoscaler
from deploytool.sandbox.procs import pid_alive, wait_gone
from tests.sandbox_helpers import sandbox_up
from tests.test_sandbox_target import Target

pytestmark = pytest.mark.slow


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    """As tests/test_sandbox_target.py's: a running sandbox and `fab deploy`'s services attached to it."""
    with sandbox_up(tmp_path) as session:
        fleet = session.config
        out = StringIO()
        services = targets.connect(fleet, "sandbox").services(fleet, Console(file=out, width=200), ci=True)
        yield Target(fleet, tmp_path, services, out)


class ScaleOutFirst:
    """Scales video out by one as the release starts; the launch deployment holds at its ValidateService (the
    fixture's `hold` file) until the release says video waits for it."""

    def __init__(self, scaler: Autoscaler, hold: Path) -> None:
        self.scaler, self.hold = scaler, hold
        self.new: list[str] = []
        self.state_during_launch: str | None = None

    def lifecycle_state(self, instance_id: str) -> str:
        asg = self.scaler.backend.fleet.config.group("video").asg
        info = self.scaler.backend.fleet.asgs.describe_groups([asg])[asg]
        return next(i.lifecycle_state for i in info.instances if i.instance_id == instance_id)

    def publish(self, event: Event) -> None:
        if isinstance(event, ReleaseStarted) and not self.new:
            self.hold.touch()
            self.new = self.scaler.scale_out("video", 1)
        if isinstance(event, GroupWaiting):
            self.state_during_launch = self.lifecycle_state(self.new[0])
            self.hold.unlink(missing_ok=True)


def test_a_scale_out_during_a_release_blocks_the_group_until_its_launch_deployment_ends(target: Target) -> None:
    backend = target.backend
    video = target.fleet.group("video")
    target.deploy("v1")
    scaler = Autoscaler(backend)
    hold = backend.fleet.root / "video" / "hold"
    out, seen = ScaleOutFirst(scaler, hold), Collect()
    try:
        done = target.deploy("v2", out, seen)
    finally:
        hold.unlink(missing_ok=True)
    assert done.result is not None and done.result.succeeded
    [new] = out.new
    [launch_id] = scaler.launches
    [waited] = [e for e in seen.events if isinstance(e, GroupWaiting)]
    assert (waited.group, waited.deployment_id, waited.what) == ("video", launch_id, "launch deployment")
    launch = backend.wait(launch_id, 30)
    assert (launch.status, launch.creator, launch.succeeded) == ("Succeeded", "autoscaling", 1)
    # Not InService while its launch deployment ran (a real ASG's launch hook: Pending:Wait); InService after.
    assert out.state_during_launch == "Standby" and out.lifecycle_state(new) == "InService"
    info = backend.fleet.asgs.describe_groups([video.asg])[video.asg]
    assert info.desired == len(info.instances) == 3  # held without a replacement, counted again once admitted
    assert launch_id in [s.deployment_id for s in backend.group_deployments(video, active_only=False)]
    finished = {e.result.group: e.result for e in seen.events if isinstance(e, GroupFinished)}
    assert (finished["video"].outcome, finished["video"].total) == ("succeeded", 3)  # the new instance included
    assert target.running(new) == "v2"
    journal = (backend.fleet.find(new).root / "journal").read_text().split()
    assert journal[0::3] == ["start", "stop", "start"] and journal[1::3] == ["v1", "v1", "v2"]  # launch, release
    assert scaler.summary()["scale_out"] == 1 and scaler.summary()["launch_deployments"] == 1


def test_scale_in_drains_with_the_termination_hook_and_kills_the_worker_without(target: Target) -> None:
    backend = target.backend
    email = target.fleet.group("email")
    target.deploy("v1")
    first, second = backend.fleet.instances(email)

    hooked = Autoscaler(backend, termination_hook=True)
    action = hooked.scale_in("email", first.instance_id)
    assert action.deployment_id and action.killed_pid is None
    term = backend.poll([action.deployment_id])[action.deployment_id]
    assert (term.status, term.creator) == ("Succeeded", "autoscalingTermination")
    assert sorted(p.name for p in first.logs_dir(action.deployment_id).glob("*.log")) == ["ApplicationStop.log"]
    journal = (first.root / "journal").read_text().split()
    assert journal[-3:] == ["stop", "v1", action.deployment_id]  # ApplicationStop only: no start after it
    assert first.instance_id not in [i.instance_id for i in backend.fleet.instances(email)]

    # Without the hook: a spot power-off. A process standing for the worker the hooks would have started, in its
    # own process group with a child, its pid in the worker pidfile as ApplicationStart's hook writes it.
    worker = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    try:
        pidfile = second.worker_pidfile(backend.app)
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        pidfile.write_text(f"{worker.pid}\n")
        stops = (second.root / "journal").read_text().count("stop")
        action = Autoscaler(backend, termination_hook=False).scale_in("email", second.instance_id)
        assert (action.deployment_id, action.killed_pid) == ("", worker.pid)
        assert worker.wait(5) == -signal.SIGKILL
        assert wait_gone([worker.pid], 5) == []
        assert not any(pid_alive(int(p)) for p in os.listdir("/proc") if p.isdigit() and _in_group(int(p), worker.pid))
        assert (second.root / "journal").read_text().count("stop") == stops  # no drain ran
        assert backend.fleet.instances(email) == []
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)


def _in_group(pid: int, pgid: int) -> bool:
    try:
        return os.getpgid(pid) == pgid
    except ProcessLookupError:
        return False
