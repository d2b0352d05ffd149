"""deploytool's fab tasks: each wires stages together; the work is in deploytool/.

Run `fab --list` for the tasks and `fab <task> --help` for their options. Every task takes
--fleet (default deploy.toml) and --debug (show the traceback of an error). Every task checks all its
options (deploytool.options) before it builds, starts or attaches to anything: bad input is one line, exit 2.
"""

from __future__ import annotations

from deploytool import options, targets
from deploytool.aws.session import AwsSession
from deploytool.bundle import build_release
from deploytool.cli import cli_task, fleet_from, make_console
from deploytool.errors import UsageError
from deploytool.publish import creator
from deploytool.publish import publish as publish_bundle
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


# --- build & publish -----------------------------------------------------------------------------

_BUILD_HELP = {
    "fleet": "fleet file (default deploy.toml)",
    "version": "release version (default YYYY.MM.DD-<shortsha> of the git commit)",
    "allow_dirty": "build from uncommitted changes (the version then ends in -dirty)",
    "out": "output directory (default dist/ beside the fleet file)",
    "debug": "show tracebacks",
}


def _build_options(fleet, version, out):
    return fleet_from(fleet), options.version("--version", version), options.out_dir(out)


def _built(loaded, version, allow_dirty, out_dir):
    return build_release(loaded, version=version, allow_dirty=allow_dirty, out_dir=out_dir)


def _show(console, rows):
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        console.print(f"{label.ljust(width)}  {value}", markup=False, highlight=False, soft_wrap=True)


@cli_task(help=_BUILD_HELP)
def build(c, fleet=None, version=None, allow_dirty=False, out=None, debug=False):
    """Build the release bundle (.tgz) and print its path, size, file count and sha256."""
    loaded, version, out_dir = _build_options(fleet, version, out)
    result = _built(loaded, version, allow_dirty, out_dir)
    _show(make_console(), [
        ("bundle", str(result.path)),
        ("size", f"{result.size} bytes ({result.size / 1024:.1f} KiB)" if result.size < 1048576
         else f"{result.size} bytes ({result.size / 1048576:.1f} MiB)"),
        ("files", str(result.file_count)),
        ("sha256", result.sha256),
        ("version", f"{result.version} (commit {result.commit or 'none'})"),
    ])


@cli_task(help={**_BUILD_HELP, "target": "target from the fleet file (default: its default target)",
                "endpoint_url": "S3-compatible endpoint (a moto server, MinIO...) instead of AWS"})
def publish(c, fleet=None, target=None, version=None, allow_dirty=False, out=None, endpoint_url=None, debug=False):
    """Build the bundle, upload it to S3 once (content-addressed) and write the release manifest."""
    loaded, version, out_dir = _build_options(fleet, version, out)
    name = options.target(loaded, target)
    endpoint_url = options.url("--endpoint-url", endpoint_url)
    if targets.target(loaded, name).kind == "local" and not endpoint_url:
        raise UsageError(
            f"target {name!r} is the local sandbox: its S3 is the sandbox's moto server, which `fab sandbox` "
            "starts; pass --endpoint-url to publish to another S3-compatible endpoint"
        )
    bundle = _built(loaded, version, allow_dirty, out_dir)
    session = AwsSession(region=loaded.aws.region, profile=loaded.aws.profile, endpoint_url=endpoint_url)
    result = publish_bundle(bundle, loaded, session, target=name, created_by=creator())
    _show(make_console(), [
        ("bundle", f"{result.bundle_uri} ({'uploaded' if result.uploaded else 'already in S3: nothing uploaded'})"),
        ("etag", result.etag),
        ("sha256", result.sha256),
        ("version", result.version),
        ("release", result.release_id),
        ("manifest", f"s3://{result.bucket}/{result.manifest_key}"),
    ])


# --- reconcile -----------------------------------------------------------------------------------

MAX_DAYS = 366
ENGINES = ("athena", "duckdb")


