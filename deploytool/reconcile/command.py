"""What `fab reconcile` runs, and what `fab deploy` runs at its end: reconcile, render, fix, verdict.

Contract: `run_reconcile` reconciles (pipeline.py), writes the report through the injected console
(rich tables, or JSON with as_json), appends markdown to $GITHUB_STEP_SUMMARY when the injected env
sets it, and with `fix` redeploys the expected revision to the drifted instances through the
injected runner and reconciles again. It returns the final report, or raises DriftFound (exit 3)
when any instance still drifts. `services_for` builds the gateways from one AwsSession: the one given,
else for a local target the running sandbox's (its moto server; UsageError, exit 2, when no sandbox
runs), else one on the fleet's region/profile (endpoint: `endpoint_url` or $DEPLOYTOOL_AWS_ENDPOINT_URL).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from deploytool.aws.athena import AthenaGateway
from deploytool.aws.autoscaling import AutoScalingGateway
from deploytool.aws.ec2 import Ec2Gateway
from deploytool.aws.s3 import S3Gateway
from deploytool.aws.session import AwsSession
from deploytool.config import CodeDeployTarget, Fleet, LocalTarget
from deploytool.errors import DriftFound, UsageError
from deploytool.reconcile.fix import FixOutcome, FixRunner, apply_fix, load_manifest, plan_fix
from deploytool.reconcile.pipeline import EngineName, ReconcileServices, ReconcileSettings, reconcile
from deploytool.reconcile.report import ReconcileReport, append_step_summary, rich_tables
from deploytool.reconcile.sql import TABLES, load_table
from deploytool.rollout.backend import Backend

if TYPE_CHECKING:
    from deploytool.rollout.commands import Services as RolloutServices

ENDPOINT_ENV = "DEPLOYTOOL_AWS_ENDPOINT_URL"


def services_for(
    fleet: Fleet, *, target: str | None = None, session: AwsSession | None = None, endpoint_url: str | None = None
) -> ReconcileServices:
    chosen = session or _session_for(fleet, target, endpoint_url)
    return ReconcileServices(
        s3=S3Gateway(chosen, expected_bucket_owner=fleet.artifacts.expected_bucket_owner),
        autoscaling=AutoScalingGateway(chosen),
        ec2=Ec2Gateway(chosen),
        athena=AthenaGateway(chosen),
        now=lambda: datetime.now(UTC),
        sleep=time.sleep,
        clock=time.monotonic,
    )


def _session_for(fleet: Fleet, target: str | None, endpoint_url: str | None) -> AwsSession:
    name, chosen = fleet.target(target)
    if isinstance(chosen, LocalTarget):
        from deploytool.sandbox.session import attach  # the sandbox package only when a local target is used

        return attach(fleet, name).aws
    return AwsSession(
        region=fleet.aws.region, profile=fleet.aws.profile,
        endpoint_url=endpoint_url or os.environ.get(ENDPOINT_ENV) or None,
    )


def settings_for(
    fleet: Fleet,
    target_name: str | None = None,
    *,
    engine: str | None = None,
    days: int = 1,
    release: str = "",
    snapshot: bool = True,
    groups: list[str] | None = None,
    mirror: str | None = None,
    database: str | None = None,
    workgroup: str | None = None,
    output_location: str | None = None,
) -> ReconcileSettings:
    """Settings from the fleet and the task's options: DuckDB for a local target, Athena for CodeDeploy."""
    name, target = fleet.target(target_name)
    chosen = engine or ("duckdb" if isinstance(target, LocalTarget) else "athena")
    if chosen not in ("athena", "duckdb"):
        raise UsageError(f"--engine {chosen!r}: allowed: athena, duckdb")
    if mirror:
        root = Path(mirror)
    elif isinstance(target, LocalTarget):
        root = fleet.root / target.root / "reconcile-mirror"
    else:
        root = fleet.root / ".deploytool" / "reconcile-mirror"
    if groups:
        fleet.select_groups(groups)  # unknown names are a usage error
    default_output = f"s3://{fleet.artifacts.bucket}/{fleet.artifacts.prefix}/athena-results/"
    engine_name: EngineName = "athena" if chosen == "athena" else "duckdb"
    return ReconcileSettings(
        target=name,
        engine=engine_name,
        days=days,
        release=release,
        snapshot=snapshot,
        groups=tuple(groups) if groups else None,
        mirror_root=root,
        database=database or os.environ.get("DEPLOYTOOL_ATHENA_DATABASE") or "deploytool",
        workgroup=workgroup or os.environ.get("DEPLOYTOOL_ATHENA_WORKGROUP") or "primary",
        output_location=output_location or os.environ.get("DEPLOYTOOL_ATHENA_OUTPUT") or (
            default_output if isinstance(target, CodeDeployTarget) else None
        ),
    )


def _fix(
    report: ReconcileReport, fleet: Fleet, services: ReconcileServices, runner: FixRunner, backend: Backend
) -> FixOutcome:
    release_ids = sorted({g.release_id for g in report.groups if g.problems and g.release_id})
    manifests = {
        rid: load_manifest(services.s3, fleet.artifacts.bucket, fleet.artifacts.prefix, fleet.app.name, rid)
        for rid in release_ids
    }
    return apply_fix(plan_fix(report, fleet, manifests), runner, ec2=services.ec2, backend=backend)


