"""Tasks of the local sandbox: the whole demo run, an idle fleet up and down, lifecycle hooks on one instance."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from invoke.context import Context

from deploytool import options
from deploytool.cli import cli_task, fleet_from, make_console
from deploytool.errors import UsageError

if TYPE_CHECKING:
    from deploytool.sandbox.appspec import FileExistsBehavior

_SANDBOX_HELP = {
    "fleet": "fleet file (default deploy.toml)",
    "target": "a local target of the fleet file (default: its default target)",
    "debug": "show tracebacks",
}


@cli_task(help=_SANDBOX_HELP)
def sandbox_up(c: Context, fleet: str | None = None, target: str | None = None, debug: bool = False) -> None:
    """Start an idle sandbox fleet (moto, ASGs, instance dirs) and leave it running for deploy, reconcile, hooks."""
    from deploytool.sandbox.session import SandboxSession, local_target

    loaded = fleet_from(fleet)
    name, _ = local_target(loaded, options.target(loaded, target))
    console = make_console()
    session = SandboxSession(loaded, target=name, log=console.print)
    with session:
        session.detach()
        assert session.moto is not None  # entering the session started it
        for group in session.fleet.groups:
            ids = ", ".join(i.instance_id for i in session.fleet.instances(group))
            console.print(f"{group.name}: {ids}", highlight=False)
        console.print(f"sandbox up under {session.root} (moto at {session.moto.url})", highlight=False)
        console.print("deploy to it with `fab deploy`; stop it with `fab sandbox-down`", highlight=False)


@cli_task(help=_SANDBOX_HELP)
def sandbox_down(c: Context, fleet: str | None = None, target: str | None = None, debug: bool = False) -> None:
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
def hooks(
    c: Context,
    event: str | None = None,
    bundle: str | None = None,
    instance: str | None = None,
    group: str | None = None,
    file_exists_behavior: str = "DISALLOW",
    fleet: str | None = None,
    target: str | None = None,
    debug: bool = False,
) -> None:
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
        loaded,
        events,
        target=name,
        instance_id=options.text("--instance", instance),
        group=options.group_name(loaded, group),
        bundle=bundle_path,
        file_exists_behavior=cast("FileExistsBehavior", file_exists_behavior),  # options.choice checked it
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
        "churn": "scale the groups' ASGs out and in during the v2 release (launch and termination deployments)",
        "churn_every": "with --churn: seconds between two scale actions (1..600, default 5)",
        "churn_seed": "with --churn: seed of the autoscaler's choices (default 0)",
        "churn_kill": "with --churn: the termination hook off: a scale-in SIGKILLs the worker (a spot power-off)",
    }
)
def sandbox(
    c: Context,
    fleet: str | None = None,
    target: str | None = None,
    groups: str | None = None,
    ci: bool = False,
    churn: bool = False,
    churn_every: str = "5",
    churn_seed: str = "0",
    churn_kill: bool = False,
    debug: bool = False,
) -> None:
    """Run the whole release on this machine: moto, real Celery workers, v1 then v2 under load, then a report."""
    from deploytool.deploy_flow import sandbox_releases
    from deploytool.errors import DeployFailed
    from deploytool.sandbox.run import SandboxRunOptions, log_locations, report, run_sandbox
    from deploytool.sandbox.session import local_target, sandbox_root

    loaded = fleet_from(fleet)
    name, local = local_target(loaded, options.target(loaded, target))
    chosen = options.group_names(loaded, groups)
    console = make_console(ci=ci)
    every = options.integer("--churn-every", churn_every, low=1, high=600)
    if not churn and ((churn_every, churn_seed) != ("5", "0") or churn_kill):
        raise UsageError(
            "--churn-every, --churn-seed and --churn-kill go with --churn (the autoscaler is off without it)"
        )
    seed = options.integer("--churn-seed", churn_seed, low=0)
    run = SandboxRunOptions(
        target=name,
        groups=tuple(chosen) if chosen else None,
        churn_every_s=float(every) if churn else None,
        churn_seed=seed,
        churn_termination_hook=not churn_kill,
    )
    try:
        result = run_sandbox(loaded, console=console, options=run, connect=sandbox_releases(console, ci=ci))
    finally:
        for line in log_locations(sandbox_root(loaded, local), loaded.app):
            console.print(line, highlight=False, markup=False)
    for renderable in report(result):
        console.print(renderable)
    if not result.ok:
        raise DeployFailed("the sandbox run did not prove the release: see the report above")


@cli_task(
    help={
        **_SANDBOX_HELP,
        "instance": "the sandbox instance to interrupt (an id `fab sandbox-up` or `fab status` shows)",
        "notice": "spot (two minutes' notice, see --seconds), rebalance or terminate (ASG target state Terminated)",
        "seconds": "with --notice spot: seconds until the interruption (10..3600, default 120)",
        "kill": "instead of a notice: SIGKILL the instance's worker and watcher at once (a power-off)",
    }
)
def sandbox_interrupt(
    c: Context,
    instance: str | None = None,
    notice: str | None = None,
    seconds: str = "120",
    kill: bool = False,
    fleet: str | None = None,
    target: str | None = None,
    debug: bool = False,
) -> None:
    """Interrupt a running sandbox's instance: a spot, rebalance or terminate notice in its metadata, or a kill."""
    from deploytool.sandbox.faults import power_off
    from deploytool.sandbox.imds import NOTICES, post_notice
    from deploytool.sandbox.procs import read_pidfile, runs_script
    from deploytool.sandbox.session import find_instance, local_target, sandbox_root

    loaded = fleet_from(fleet)
    name, local = local_target(loaded, options.target(loaded, target))
    wanted = options.text("--instance", instance)
    if wanted is None:
        raise UsageError("fab sandbox-interrupt needs --instance ID (a sandbox instance id)")
    if kill == (notice is not None):
        raise UsageError(f"fab sandbox-interrupt needs exactly one of --notice {'|'.join(NOTICES)} and --kill")
    if notice is not None:
        options.choice("--notice", notice, NOTICES)
    wait = options.integer("--seconds", seconds, low=10, high=3600)
    if seconds != "120" and notice != "spot":
        raise UsageError("--seconds goes with --notice spot")
    found = find_instance(sandbox_root(loaded, local), name, wanted)
    console = make_console()
    watch_log = found.install_dir(loaded.app) / "log" / "watcher.log"
    if kill:
        pid = power_off(found, loaded.app)
        what = f"worker pid {pid}" if pid is not None else "no worker was running"
        console.print(f"{found.instance_id}: killed (SIGKILL: {what}, and its watcher)", highlight=False)
        return
    served = post_notice(found.root, str(notice), seconds=wait)
    detail = {
        "spot": f"spot interruption at {served.get('spot', {}).get('time')}",
        "rebalance": "rebalance recommendation",
        "terminate": "Auto Scaling target state Terminated",
    }[str(notice)]
    watcher = read_pidfile(found.watcher_pidfile(loaded.app))
    if watcher is not None and runs_script(watcher, "celery_hooks.py", "watch"):
        answer = f"its watcher (pid {watcher}) answers within 5 s: {watch_log}"
    else:
        answer = "no interruption watcher runs there (ApplicationStart starts one): nothing will answer it"
    console.print(f"{found.instance_id}: {detail} posted to its metadata; {answer}", highlight=False)
