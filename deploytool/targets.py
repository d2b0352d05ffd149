"""Which target a command acts on, resolved in one place: kind -> session, backend, reconcile engine.

Contract (no other module looks at a target's kind; deploytool.config only validates it):
- `target(fleet, name)` -> Target, what the kind decides, without I/O:
  - `local` (the sandbox): its deployments run in threads of THIS process, so they cannot outlive it:
    `detachable` False (the rollout then turns a detach into "stop every deployment and roll back" and
    follows that to the end: deploytool.rollout.interrupt); reconcile on DuckDB over a mirror under the
    sandbox root; no Athena results location; no `fab setup`.
  - `codedeploy`: deployments run in AWS, a rollout may detach from them; reconcile on Athena, results in
    s3://<bucket>/<prefix>/athena-results/ unless given.
- `connect(fleet, name)` -> Connected: the Target plus its AwsSession and rollout Backend:
  - local: the moto server and LocalBackend of the sandbox `fab sandbox-up` left running
    (deploytool.sandbox.session.attach; UsageError, exit 2, when none runs). As a last guard, the process
    aborts any deployment of that backend still running when it exits (atexit: backend.shutdown).
  - codedeploy: an AwsSession on the fleet's region/profile (endpoint: `endpoint_url`, else
    $DEPLOYTOOL_AWS_ENDPOINT_URL) and CodeDeployBackend on its CodeDeploy client.
  `in_session(fleet, sandbox)` is the same for the sandbox this process runs itself (`fab sandbox`).
- Connected.services(...) -> the rollout's Services (the release store on the target's session), and
  Connected.reconcile_services(...) -> reconcile's gateways on that same session: a release, its tags and
  the reconcile that checks it always talk to one place.
- `settings_for(fleet, name, ...)`: reconcile settings with the kind's engine and mirror directory.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from deploytool.aws.codedeploy import CodeDeployGateway
from deploytool.aws.s3 import S3Gateway
from deploytool.aws.session import AwsSession
from deploytool.aws.versions import require_botocore
from deploytool.config import CodeDeployTarget, Fleet, LocalTarget
from deploytool.errors import UsageError
from deploytool.reconcile import command as reconcile_command
from deploytool.reconcile.pipeline import EngineName, ReconcileServices, ReconcileSettings
from deploytool.rollout.backend import Backend
from deploytool.rollout.codedeploy import CodeDeployBackend
from deploytool.rollout.gate import PRODUCTION_TELEMETRY_S
from deploytool.rollout.record import ReleaseStore
from deploytool.rollout.setup import application_name
from deploytool.rollout.wiring import LeaseOptions, Services
from deploytool.sandbox.fleet import TELEMETRY_INTERVAL_S as SANDBOX_TELEMETRY_S
from deploytool.sandbox.motoserver import recorded
from deploytool.sandbox.session import SandboxSession, attach, read_sandbox_info, sandbox_root

ENDPOINT_ENV = "DEPLOYTOOL_AWS_ENDPOINT_URL"


@dataclass(frozen=True)
class Target:
    name: str
    kind: Literal["local", "codedeploy"]
    config: LocalTarget | CodeDeployTarget
    detachable: bool  # True when deployments keep running without this process
    telemetry_s: float  # the workers publish their telemetry this often (the health gate looks as often)
    engine: EngineName  # the reconcile engine unless one is asked for
    mirror_root: Path  # where the duckdb engine mirrors the S3 partitions it reads
    athena_output: str | None  # Athena's results location unless one is given


def target(fleet: Fleet, name: str | None) -> Target:
    chosen, config = fleet.target(name)
    if isinstance(config, LocalTarget):
        return Target(
            chosen,
            "local",
            config,
            detachable=False,
            telemetry_s=SANDBOX_TELEMETRY_S,
            engine="duckdb",
            mirror_root=fleet.root / config.root / "reconcile-mirror",
            athena_output=None,
        )
    return Target(
        chosen,
        "codedeploy",
        config,
        detachable=True,
        telemetry_s=PRODUCTION_TELEMETRY_S,
        engine="athena",
        mirror_root=fleet.root / ".deploytool" / "reconcile-mirror",
        athena_output=f"s3://{fleet.artifacts.bucket}/{fleet.artifacts.prefix}/athena-results/",
    )


def codedeploy(fleet: Fleet, name: str | None) -> CodeDeployTarget:
    """The target's CodeDeploy settings (`fab setup`); a sandbox target is refused before any AWS call."""
    chosen = target(fleet, name)
    if not isinstance(chosen.config, CodeDeployTarget):
        raise UsageError(
            f"target {chosen.name!r} is a local sandbox: it needs no setup (`fab setup` is for codedeploy targets)"
        )
    return chosen.config


