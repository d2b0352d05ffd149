"""Reconcile, wired: snapshot -> (mirror) -> query -> report, and the same again after a --fix.

Contract: `reconcile(fleet, settings, services)` snapshots the fleet's groups to S3 (unless
settings.snapshot is False), runs athena/reconcile.sql on Athena or on DuckDB over the window of dt
partitions ending on the snapshot's day, reads the interruption records of the same days (interruptions.py),
with settings.live compares the snapshot with the workers' heartbeats (live.py), and returns the report. The
releases are read from the last `settings.release_days` days (and from the day of `--release` when older); only
when a group finds no release that succeeded for it there is the query run again over every day (`releases_from`
'', a note says so), so a group not deployed for months still gets its last good release. It reads and writes
through the injected gateways and clock only; it prints nothing. The fab task (and `fab deploy`'s final step)
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
from deploytool.aws.cloudwatch import CloudWatchGateway
from deploytool.aws.ec2 import Ec2Gateway
from deploytool.aws.s3 import S3Gateway
from deploytool.config import Fleet
from deploytool.errors import UsageError
from deploytool.model import day_of, release_time
from deploytool.reconcile.interruptions import read_interruptions
from deploytool.reconcile.inventory import Snapshot, take_snapshot, write_snapshot
from deploytool.reconcile.live import LIVE_WINDOW_S, LiveReport, live_check
from deploytool.reconcile.mirror import MirrorResult, mirror_tables
from deploytool.reconcile.query import AthenaEngine, DuckDbEngine, QueryResult
from deploytool.reconcile.report import ReconcileReport, build_report
from deploytool.reconcile.sql import load_query

EngineName = Literal["athena", "duckdb"]
RELEASE_DAYS = 30  # the window of recent releases reconcile.sql reads first (dt >= its first day)


@dataclass(frozen=True)
class ReconcileSettings:
    target: str
    engine: EngineName
    days: int = 1  # dt partitions to read, ending on the snapshot's day
    release_days: int = RELEASE_DAYS  # releases read first: this many days ending on the snapshot's day
    release: str = ""  # reconcile against this release id instead of each group's last good release
    snapshot: bool = True
    groups: tuple[str, ...] | None = None
    mirror_root: Path | None = None  # duckdb: where the S3 objects are copied
    database: str = "deploytool"
    workgroup: str = "primary"
    output_location: str | None = None  # athena: s3://... for results (None: the workgroup's)
    results_kms_key: str | None = None  # athena: SSE-KMS key for the results (the fleet's, in its bucket)
    live: bool = False  # also compare the tags with the workers' heartbeats (live.py)


@dataclass
class ReconcileServices:
    s3: S3Gateway
    autoscaling: AutoScalingGateway
    ec2: Ec2Gateway
    now: Callable[[], datetime]
    sleep: Callable[[float], None]
    clock: Callable[[], float]
    athena: AthenaGateway | None = None
    cloudwatch: CloudWatchGateway | None = None


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
    if settings.live and (not settings.snapshot or services.cloudwatch is None):
        why = "a snapshot (drop --no-snapshot)" if not settings.snapshot else "a CloudWatch gateway"
        raise UsageError(f"--live needs {why}: it compares the instances as they are with their workers' heartbeats")
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
        "releases_from": releases_from(last_day, settings),
        "release": settings.release,
        "dt_from": window[0],
        "dt_to": window[1],
    }
    names = [g.name for g in fleet.select_groups(list(settings.groups) if settings.groups else None)]
    run_query, mirrored = _engine(fleet, settings, services, window)
    result = run_query(values)
    missing = _without_expected(result, names)
    if missing:
        result = run_query({**values, "releases_from": ""})
        notes.append(
            f"no release succeeded for {', '.join(missing)} since {values['releases_from']}: read the releases "
            "of every day"
        )
    recorded = read_interruptions(
        services.s3,
        fleet.artifacts.bucket,
        prefix=fleet.artifacts.prefix,
        app=fleet.app.name,
        days=day_range(*window),
        groups=set(names),
    )
    notes += [
        f"s3://{fleet.artifacts.bucket}/{key}: not an interruption record; skipped" for key in recorded.unreadable
    ]
    report = build_report(
        result,
        app=fleet.app.name,
        target=settings.target,
        window=window,
        groups=names,
        notes=notes,
        release=settings.release,
        interruptions=recorded.records,
        live=_live(fleet, snap, names, services) if settings.live and snap is not None else None,
    )
    return ReconcileRun(
        report=report, result=result, snapshot=snap, snapshot_keys=tuple(keys), mirror=mirrored, notes=tuple(notes)
    )


def _live(fleet: Fleet, snap: Snapshot, groups: list[str], services: ReconcileServices) -> LiveReport:
    assert services.cloudwatch is not None
    until = services.now()
    beats = services.cloudwatch.heartbeats(fleet.app.name, until - timedelta(seconds=LIVE_WINDOW_S), until)
    return live_check(snap, beats, groups=groups, window_s=LIVE_WINDOW_S)


def _engine(
    fleet: Fleet, settings: ReconcileSettings, services: ReconcileServices, window: tuple[str, str]
) -> tuple[Callable[[dict[str, str]], QueryResult], MirrorResult | None]:
    """The query runner of the settings' engine (for DuckDB, after mirroring the window's objects)."""
    query = load_query("reconcile")
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
            results_kms_key=settings.results_kms_key,
        )
        return (lambda values: engine.run(query, values)), None
    if settings.mirror_root is None:
        raise UsageError("the duckdb engine needs a mirror directory")
    root = settings.mirror_root
    mirrored = mirror_tables(
        services.s3,
        fleet.artifacts.bucket,
        prefix=fleet.artifacts.prefix,
        app=fleet.app.name,
        root=root,
        days=day_range(*window),
    )

    def on_duckdb(values: dict[str, str]) -> QueryResult:
        with DuckDbEngine(root, fleet.artifacts.prefix) as duck:
            return duck.run(query, values, measure=True)

    return on_duckdb, mirrored


def releases_from(last_day: str, settings: ReconcileSettings) -> str:
    """The first day of releases the query reads: settings.release_days back from `last_day`, or the day of the
    release given (--release) when that is older."""
    first = days_back(last_day, settings.release_days)[0]
    if settings.release:
        first = min(first, day_of(release_time(settings.release)))
    return first


def _without_expected(result: QueryResult, names: list[str]) -> list[str]:
    """The groups no row gives an expected version (no release that succeeded for them was read)."""
    found = {str(row["group"]) for row in result.rows if row.get("expected_version")}
    return [name for name in names if name not in found]


def days_back(last: str, days: int) -> tuple[str, str]:
    """The dt window [last - (days - 1), last] as text."""
    if days < 1:
        raise UsageError(f"--days {days}: allowed: 1 or more")
    end = date.fromisoformat(last)
    return (end - timedelta(days=days - 1)).isoformat(), end.isoformat()


def day_range(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]
