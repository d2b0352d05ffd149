"""Reconcile, wired: snapshot -> (mirror) -> query -> report, and the same again after a --fix.

Contract: `reconcile(fleet, settings, services)` snapshots the fleet's groups to S3 (unless
settings.snapshot is False), runs athena/reconcile.sql on Athena or on DuckDB over the window of dt
partitions ending on the snapshot's day, and returns the report. It reads and writes through the
injected gateways and clock only; it prints nothing. The fab task (and `fab deploy`'s final step)
render the report and turn drift into exit code 3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal

from deploytool.aws.athena import AthenaGateway
from deploytool.aws.autoscaling import AutoScalingGateway
from deploytool.aws.ec2 import Ec2Gateway
from deploytool.aws.s3 import S3Gateway
from deploytool.config import Fleet
from deploytool.errors import UsageError
from deploytool.model import day_of
from deploytool.reconcile.inventory import Snapshot, take_snapshot, write_snapshot
from deploytool.reconcile.mirror import MirrorResult, mirror_tables
from deploytool.reconcile.query import AthenaEngine, DuckDbEngine, QueryResult
from deploytool.reconcile.report import ReconcileReport, build_report
from deploytool.reconcile.sql import load_query

EngineName = Literal["athena", "duckdb"]


@dataclass(frozen=True)
class ReconcileSettings:
    target: str
    engine: EngineName
    days: int = 1  # dt partitions to read, ending on the snapshot's day
    release: str = ""  # reconcile against this release id instead of each group's last good release
    snapshot: bool = True
    groups: tuple[str, ...] | None = None
    mirror_root: Path | None = None  # duckdb: where the S3 objects are copied
    database: str = "deploytool"
    workgroup: str = "primary"
    output_location: str | None = None  # athena: s3://... for results (None: the workgroup's)


@dataclass
class ReconcileServices:
    s3: S3Gateway
    autoscaling: AutoScalingGateway
    ec2: Ec2Gateway
    now: Callable[[], datetime]
    sleep: Callable[[float], None]
    clock: Callable[[], float]
    athena: AthenaGateway | None = None


@dataclass(frozen=True)
class ReconcileRun:
    report: ReconcileReport
    result: QueryResult
    snapshot: Snapshot | None = None
    snapshot_keys: tuple[str, ...] = ()
    mirror: MirrorResult | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def snapshot_fleet(
    fleet: Fleet, settings: ReconcileSettings, services: ReconcileServices
) -> tuple[Snapshot, list[str]]:
    groups = fleet.select_groups(list(settings.groups) if settings.groups else None)
    snap = take_snapshot(services.autoscaling, services.ec2, app=fleet.app.name, groups=groups, now=services.now())
    keys = write_snapshot(services.s3, fleet.artifacts.bucket, fleet.artifacts.prefix, snap)
    return snap, keys


def reconcile(fleet: Fleet, settings: ReconcileSettings, services: ReconcileServices) -> ReconcileRun:
    snap: Snapshot | None = None
    keys: list[str] = []
    notes: list[str] = []
    if settings.snapshot:
        snap, keys = snapshot_fleet(fleet, settings, services)
        notes += [f"ASG {name} not found: its group is reported with no instances" for name in snap.missing_asgs]
        last_day = snap.day
    else:
        last_day = day_of(services.now())
    window = days_back(last_day, settings.days)
    values = {
        "app": fleet.app.name,
        "target": settings.target,
        "release": settings.release,
        "dt_from": window[0],
        "dt_to": window[1],
    }
    query = load_query("reconcile")
    mirrored: MirrorResult | None = None
    if settings.engine == "athena":
        if services.athena is None:
            raise UsageError("the athena engine needs an Athena gateway (AWS credentials and region)")
        engine = AthenaEngine(
            services.athena,
            database=settings.database,
            workgroup=settings.workgroup,
            output_location=settings.output_location,
            sleep=services.sleep,
            clock=services.clock,
        )
        result = engine.run(query, values)
    else:
        if settings.mirror_root is None:
            raise UsageError("the duckdb engine needs a mirror directory")
        mirrored = mirror_tables(
            services.s3,
            fleet.artifacts.bucket,
            prefix=fleet.artifacts.prefix,
            app=fleet.app.name,
            root=settings.mirror_root,
            days=day_range(*window),
        )
        with DuckDbEngine(settings.mirror_root, fleet.artifacts.prefix) as duck:
            result = duck.run(query, values, measure=True)
    names = [g.name for g in fleet.select_groups(list(settings.groups) if settings.groups else None)]
    report = build_report(
        result,
        app=fleet.app.name,
        target=settings.target,
        window=window,
        groups=names,
        notes=notes,
        release=settings.release,
    )
    return ReconcileRun(
        report=report, result=result, snapshot=snap, snapshot_keys=tuple(keys), mirror=mirrored, notes=tuple(notes)
    )


def days_back(last: str, days: int) -> tuple[str, str]:
    """The dt window [last - (days - 1), last] as text."""
    if days < 1:
        raise UsageError(f"--days {days}: allowed: 1 or more")
    end = date.fromisoformat(last)
    return (end - timedelta(days=days - 1)).isoformat(), end.isoformat()


def day_range(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]
