"""`fab deploy` and `fab reconcile [--fix]` on the sandbox target, on real data from a sandbox fleet.

A SandboxSession starts a real moto server and provisions the fleet, then detaches (what `fab sandbox-up`
does); the rollout's services attach to it exactly as the fab tasks do (deploytool.targets.connect), and the
real lifecycle runner deploys real bundles built from the sample app.
To keep it fast the hook scripts are the small fixtures in tests/fixtures/sandbox_scripts (they flip `current`
and write run/VERSION; no Celery worker); tests/test_sandbox_fab_deploy.py runs `fab deploy` with the real
hooks. `fab reconcile` runs as a user runs it (a subprocess, attaching to the same sandbox): inventory snapshot
from moto's Auto Scaling/EC2, athena/reconcile.sql on DuckDB over the sandbox's S3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from deploytool import targets
from deploytool.aws.ec2 import Ec2Gateway
from deploytool.config import Fleet, Group
from deploytool.deploy_flow import Deployed, deploy_and_reconcile
from deploytool.errors import DeployFailed
from deploytool.rollout.backend import DeploymentSnapshot
from deploytool.rollout.events import Collect, Event, GroupFinished, GroupProgressed, GroupStarted, Reporter
from deploytool.rollout.plan import RolloutOptions
from deploytool.rollout.wiring import Output, Services
from deploytool.sandbox.backend import LocalBackend
from tests.conftest import ROOT
from tests.sandbox_helpers import FIXTURE_TEMPLATES, SANDBOX_FLEET, sandbox_up

pytestmark = pytest.mark.slow

TAGS = ("deploytool:version", "deploytool:release")
QUICK = RolloutOptions(poll_min_s=0.2, poll_max_s=0.5)


@dataclass
class Target:
    """A running sandbox (as after `fab sandbox-up`) and the rollout services attached to it."""

    fleet: Fleet
    tmp: Path
    services: Services
    out: StringIO

    @property
    def backend(self) -> LocalBackend:
        assert isinstance(self.services.backend, LocalBackend)
        return self.services.backend

    def deploy(self, version: str, *reporters: Reporter, options: RolloutOptions = QUICK) -> Deployed:
        """`fab deploy --version VERSION` (with the fixture hooks), ending with its reconcile."""
        self.services.extra_reporters[:] = list(reporters)
        return deploy_and_reconcile(
            self.fleet,
            "sandbox",
            self.fleet.groups,
            options,
            self.services,
            Output(ci=True),
            version=version,
            allow_dirty=False,
            templates=FIXTURE_TEMPLATES,
            out_dir=self.tmp / "dist",
            env={},
        )

    def fab(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
        return subprocess.run(
            [sys.executable, "-m", "fabric", *args, "--fleet", str(self.fleet.path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={**env, "PYTHONPATH": str(ROOT), "CI": "1"},
        )

    def reconcile(self, *args: str) -> tuple[int, dict[str, Any], str]:
        """`fab reconcile --json [args]`: (exit code, the JSON report, stderr)."""
        done = self.fab("reconcile", "--json", *args)
        return done.returncode, json.loads(done.stdout), done.stderr

    def tags(self, group: Group) -> dict[str, tuple[str, ...]]:
        ids = [i.instance_id for i in self.backend.fleet.instances(group)]
        return {
            i.instance_id: tuple(i.tags.get(t, "") for t in TAGS)
            for i in Ec2Gateway(self.services.aws).describe_instances(ids)
        }

    def running(self, instance_id: str) -> str | None:
        return self.backend.fleet.find(instance_id).running_version(self.fleet.app)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    with sandbox_up(tmp_path) as session:
        fleet = session.config  # outside git: the versions are the ones given
        out = StringIO()
        services = targets.connect(fleet, "sandbox").services(fleet, Console(file=out, width=200), ci=True)
        yield Target(fleet, tmp_path, services, out)


class LaunchDuring:
    """Scales a group's ASG out by one as soon as its deployment has started. The sandbox then launches the
    new instance as CodeDeploy does during a deployment: with the group's last successful revision."""

    def __init__(self, backend: LocalBackend, group: Group) -> None:
        self.backend, self.group = backend, group
        self.launches: list[str] = []

    def publish(self, event: Event) -> None:
        if isinstance(event, GroupStarted) and event.group == self.group.name and not self.launches:
            self.backend.fleet.scale_out(self.group, 1)
            self.launches = self.backend.sync()


