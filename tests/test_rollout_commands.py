"""The rollout tasks end to end on the sample fleet: real bundle, moto S3, the CodeDeploy simulator."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from deploytool.aws.s3 import S3Gateway
from deploytool.config import Fleet, load_fleet
from deploytool.errors import DeployFailed
from deploytool.rollout import commands
from deploytool.rollout.commands import Output, Services
from deploytool.rollout.events import Event, GroupStarted
from deploytool.rollout.plan import RolloutOptions
from deploytool.rollout.record import ReleaseStore
from tests.cdsim.env import CodeDeployEnv, codedeploy_env
from tests.fleet_fixtures import TEMPLATES

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"acme-email-workers": 2, "acme-reports-workers": 3, "acme-video-workers": 2}


@dataclass
class World:
    env: CodeDeployEnv
    fleet: Fleet
    services: Services
    out: io.StringIO
    tmp: Path
    moment: list[datetime]

    def deploy(self, version: str, **kwargs: object) -> object:
        self.moment[0] += timedelta(minutes=5)
        return commands.deploy(self.fleet, "production", self.fleet.groups, RolloutOptions(), self.services,
                               Output(ci=True, json_out=kwargs.pop("json_out", None)),  # type: ignore[arg-type]
                               version=version, allow_dirty=False, templates=TEMPLATES, out_dir=self.tmp / "dist",
                               **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    shutil.copy(ROOT / "deploy.toml", tmp_path / "deploy.toml")  # outside git: the version is the one given
    shutil.copytree(ROOT / "sample_app", tmp_path / "sample_app", ignore=shutil.ignore_patterns("__pycache__"))
    fleet = load_fleet(tmp_path / "deploy.toml")
    with codedeploy_env(SIZES) as env:
        s3 = S3Gateway(env.aws)
        s3.create_bucket(fleet.artifacts.bucket, "us-east-1")
        store = ReleaseStore(s3, bucket=fleet.artifacts.bucket, prefix=fleet.artifacts.prefix, app=fleet.app.name)
        out = io.StringIO()
        moment = [datetime(2025, 5, 1, 12, 0, tzinfo=UTC)]
        services = Services(env.aws, env.backend(), store, Console(file=out, width=200), clock=env.clock,
                            now=lambda: moment[0], interactive=False)
        commands.setup(fleet, "production", env.gateway, services.console, dry_run=False)
        yield World(env, fleet, services, out, tmp_path, moment)


def test_deploy_publishes_rolls_out_and_records_the_release(world: World, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = world.deploy("v1", json_out=str(tmp_path / "result.json"))
    assert result is not None and result.succeeded  # type: ignore[attr-defined]
    manifest = world.services.store.find("production", "v1")
    assert manifest is not None and manifest.release_id == "20250501T120500Z-v1"
    assert {g: d["status"] for g, d in manifest.deployments.items()} == {
        "email": "Succeeded", "reports": "Succeeded", "video": "Succeeded"}
    assert world.services.store.history("production")[0].outcome == "succeeded"
    head = world.services.store.s3.head(manifest.bucket, manifest.key)
    assert head is not None and manifest.key.startswith("deploytool/acme-workers/v1/")
    assert json.loads((tmp_path / "result.json").read_text())["succeeded"] is True
    assert "deploytool deploy `v1` to `production`: succeeded" in summary.read_text()
    lines = world.out.getvalue()
    assert "wave 0 started: email" in lines and "wave 1 started: reports, video" in lines
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
    result = commands.rollback(world.fleet, "production", world.fleet.groups, RolloutOptions(), world.services,
                               Output(ci=True), to_version=None)
    assert result is not None and result.succeeded and result.version == "v1"
    every = [i for ids in world.env.asg_instances.values() for i in ids]
    assert all("/v1/" in world.env.sim.instance_revision[i] for i in every)
    history = world.services.store.history("production")
    assert [h.version for h in history] == ["v1", "v2", "v1"]
    found = world.services.store.find("production", "v1")
    assert found is not None and found.release_id == result.release_id  # the index now points at the rollback


def test_restart_and_status(world: World) -> None:
    world.deploy("v1")
    result = commands.restart(world.fleet, "production", world.fleet.groups, RolloutOptions(max_parallel=1),
                              world.services, Output(ci=True))
    assert result is not None and result.succeeded
    restarts = [d for d in world.env.sim.deployments.values() if d.mode == "RESTART"]
    assert len(restarts) == 3
    world.out.truncate(0)
    commands.status(world.fleet, "production", world.services, None)
    text = world.out.getvalue()
    assert "release 20250501T120500Z-v1: v1 on production" in text
    assert "video" in text and "Succeeded" in text and "2/0/2" in text


class CtrlC:
    """Raises KeyboardInterrupt once, when the first group has started (a user pressing Ctrl-C)."""

    def __init__(self) -> None:
        self.fired = False

    def publish(self, event: Event) -> None:
        if isinstance(event, GroupStarted) and not self.fired:
            self.fired = True
            raise KeyboardInterrupt


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


@pytest.mark.parametrize("args, message", [
    (["deploy", "--target", "production", "--on-failure", "explode"], "--on-failure 'explode' is not allowed"),
    (["deploy", "--target", "production", "--max-parallel", "-2"], "--max-parallel must be 0"),
    (["restart", "--target", "production", "--groups", "email,nope"], "no group named 'nope'"),
    (["setup", "--target", "sandbox"], "it needs no setup"),
])
def test_bad_options_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    fab = str(Path(sys.executable).with_name("fab"))
    done = subprocess.run([fab, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr and "Traceback" not in done.stderr