def _athena_names(database, workgroup):
    return (options.pattern("--database", database, r"[a-z0-9_]{1,255}", "1-255 lowercase letters, digits and _"),
            options.pattern("--workgroup", workgroup, r"[A-Za-z0-9._-]{1,128}", "1-128 letters, digits, '.', '_', '-'"))



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
        "database": "Athena database holding the inventory and releases tables (default deploytool)",
        "workgroup": "Athena workgroup (default primary)",
        "debug": "show tracebacks",
    }
)
def reconcile(c, fleet=None, target=None, groups=None, json=False, fix=False, ci=False, engine=None, days=1,
              release=None, no_snapshot=False, database=None, workgroup=None, debug=False):
    """Check every instance runs its group's expected version (exit 3 on drift)."""
    from deploytool.reconcile.command import run_reconcile

    loaded = fleet_from(fleet)
    database, workgroup = _athena_names(database, workgroup)
    settings = targets.settings_for(
        loaded, options.target(loaded, target), engine=options.choice("--engine", engine, ENGINES),
        days=options.integer("--days", days, low=1, high=MAX_DAYS),
        release=options.release_id("--release", release) or "",
        snapshot=not no_snapshot, groups=options.group_names(loaded, groups), database=database, workgroup=workgroup,
    )
    runner, backend = None, None
    connected = targets.connect(loaded, settings.target)
    if fix:
        from deploytool.reconcile.command import fix_runner_for

        # The fix deploys like `fab deploy` does; with --json its progress goes to stderr, the report to stdout.
        rollout = connected.services(loaded, make_console(ci=ci, stderr=json), ci=ci)
        runner, backend = fix_runner_for(rollout, settings.target)
    run_reconcile(
        loaded, settings, connected.reconcile_services(loaded), make_console(ci=ci),
        as_json=json, fix=fix, runner=runner, backend=backend,
    )


@cli_task(help={"fleet": "fleet file (default deploy.toml)", "apply": "run the DDL on Athena",
                "database": "Athena database (default deploytool)", "workgroup": "Athena workgroup",
                "debug": "show tracebacks"})
def athena_ddl(c, fleet=None, apply=False, database=None, workgroup=None, debug=False):
    """Print (or --apply) the Athena DDL of the inventory and releases tables."""
    from deploytool.reconcile.command import athena_setup

    loaded = fleet_from(fleet)
    database, workgroup = _athena_names(database, workgroup)
    settings = targets.athena_settings(loaded, database=database, workgroup=workgroup)
    services = targets.connect(loaded, settings.target).reconcile_services(loaded) if apply else None
    athena_setup(loaded, make_console(), settings, apply=apply, services=services)


@cli_task(help={"debug": "show tracebacks"})
def grafana_dashboard(c, debug=False):
    """Rewrite athena/grafana-dashboard.json from athena/reconcile.sql and rollout_timeline.sql."""
    from deploytool.reconcile.grafana import write

    make_console().print(f"wrote {write()}")


# --- rollout -------------------------------------------------------------------------------------

_ROLLOUT_HELP = {
    "fleet": "fleet file (default deploy.toml)",
    "target": "target from the fleet file (default: its default target)",
    "groups": "only these groups, comma-separated (default: all)",
    "max_parallel": "deployments in flight at once inside a wave (default 0: no limit)",
    "on_failure": "stop-wave (default: a failed group rolls back, later waves do not start) or stop-all "
                  "(also stop the wave's other deployments, with rollback)",
    "ci": "plain lines instead of the live table (also without a terminal)",
    "json_out": "write the result as JSON to this file",
    "dry_run": "print the plan, change nothing",
    "debug": "show tracebacks",
}


def _rollout(fleet, target, groups, max_parallel, on_failure, ci, json_out):
    """The options every rollout task shares, checked; the services come after every check (`_services`)."""
    from deploytool.rollout.plan import ON_FAILURE, RolloutOptions
    from deploytool.rollout.wiring import Output

    loaded = fleet_from(fleet)
    name = options.target(loaded, target)
    chosen = loaded.select_groups(options.group_names(loaded, groups))
    # RolloutOptions checks --max-parallel's range (invoke made it an int, or refused it: deploytool.cli)
    run = RolloutOptions(max_parallel=int(max_parallel),
                         on_failure=options.choice("--on-failure", on_failure, ON_FAILURE))
    return loaded, name, chosen, run, Output(ci=ci, json_out=options.json_out(json_out))


def _services(loaded, name, ci):
    return targets.connect(loaded, name).services(loaded, make_console(ci=ci), ci=ci)


def _without_sandbox(loaded, name, dry_run):
    """A dry run on a local target whose sandbox is not running plans from the fleet file alone."""
    return dry_run and targets.sandbox_missing(loaded, name)


@cli_task(help={"fleet": _ROLLOUT_HELP["fleet"], "target": _ROLLOUT_HELP["target"],
                "dry_run": _ROLLOUT_HELP["dry_run"], "debug": _ROLLOUT_HELP["debug"]})
def setup(c, fleet=None, target=None, dry_run=False, debug=False):
    """Create or update the CodeDeploy application, deployment groups and configs (plan, then apply)."""
    from deploytool.aws.codedeploy import CodeDeployGateway
    from deploytool.aws.session import AwsSession
    from deploytool.rollout import commands

    loaded = fleet_from(fleet)
    name = options.target(loaded, target)
    chosen = targets.codedeploy(loaded, name)  # a sandbox target is refused before any AWS set-up
    gateway = CodeDeployGateway(AwsSession(region=loaded.aws.region, profile=loaded.aws.profile))
    commands.setup(loaded, chosen, gateway, make_console(), dry_run=dry_run)


