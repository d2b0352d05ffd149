"""`fab deploy` and `fab reconcile --fix` end to end on the sample fleet: real bundle, the CodeDeploy simulator
(botocore-validated), moto S3/EC2/Auto Scaling; instance tags read back from moto EC2; the reconcile runs
athena/reconcile.sql on DuckDB (--reconcile-engine duckdb / --engine duckdb: the codedeploy target's default
engine is Athena) over the inventory and release manifests in moto S3."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from deploytool.aws.ec2 import Ec2Gateway, InstanceInfo
from deploytool.deploy_flow import Deployed, deploy_and_reconcile, reconcile_services
from deploytool.errors import AwsError, DeployFailed, DriftFound
from deploytool.reconcile.command import fix_runner_for, run_reconcile
from deploytool.reconcile.report import ReconcileReport
from deploytool.rollout.events import Event, GroupStarted
from deploytool.rollout.plan import RolloutOptions
from deploytool.rollout.tagger import TagStore
from deploytool.rollout.wiring import Output
from deploytool.targets import settings_for
from tests.builders import TEMPLATES
from tests.rollout_helpers import ROOT, CtrlC, World, sample_world

EMAIL, REPORTS, VIDEO = "acme-email-workers", "acme-reports-workers", "acme-video-workers"
TAGS = ("deploytool:version", "deploytool:release", "deploytool:deployed-at")


@dataclass
class Flow:
    """What `fab deploy` / `fab reconcile [--fix]` run, on the simulated world, with the DuckDB engine."""

    world: World
    mirror: Path

    def deploy(
        self,
        version: str,
        *,
        groups: list[str] | None = None,
        reconcile: bool = True,
        tag_writer: TagStore | None = None,
        env: Mapping[str, str] | None = None,
        options: RolloutOptions | None = None,
    ) -> Deployed:
        w = self.world
        w.later()
        return deploy_and_reconcile(
            w.fleet,
            "production",
            w.fleet.select_groups(groups),
            options or RolloutOptions(),
            w.services,
            Output(ci=True),
            version=version,
            allow_dirty=False,
            reconcile=reconcile,
            engine="duckdb",
            mirror=str(self.mirror),
            templates=TEMPLATES,
            out_dir=w.tmp / "dist",
            tag_writer=tag_writer,
            env=env or {},
        )

    def reconcile(self, *, fix: bool = False) -> tuple[ReconcileReport | None, dict[str, Any], int]:
        """(report, the JSON printed, exit code) of `fab reconcile --json [--fix] --engine duckdb`."""
        w = self.world
        w.later()
        settings = settings_for(w.fleet, "production", engine="duckdb", mirror=str(self.mirror))
        runner, backend = fix_runner_for(w.services, "production") if fix else (None, None)
        out = StringIO()
        try:
            report = run_reconcile(
                w.fleet,
                settings,
                reconcile_services(w.fleet, w.services),
                Console(file=out, width=200),
                as_json=True,
                env={},
                fix=fix,
                runner=runner,
                backend=backend,
            )
        except DriftFound as exc:
            return None, json.loads(out.getvalue()), exc.exit_code
        return report, json.loads(out.getvalue()), 0

    def ids(self, asg: str) -> list[str]:
        return self.world.env.asg_instances[asg]

    def tags(self, asg: str) -> dict[str, tuple[str, ...]]:
        """instance id -> (version, release, deployed-at) tags, as moto EC2 has them now."""
        found = Ec2Gateway(self.world.env.aws).describe_instances(self.ids(asg))
        return {i.instance_id: tuple(i.tags.get(t, "") for t in TAGS) for i in found}

    def versions(self, asg: str) -> list[str]:
        return [tags[0] for _, tags in sorted(self.tags(asg).items())]

    def snapshots(self) -> int:
        w = self.world
        prefix = f"{w.fleet.artifacts.prefix}/{w.fleet.app.name}/inventory/"
        return len(list(w.services.store.s3.list_keys(w.fleet.artifacts.bucket, prefix)))


@pytest.fixture
def flow(tmp_path: Path) -> Iterator[Flow]:
    with sample_world(tmp_path) as world:
        yield Flow(world, tmp_path / "mirror")


def group(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(g for g in data["groups"] if g["group"] == name)


def test_fab_deploy_tags_every_instance_and_ends_with_a_clean_reconcile(flow: Flow, tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    done = flow.deploy("v1", env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert done.result is not None and done.result.succeeded
    release = done.result.release_id
    assert release == "20250501T120500Z-v1"
    every = {**flow.tags(EMAIL), **flow.tags(REPORTS), **flow.tags(VIDEO)}
    assert len(every) == 7 and set(every.values()) == {("v1", release, "2025-05-01T12:05:00Z")}
    assert done.tagger.calls == 3  # one CreateTags per group, each as its deployment ended
    assert done.report is not None and done.report.engine == "duckdb" and not done.report.has_drift
    assert {g.group: (g.expected_version, g.instances, g.on_expected) for g in done.report.groups} == {
        "email": ("v1", 2, 2),
        "reports": ("v1", 3, 3),
        "video": ("v1", 2, 2),
    }
    text = flow.world.out.getvalue()
    assert "tags: email: 2 instance(s) tagged deploytool:version=v1" in text
    assert "tags: 7 instance(s) tagged in 3 CreateTags call(s)" in text
    assert "every instance runs its expected version" in text
    assert text.index("tags: email") < text.index("wave 1 started")  # tagged when its group ended, not at the end
    assert flow.snapshots() == 1
    assert "| email | v1 | 2 | 2 | 0 | 0 | ok |" in summary.read_text()

    again = flow.deploy("v2", reconcile=False)  # --no-reconcile
    assert again.report is None and flow.snapshots() == 1
    assert set(flow.versions(EMAIL) + flow.versions(REPORTS) + flow.versions(VIDEO)) == {"v2"}


def test_allatonce_partial_failure_is_rolled_back_to_the_last_good_release(flow: Flow) -> None:
    """CodeDeploy calls it Succeeded and does not roll it back; deploytool deploys v1 (email's last good release)
    to the group again: both instances end on v1 with v1's tags, and the release record says rolled_back."""
    flow.deploy("v1")
    ok, bad = flow.ids(EMAIL)
    sim = flow.world.env.sim
    sim.inject_failure(bad, "ValidateService", version="v2")  # v2 fails there; v1 still works
    created = len(sim.deployments)
    with pytest.raises(DeployFailed) as failed:
        flow.deploy("v2", groups=["email"])
    assert failed.value.exit_code == 1
    v2, rollback = list(sim.deployments.values())[created:]
    assert (v2.status, v2.config_name, v2.count("Failed")) == ("Succeeded", "CodeDeployDefault.AllAtOnce", 1)
    assert "/v1/" in rollback.revision["s3Location"]["key"] and rollback.request["autoRollbackConfiguration"] == {
        "enabled": False,
        "events": [],
    }
    assert (rollback.status, rollback.count("Succeeded"), rollback.creator) == ("Succeeded", 2, "user")
    assert "/v1/" in sim.instance_revision[ok] and "/v1/" in sim.instance_revision[bad]
    assert {i: t[:2] for i, t in flow.tags(EMAIL).items()} == {
        ok: ("v1", "20250501T120500Z-v1"),
        bad: ("v1", "20250501T120500Z-v1"),
    }
    manifest = flow.world.services.store.find("production", "v2")
    assert manifest is not None and group(manifest.to_dict(), "email")["outcome"] == "rolled_back"
    assert manifest.deployments["email"]["rollback_deployment_id"] == rollback.deployment_id
    out = flow.world.out.getvalue()
    assert f"1 of 2 instances failed (the backend called it Succeeded) ({bad}); rolled back to v1 by " in out
    report, _, code = flow.reconcile()
    assert code == 0 and report is not None and not report.has_drift  # the fleet is back on v1


def test_allatonce_partial_failure_kept_exits_1_and_the_failed_instance_keeps_its_old_tags(flow: Flow) -> None:
    flow.deploy("v1")
    ok, bad = flow.ids(EMAIL)
    flow.world.env.sim.inject_failure(bad, "ValidateService")
    with pytest.raises(DeployFailed) as failed:
        flow.deploy("v2", groups=["email"], options=RolloutOptions(partial_failure="keep"))
    assert failed.value.exit_code == 1
    email = list(flow.world.env.sim.deployments.values())[-1]
    assert (email.group, email.status, email.config_name) == ("email", "Succeeded", "CodeDeployDefault.AllAtOnce")
    assert f'({bad}); kept as they are ([rollout] partial_failure = "keep")' in flow.world.out.getvalue()
    tags = flow.tags(EMAIL)
    assert tags[ok][:2] == ("v2", "20250501T121000Z-v2")
    assert tags[bad][:2] == ("v1", "20250501T120500Z-v1")
    assert "reconcile skipped: the rollout did not succeed (exit 1)" in flow.world.out.getvalue()
    assert flow.snapshots() == 1  # v1's only: no reconcile after a failed rollout


def test_after_a_failed_release_reconcile_expects_the_last_good_one_and_fix_restores_it(flow: Flow) -> None:
    """v2 fails on one email instance (AllAtOnce: CodeDeploy says Succeeded; partial_failure "keep", so no
    rollback): v2 is not what email
    is expected to run; v1, its last good release, is. The instance v2 did reach drifts, and --fix puts v1 back
    on it (it never redeploys v2); the run after that is clean and still says v2 failed."""
    v1 = flow.deploy("v1").result
    assert v1 is not None and v1.release_id == "20250501T120500Z-v1"
    ok, bad = flow.ids(EMAIL)
    sim = flow.world.env.sim
    sim.inject_failure(bad, "ApplicationStart")
    with pytest.raises(DeployFailed):
        flow.deploy("v2", groups=["email"], options=RolloutOptions(partial_failure="keep"))
    sim.failures.clear()
    v2 = "20250501T121000Z-v2"

    report, data, code = flow.reconcile()
    assert code == 3 and report is None
    email = group(data, "email")
    assert (email["expected_version"], email["release_id"], email["latest_release_id"], email["latest_outcome"]) == (
        "v1",
        v1.release_id,
        v2,
        "failed",
    )
    assert email["remark"] == f"latest release {v2} failed; expected = last good release {v1.release_id}"
    assert [(d["instance_id"], d["version"]) for d in email["drifted"]] == [(ok, "v2")]
    assert group(data, "video")["status"] == group(data, "reports")["status"] == "ok"

    created = len(sim.deployments)
    report, data, code = flow.reconcile(fix=True)
    assert code == 0 and report is not None and not report.has_drift
    [fix] = list(sim.deployments.values())[created:]
    assert fix.group == "email" and list(fix.instances) == [ok]  # CodeDeploy picked the one not on v1
    assert fix.description == f"deploytool reconcile --fix {v1.release_id}"
    assert data["fix"]["requests"] == [{"group": "email", "release_id": v1.release_id, "instances": [ok]}]
    assert "/v1/" in sim.instance_revision[ok] and "/v1/" in sim.instance_revision[bad]
    assert flow.tags(EMAIL)[ok][:2] == ("v1", v1.release_id)
    assert data["status"] == "ok" and group(data, "email")["remark"] == email["remark"]

    report, _, code = flow.reconcile()
    assert code == 0 and report is not None
    assert {g.group: (g.expected_version, g.instances, g.on_expected) for g in report.groups} == {
        "email": ("v1", 2, 2),
        "reports": ("v1", 3, 3),
        "video": ("v1", 2, 2),
    }


class ScaleOut:
    """Launches one more instance into an ASG once its group's deployment has started (the scale-out race)."""

    def __init__(self, world: World, group: str, asg: str) -> None:
        self.world, self.group, self.asg = world, group, asg
        self.launched: list[str] = []

    def publish(self, event: Event) -> None:
        if isinstance(event, GroupStarted) and event.group == self.group and not self.launched:
            client = self.world.env.boto.client("autoscaling")
            before = set(self.world.env.asg_instances[self.asg])
            size = len(before) + 1
            client.update_auto_scaling_group(AutoScalingGroupName=self.asg, MaxSize=size, DesiredCapacity=size)
            now = client.describe_auto_scaling_groups(AutoScalingGroupNames=[self.asg])["AutoScalingGroups"][0]
            self.launched = sorted({i["InstanceId"] for i in now["Instances"]} - before)


def test_an_instance_launched_mid_deploy_makes_fab_deploy_exit_3_and_fix_converges(flow: Flow) -> None:
    flow.deploy("v1")
    race = ScaleOut(flow.world, "video", VIDEO)
    flow.world.services.extra_reporters.append(race)
    with pytest.raises(DriftFound) as drift:
        flow.deploy("v2")
    flow.world.services.extra_reporters.clear()
    assert drift.value.exit_code == 3
    [launched] = race.launched
    assert flow.world.services.store.history("production")[0].outcome == "succeeded"  # the rollout itself did
    text = flow.world.out.getvalue()
    assert launched in text and "untagged" in text and "drift: 1 instance(s)" in text
    assert launched not in flow.world.env.sim.instance_revision  # not part of the deployment: never deployed
    flow.world.env.asg_instances[VIDEO].append(launched)

    report, data, code = flow.reconcile(fix=True)
    assert code == 0 and report is not None
    assert data["fix"]["requests"][0]["instances"] == [launched]
    assert flow.tags(VIDEO)[launched][:2] == ("v2", "20250501T121000Z-v2")
    report, _, code = flow.reconcile()
    assert code == 0 and report is not None
    assert {g.group: (g.instances, g.on_expected) for g in report.groups}["video"] == (3, 3)


def test_a_group_rolled_back_keeps_its_old_tags(flow: Flow) -> None:
    flow.deploy("v1")
    first, second, third = flow.ids(REPORTS)  # min 50% of 3: one at a time; the second fails, the third is skipped
    flow.world.env.sim.inject_failure(second, "ValidateService")
    with pytest.raises(DeployFailed):
        flow.deploy("v2")
    sim = flow.world.env.sim
    reports = [d for d in sim.deployments.values() if d.group == "reports"]
    assert [(d.creator, d.status) for d in reports][-2:] == [("user", "Failed"), ("codeDeployRollback", "Succeeded")]
    assert {i: run.status for i, run in reports[-2].instances.items()} == {
        first: "Succeeded",
        second: "Failed",
        third: "Skipped",
    }
    assert "/v1/" in sim.instance_revision[first]  # it ran v2, then the rollback put v1 back
    assert flow.versions(REPORTS) == ["v1", "v1", "v1"]
    assert set(flow.versions(EMAIL) + flow.versions(VIDEO)) == {"v2"}


class DeniedTags:
    """EC2 where the caller lacks ec2:CreateTags (reads still work)."""

    def __init__(self, ec2: Ec2Gateway) -> None:
        self.ec2 = ec2
        self.attempts = 0

    def create_tags(self, instance_ids: Sequence[str], tags: Mapping[str, str]) -> int:
        self.attempts += 1
        raise AwsError("CreateTags: UnauthorizedOperation: You are not authorized to perform this operation.")

    def describe_instances(self, instance_ids: Sequence[str]) -> list[InstanceInfo]:
        return self.ec2.describe_instances(instance_ids)


def test_a_tagging_failure_is_a_warning_and_never_stops_the_release(flow: Flow) -> None:
    denied = DeniedTags(Ec2Gateway(flow.world.env.aws))
    with pytest.raises(DriftFound):  # the release went out; the instances are untagged, and reconcile says so
        flow.deploy("v1", tag_writer=denied)
    assert denied.attempts == 3
    sim = flow.world.env.sim
    assert sorted((d.group, d.status) for d in sim.deployments.values()) == [
        ("email", "Succeeded"),
        ("reports", "Succeeded"),
        ("video", "Succeeded"),
    ]
    assert flow.world.services.store.history("production")[0].outcome == "succeeded"
    text = flow.world.out.getvalue()
    assert text.count("warning: tagging ") == 4  # one per group, and the summary
    assert "warning: tagging email (d-" in text and "failed: CreateTags: UnauthorizedOperation" in text
    assert "warning: tagging failed for 3 group(s)" in text
    assert set(flow.versions(EMAIL)) == {""}

    created = sim.calls["CreateDeployment"]
    again = flow.deploy("v1")  # the permission is fixed: the same release again redeploys nothing, tags what is missing
    assert sim.calls["CreateDeployment"] == created
    assert again.tagger.count == 7 and again.report is not None and not again.report.has_drift


def test_a_resumed_release_tags_what_finished_while_detached_and_never_retags(flow: Flow) -> None:
    flow.world.services.extra_reporters.append(CtrlC())
    with pytest.raises(DeployFailed, match="detached"):
        flow.deploy("v1")
    flow.world.services.extra_reporters.clear()
    assert set(flow.versions(EMAIL)) == {""}  # its deployment was still running: not tagged
    flow.world.env.clock.advance(3600)  # email's deployment ends while nobody watches

    done = flow.deploy("v1")
    assert done.result is not None and done.result.group("email").outcome == "already-deployed"
    assert done.report is not None and not done.report.has_drift
    assert {t for t in flow.tags(EMAIL).values()} == {("v1", "20250501T120500Z-v1", "2025-05-01T12:10:00Z")}

    again = flow.deploy("v1")
    assert again.result is not None and {g.outcome for g in again.result.groups} == {"already-deployed"}
    assert again.tagger.calls == 0  # every instance already carries this release's tags
    assert {t[2] for t in flow.tags(EMAIL).values()} == {"2025-05-01T12:10:00Z"}


def _fab(*args: str) -> subprocess.CompletedProcess[str]:
    fab = str(Path(sys.executable).with_name("fab"))
    return subprocess.run([fab, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_fab_deploy_options() -> None:
    shown = _fab("deploy", "--help")
    assert "--no-reconcile" in shown.stdout and "--reconcile-engine" in shown.stdout
    for task in ("deploy", "rollback", "restart"):
        assert "--ignore-stop-failures" in _fab(task, "--help").stdout
    bad = _fab("deploy", "--target", "production", "--reconcile-engine", "presto")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr == "error: --reconcile-engine 'presto': allowed: athena, duckdb\n"