def _fix_summary(outcome: FixOutcome) -> dict[str, object]:
    return {
        "requests": [
            {"group": r.group.name, "release_id": r.release_id, "instances": list(r.target_instances or ())}
            for r in outcome.plan.requests
        ],
        "skipped": list(outcome.plan.skipped),
        "deployments": [{"group": f.group, "deployment_id": f.deployment_id} for f in outcome.finished],
        "tagged": outcome.tags.count,
        "create_tags_calls": outcome.tags.calls,
    }


def run_reconcile(
    fleet: Fleet,
    settings: ReconcileSettings,
    services: ReconcileServices,
    console: Console,
    *,
    as_json: bool = False,
    env: Mapping[str, str] | None = None,
    fix: bool = False,
    runner: FixRunner | None = None,
    backend: Backend | None = None,
) -> ReconcileReport:
    """Reconcile and report; with fix, redeploy to drifted instances and check again. DriftFound if drift."""
    environ = os.environ if env is None else env
    report = reconcile(fleet, settings, services).report
    fixed: FixOutcome | None = None
    if fix and report.has_drift:
        if runner is None or backend is None:
            raise UsageError(f"--fix: no deploy runner for target {settings.target!r}")
        if not as_json:
            console.print(rich_tables(report))
        fixed = _fix(report, fleet, services, runner, backend)
        if not as_json:
            console.print(
                f"fix: redeployed to {fixed.plan.instances} instance(s) in {len(fixed.plan.requests)} group(s); "
                f"tagged {fixed.tags.count}"
            )
            for why in fixed.plan.skipped:
                console.print(f"[yellow]fix skipped[/] {why}")
        report = reconcile(fleet, settings, services).report
    if as_json:
        data = report.to_dict()
        if fixed is not None:
            data["fix"] = _fix_summary(fixed)
        console.print(json.dumps(data, indent=2), markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(rich_tables(report))
    append_step_summary(report, environ)
    if report.has_drift:
        raise DriftFound(
            f"drift: {report.drift_count} instance(s) do not run their group's expected version "
            f"({', '.join(g.group for g in report.groups if g.problems)})"
        )
    return report


_DATABASE = re.compile(r"^[a-z0-9_]{1,255}$")


def athena_setup(
    fleet: Fleet,
    console: Console,
    *,
    apply: bool = False,
    database: str | None = None,
    workgroup: str | None = None,
    services: ReconcileServices | None = None,
) -> list[str]:
    """The DDL of both tables for this fleet's bucket and prefix; printed, or run on Athena with apply."""
    settings = settings_for(fleet, _athena_target(fleet), engine="athena", database=database, workgroup=workgroup)
    if not _DATABASE.fullmatch(settings.database):
        raise UsageError(f"--database {settings.database!r}: allowed: lowercase letters, digits and _")
    statements = [f"CREATE DATABASE IF NOT EXISTS {settings.database}"] + [
        load_table(name).render(bucket=fleet.artifacts.bucket, prefix=fleet.artifacts.prefix) for name in TABLES
    ]
    if not apply:
        for statement in statements:
            console.print(statement.rstrip() + ";\n", markup=False, highlight=False, soft_wrap=True)
        return statements
    chosen = services or services_for(fleet, target=settings.target)
    if chosen.athena is None:
        raise UsageError("--apply needs AWS access to Athena")
    for statement in statements:
        chosen.athena.run_ddl(
            statement, database=settings.database, workgroup=settings.workgroup,
            output_location=settings.output_location, sleep=chosen.sleep, clock=chosen.clock,
        )
        first = next(line for line in statement.splitlines() if line.startswith("CREATE"))
        console.print(f"ran: {first.rstrip(' (')}", markup=False)
    return statements


def _athena_target(fleet: Fleet) -> str | None:
    for name, target in fleet.targets.items():
        if isinstance(target, CodeDeployTarget):
            return name
    return None


def fix_runner_for(rollout: RolloutServices, target_name: str) -> tuple[FixRunner, Backend]:
    """--fix deploys through the rollout orchestrator on the target's backend (the rollout tasks' services)."""
    from deploytool.reconcile.fix_runner import orchestrated_runner

    return orchestrated_runner(rollout, target_name), rollout.backend


def reconcile_after_deploy(
    fleet: Fleet,
    target_name: str | None,
    console: Console,
    *,
    groups: list[str] | None = None,
    as_json: bool = False,
    services: ReconcileServices | None = None,
    env: Mapping[str, str] | None = None,
    settings: ReconcileSettings | None = None,
) -> ReconcileReport:
    """`fab deploy`'s last step (unless --no-reconcile): reconcile the deployed groups. DriftFound (exit 3).

    `settings` (e.g. another engine) replace the target's defaults for these groups."""
    chosen = settings or settings_for(fleet, target_name, groups=groups)
    return run_reconcile(fleet, chosen, services or services_for(fleet, target=chosen.target), console,
                         as_json=as_json, env=env)
