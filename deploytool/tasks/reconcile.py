"""Tasks that check the fleet against its releases: reconcile (and --fix), the Athena DDL, the Grafana dashboard."""

from __future__ import annotations

from invoke.context import Context

from deploytool import options, targets
from deploytool.cli import cli_task, fleet_from, make_console

MAX_DAYS = 366
ENGINES = ("athena", "duckdb")


def _athena_names(database: str | None, workgroup: str | None) -> tuple[str | None, str | None]:
    return (
        options.pattern("--database", database, r"[a-z0-9_]{1,255}", "1-255 lowercase letters, digits and _"),
        options.pattern("--workgroup", workgroup, r"[A-Za-z0-9._-]{1,128}", "1-128 letters, digits, '.', '_', '-'"),
    )


@cli_task(
    help={
        "fleet": "fleet file (default deploy.toml)",
        "target": "target to reconcile (default: the fleet's default_target)",
        "groups": "only these groups (comma-separated)",
        "json": "print the report as JSON",
        "fix": "redeploy the expected revision to drifted instances, then check again",
        "ci": "plain output for CI logs",
        "engine": "athena or duckdb (default: duckdb for a local target, athena for codedeploy)",
        "days": f"dt partitions to read, ending on the snapshot's day (default 1, at most {MAX_DAYS})",
        "release": "check against this release id instead of each group's last good release",
        "no_snapshot": "query the inventory already in S3 instead of taking a snapshot first",
        "live": "also compare each instance's tags with what its workers' heartbeats say runs (CloudWatch)",
        "database": "Athena database holding the inventory and releases tables (default deploytool)",
        "workgroup": "Athena workgroup (default primary)",
        "wait": "with --fix: when another release holds the target's lease, wait until it is free",
        "break_lease": "with --fix: take over the target's lease when its holder is gone (not renewed for 120 s)",
        "debug": "show tracebacks",
    }
)
def reconcile(
    c: Context,
    fleet: str | None = None,
    target: str | None = None,
    groups: str | None = None,
    json: bool = False,
    fix: bool = False,
    ci: bool = False,
    engine: str | None = None,
    days: int = 1,
    release: str | None = None,
    no_snapshot: bool = False,
    live: bool = False,
    database: str | None = None,
    workgroup: str | None = None,
    wait: bool = False,
    break_lease: bool = False,
    debug: bool = False,
) -> None:
    """Check every instance runs its group's expected version (exit 3 on drift)."""
    from deploytool.reconcile.command import run_reconcile

    loaded = fleet_from(fleet)
    database, workgroup = _athena_names(database, workgroup)
    lease_wait, lease_break = options.lease_flags(wait, break_lease, fix=fix)
    settings = targets.settings_for(
        loaded,
        options.target(loaded, target),
        engine=options.choice("--engine", engine, ENGINES),
        days=options.integer("--days", days, low=1, high=MAX_DAYS),
        release=options.release_id("--release", release) or "",
        snapshot=not no_snapshot,
        groups=options.group_names(loaded, groups),
        database=database,
        workgroup=workgroup,
        live=live,
    )
    runner, backend = None, None
    connected = targets.connect(loaded, settings.target)
    if fix:
        from deploytool.reconcile.command import fix_runner_for
        from deploytool.rollout.wiring import LeaseOptions

        # The fix deploys like `fab deploy` does; with --json its progress goes to stderr, the report to stdout.
        lease = LeaseOptions("reconcile --fix", wait=lease_wait, break_lease=lease_break)
        rollout = connected.services(loaded, make_console(ci=ci, stderr=json), ci=ci, lease=lease)
        runner, backend = fix_runner_for(rollout, settings.target)
    run_reconcile(
        loaded,
        settings,
        connected.reconcile_services(loaded),
        make_console(ci=ci),
        as_json=json,
        fix=fix,
        runner=runner,
        backend=backend,
    )


@cli_task(
    help={
        "fleet": "fleet file (default deploy.toml)",
        "apply": "run the DDL on Athena",
        "database": "Athena database (default deploytool)",
        "workgroup": "Athena workgroup",
        "debug": "show tracebacks",
    }
)
def athena_ddl(
    c: Context,
    fleet: str | None = None,
    apply: bool = False,
    database: str | None = None,
    workgroup: str | None = None,
    debug: bool = False,
) -> None:
    """Print (or --apply) the Athena DDL of the inventory and releases tables."""
    from deploytool.reconcile.command import athena_setup

    loaded = fleet_from(fleet)
    database, workgroup = _athena_names(database, workgroup)
    settings = targets.athena_settings(loaded, database=database, workgroup=workgroup)
    services = targets.connect(loaded, settings.target).reconcile_services(loaded) if apply else None
    athena_setup(loaded, make_console(), settings, apply=apply, services=services)


@cli_task(help={"debug": "show tracebacks"})
def grafana_dashboard(c: Context, debug: bool = False) -> None:
    """Rewrite athena/grafana-dashboard.json from athena/reconcile.sql and rollout_timeline.sql."""
    from deploytool.reconcile.grafana import write

    make_console().print(f"wrote {write()}")
