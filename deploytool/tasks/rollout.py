"""Tasks that roll a release out: setup (CodeDeploy), deploy, rollback, restart, status."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, cast

from invoke.context import Context

from deploytool import options, targets
from deploytool.cli import cli_task, fleet_from, make_console

if TYPE_CHECKING:
    from deploytool.config import Fleet, Group
    from deploytool.rollout.plan import OnFailure, RolloutOptions
    from deploytool.rollout.wiring import Output, Services

_ROLLOUT_HELP = {
    "fleet": "fleet file (default deploy.toml)",
    "target": "target from the fleet file (default: its default target)",
    "groups": "only these groups, comma-separated (default: all)",
    "max_parallel": "deployments in flight at once inside a wave (default 0: no limit)",
    "on_failure": "stop-wave (default: a failed group rolls back, later waves do not start) or stop-all "
    "(also stop the wave's other deployments, with rollback)",
    "ignore_stop_failures": "continue past a failing ApplicationStop (the previous revision's stop script; "
    "CodeDeploy's ignoreApplicationStopFailures): the old worker may then still run",
    "wait": "wait instead of exiting 1: for the target's release lease while another release holds it (at most "
    "an hour, shown live), and for a deployment someone else started in a group (bounded by --max-wait); "
    "CodeDeploy's own (launch, follow-on, termination) are always waited for",
    "max_wait": "seconds a group waits for deployments in its way, and the release for CodeDeploy's "
    "follow-on deployments after it (default 1800)",
    "ci": "plain lines instead of the live table (also without a terminal)",
    "json_out": "write the result as JSON to this file",
    "dry_run": "print the plan, change nothing",
    "debug": "show tracebacks",
    "break_lease": "take over the target's lease when its holder is gone (not renewed for 120 s); logged in the "
    "release record",
}


def _rollout(
    fleet: str | None,
    target: str | None,
    groups: str | None,
    max_parallel: int,
    on_failure: str,
    ci: bool,
    json_out: str | None,
    ignore_stop_failures: bool = False,
    *,
    wait: bool = False,
    max_wait: int = 1800,
) -> tuple[Fleet, str, tuple[Group, ...], RolloutOptions, Output]:
    """The options every rollout task shares, checked; the services come after every check (`_services`)."""
    from deploytool.rollout.plan import ON_FAILURE, RolloutOptions
    from deploytool.rollout.wiring import Output

    loaded = fleet_from(fleet)
    name = options.target(loaded, target)
    chosen = loaded.select_groups(options.group_names(loaded, groups))
    # RolloutOptions checks --max-parallel's range (invoke made it an int, or refused it: deploytool.cli)
    run = RolloutOptions(
        max_parallel=int(max_parallel),
        on_failure=cast(
            "OnFailure", options.choice("--on-failure", on_failure, ON_FAILURE)
        ),  # checked by RolloutOptions
        partial_failure=loaded.rollout.partial_failure,
        ignore_stop_failures=bool(ignore_stop_failures),
        wait_s=float(max_wait),  # its range checked by RolloutOptions
        wait_for_others=bool(wait),
    )
    return loaded, name, chosen, run, Output(ci=ci, json_out=options.json_out(json_out))


def _services(
    loaded: Fleet,
    name: str,
    ci: bool,
    command: str = "deploy",
    lease: tuple[bool, bool] = (False, False),
    *,
    stderr: bool = False,
) -> Services:
    """The target's services; a rollout on them takes the target's release lease, named after `command`."""
    from deploytool.rollout.wiring import LeaseOptions

    wait, break_lease = lease
    return targets.connect(loaded, name).services(
        loaded,
        make_console(ci=ci, stderr=stderr),
        ci=ci,
        lease=LeaseOptions(command, wait=wait, break_lease=break_lease),
    )


def _without_sandbox(loaded: Fleet, name: str, dry_run: bool) -> bool:
    """A dry run on a local target whose sandbox is not running plans from the fleet file alone."""
    return dry_run and targets.sandbox_missing(loaded, name)


@cli_task(
    help={
        "fleet": _ROLLOUT_HELP["fleet"],
        "target": _ROLLOUT_HELP["target"],
        "dry_run": _ROLLOUT_HELP["dry_run"],
        "debug": _ROLLOUT_HELP["debug"],
    }
)
def setup(
    c: Context, fleet: str | None = None, target: str | None = None, dry_run: bool = False, debug: bool = False
) -> None:
    """Create or update the CodeDeploy application, deployment groups and configs (plan, then apply)."""
    from deploytool.aws.codedeploy import CodeDeployGateway
    from deploytool.aws.session import AwsSession
    from deploytool.aws.versions import require_botocore
    from deploytool.rollout import commands

    loaded = fleet_from(fleet)
    name = options.target(loaded, target)
    chosen = targets.codedeploy(loaded, name)  # a sandbox target is refused before any AWS set-up
    require_botocore()
    gateway = CodeDeployGateway(AwsSession(region=loaded.aws.region, profile=loaded.aws.profile))
    commands.setup(loaded, chosen, gateway, make_console(), dry_run=dry_run)


@cli_task(
    help={
        **_ROLLOUT_HELP,
        "version": "release version (default YYYY.MM.DD-<shortsha> of the git commit)",
        "allow_dirty": "build from uncommitted changes (the version then ends in -dirty)",
        "no_reconcile": "do not end with a reconcile (exit 0 then only means the rollout succeeded)",
        "reconcile_engine": "engine of the final reconcile: athena or duckdb (default: duckdb for a local "
        "target, athena for codedeploy)",
        "allow_task_changes": "deploy although the release drops or requires more of a task that the last release "
        "that succeeded on the target registers",
        "bake": "seconds the health gate waits after each wave before it judges the new release's task failures "
        "against the previous release's (default: each group's bake, else the fleet's [rollout] bake; 0: none)",
        "no_gate": "no health gate between waves",
    }
)
def deploy(
    c: Context,
    fleet: str | None = None,
    target: str | None = None,
    groups: str | None = None,
    version: str | None = None,
    allow_dirty: bool = False,
    max_parallel: int = 0,
    on_failure: str = "stop-wave",
    ignore_stop_failures: bool = False,
    wait: bool = False,
    max_wait: int = 1800,
    ci: bool = False,
    json_out: str | None = None,
    dry_run: bool = False,
    no_reconcile: bool = False,
    reconcile_engine: str | None = None,
    break_lease: bool = False,
    allow_task_changes: bool = False,
    bake: int | None = None,
    no_gate: bool = False,
    debug: bool = False,
) -> None:
    """Build, publish, roll out wave by wave (tagging instances), then reconcile: exit 1 failed, 3 drift."""
    from deploytool.deploy_flow import deploy_and_reconcile, plan_without_sandbox, reconcile_settings

    loaded, name, chosen, run, output = _rollout(
        fleet,
        target,
        groups,
        max_parallel,
        on_failure,
        ci,
        json_out,
        ignore_stop_failures,
        wait=wait,
        max_wait=max_wait,
    )
    version = options.version("--version", version)
    baked = loaded.rollout.bake if bake is None else options.integer("--bake", bake, low=0, high=3600)
    run = dataclasses.replace(
        run, allow_task_changes=allow_task_changes, bake_s=float(baked), bake_given=bake is not None, gate=not no_gate
    )
    lease = options.lease_flags(wait, break_lease, dry_run=dry_run)
    reconcile_settings(loaded, name, chosen, engine=reconcile_engine, reconcile=not no_reconcile, dry_run=dry_run)
    if _without_sandbox(loaded, name, dry_run):
        plan_without_sandbox(
            loaded, name, chosen, run, make_console(ci=ci), mode="deploy", version=version, allow_dirty=allow_dirty
        )
        return
    deploy_and_reconcile(
        loaded,
        name,
        chosen,
        run,
        _services(loaded, name, ci, "deploy", lease),
        output,
        version=version,
        allow_dirty=allow_dirty,
        dry_run=dry_run,
        reconcile=not no_reconcile,
        engine=reconcile_engine,
    )


@cli_task(help={**_ROLLOUT_HELP, "to": "version to go back to (default: the last earlier version that succeeded)"})
def rollback(
    c: Context,
    fleet: str | None = None,
    target: str | None = None,
    groups: str | None = None,
    to: str | None = None,
    max_parallel: int = 0,
    on_failure: str = "stop-wave",
    ignore_stop_failures: bool = False,
    wait: bool = False,
    max_wait: int = 1800,
    ci: bool = False,
    json_out: str | None = None,
    dry_run: bool = False,
    break_lease: bool = False,
    debug: bool = False,
) -> None:
    """Redeploy an earlier release's revision, as a new release."""
    from deploytool.rollout import commands

    loaded, name, chosen, run, output = _rollout(
        fleet,
        target,
        groups,
        max_parallel,
        on_failure,
        ci,
        json_out,
        ignore_stop_failures,
        wait=wait,
        max_wait=max_wait,
    )
    to = options.version("--to", to)
    lease = options.lease_flags(wait, break_lease, dry_run=dry_run)
    services = _services(
        loaded, name, ci, "rollback", lease
    )  # even a dry run reads the release history: on the sandbox, or AWS
    # the instances it reaches are tagged with the version rolled back to (deploytool.rollout.wiring)
    result = commands.rollback(loaded, name, chosen, run, services, output, to_version=to, dry_run=dry_run)
    commands.verdict(result)