@cli_task(help={**_ROLLOUT_HELP, "version": "release version (default YYYY.MM.DD-<shortsha> of the git commit)",
                "allow_dirty": "build from uncommitted changes (the version then ends in -dirty)",
                "no_reconcile": "do not end with a reconcile (exit 0 then only means the rollout succeeded)",
                "reconcile_engine": "engine of the final reconcile: athena or duckdb (default: duckdb for a local "
                                    "target, athena for codedeploy)"})
def deploy(c, fleet=None, target=None, groups=None, version=None, allow_dirty=False, max_parallel=0,
           on_failure="stop-wave", ci=False, json_out=None, dry_run=False, no_reconcile=False, reconcile_engine=None,
           debug=False):
    """Build, publish, roll out wave by wave (tagging instances), then reconcile: exit 1 failed, 3 drift."""
    from deploytool.deploy_flow import deploy_and_reconcile, plan_without_sandbox, reconcile_settings

    loaded, name, chosen, run, output = _rollout(fleet, target, groups, max_parallel, on_failure, ci, json_out)
    version = options.version("--version", version)
    reconcile_settings(loaded, name, chosen, engine=reconcile_engine, reconcile=not no_reconcile, dry_run=dry_run)
    if _without_sandbox(loaded, name, dry_run):
        plan_without_sandbox(loaded, name, chosen, run, make_console(ci=ci), mode="deploy", version=version,
                             allow_dirty=allow_dirty)
        return
    deploy_and_reconcile(loaded, name, chosen, run, _services(loaded, name, ci), output, version=version,
                         allow_dirty=allow_dirty, dry_run=dry_run, reconcile=not no_reconcile,
                         engine=reconcile_engine)


@cli_task(help={**_ROLLOUT_HELP, "to": "version to go back to (default: the last earlier version that succeeded)"})
def rollback(c, fleet=None, target=None, groups=None, to=None, max_parallel=0, on_failure="stop-wave", ci=False,
             json_out=None, dry_run=False, debug=False):
    """Redeploy an earlier release's revision, as a new release."""
    from deploytool.rollout import commands

    loaded, name, chosen, run, output = _rollout(fleet, target, groups, max_parallel, on_failure, ci, json_out)
    to = options.version("--to", to)
    services = _services(loaded, name, ci)  # even a dry run reads the release history: on the sandbox, or AWS
    # the instances it reaches are tagged with the version rolled back to (deploytool.rollout.wiring)
    result = commands.rollback(loaded, name, chosen, run, services, output, to_version=to, dry_run=dry_run)
    commands.verdict(result)


@cli_task(help=_ROLLOUT_HELP)
def restart(c, fleet=None, target=None, groups=None, max_parallel=0, on_failure="stop-wave", ci=False,
            json_out=None, dry_run=False, debug=False):
    """Rolling restart of the workers with each group's strategy (no new version)."""
    from deploytool.deploy_flow import plan_without_sandbox
    from deploytool.rollout import commands

    loaded, name, chosen, run, output = _rollout(fleet, target, groups, max_parallel, on_failure, ci, json_out)
    if _without_sandbox(loaded, name, dry_run):
        plan_without_sandbox(loaded, name, chosen, run, make_console(ci=ci), mode="restart")
        return
    result = commands.restart(loaded, name, chosen, run, _services(loaded, name, ci), output, dry_run=dry_run)
    commands.verdict(result)


@cli_task(help={"release": "release id (default: the target's latest release)", "fleet": _ROLLOUT_HELP["fleet"],
                "target": _ROLLOUT_HELP["target"], "ci": _ROLLOUT_HELP["ci"], "debug": _ROLLOUT_HELP["debug"]})
def status(c, release=None, fleet=None, target=None, ci=False, debug=False):
    """Show a release (default: the target's latest) and its deployments as they are now."""
    from deploytool.rollout import commands

    loaded = fleet_from(fleet)
    name = options.target(loaded, target)
    release = options.release_id("--release", release)
    commands.status(loaded, name, _services(loaded, name, ci), release)


# --- sandbox -------------------------------------------------------------------------------------

_SANDBOX_HELP = {
    "fleet": "fleet file (default deploy.toml)",
    "target": "a local target of the fleet file (default: its default target)",
    "debug": "show tracebacks",
}