def group(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(g for g in data["groups"] if g["group"] == name)


class HealWhenDone:
    """Removes an instance's fail-validate flag once the group's deployment has ended (before any rollback starts):
    v2 fails there, the last good revision then works."""

    def __init__(self, flag: Path, group: str) -> None:
        self.flag, self.group = flag, group

    def publish(self, event: Event) -> None:
        if isinstance(event, GroupProgressed) and event.group == self.group and event.snapshot.done:
            self.flag.unlink(missing_ok=True)


def test_a_partial_failure_on_the_sandbox_is_rolled_back_to_the_last_good_release(target: Target) -> None:
    """`fab deploy` on the sandbox with the fleet's default partial_failure "rollback": AllAtOnce with one of two
    instances failing is Succeeded for the backend; deploytool deploys email's last good release (v1, found in the
    release record) to the group again, both instances end on v1 with v1's tags, and the fleet reconciles clean."""
    fleet, backend = target.fleet, target.backend
    email = fleet.group("email")
    v1 = target.deploy("v1").result
    assert v1 is not None and v1.succeeded
    good, bad = [i.instance_id for i in backend.fleet.instances(email)]
    flag = backend.fleet.find(bad).root / "fail-validate"
    flag.touch()
    seen = Collect()
    with pytest.raises(DeployFailed):
        target.deploy("v2", HealWhenDone(flag, "email"), seen)
    finished = {e.result.group: e.result for e in seen.events if isinstance(e, GroupFinished)}
    mail = finished["email"]
    assert (mail.status, mail.succeeded, mail.failed, mail.outcome) == ("Succeeded", 1, 1, "failed")
    assert mail.rollback_status == "Succeeded" and f"({bad}); rolled back to v1 by " in mail.error
    assert target.running(good) == target.running(bad) == "v1"
    assert target.tags(email) == {good: ("v1", v1.release_id), bad: ("v1", v1.release_id)}
    v2 = target.services.store.find("sandbox", "v2")
    assert v2 is not None and group(v2.to_dict(), "email")["outcome"] == "rolled_back"
    code, data, stderr = target.reconcile()
    assert code == 0, stderr
    assert group(data, "email")["expected_version"] == "v1"


def test_scale_out_race_and_a_failed_validate_are_drift_on_duckdb_and_fix_converges(target: Target) -> None:
    fleet, backend = target.fleet, target.backend
    email, video = fleet.group("email"), fleet.group("video")
    assert target.services.detachable is False  # attached: the deployments run in this process

    first = target.deploy("v1")
    assert first.report is not None and not first.report.has_drift
    v1_release = first.result.release_id if first.result else ""
    good, bad = [i.instance_id for i in backend.fleet.instances(email)]
    old_video = [i.instance_id for i in backend.fleet.instances(video)]

    (backend.fleet.find(bad).root / "fail-validate").touch()  # this instance fails its ValidateService
    race, seen = LaunchDuring(backend, video), Collect()
    with pytest.raises(DeployFailed) as failed:  # partial_failure "keep": email's failed instance stays as it is
        target.deploy("v2", race, seen, options=replace(QUICK, partial_failure="keep"))
    assert failed.value.exit_code == 1
    assert "reconcile skipped: the rollout did not succeed (exit 1)" in target.out.getvalue()
    finished = {e.result.group: e.result for e in seen.events if isinstance(e, GroupFinished)}
    assert (finished["email"].status, finished["email"].succeeded, finished["email"].failed) == ("Succeeded", 1, 1)
    [failure] = finished["email"].instance_failures
    assert (failure.instance_id, failure.lifecycle_event) == (bad, "ValidateService")
    assert finished["video"].outcome == "succeeded" and finished["video"].total == 2  # launched after it started
    v2_release = target.services.store.history("sandbox")[0].release_id
    assert v2_release.endswith("-v2")

    [launch_id] = race.launches
    launch: DeploymentSnapshot = backend.wait(launch_id, 60)
    assert (launch.status, launch.creator) == ("Succeeded", "autoscaling")
    [launched] = [i.instance_id for i in backend.fleet.instances(video) if i.instance_id not in old_video]
    assert target.running(launched) == "v1"  # it came up on the previous revision, untagged
    assert target.tags(email) == {good: ("v2", v2_release), bad: ("v1", v1_release)}

    # v2 failed for email (one instance failed; AllAtOnce: Succeeded, kept): email's last good release is v1,
    # so the instance v2 did reach drifts; video's v2 succeeded: its instance launched on v1 drifts.
    code, data, stderr = target.reconcile()
    assert code == 3, stderr
    assert stderr == "error: drift: 2 instance(s) do not run their group's expected version (email, video)\n"
    assert (data["engine"], data["drifted_instances"]) == ("duckdb", 2)
    mail = group(data, "email")
    assert (mail["expected_version"], mail["release_id"], mail["instances"], mail["on_expected"]) == (
        "v1",
        v1_release,
        2,
        1,
    )
    assert mail["remark"] == f"latest release {v2_release} failed; expected = last good release {v1_release}"
    assert [(d["instance_id"], d["version"], d["release"]) for d in mail["drifted"]] == [(good, "v2", v2_release)]
    assert mail["untagged"] == []
    vid = group(data, "video")
    assert (vid["expected_version"], vid["instances"], vid["on_expected"], vid["remark"]) == ("v2", 3, 2, None)
    assert [(u["instance_id"], u["version"]) for u in vid["untagged"]] == [(launched, None)]
    assert vid["drifted"] == []

    # --fix puts each group on its last good release: v1 back on email's v2 instance, v2 on the launched one.
    code, data, stderr = target.reconcile("--fix")
    assert code == 0, stderr
    assert data["fix"]["requests"] == [
        {"group": "email", "release_id": v1_release, "instances": [good]},
        {"group": "video", "release_id": v2_release, "instances": [launched]},
    ]
    assert data["fix"]["tagged"] == 2 and data["drift"] is False
    assert target.running(good) == "v1"  # `bad` is tagged v1 (it failed v2), so it is not redeployed
    assert {target.running(i) for i in (launched, *old_video)} == {"v2"}
    journal = (backend.fleet.find(launched).root / "journal").read_text().split()
    assert journal[0::3] == ["start", "stop", "start"] and journal[1::3] == ["v1", "v1", "v2"]  # launch, then fix

    code, data, stderr = target.reconcile()
    assert code == 0, stderr
    assert {
        g["group"]: (g["expected_version"], g["instances"], g["on_expected"], g["status"]) for g in data["groups"]
    } == {"email": ("v1", 2, 2, "ok"), "video": ("v2", 3, 3, "ok")}
    assert target.tags(video)[launched] == ("v2", v2_release)
    assert target.tags(email)[good] == ("v1", v1_release)


def test_a_release_that_failed_and_rolled_back_is_not_expected_and_fix_deploys_nothing(target: Target) -> None:
    """The user story of a bad build: v1 ok; v2 fails ValidateService in video and rolls back (email took it).
    `fab reconcile` exits 0 and says v2 failed for video; `fab reconcile --fix` restarts no worker."""
    fleet, backend = target.fleet, target.backend
    email, video = fleet.group("email"), fleet.group("video")
    first = target.deploy("v1")
    v1_release = first.result.release_id if first.result else ""
    sick = backend.fleet.instances(video)[0].instance_id
    (backend.fleet.find(sick).root / "fail-validate-v2").touch()  # v2 is broken on it; v1 is fine

    seen = Collect()
    with pytest.raises(DeployFailed):
        target.deploy("v2", seen)
    finished = {e.result.group: e.result for e in seen.events if isinstance(e, GroupFinished)}
    assert finished["email"].outcome == "succeeded"
    assert (finished["video"].outcome, finished["video"].rollback_status) == ("failed", "Succeeded")
    v2_release = target.services.store.history("sandbox")[0].release_id
    assert {target.running(i.instance_id) for i in backend.fleet.instances(video)} == {"v1"}
    assert {target.running(i.instance_id) for i in backend.fleet.instances(email)} == {"v2"}

    code, data, stderr = target.reconcile()
    assert code == 0, stderr
    assert data["status"] == "ok" and data["drift"] is False
    vid, mail = group(data, "video"), group(data, "email")
    assert (vid["expected_version"], vid["release_id"], vid["on_expected"], vid["status"]) == (
        "v1",
        v1_release,
        2,
        "ok",
    )
    assert vid["remark"] == (
        f"latest release {v2_release} failed (rolled back); expected = last good release {v1_release}"
    )
    assert (mail["expected_version"], mail["on_expected"], mail["remark"]) == ("v2", 2, None)

    journals = {
        i.instance_id: (i.root / "journal").read_text() for g in (email, video) for i in backend.fleet.instances(g)
    }
    code, data, stderr = target.reconcile("--fix")
    assert code == 0, stderr
    assert "fix" not in data  # nothing drifts: no deployment
    assert {
        i.instance_id: (i.root / "journal").read_text() for g in (email, video) for i in backend.fleet.instances(g)
    } == journals  # no worker was stopped or started
    assert {target.running(i.instance_id) for i in backend.fleet.instances(video)} == {"v1"}


def test_ctrl_c_on_the_sandbox_target_stops_and_rolls_back_in_this_process(target: Target) -> None:
    """No detach on a local target: its deployments are threads of this process, so a Ctrl-C without a
    terminal stops every deployment in flight (with rollback) and follows them to their end here."""
    fleet, backend = target.fleet, target.backend
    target.deploy("v1")

    class CtrlC:
        def publish(self, event: Event) -> None:
            if isinstance(event, GroupStarted) and event.group == "email":
                raise KeyboardInterrupt  # both groups' deployments have started (one wave)

    seen = Collect()
    with pytest.raises(DeployFailed) as failed:
        target.deploy("v2", CtrlC(), seen)
    assert "detached" not in str(failed.value)
    assert "interrupted: stopping every deployment in flight and rolling back" in target.out.getvalue()
    results = {e.result.group: e.result for e in seen.events if isinstance(e, GroupFinished)}
    assert set(results) == {"email", "video"}
    ids = [i for r in results.values() for i in (r.deployment_id, r.rollback_deployment_id) if i]
    polled = backend.poll(ids)
    assert len(polled) == len(ids) and all(s.done for s in polled.values())  # followed to the end, here
    for name, result in results.items():
        if result.outcome != "succeeded":  # email may have finished before the stop reached it
            assert result.rollback_status == "Succeeded", result
        assert backend.group_state(fleet.group(name)).active_deployment_id is None
    assert results["video"].outcome == "stopped"  # one instance at a time: far from done when the stop came
    assert {target.running(i.instance_id) for i in backend.fleet.instances(fleet.group("video"))} == {"v1"}


def test_no_running_sandbox_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "deploy.toml").write_text(SANDBOX_FLEET)
    (tmp_path / "sample_app").mkdir()  # the fleet file's app source must exist
    fleet = str(tmp_path / "deploy.toml")
    for task in (["deploy"], ["reconcile"], ["reconcile", "--fix"], ["restart"], ["rollback"], ["status"]):
        done = subprocess.run(
            [sys.executable, "-m", "fabric", *task, "--fleet", fleet],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT), "CI": "1"},
        )
        assert (done.returncode, done.stdout) == (2, ""), task
        assert done.stderr == "error: no sandbox is running for target 'sandbox': run `fab sandbox-up` first\n", task
