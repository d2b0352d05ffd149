"""`fab deploy` end to end: the rollout (tagging each group as it finishes), its verdict, then a reconcile.

Contract: `deploy_and_reconcile(fleet, target, groups, options, services, output, ...)`
1. Adds a DeploymentTagger (deploytool.reconcile.tagger) to this run's reporters (`with_tagging`): as
   soon as a group's deployment ends, its succeeded instances get the deploytool:version / :release /
   :deployed-at tags, on the EC2 of `services.aws` through `services.backend` (any backend: CodeDeploy,
   or the sandbox's on its moto server). A tagging failure is one warning line; it never fails or
   stops the release.
2. Runs the rollout (deploytool.rollout.commands.deploy). A dry run stops there: nothing reconciled.
3. Exit codes, as a CI pipeline reads them:
   - 1 (DeployFailed): the rollout did not succeed on every instance, or was detached. The reconcile is
     then skipped, on purpose: it cannot change the exit code, the failed instances are already named,
     and a reconcile against the release that just failed would list every rolled-back or not-started
     instance as drift, burying the cause. `fab reconcile` shows the fleet when wanted.
   - 3 (DriftFound): the rollout succeeded but the reconcile that follows (unless reconcile=False,
     `--no-reconcile`) found an instance of a deployed group not on its expected version, or untagged
     (launched during the deployment, say).
   - 0: the rollout succeeded on every instance and the reconcile is clean (or was not asked for).
   The reconcile covers the deployed groups, on the same AWS session as the rollout (the sandbox's moto
   server for a local target), with the target's engine or `engine`. Its settings are checked before
   anything is built, so a bad --reconcile-engine is exit 2 at once (`reconcile_settings`: the fab task
   calls it before it builds the services, so the check also comes before "no sandbox is running").

A dry run on a local target whose sandbox is not running needs no services (`plan_without_sandbox`):
the plan comes from the fleet file alone (waves, groups, strategies; for a deploy, the bundle is built
to name the version). What only the sandbox's release record could tell, whether this version would
resume an earlier release, is said to be unknown rather than guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

from rich.console import Console

from deploytool.aws.ec2 import Ec2Gateway
from deploytool.bundle import build_release
from deploytool.config import Fleet, Group
from deploytool.errors import UsageError
from deploytool.reconcile import command as reconcile_command
from deploytool.reconcile.pipeline import EngineName, ReconcileServices, ReconcileSettings
from deploytool.reconcile.report import ReconcileReport
from deploytool.reconcile.tagger import DeploymentTagger, TagStore
from deploytool.render import Templates
from deploytool.rollout import commands
from deploytool.rollout.backend import Revision
from deploytool.rollout.commands import Output, Services
from deploytool.rollout.plan import Mode, RolloutOptions, rollout_plan
from deploytool.rollout.record import release_id_for
from deploytool.rollout.result import RolloutResult


@dataclass(frozen=True)
class Deployed:
    result: RolloutResult | None  # None for a dry run
    tagger: DeploymentTagger
    report: ReconcileReport | None = None  # None when not reconciled


def _say(services: Services, line: str) -> None:
    services.console.print(line, markup=False, highlight=False)


def with_tagging(services: Services, ec2: TagStore | None = None) -> tuple[Services, DeploymentTagger]:
    """These services plus a tagger among the reporters (a copy: the caller's services stay as they are)."""
    tagger = DeploymentTagger(ec2 or Ec2Gateway(services.aws), services.backend, now=services.now,
                              say=lambda line: _say(services, line))
    return replace(services, extra_reporters=[*services.extra_reporters, tagger]), tagger


def reconcile_services(fleet: Fleet, services: Services) -> ReconcileServices:
    """Reconcile's gateways on the rollout's AWS session and clock."""
    return replace(reconcile_command.services_for(fleet, session=services.aws), now=services.now)


def tag_summary(services: Services, tagger: DeploymentTagger) -> None:
    if tagger.count or tagger.calls:
        _say(services, f"tags: {tagger.count} instance(s) tagged in {tagger.calls} CreateTags call(s)")
    if tagger.warnings:
        _say(services, f"warning: tagging failed for {len(tagger.warnings)} group(s); their instances keep their "
                       "old tags")


def reconcile_settings(
    fleet: Fleet, target_name: str, groups: Sequence[Group], *, engine: str | None, reconcile: bool = True,
    dry_run: bool = False, mirror: str | None = None,
) -> ReconcileSettings | None:
    """The final reconcile's settings (None when there is none); UsageError (exit 2) for a bad engine."""
    if engine is not None and engine not in get_args(EngineName):
        raise UsageError(f"--reconcile-engine {engine!r}: allowed: {', '.join(get_args(EngineName))}")
    if not reconcile or dry_run:
        return None
    return reconcile_command.settings_for(fleet, target_name, engine=engine, mirror=mirror,
                                          groups=[g.name for g in groups])


def sandbox_running(fleet: Fleet, target_name: str) -> bool:
    """Whether `fab sandbox-up` left a sandbox running for this local target (what attach requires)."""
    from deploytool.sandbox.motoserver import recorded
    from deploytool.sandbox.session import local_target, read_sandbox_info, sandbox_root

    _, local = local_target(fleet, target_name)
    root = sandbox_root(fleet, local)
    return read_sandbox_info(root) is not None and recorded(root / "run" / "moto.pid") is not None


def plan_without_sandbox(
    fleet: Fleet, target_name: str, groups: Sequence[Group], options: RolloutOptions, console: Console, *,
    mode: Mode, version: str | None = None, allow_dirty: bool = False, out_dir: Path | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[str]:
    """--dry-run of `fab deploy` or `fab restart` on a local target with no sandbox running: print the plan."""
    if mode == "restart":
        plan = commands.restart_plan(target_name, groups, options, now())
    else:
        bundle = build_release(fleet, version=version, allow_dirty=allow_dirty, out_dir=out_dir)
        revision = Revision(fleet.artifacts.bucket, "(not published: dry run)", "", bundle.version, bundle.sha256)
        plan = rollout_plan(release_id=release_id_for(bundle.version, now()), version=bundle.version,
                            target=target_name, groups=groups, revision=revision, options=options)
    what = "new" if mode == "restart" else "new or resumed: not known while no sandbox runs"
    lines = commands.plan_lines(plan, {}, what)
    lines.append(f"(no sandbox is running for target {target_name!r}: nothing was checked against it; "
                 "`fab sandbox-up` starts one)")
    for line in lines:
        console.print(line, markup=False, highlight=False)
    return lines


def deploy_and_reconcile(
    fleet: Fleet, target_name: str, groups: Sequence[Group], options: RolloutOptions, services: Services,
    output: Output, *, version: str | None, allow_dirty: bool, dry_run: bool = False, reconcile: bool = True,
    engine: str | None = None, mirror: str | None = None, templates: Templates | None = None,
    out_dir: Path | None = None, reconciling: ReconcileServices | None = None, tag_writer: TagStore | None = None,
    env: Mapping[str, str] | None = None,
) -> Deployed:
    """Roll out, tag, and reconcile; raises DeployFailed (exit 1) or DriftFound (exit 3), see the module doc."""
    settings = reconcile_settings(fleet, target_name, groups, engine=engine, reconcile=reconcile, dry_run=dry_run,
                                  mirror=mirror)
    tagged, tagger = with_tagging(services, tag_writer)
    result = commands.deploy(fleet, target_name, groups, options, tagged, output, version=version,
                             allow_dirty=allow_dirty, dry_run=dry_run, templates=templates, out_dir=out_dir)
    if result is None:
        return Deployed(None, tagger)
    tag_summary(services, tagger)
    if not result.succeeded and settings is not None:
        _say(services, "reconcile skipped: the rollout did not succeed (exit 1); `fab reconcile` shows the fleet")
    commands.verdict(result)
    if settings is None:
        return Deployed(result, tagger)
    report = reconcile_command.reconcile_after_deploy(
        fleet, target_name, services.console, services=reconciling or reconcile_services(fleet, services),
        settings=settings, env=env,
    )
    return Deployed(result, tagger, report)
