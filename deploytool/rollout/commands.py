"""The rollout tasks' bodies (fab setup / deploy / rollback / restart / status), testable without fab.

Contract: each takes the loaded fleet, its arguments and a `Services` bundle (AWS session, backend,
release store, clock, console: the seams tests replace) and returns plain data; the fab task only
parses options and turns a failed result into exit code 1 (DeployFailed). Progress goes to the
console as a live table on a terminal, as plain lines with --ci or without a terminal; --json-out
and $GITHUB_STEP_SUMMARY get the result. --dry-run prints the plan and changes nothing.
The services of a target come from deploytool.targets (on a local target, those of the sandbox `fab
sandbox-up` left running); every plan runs through the one rollout wiring, deploytool.rollout.wiring (progress,
release record, tags, Ctrl-C: on a local target a Ctrl-C stops the deployments with rollback and follows them to
the end instead of detaching).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from deploytool.aws.autoscaling import AutoScalingGateway
from deploytool.aws.codedeploy import CodeDeployGateway
from deploytool.config import CodeDeployTarget, Fleet, Group
from deploytool.errors import DeployFailed, DeployToolError, RecordNotWritten
from deploytool.model import release_id
from deploytool.render import Templates
from deploytool.rollout.backend import Backend
from deploytool.rollout.codedeploy import CodeDeployBackend
from deploytool.rollout.plan import PriorDeployment, RolloutOptions, RolloutPlan, check_min_healthy, rollout_plan
from deploytool.rollout.progress import what_release_does
from deploytool.rollout.record import prior_deployments
from deploytool.rollout.release import Prepared, prepare_deploy, prepare_rollback
from deploytool.rollout.result import RolloutResult
from deploytool.rollout.resume import Resolution, resolve
from deploytool.rollout.setup import apply_setup, describe, plan_setup
from deploytool.rollout.status import StatusView, read_lease, read_status
from deploytool.rollout.summary import check_json_out
from deploytool.rollout.tagger import DeploymentTagger
from deploytool.rollout.wiring import Output, Services, run_rollout


def setup(
    fleet: Fleet, target: CodeDeployTarget, gateway: CodeDeployGateway, console: Console, *, dry_run: bool
) -> bool:
    """Plan, print, and (unless dry_run) apply. True when something changed or would change."""
    plan = plan_setup(fleet, target, gateway)
    for line in describe(plan):
        console.print(line, markup=False, highlight=False)
    if dry_run or plan.empty:
        return not plan.empty
    apply_setup(plan, gateway, on_action=lambda a: console.print(f"{a.line()} ...", markup=False, highlight=False))
    console.print("setup done", markup=False)
    return True


def check_group_sizes(target_name: str, groups: Sequence[Group], services: Services) -> None:
    """On the codedeploy backend, a minimum of healthy hosts not below a group's ASG is refused before anything is
    published or started (deploytool.rollout.plan.check_min_healthy); one DescribeAutoScalingGroups call, made
    only when a group has such a minimum. (The sandbox's backend applies the strategy to the instances it has.)"""
    chosen = [g for g in groups if g.strategy.kind in ("HostCount", "FleetPercent")]
    if services.backend.name != "codedeploy" or not chosen:
        return
    asgs = AutoScalingGateway(services.aws).describe_groups([g.asg for g in chosen])
    sizes = {
        g.name: sum(i.lifecycle_state == "InService" for i in asgs[g.asg].instances) for g in chosen if g.asg in asgs
    }
    check_min_healthy(target_name, chosen, sizes)


def show_plan(plan: RolloutPlan, services: Services, *, resumed: bool) -> list[str]:
    """--dry-run: the waves, what each group would do, nothing started."""
    found = resolve(services.backend, plan) if plan.prior else {}
    lines = plan_lines(plan, found, "resume" if resumed else "new")
    for line in lines:
        services.console.print(line, markup=False, highlight=False)
    return lines


def plan_lines(plan: RolloutPlan, found: Mapping[str, Resolution], what: str) -> list[str]:
    """The plan as --dry-run prints it; `found` is what each group's prior deployment turned out to be, `what`
    says whether the release is new, resumed, or not known to be either."""
    lines = [
        f"release {plan.release_id} ({what}): {what_release_does(plan.mode, plan.version, plan.target)}, "
        f"{len(plan.groups)} groups, max-parallel {plan.options.max_parallel or 'unlimited'}, "
        f"on failure {plan.options.on_failure}, partial failure {plan.options.partial_failure}"
        + (", ApplicationStop failures ignored" if plan.options.ignore_stop_failures else "")
    ]
    for wave in plan.waves:
        lines.append(f"wave {wave.number}:")
        for group in wave.groups:
            action = "start a deployment"
            if group.name in found:
                r = found[group.name]
                action = f"follow {r.deployment_id}" if r.action == "attach" else f"skip: {r.deployment_id} succeeded"
            lines.append(f"  {group.name}: {group.strategy.label} ({group.strategy.deployment_config_name}): {action}")
    return lines


def _release(
    prepared: Prepared,
    target_name: str,
    groups: Sequence[Group],
    options: RolloutOptions,
    services: Services,
    output: Output,
    *,
    dry_run: bool,
    tagger: DeploymentTagger | None = None,
    already: Mapping[str, PriorDeployment] | None = None,
) -> RolloutResult | None:
    manifest = prepared.manifest
    plan = rollout_plan(
        release_id=manifest.release_id,
        version=manifest.version,
        target=target_name,
        groups=groups,
        revision=prepared.revision,
        options=options,
        prior={**(already or {}), **prior_deployments(manifest)},
    )
    if dry_run:
        show_plan(plan, services, resumed=prepared.resumed)
        return None
    return run_rollout(plan, services, output, manifest=manifest, tagger=tagger)


def deploy(
    fleet: Fleet,
    target_name: str,
    groups: Sequence[Group],
    options: RolloutOptions,
    services: Services,
    output: Output,
    *,
    version: str | None,
    allow_dirty: bool,
    dry_run: bool = False,
    templates: Templates | None = None,
    out_dir: Path | None = None,
    tagger: DeploymentTagger | None = None,
    on_prepared: Callable[[Prepared], None] | None = None,
) -> RolloutResult | None:
    """Build, publish (or resume) and roll out a release; `on_prepared` hears of it before the rollout starts."""
    if output.json_out:
        check_json_out(Path(output.json_out))
    check_group_sizes(target_name, groups, services)
    prepared = prepare_deploy(
        fleet,
        target_name,
        groups,
        aws=services.aws,
        store=services.store,
        version=version,
        allow_dirty=allow_dirty,
        dry_run=dry_run,
        templates=templates,
        out_dir=out_dir,
        now=services.now,
        allow_task_changes=options.allow_task_changes,
    )
    if on_prepared is not None:
        on_prepared(prepared)
    result = _release(prepared, target_name, groups, options, services, output, dry_run=dry_run, tagger=tagger)
    if result is not None and result.gate is not None and result.gate.get("halted"):
        undo_halted(fleet, target_name, groups, options, services, output, result, tagger=tagger)
    return result


def undo_halted(
    fleet: Fleet,
    target_name: str,
    groups: Sequence[Group],
    options: RolloutOptions,
    services: Services,
    output: Output,
    result: RolloutResult,
    *,
    tagger: DeploymentTagger | None = None,
) -> RolloutResult | None:
    """The health gate halted the release: every group it reached goes back to the last earlier release that
    succeeded on the target (a rollback release, `fab rollback`'s), so one bad wave is all it costs."""
    touched = [g for g in groups if result.group(g.name).outcome == "succeeded"]
    if not touched:
        return None
    services.console.print(
        f"health gate halted release {result.release_id}: rolling back {', '.join(g.name for g in touched)} "
        "to the last earlier release that succeeded",
        markup=False,
        highlight=False,
    )
    plain = replace(options, bake_s=0.0)
    return rollback(
        fleet, target_name, touched, plain, services, replace(output, json_out=None), to_version=None, tagger=tagger
    )


def rollback(
    fleet: Fleet,
    target_name: str,
    groups: Sequence[Group],
    options: RolloutOptions,
    services: Services,
    output: Output,
    *,
    to_version: str | None,
    dry_run: bool = False,
    tagger: DeploymentTagger | None = None,
) -> RolloutResult | None:
    """A new release of an earlier release's revision; the instances it reaches are tagged with that version."""
    if output.json_out:
        check_json_out(Path(output.json_out))
    check_group_sizes(target_name, groups, services)
    prepared = prepare_rollback(
        fleet, target_name, groups, store=services.store, to_version=to_version, dry_run=dry_run, now=services.now
    )
    already = already_on(services.backend, groups, prepared.manifest.version)
    for name, prior in already.items():
        services.console.print(
            f"{name}: skipped: already runs {prepared.manifest.version} (its last successful "
            f"deployment {prior.deployment_id})",
            markup=False,
            highlight=False,
        )
    return _release(
        prepared, target_name, groups, options, services, output, dry_run=dry_run, tagger=tagger, already=already
    )


def already_on(backend: Backend, groups: Sequence[Group], version: str) -> dict[str, PriorDeployment]:
    """The groups whose last successful deployment is of `version` and reached every instance, with that deployment:
    a rollback to `version` leaves them alone (the orchestrator reports them already-deployed)."""
    last: dict[str, str] = {}
    for group in groups:
        try:
            state = backend.group_state(group)
        except DeployToolError:
            continue  # unknown: deploy it
        deployment_id = state.extra.get("last_successful_deployment_id")
        if state.last_successful_version == version and deployment_id:
            last[group.name] = deployment_id
    snapshots = backend.poll(list(last.values())) if last else {}
    return {
        name: PriorDeployment(d, "Succeeded")
        for name, d in last.items()
        if (snap := snapshots.get(d)) is not None and snap.all_succeeded
    }


def restart(
    fleet: Fleet,
    target_name: str,
    groups: Sequence[Group],
    options: RolloutOptions,
    services: Services,
    output: Output,
    *,
    dry_run: bool = False,
) -> RolloutResult | None:
    """A rolling restart with each group's strategy; not a release (no record: versions do not change)."""
    if output.json_out:
        check_json_out(Path(output.json_out))
    check_group_sizes(target_name, groups, services)
    if isinstance(services.backend, CodeDeployBackend) and not services.backend.restart_mode:
        services.console.print(restart_fallback_line(fleet), markup=False, highlight=False, soft_wrap=True)
    plan = restart_plan(target_name, groups, options, services.now())
    if dry_run:
        show_plan(plan, services, resumed=False)
        return None
    return run_rollout(plan, services, output)


def restart_fallback_line(fleet: Fleet) -> str:
    """Why a restart on CodeDeploy is a redeploy of each group's last good revision (deploytool.rollout.codedeploy)."""
    agent = fleet.app.codedeploy_agent
    declared = f"app.codedeploy_agent is {agent}" if agent else "app.codedeploy_agent is not set"
    return (
        f"restart: {declared} and deploymentMode RESTART needs CodeDeploy agent 2.1.0 or newer: each group "
        "redeploys the revision of its last successful deployment instead (every hook runs; the workers restart "
        'on the same code); set app.codedeploy_agent = "2.1" once every instance runs agent 2.1.0+'
    )


def restart_plan(target_name: str, groups: Sequence[Group], options: RolloutOptions, now: datetime) -> RolloutPlan:
    return rollout_plan(
        release_id=release_id("restart", now),
        version="restart",
        target=target_name,
        groups=groups,
        revision=None,
        options=options,
        mode="restart",
    )


def status(
    fleet: Fleet, target_name: str, services: Services, release_id: str | None, *, as_json: bool = False
) -> StatusView:
    """A release's groups and their deployments as the backend reports them now, after the target's lease line; with
    `as_json`, the same reading as one JSON object on stdout (deploytool.rollout.status). A deployment the backend
    calls Abandoned (a sandbox deployment whose `fab` process died: nothing runs it) gets a line on how to resume."""
    view = read_status(target_name, services, release_id)
    if as_json:
        sys.stdout.write(json.dumps(view.to_dict(), sort_keys=True) + "\n")
        return view
    services.console.print(view.lease_line(), markup=False, highlight=False, soft_wrap=True)
    manifest = view.manifest
    table = Table(title=f"release {manifest.release_id}: {manifest.version} on {manifest.target}")
    for column in ("wave", "group", "strategy", "deployment", "status", "ok/failed/total", "rollback"):
        table.add_column(column)
    for g in view.groups:
        snap, rollback = g.snapshot, g.rollback
        table.add_row(
            g.wave,
            g.group,
            g.strategy,
            g.deployment_id or "-",
            g.status,
            f"{snap.succeeded}/{snap.failed}/{snap.total}" if snap and snap.total else "",
            f"{g.rollback_deployment_id} {rollback.status if rollback else ''}".strip()
            if g.rollback_deployment_id
            else "",
        )
    services.console.print(table)
    target = "" if target_name == fleet.target(None)[0] else f" --target {target_name}"
    for g in view.groups:
        for snap in g.abandoned():
            services.console.print(
                f"{g.group}: {snap.deployment_id} is abandoned: {snap.error}: `fab deploy --version {manifest.version}"
                f"{target}` resumes the release; `fab sandbox-down{target}` stops what it left",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    return view


def lease_line(target_name: str, services: Services) -> str:
    """`fab status`'s line on the target's release lease: who holds it, since when, stale or not; or that it is free."""
    found = read_lease(target_name, services)
    line = found.line(services.now()) if found else f"release lease of target {target_name!r}: free"
    services.console.print(line, markup=False, highlight=False, soft_wrap=True)
    return line


def verdict(result: RolloutResult | None) -> None:
    """Raise DeployFailed (exit 1) unless every group succeeded on every instance; RecordNotWritten (exit 4)
    when it did but the release record in S3 could not be written (the deploy happened; the record is stale)."""
    if result is None:
        return
    if result.succeeded:
        record = result.record
        if record is not None and not record.written:
            last = record.errors[-1] if record.errors else "unknown error"
            raise RecordNotWritten(
                f"release {result.release_id} reached every instance, but its release record was not written "
                f"({' and '.join(record.stale)} stale; last error: {last}); fix the S3 access, then `fab deploy "
                f"--version {result.version}` resumes the release and writes it"
            )
        return
    counts = ", ".join(f"{n} {k}" for k, n in result.counts().items())
    if result.detached:
        raise DeployFailed(
            f"detached from release {result.release_id} ({counts}); its deployments keep running: "
            "`fab status` shows them, `fab deploy` of the same version follows them"
        )
    failed = [g.group for g in result.groups if not g.ok]
    raise DeployFailed(
        f"release {result.release_id} did not succeed on every instance ({counts}); groups: {', '.join(failed)}"
    )