@cli_task(help=_SANDBOX_HELP)
def sandbox_up(c, fleet=None, target=None, debug=False):
    """Start an idle sandbox fleet (moto, ASGs, instance dirs) and leave it running for deploy, reconcile, hooks."""
    from deploytool.sandbox.session import SandboxSession, local_target

    loaded = fleet_from(fleet)
    name, _ = local_target(loaded, options.target(loaded, target))
    console = make_console()
    session = SandboxSession(loaded, target=name, log=console.print)
    with session:
        session.detach()
        for group in session.fleet.groups:
            ids = ", ".join(i.instance_id for i in session.fleet.instances(group))
            console.print(f"{group.name}: {ids}", highlight=False)
        console.print(f"sandbox up under {session.root} (moto at {session.moto.url})", highlight=False)
        console.print("deploy to it with `fab deploy`; stop it with `fab sandbox-down`", highlight=False)


@cli_task(help=_SANDBOX_HELP)
def sandbox_down(c, fleet=None, target=None, debug=False):
    """Stop what a sandbox left running: hook scripts, workers (by their pidfiles), the moto server."""
    from deploytool.sandbox.session import local_target, sandbox_root, stop_sandbox

    loaded = fleet_from(fleet)
    _, local = local_target(loaded, options.target(loaded, target))
    console = make_console()
    stop_sandbox(sandbox_root(loaded, local), loaded.app, log=console.print)
    console.print("sandbox stopped")


@cli_task(
    help={
        **_SANDBOX_HELP,
        "event": "lifecycle event(s) to run, comma-separated (e.g. ApplicationStart,ValidateService)",
        "bundle": "a bundle .tgz (from `fab build`); without it, the revision installed on the instance",
        "instance": "instance id (default: the first of --group, or of the sandbox)",
        "group": "group whose first instance runs the events",
        "file_exists_behavior": "DISALLOW (default), OVERWRITE or RETAIN, for Install",
    }
)
def hooks(c, event=None, bundle=None, instance=None, group=None, file_exists_behavior="DISALLOW", fleet=None,
          target=None, debug=False):
    """Run lifecycle events of a bundle on a sandbox instance, with the agent's environment, to debug a hook."""
    from deploytool.errors import DeployFailed
    from deploytool.rollout.backend import LIFECYCLE_EVENTS
    from deploytool.sandbox.appspec import FILE_EXISTS_BEHAVIORS
    from deploytool.sandbox.debug import run_events
    from deploytool.sandbox.session import local_target

    # --event is an option, not a positional argument: invoke would take an unknown option for its value
    events = options.names("--event", event, LIFECYCLE_EVENTS, what="lifecycle event")
    if events is None:
        raise UsageError(f"fab hooks needs --event: comma-separated lifecycle events of {', '.join(LIFECYCLE_EVENTS)}")
    options.choice("--file-exists-behavior", file_exists_behavior, FILE_EXISTS_BEHAVIORS)
    bundle_path = options.existing_file("--bundle", bundle)
    loaded = fleet_from(fleet)
    name, _ = local_target(loaded, options.target(loaded, target))
    console = make_console()
    chosen, result = run_events(
        loaded, events, target=name, instance_id=options.text("--instance", instance),
        group=options.group_name(loaded, group), bundle=bundle_path, file_exists_behavior=file_exists_behavior,
    )
    logs = chosen.logs_dir(result.deployment_id)
    for outcome in result.events:
        console.rule(f"{outcome.event}: {outcome.status} ({outcome.duration_s:.1f} s)")
        log = logs / f"{outcome.event}.log"
        if log.exists():
            console.print(log.read_text(), markup=False, highlight=False, end="")
    console.print(f"logs: {logs}", highlight=False)
    if result.status != "Succeeded":
        raise DeployFailed(f"{chosen.group}/{chosen.instance_id}: {result.failed_event} failed: {result.message}")


@cli_task(
    help={
        **_SANDBOX_HELP,
        "groups": "only these groups, comma-separated (default: all)",
        "ci": "plain progress lines instead of the live table",
    }
)
def sandbox(c, fleet=None, target=None, groups=None, ci=False, debug=False):
    """Run the whole release on this machine: moto, real Celery workers, v1 then v2 under load, then a report."""
    from deploytool.deploy_flow import sandbox_releases
    from deploytool.errors import DeployFailed
    from deploytool.sandbox.run import SandboxRunOptions, log_locations, report, run_sandbox
    from deploytool.sandbox.session import local_target, sandbox_root

    loaded = fleet_from(fleet)
    name, local = local_target(loaded, options.target(loaded, target))
    chosen = options.group_names(loaded, groups)
    console = make_console(ci=ci)
    run = SandboxRunOptions(target=name, groups=tuple(chosen) if chosen else None)
    try:
        result = run_sandbox(loaded, console=console, options=run, connect=sandbox_releases(console, ci=ci))
    finally:
        for line in log_locations(sandbox_root(loaded, local), loaded.app):
            console.print(line, highlight=False, markup=False)
    for renderable in report(result):
        console.print(renderable)
    if not result.ok:
        raise DeployFailed("the sandbox run did not prove the release: see the report above")
