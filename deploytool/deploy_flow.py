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
   anything is built, so a bad --reconcile-engine is exit 2 at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import get_args

from deploytool.aws.ec2 import Ec2Gateway
from deploytool.config import Fleet, Group
from deploytool.errors import UsageError
from deploytool.reconcile import command as reconcile_command
from deploytool.reconcile.pipeline import EngineName, ReconcileServices
from deploytool.reconcile.report import ReconcileReport
from deploytool.reconcile.tagger import DeploymentTagger, TagStore
from deploytool.render import Templates
from deploytool.rollout import commands
from deploytool.rollout.commands import Output, Services
from deploytool.rollout.plan import RolloutOptions
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


def deploy_and_reconcile(
    fleet: Fleet, target_name: str, groups: Sequence[Group], options: RolloutOptions, services: Services,
    output: Output, *, version: str | None, allow_dirty: bool, dry_run: bool = False, reconcile: bool = True,
    engine: str | None = None, mirror: str | None = None, templates: Templates | None = None,
    out_dir: Path | None = None, reconciling: ReconcileServices | None = None, tag_writer: TagStore | None = None,
    env: Mapping[str, str] | None = None,
) -> Deployed:
    """Roll out, tag, and reconcile; raises DeployFailed (exit 1) or DriftFound (exit 3), see the module doc."""
    settings = None
    if engine is not None and engine not in get_args(EngineName):
        raise UsageError(f"--reconcile-engine {engine!r}: allowed: {', '.join(get_args(EngineName))}")
    if reconcile and not dry_run:
        settings = reconcile_command.settings_for(fleet, target_name, engine=engine, mirror=mirror,
                                                  groups=[g.name for g in groups])
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
