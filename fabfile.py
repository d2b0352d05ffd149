"""deploytool's fab tasks: each wires stages together; the work is in deploytool/.

Run `fab --list` for the tasks and `fab <task> --help` for their options. Every task takes
--fleet (default deploy.toml) and --debug (show the traceback of an error).
"""

from __future__ import annotations

from deploytool.cli import cli_task, fleet_from, make_console
from deploytool.report import fleet_table

# --- config --------------------------------------------------------------------------------------


@cli_task(help={"fleet": "fleet file (default deploy.toml)", "debug": "show tracebacks"})
def check(c, fleet=None, debug=False):
    """Validate the fleet file and print it as a table."""
    loaded = fleet_from(fleet)
    console = make_console()
    console.print(fleet_table(loaded))
    for warning in loaded.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"{loaded.path}: ok ({len(loaded.groups)} groups, targets: {', '.join(loaded.targets)})")


# --- reconcile -----------------------------------------------------------------------------------


@cli_task(
    help={
        "fleet": "fleet file (default deploy.toml)",
        "target": "target to reconcile (default: the fleet's default_target)",
        "groups": "only these groups (comma-separated)",
        "json": "print the report as JSON",
        "fix": "redeploy the expected revision to drifted instances, then check again",
        "ci": "plain output for CI logs",
        "engine": "athena or duckdb (default: duckdb for a local target, athena for codedeploy)",
        "days": "dt partitions to read, ending on the snapshot's day (default 1)",
        "release": "check against this release id instead of each group's latest release",
        "no_snapshot": "query the inventory already in S3 instead of taking a snapshot first",
        "database": "Athena database holding the inventory and releases tables (default deploytool)",
        "workgroup": "Athena workgroup (default primary)",
        "debug": "show tracebacks",
    }
)
def reconcile(c, fleet=None, target=None, groups=None, json=False, fix=False, ci=False, engine=None, days=1,
              release="", no_snapshot=False, database=None, workgroup=None, debug=False):
    """Check every instance runs its group's expected version (exit 3 on drift)."""
    from deploytool.cli import split_csv
    from deploytool.reconcile.command import run_reconcile, services_for, settings_for

    loaded = fleet_from(fleet)
    settings = settings_for(
        loaded, target, engine=engine, days=int(days), release=release, snapshot=not no_snapshot,
        groups=split_csv(groups), database=database, workgroup=workgroup,
    )
    runner, backend = (None, None)
    if fix:
        from deploytool.reconcile.command import fix_runner_for

        runner, backend = fix_runner_for(loaded, settings.target)
    run_reconcile(
        loaded, settings, services_for(loaded), make_console(ci=ci), as_json=json, fix=fix, runner=runner,
        backend=backend,
    )


@cli_task(help={"fleet": "fleet file (default deploy.toml)", "apply": "run the DDL on Athena",
                "database": "Athena database (default deploytool)", "workgroup": "Athena workgroup",
                "debug": "show tracebacks"})
def athena_ddl(c, fleet=None, apply=False, database=None, workgroup=None, debug=False):
    """Print (or --apply) the Athena DDL of the inventory and releases tables."""
    from deploytool.reconcile.command import athena_setup

    loaded = fleet_from(fleet)
    athena_setup(loaded, make_console(), apply=apply, database=database, workgroup=workgroup)


@cli_task(help={"debug": "show tracebacks"})
def grafana_dashboard(c, debug=False):
    """Rewrite athena/grafana-dashboard.json from athena/reconcile.sql and rollout_timeline.sql."""
    from deploytool.reconcile.grafana import write

    make_console().print(f"wrote {write()}")
