"""Helpers for rollout tests on the CodeDeploy simulator: a fleet built in code, set up, then released."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploytool.aws.codedeploy import CodeDeployGateway
from deploytool.config import CodeDeployTarget, Fleet, parse_fleet
from deploytool.rollout.backend import Revision
from deploytool.rollout.events import Collect, Reporter
from deploytool.rollout.orchestrator import Orchestrator
from deploytool.rollout.plan import PriorDeployment, RolloutOptions, rollout_plan
from deploytool.rollout.result import RolloutResult
from deploytool.rollout.setup import apply_setup, plan_setup
from tests.cdsim.env import CodeDeployEnv

ROLE = "arn:aws:iam::123456789012:role/CodeDeployServiceRole"
BUCKET = "acme-deploy-artifacts"


def make_fleet(groups: list[dict[str, Any]]) -> Fleet:
    data = {
        "app": {"name": "acme-workers", "celery_app": "acme_workers.celery_app:app"},
        "artifacts": {"bucket": BUCKET},
        "defaults": {"queues": ["default"]},
        "groups": [{"asg": f"asg-{g['name']}", **g} for g in groups],
        "targets": {"production": {"backend": "codedeploy", "application": "acme-workers", "service_role_arn": ROLE}},
    }
    return parse_fleet(data, Path("/nonexistent/deploy.toml"))


def revision(version: str) -> Revision:
    return Revision(BUCKET, f"deploytool/acme-workers/{version}/{version}sha.tgz", f'"etag-{version}"', version,
                    f"{version}sha")


def set_up(gateway: CodeDeployGateway, fleet: Fleet) -> None:
    _, target = fleet.target("production")
    assert isinstance(target, CodeDeployTarget)
    apply_setup(plan_setup(fleet, target, gateway), gateway)


def orchestrator(
    env: CodeDeployEnv, fleet: Fleet, version: str, *, reporter: Reporter | None = None,
    prior: dict[str, PriorDeployment] | None = None, mode: str = "deploy", groups: list[str] | None = None,
    target_instances: dict[str, tuple[str, ...]] | None = None, **options: Any,
) -> Orchestrator:
    plan = rollout_plan(
        release_id=f"20250101T000000Z-{version}", version=version, target="production",
        groups=fleet.select_groups(groups), revision=revision(version), options=RolloutOptions(**options),
        mode=mode,  # type: ignore[arg-type]
        prior=prior, target_instances=target_instances,
    )
    return Orchestrator(env.backend(), plan, reporter=reporter or Collect(), clock=env.clock)


def release(env: CodeDeployEnv, fleet: Fleet, version: str, **kwargs: Any) -> RolloutResult:
    return orchestrator(env, fleet, version, **kwargs).run()


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