@cli_task(help=_ROLLOUT_HELP)
def restart(
    c: Context,
    fleet: str | None = None,
    target: str | None = None,
    groups: str | None = None,
    max_parallel: int = 0,
    on_failure: str = "stop-wave",
    ignore_stop_failures: bool = False,
    wait: bool = False,
    max_wait: int = 1800,
    ci: bool = False,
    json_out: str | None = None,
    dry_run: bool = False,
    break_lease: bool = False,
    debug: bool = False,
) -> None:
    """Rolling restart of the workers with each group's strategy (no new version)."""
    from deploytool.deploy_flow import plan_without_sandbox
    from deploytool.rollout import commands

    loaded, name, chosen, run, output = _rollout(
        fleet,
        target,
        groups,
        max_parallel,
        on_failure,
        ci,
        json_out,
        ignore_stop_failures,
        wait=wait,
        max_wait=max_wait,
    )
    lease = options.lease_flags(wait, break_lease, dry_run=dry_run)
    if _without_sandbox(loaded, name, dry_run):
        plan_without_sandbox(loaded, name, chosen, run, make_console(ci=ci), mode="restart")
        return
    services = _services(loaded, name, ci, "restart", lease)
    result = commands.restart(loaded, name, chosen, run, services, output, dry_run=dry_run)
    commands.verdict(result)


@cli_task(
    help={
        "release": "release id (default: the target's latest release)",
        "fleet": _ROLLOUT_HELP["fleet"],
        "target": _ROLLOUT_HELP["target"],
        "ci": _ROLLOUT_HELP["ci"],
        "json": "print one JSON object on stdout instead of the lease line and table (target, lease, release and "
        "its groups; for scripts and CI)",
        "debug": _ROLLOUT_HELP["debug"],
    }
)
def status(
    c: Context,
    release: str | None = None,
    fleet: str | None = None,
    target: str | None = None,
    ci: bool = False,
    json: bool = False,
    debug: bool = False,
) -> None:
    """Show a release (default: the target's latest) and its deployments as they are now."""
    from deploytool.rollout import commands

    loaded = fleet_from(fleet)
    name = options.target(loaded, target)
    release = options.release_id("--release", release)
    commands.status(loaded, name, _services(loaded, name, ci or json, stderr=json), release, as_json=bool(json))
