"""Helpers for rollout tests on the CodeDeploy simulator: a fleet (tests/builders.py) set up, then released;
and `sample_world`: the sample fleet (deploy.toml, sample_app) set up on the simulator + moto."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from deploytool import targets
from deploytool.aws.codedeploy import CodeDeployGateway
from deploytool.aws.s3 import S3Gateway
from deploytool.config import CodeDeployTarget, Fleet, load_fleet
from deploytool.model import Revision
from deploytool.rollout import commands
from deploytool.rollout.events import Collect, Event, GroupStarted, Reporter
from deploytool.rollout.orchestrator import Orchestrator
from deploytool.rollout.plan import PriorDeployment, RolloutOptions, rollout_plan
from deploytool.rollout.record import ReleaseStore
from deploytool.rollout.result import RolloutResult
from deploytool.rollout.setup import apply_setup, plan_setup
from deploytool.rollout.wiring import Output, Services
from tests.builders import BUCKET, TEMPLATES
from tests.cdsim.env import CodeDeployEnv, codedeploy_env

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_SIZES = {"acme-email-workers": 2, "acme-reports-workers": 3, "acme-video-workers": 2}


def revision(version: str) -> Revision:
    return Revision(
        BUCKET, f"deploytool/acme-workers/{version}/{version}sha.tgz", f'"etag-{version}"', version, f"{version}sha"
    )


def set_up(gateway: CodeDeployGateway, fleet: Fleet) -> None:
    _, target = fleet.target("production")
    assert isinstance(target, CodeDeployTarget)
    apply_setup(plan_setup(fleet, target, gateway), gateway)


def orchestrator(
    env: CodeDeployEnv,
    fleet: Fleet,
    version: str,
    *,
    reporter: Reporter | None = None,
    prior: dict[str, PriorDeployment] | None = None,
    mode: str = "deploy",
    groups: list[str] | None = None,
    target_instances: dict[str, tuple[str, ...]] | None = None,
    last_good: Any = None,
    **options: Any,
) -> Orchestrator:
    plan = rollout_plan(
        release_id=f"20250101T000000Z-{version}",
        version=version,
        target="production",
        groups=fleet.select_groups(groups),
        revision=revision(version),
        options=RolloutOptions(**options),
        mode=mode,  # type: ignore[arg-type]
        prior=prior,
        target_instances=target_instances,
    )
    backend = env.backend(restart_mode=fleet.app.restart_mode)  # as deploytool.targets.connect makes it
    return Orchestrator(backend, plan, reporter=reporter or Collect(), clock=env.clock, last_good=last_good)


def release(env: CodeDeployEnv, fleet: Fleet, version: str, **kwargs: Any) -> RolloutResult:
    return orchestrator(env, fleet, version, **kwargs).run()


class CtrlC:
    """Raises KeyboardInterrupt once, when the first group has started (a user pressing Ctrl-C)."""

    def __init__(self) -> None:
        self.fired = False

    def publish(self, event: Event) -> None:
        if isinstance(event, GroupStarted) and not self.fired:
            self.fired = True
            raise KeyboardInterrupt


class DieAt:
    """A reporter that raises KeyboardInterrupt at the n-th event of a kind: the orchestrator dies there."""

    def __init__(self, kind: type, nth: int = 1) -> None:
        self.kind, self.left = kind, nth
        self.events = Collect()

    def publish(self, event: Any) -> None:
        self.events.publish(event)
        if isinstance(event, self.kind):
            self.left -= 1
            if self.left == 0:
                raise KeyboardInterrupt


@dataclass
class World:
    """The sample fleet on the simulator: `deploy` runs `fab deploy`'s rollout 5 simulated minutes later."""

    env: CodeDeployEnv
    fleet: Fleet
    services: Services
    out: io.StringIO
    tmp: Path
    moment: list[datetime]

    def later(self, minutes: float = 5) -> None:
        self.moment[0] += timedelta(minutes=minutes)

    def deploy(self, version: str, **kwargs: Any) -> Any:
        self.later()
        return commands.deploy(
            self.fleet,
            "production",
            self.fleet.groups,
            kwargs.pop("options", RolloutOptions()),
            self.services,
            Output(ci=True, json_out=kwargs.pop("json_out", None)),
            version=version,
            allow_dirty=False,
            templates=TEMPLATES,
            out_dir=self.tmp / "dist",
            **kwargs,
        )


@contextmanager
def sample_world(
    tmp_path: Path,
    *,
    fleet_text: Callable[[str], str] | None = None,
    before_setup: Callable[[CodeDeployEnv], None] | None = None,
    codedeploy_agent: str | None = None,
) -> Iterator[World]:
    """deploy.toml and sample_app copied outside git (the version is the one given), `fab setup` done.
    `fleet_text` edits the copied deploy.toml; `before_setup` sees the environment just before `fab setup`;
    `codedeploy_agent` is set as app.codedeploy_agent in the copy when given."""
    text = (ROOT / "deploy.toml").read_text()
    if fleet_text:
        text = fleet_text(text)
    if codedeploy_agent is not None:
        text = text.replace("[app]\n", f'[app]\ncodedeploy_agent = "{codedeploy_agent}"\n', 1)
    (tmp_path / "deploy.toml").write_text(text)
    shutil.copytree(ROOT / "sample_app", tmp_path / "sample_app", ignore=shutil.ignore_patterns("__pycache__"))
    fleet = load_fleet(tmp_path / "deploy.toml")
    with codedeploy_env(SAMPLE_SIZES) as env:
        s3 = S3Gateway(env.aws)
        s3.create_bucket(fleet.artifacts.bucket, "us-east-1")
        store = ReleaseStore(s3, bucket=fleet.artifacts.bucket, prefix=fleet.artifacts.prefix, app=fleet.app.name)
        out = io.StringIO()
        moment = [datetime(2025, 5, 1, 12, 0, tzinfo=UTC)]
        services = Services(
            env.aws,
            env.backend(restart_mode=fleet.app.restart_mode),
            store,
            Console(file=out, width=200),
            clock=env.clock,
            now=lambda: moment[0],
            interactive=False,
        )
        if before_setup is not None:
            before_setup(env)
        commands.setup(fleet, targets.codedeploy(fleet, "production"), env.gateway, services.console, dry_run=False)
        yield World(env, fleet, services, out, tmp_path, moment)
