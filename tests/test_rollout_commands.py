"""The rollout tasks end to end on the sample fleet: real bundle, moto S3, the CodeDeploy simulator."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deploytool.errors import DeployFailed
from deploytool.rollout import commands
from deploytool.rollout.plan import RolloutOptions
from deploytool.rollout.wiring import Output
from tests.rollout_helpers import TEMPLATES, CtrlC, World, sample_world

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with sample_world(tmp_path) as built:
        yield built


def test_deploy_publishes_rolls_out_and_records_the_release(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = world.deploy("v1", json_out=str(tmp_path / "result.json"))
    assert result is not None and result.succeeded  # type: ignore[attr-defined]
    manifest = world.services.store.find("production", "v1")
    assert manifest is not None and manifest.release_id == "20250501T120500Z-v1"
    assert {g: d["status"] for g, d in manifest.deployments.items()} == {
        "email": "Succeeded",
        "reports": "Succeeded",
        "video": "Succeeded",
    }
    assert world.services.store.history("production")[0].outcome == "succeeded"
    head = world.services.store.s3.head(manifest.bucket, manifest.key)
    assert head is not None and manifest.key.startswith("deploytool/acme-workers/v1/")
    assert json.loads((tmp_path / "result.json").read_text())["succeeded"] is True
    assert "deploytool deploy `v1` to `production`: succeeded" in summary.read_text()
    lines = world.out.getvalue()
    assert "wave 0 started: email" in lines and "wave 1 started: reports, video" in lines
    assert (
        "note: CodeDeploy does not return the output of hooks that succeeded, so tasks a drain's cold shutdown "
        "interrupted are not shown here: on each instance, grep 'deploytool: interrupted task' "
        "/opt/codedeploy-agent/deployment-root/<deployment-group-id>/<deployment-id>/logs/scripts.log"
    ) in lines
    commands.verdict(result)  # type: ignore[arg-type]  # no exception: exit 0


def test_deploying_the_same_version_again_resumes_and_creates_nothing(world: World) -> None:
    world.deploy("v1")
    created = world.env.sim.calls["CreateDeployment"]
    again = world.deploy("v1")
    assert again is not None and again.succeeded  # type: ignore[attr-defined]
    assert world.env.sim.calls["CreateDeployment"] == created
    assert {g.outcome for g in again.groups} == {"already-deployed"}  # type: ignore[attr-defined]
    assert len(world.services.store.history("production")) == 1


def test_dry_run_prints_the_plan_and_changes_nothing(world: World) -> None:
    assert world.deploy("v1", dry_run=True) is None
    assert world.env.sim.calls["CreateDeployment"] == 0
    assert world.services.store.history("production") == []
    text = world.out.getvalue()
    assert "release 20250501T120500Z-v1 (new): deploy v1 to production, 3 groups" in text
    assert "  reports: min 50% (deploytool-min-healthy-percent-50): start a deployment" in text


def test_rollback_redeploys_the_previous_good_version_as_a_new_release(world: World) -> None:
    world.deploy("v1")
    world.deploy("v2")
    world.moment[0] += timedelta(minutes=5)
    result = commands.rollback(
        world.fleet,
        "production",
        world.fleet.groups,
        RolloutOptions(),
        world.services,
        Output(ci=True),
        to_version=None,
    )
    assert result is not None and result.succeeded and result.version == "v1"
    every = [i for ids in world.env.asg_instances.values() for i in ids]
    assert all("/v1/" in world.env.sim.instance_revision[i] for i in every)
    history = world.services.store.history("production")
    assert [h.version for h in history] == ["v1", "v2", "v1"]
    found = world.services.store.find("production", "v1")
    assert found is not None and found.release_id == result.release_id  # the index now points at the rollback


def test_rollback_skips_the_groups_that_never_left_the_version(world: World, tmp_path: Path) -> None:
    world.deploy("v1")
    world.later()
    email = [world.fleet.group("email")]
    commands.deploy(
        world.fleet,
        "production",
        email,
        RolloutOptions(),
        world.services,
        Output(ci=True),
        version="v2",
        allow_dirty=False,
        templates=TEMPLATES,
        out_dir=world.tmp / "dist",
    )
    created = world.env.sim.calls["CreateDeployment"]
    world.later()
    result = commands.rollback(
        world.fleet,
        "production",
        world.fleet.groups,
        RolloutOptions(),
        world.services,
        Output(ci=True, json_out=str(tmp_path / "back.json")),
        to_version="v1",
    )
    assert result is not None and result.succeeded and result.version == "v1"
    assert world.env.sim.calls["CreateDeployment"] == created + 1  # email only
    assert {g.group: g.outcome for g in result.groups} == {
        "email": "succeeded",
        "reports": "already-deployed",
        "video": "already-deployed",
    }
    text = world.out.getvalue()
    assert "reports: skipped: already runs v1 (its last successful deployment d-" in text
    assert "video: skipped: already runs v1" in text and "email: skipped" not in text
    every = [i for ids in world.env.asg_instances.values() for i in ids]
    assert all("/v1/" in world.env.sim.instance_revision[i] for i in every)
    outcomes = {g["group"]: g["outcome"] for g in json.loads((tmp_path / "back.json").read_text())["groups"]}
    assert outcomes["reports"] == "already-deployed"


FALLBACK = (
    "restart: app.codedeploy_agent is not set and deploymentMode RESTART needs CodeDeploy agent 2.1.0 or newer: "
    "each group redeploys the revision of its last successful deployment instead (every hook runs; the workers "
    'restart on the same code); set app.codedeploy_agent = "2.1" once every instance runs agent 2.1.0+'
)


def test_restart_and_status(world: World) -> None:
    """The sample fleet declares no agent version: the restart redeploys each group's last good revision, and says
    why in one line."""
    world.deploy("v1")
    before = set(world.env.sim.deployments)
    result = commands.restart(
        world.fleet, "production", world.fleet.groups, RolloutOptions(max_parallel=1), world.services, Output(ci=True)
    )
    assert result is not None and result.succeeded
    restarts = [d for i, d in world.env.sim.deployments.items() if i not in before]
    assert len(restarts) == 3 and all(d.mode == "STANDARD" for d in restarts)
    assert all("/v1/" in d.request["revision"]["s3Location"]["key"] for d in restarts)
    assert world.out.getvalue().count(FALLBACK) == 1
    world.out.truncate(0)
    commands.status(world.fleet, "production", world.services, None)
    text = world.out.getvalue()
    assert "release 20250501T120500Z-v1: v1 on production" in text
    assert "video" in text and "Succeeded" in text and "2/0/2" in text


def test_restart_with_agents_2_1_sends_deployment_mode_restart(tmp_path: Path) -> None:
    with sample_world(tmp_path, codedeploy_agent="2.1") as world:
        world.deploy("v1")
        result = commands.restart(
            world.fleet, "production", world.fleet.groups, RolloutOptions(), world.services, Output(ci=True)
        )
        assert result is not None and result.succeeded
        restarts = [d for d in world.env.sim.deployments.values() if d.mode == "RESTART"]
        assert len(restarts) == 3 and all("revision" not in d.request for d in restarts)
        assert "restart: app.codedeploy_agent" not in world.out.getvalue()


def test_restart_says_what_it_does_once(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    world.deploy("v1")
    world.out.truncate(0)
    world.out.seek(0)
    commands.restart(
        world.fleet, "production", world.fleet.groups, RolloutOptions(), world.services, Output(ci=True), dry_run=True
    )
    result = commands.restart(
        world.fleet, "production", world.fleet.groups, RolloutOptions(), world.services, Output(ci=True)
    )
    assert result is not None and result.succeeded
    text = world.out.getvalue() + summary.read_text()
    assert "restart restart" not in text and "`restart` to" not in text
    assert "(new): rolling restart on production, 3 groups, max-parallel" in text  # --dry-run
    assert f"release {result.release_id}: rolling restart on production, 3 groups" in text
    assert "### deploytool rolling restart on `production`: succeeded" in text


def test_ctrl_c_without_a_terminal_detaches_and_exits_1(world: World) -> None:
    world.services.extra_reporters.append(CtrlC())
    result = world.deploy("v1")
    assert result is not None and result.detached  # type: ignore[attr-defined]
    with pytest.raises(DeployFailed, match="detached from release 20250501T120500Z-v1"):
        commands.verdict(result)  # type: ignore[arg-type]
    assert world.env.sim.calls["StopDeployment"] == 0
    world.services.extra_reporters.clear()
    world.moment[0] = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    resumed = world.deploy("v1")  # follows the deployment it left, then starts the rest
    assert resumed is not None and resumed.succeeded  # type: ignore[attr-defined]
    assert world.env.sim.calls["CreateDeployment"] == 3


def test_a_failed_release_raises_deploy_failed_naming_the_groups(world: World) -> None:
    world.env.sim.inject_failure(world.env.asg_instances["acme-email-workers"][0], "ValidateService")
    result = world.deploy("v1")
    with pytest.raises(DeployFailed, match="groups: email, reports, video"):
        commands.verdict(result)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "args, message",
    [
        (["deploy", "--target", "production", "--on-failure", "explode"], "--on-failure 'explode' is not allowed"),
        (["deploy", "--target", "production", "--max-parallel", "-2"], "--max-parallel must be 0"),
        (["restart", "--target", "production", "--groups", "email,nope"], "no group named 'nope'"),
        (["setup", "--target", "sandbox"], "it needs no setup"),
    ],
)
@pytest.mark.slow
def test_bad_options_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    fab = str(Path(sys.executable).with_name("fab"))
    done = subprocess.run([fab, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr and "Traceback" not in done.stderr


def test_the_fleet_files_partial_failure_reaches_every_rollout_task(tmp_path: Path) -> None:
    """`[rollout] partial_failure` is fleet-wide: fab deploy/rollback/restart all run with it."""
    from deploytool.tasks.rollout import _rollout

    shutil.copytree(ROOT / "sample_app", tmp_path / "sample_app")
    fleet = tmp_path / "deploy.toml"
    fleet.write_text((ROOT / "deploy.toml").read_text() + '\n[rollout]\npartial_failure = "keep"\n')
    *_, run, _ = _rollout(str(fleet), "production", None, 0, "stop-wave", True, None)
    assert run.partial_failure == "keep"
    fleet.write_text((ROOT / "deploy.toml").read_text())
    *_, run, _ = _rollout(str(fleet), "production", None, 0, "stop-wave", True, None)
    assert run.partial_failure == "rollback"  # the safe default
    assert not run.ignore_stop_failures
    *_, run, _ = _rollout(str(fleet), "production", None, 0, "stop-wave", True, None, True)  # --ignore-stop-failures
    assert run.ignore_stop_failures


def test_the_plan_says_how_partial_failures_and_stop_failures_are_handled() -> None:
    from deploytool.config import Group

    groups = [Group(name="email", asg="asg-email", queues=["q"], strategy="AllAtOnce")]

    def header(**options: object) -> str:
        plan = commands.restart_plan("sandbox", groups, RolloutOptions(**options), datetime(2025, 1, 1, tzinfo=UTC))  # type: ignore[arg-type]
        return commands.plan_lines(plan, {}, "new")[0]

    assert header().endswith("on failure stop-wave, partial failure rollback")
    assert header(partial_failure="keep", ignore_stop_failures=True).endswith(
        "on failure stop-wave, partial failure keep, ApplicationStop failures ignored"
    )
