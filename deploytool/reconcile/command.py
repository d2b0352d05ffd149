"""What `fab reconcile` runs, and what `fab deploy` runs at its end: reconcile, render, fix, verdict.

Contract: `run_reconcile` reconciles (pipeline.py), writes the report through the injected console
(rich tables, or JSON with as_json), appends markdown to $GITHUB_STEP_SUMMARY when the injected env
sets it, and with `fix` redeploys the expected revision to the drifted instances through the
injected runner and reconciles again. It returns the final report, or raises DriftFound (exit 3)
when any instance still drifts. Nothing here knows target kinds: the session, the engine and the
mirror directory of a target come from deploytool.targets (`services_for` builds the gateways on the
session it is given; `settings` takes the target's engine and mirror directory).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

from rich.console import Console

from deploytool.aws.athena import AthenaGateway
from deploytool.aws.autoscaling import AutoScalingGateway
from deploytool.aws.cloudwatch import CloudWatchGateway
from deploytool.aws.ec2 import Ec2Gateway
from deploytool.aws.s3 import S3Gateway
from deploytool.aws.session import AwsSession
from deploytool.config import Fleet
from deploytool.errors import DriftFound, UsageError
from deploytool.reconcile.fix import FixOutcome, FixRunner, apply_fix, load_manifest, plan_fix
from deploytool.reconcile.fix_runner import orchestrated_runner
from deploytool.reconcile.pipeline import EngineName, ReconcileServices, ReconcileSettings, reconcile
from deploytool.reconcile.report import ReconcileReport, append_step_summary, rich_tables
from deploytool.reconcile.sql import TABLES, load_table
from deploytool.rollout.backend import Backend
from deploytool.rollout.wiring import Services as RolloutServices


def services_for(fleet: Fleet, *, session: AwsSession) -> ReconcileServices:
    """Reconcile's gateways, all on one AwsSession (the target's: deploytool.targets)."""
    return ReconcileServices(
        s3=S3Gateway.for_artifacts(session, fleet.artifacts),
        autoscaling=AutoScalingGateway(session),
        ec2=Ec2Gateway(session),
        athena=AthenaGateway(session),
        cloudwatch=CloudWatchGateway(session),
        now=lambda: datetime.now(UTC),
        sleep=time.sleep,
        clock=time.monotonic,
    )


def settings(
    fleet: Fleet,
    target_name: str,
    *,
    engine: str,
    mirror_root: Path,
    default_output: str | None,
    days: int = 1,
    release: str = "",
    snapshot: bool = True,
    groups: list[str] | None = None,
    database: str | None = None,
    workgroup: str | None = None,
    output_location: str | None = None,
    live: bool = False,
) -> ReconcileSettings:
    """Settings from the task's options; `engine`, `mirror_root` and `default_output` (the Athena results
    location when none is given) are the target's (deploytool.targets.settings_for chooses them by kind)."""
    if engine not in get_args(EngineName):
        raise UsageError(f"--engine {engine!r}: allowed: {', '.join(get_args(EngineName))}")
    if groups:
        fleet.select_groups(groups)  # unknown names are a usage error
    output = output_location or os.environ.get("DEPLOYTOOL_ATHENA_OUTPUT") or default_output
    return ReconcileSettings(
        target=target_name,
        engine="athena" if engine == "athena" else "duckdb",
        days=days,
        release=release,
        snapshot=snapshot,
        groups=tuple(groups) if groups else None,
        mirror_root=mirror_root,
        database=database or os.environ.get("DEPLOYTOOL_ATHENA_DATABASE") or "deploytool",
        workgroup=workgroup or os.environ.get("DEPLOYTOOL_ATHENA_WORKGROUP") or "primary",
        output_location=output,
        live=live,
        # Athena writes its results with the caller's rights: into the fleet's bucket, with the fleet's KMS key
        # (a bucket policy that enforces aws:kms refuses them otherwise); elsewhere, as that location wants
        results_kms_key=fleet.artifacts.kms_key_id
        if output and output.startswith(f"s3://{fleet.artifacts.bucket}/")
        else None,
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
    settings: ReconcileSettings,
    *,
    apply: bool = False,
    services: ReconcileServices | None = None,
) -> list[str]:
    """The DDL of both tables for this fleet's bucket and prefix; printed, or run on Athena (`services`) with apply.

    `settings` name the database, workgroup and results location (deploytool.targets.athena_settings)."""
    if not _DATABASE.fullmatch(settings.database):
        raise UsageError(f"--database {settings.database!r}: allowed: lowercase letters, digits and _")
    statements = [f"CREATE DATABASE IF NOT EXISTS {settings.database}"] + [
        load_table(name).render(bucket=fleet.artifacts.bucket, prefix=fleet.artifacts.prefix) for name in TABLES
    ]
    if not apply:
        for statement in statements:
            console.print(statement.rstrip() + ";\n", markup=False, highlight=False, soft_wrap=True)
        return statements
    chosen = services
    if chosen is None or chosen.athena is None:
        raise UsageError("--apply needs AWS access to Athena")
    for statement in statements:
        chosen.athena.run_ddl(
            statement,
            # CREATE DATABASE runs with no database context (Athena fails a query whose context database does
            # not exist yet); the tables after it, in the new database
            database=None if statement.startswith("CREATE DATABASE") else settings.database,
            workgroup=settings.workgroup,
            output_location=settings.output_location,
            sleep=chosen.sleep,
            clock=chosen.clock,
            kms_key_id=settings.results_kms_key,
        )
        first = next(line for line in statement.splitlines() if line.startswith("CREATE"))
        console.print(f"ran: {first.rstrip(' (')}", markup=False)
    return statements


def fix_runner_for(rollout: RolloutServices, target_name: str) -> tuple[FixRunner, Backend]:
    """--fix deploys through the one rollout wiring on the target's backend (the rollout tasks' services)."""
    return orchestrated_runner(rollout, target_name), rollout.backend


def reconcile_after_deploy(
    fleet: Fleet,
    console: Console,
    *,
    settings: ReconcileSettings,
    services: ReconcileServices,
    as_json: bool = False,
    env: Mapping[str, str] | None = None,
) -> ReconcileReport:
    """`fab deploy`'s last step (unless --no-reconcile): reconcile the deployed groups (`settings.groups`) on the
    rollout's session. DriftFound (exit 3)."""
    return run_reconcile(fleet, settings, services, console, as_json=as_json, env=env)