def sandbox_missing(fleet: Fleet, name: str | None) -> bool:
    """A local target whose sandbox is not running (`connect` would refuse it; a dry run plans from the fleet
    file alone instead). Always False for codedeploy."""
    chosen = target(fleet, name)
    if not isinstance(chosen.config, LocalTarget):
        return False
    root = sandbox_root(fleet, chosen.config)
    return read_sandbox_info(root) is None or recorded(root / "run" / "moto.pid") is None


@dataclass(frozen=True)
class Connected:
    target: Target
    aws: AwsSession  # the release store, tags and reconcile use this session too
    backend: Backend

    def services(self, fleet: Fleet, console: Console, *, ci: bool, lease: LeaseOptions | None = None) -> Services:
        """The rollout's services; every rollout on them runs under the target's release lease (`lease`: the
        command named in it and --wait / --break-lease; default: a `deploy` that neither waits nor breaks)."""
        s3 = S3Gateway.for_artifacts(self.aws, fleet.artifacts)
        store = ReleaseStore(s3, bucket=fleet.artifacts.bucket, prefix=fleet.artifacts.prefix, app=fleet.app.name)
        return Services(
            self.aws,
            self.backend,
            store,
            console,
            interactive=console.is_terminal and not ci,
            detachable=self.target.detachable,
            telemetry_s=self.target.telemetry_s,
            lease=lease or LeaseOptions(),
        )

    def reconcile_services(self, fleet: Fleet) -> ReconcileServices:
        return reconcile_command.services_for(fleet, session=self.aws)


def connect(fleet: Fleet, name: str | None, *, endpoint_url: str | None = None) -> Connected:
    chosen = target(fleet, name)
    require_botocore()  # a botocore older than the floor: one line, exit 2, before any AWS call
    if isinstance(chosen.config, LocalTarget):
        attached = attach(fleet, chosen.name)
        atexit.register(attached.backend.shutdown)  # no deployment thread is silently cut off at exit
        return Connected(chosen, attached.aws, attached.backend)
    aws = codedeploy_session(fleet, endpoint_url=endpoint_url)
    backend = CodeDeployBackend(
        CodeDeployGateway(aws),
        application=application_name(fleet, chosen.config),
        restart_mode=fleet.app.restart_mode,  # deploymentMode RESTART needs CodeDeploy agent 2.1.0+
    )
    return Connected(chosen, aws, backend)


def codedeploy_session(
    fleet: Fleet, *, endpoint_url: str | None = None, retries: dict[str, Any] | None = None
) -> AwsSession:
    """A codedeploy target's AwsSession: the fleet's region and profile; the endpoint given, else
    $DEPLOYTOOL_AWS_ENDPOINT_URL, else AWS's (`connect` and `fab doctor` use it; doctor with fewer retries)."""
    return AwsSession(
        region=fleet.aws.region,
        profile=fleet.aws.profile,
        endpoint_url=endpoint_url or os.environ.get(ENDPOINT_ENV) or None,
        retries=retries,
    )


def in_session(fleet: Fleet, sandbox: SandboxSession) -> Connected:
    """The sandbox this process started (`fab sandbox`): its session and backend, as `connect` gives them."""
    return Connected(target(fleet, sandbox.target_name), sandbox.aws, sandbox.backend)


def settings_for(
    fleet: Fleet,
    name: str | None,
    *,
    engine: str | None = None,
    mirror: str | None = None,
    days: int = 1,
    release: str = "",
    snapshot: bool = True,
    groups: list[str] | None = None,
    database: str | None = None,
    workgroup: str | None = None,
    output_location: str | None = None,
    live: bool = False,
) -> ReconcileSettings:
    """Reconcile settings from the task's options, with the target's engine and mirror unless given."""
    chosen = target(fleet, name)
    return reconcile_command.settings(
        fleet,
        chosen.name,
        engine=engine or chosen.engine,
        mirror_root=Path(mirror) if mirror else chosen.mirror_root,
        default_output=chosen.athena_output,
        days=days,
        release=release,
        snapshot=snapshot,
        groups=groups,
        database=database,
        workgroup=workgroup,
        output_location=output_location,
        live=live,
    )


def athena_settings(fleet: Fleet, *, database: str | None = None, workgroup: str | None = None) -> ReconcileSettings:
    """The settings `fab athena-ddl` uses: those of the fleet's first codedeploy target (else its default)."""
    first = next((n for n, t in fleet.targets.items() if isinstance(t, CodeDeployTarget)), None)
    return settings_for(fleet, first, engine="athena", database=database, workgroup=workgroup)
