"""`fab deploy` end to end: the rollout (tagging each group as it finishes), its verdict, then a reconcile.

Contract: `deploy_and_reconcile(fleet, target, groups, options, services, output, ...)`
1. Runs the rollout (deploytool.rollout.commands.deploy, through the one wiring deploytool.rollout.wiring),
   whose DeploymentTagger tags each group's succeeded instances as soon as its deployment ends
   (deploytool:version / :release / :deployed-at, on the EC2 of `services.aws`, or `tag_writer`; any
   backend: CodeDeploy, or the sandbox's on its moto server). A tagging failure is one warning line; it
   never fails or stops the release. A dry run stops there: nothing reconciled.
2. Exit codes, as a CI pipeline reads them:
   - 1 (DeployFailed): the rollout did not succeed on every instance, or was detached. The reconcile is
     then skipped, on purpose: it cannot change the exit code, the failed instances are already named,
     and a reconcile against the release that just failed would list every rolled-back or not-started
     instance as drift, burying the cause. `fab reconcile` shows the fleet when wanted.
   - 3 (DriftFound): the rollout succeeded but the reconcile that follows (unless reconcile=False,
     `--no-reconcile`) found an instance of a deployed group not on its expected version, or untagged
     (launched during the deployment, say).
   - 4 (RecordNotWritten): the rollout succeeded on every instance, but the release record (manifest
     outcomes, target history) could not be written to S3 even after retries: the deploy happened, the
     record is stale. The reconcile is skipped: it reads the record and would judge against a stale one.
   - 0: the rollout succeeded on every instance and the reconcile is clean (or was not asked for).
   The reconcile covers the deployed groups, on the same AWS session as the rollout (the sandbox's moto
   server for a local target), with the target's engine or `engine`. Its settings are checked before
   anything is built, so a bad --reconcile-engine is exit 2 at once (`reconcile_settings`: the fab task
   calls it before it builds the services, so the check also comes before "no sandbox is running").

`fab sandbox` releases through this same function (`sandbox_releases`, with reconcile=False for each
release and one reconcile at its end): the sandbox proves the production path, record and tags included.

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

from deploytool import targets
from deploytool.bundle import build_release
from deploytool.config import Fleet, Group
from deploytool.errors import UsageError
from deploytool.model import Revision, release_id
from deploytool.reconcile import command as reconcile_command
from deploytool.reconcile.pipeline import EngineName, ReconcileServices, ReconcileSettings
from deploytool.reconcile.report import ReconcileReport
from deploytool.render import Templates
from deploytool.rollout import commands
from deploytool.rollout.events import Reporter
from deploytool.rollout.plan import Mode, RolloutOptions, rollout_plan
from deploytool.rollout.release import Prepared
from deploytool.rollout.result import RolloutResult
from deploytool.rollout.tagger import DeploymentTagger, TagStore
from deploytool.rollout.wiring import Output, Services, say, tagger_for
from deploytool.sandbox.session import SandboxSession


@dataclass(frozen=True)
class Deployed:
    result: RolloutResult | None  # None for a dry run
    tagger: DeploymentTagger
    report: ReconcileReport | None = None  # None when not reconciled


def reconcile_settings(
    fleet: Fleet,
    target_name: str,
    groups: Sequence[Group],
    *,
    engine: str | None,
    reconcile: bool = True,
    dry_run: bool = False,
    mirror: str | None = None,
) -> ReconcileSettings | None:
    """The final reconcile's settings (None when there is none); UsageError (exit 2) for a bad engine."""
    if engine is not None and engine not in get_args(EngineName):
        raise UsageError(f"--reconcile-engine {engine!r}: allowed: {', '.join(get_args(EngineName))}")
    if not reconcile or dry_run:
        return None
    return targets.settings_for(fleet, target_name, engine=engine, mirror=mirror, groups=[g.name for g in groups])


def reconcile_services(fleet: Fleet, services: Services) -> ReconcileServices:
    """Reconcile's gateways on the rollout's AWS session and clock."""
    return replace(reconcile_command.services_for(fleet, session=services.aws), now=services.now)


def plan_without_sandbox(
    fleet: Fleet,
    target_name: str,
    groups: Sequence[Group],
    options: RolloutOptions,
    console: Console,
    *,
    mode: Mode,
    version: str | None = None,
    allow_dirty: bool = False,
    out_dir: Path | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[str]:
    """--dry-run of `fab deploy` or `fab restart` on a local target with no sandbox running: print the plan."""
    if mode == "restart":
        plan = commands.restart_plan(target_name, groups, options, now())
    else:
        bundle = build_release(fleet, version=version, allow_dirty=allow_dirty, out_dir=out_dir)
        revision = Revision(fleet.artifacts.bucket, "(not published: dry run)", "", bundle.version, bundle.sha256)
        plan = rollout_plan(
            release_id=release_id(bundle.version, now()),
            version=bundle.version,
            target=target_name,
            groups=groups,
            revision=revision,
            options=options,
        )
    what = "new" if mode == "restart" else "new or resumed: not known while no sandbox runs"
    lines = commands.plan_lines(plan, {}, what)
    lines.append(
        f"(no sandbox is running for target {target_name!r}: nothing was checked against it; "
        "`fab sandbox-up` starts one)"
    )
    for line in lines:
        console.print(line, markup=False, highlight=False)
    return lines


def deploy_and_reconcile(
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
    reconcile: bool = True,
    engine: str | None = None,
    mirror: str | None = None,
    templates: Templates | None = None,
    out_dir: Path | None = None,
    reconciling: ReconcileServices | None = None,
    tag_writer: TagStore | None = None,
    env: Mapping[str, str] | None = None,
    on_prepared: Callable[[Prepared], None] | None = None,
) -> Deployed:
    """Roll out, tag, and reconcile; raises DeployFailed (exit 1) or DriftFound (exit 3), see the module doc."""
    settings = reconcile_settings(
        fleet, target_name, groups, engine=engine, reconcile=reconcile, dry_run=dry_run, mirror=mirror
    )
    if tag_writer is not None:
        services = replace(services, ec2=tag_writer)
    tagger = tagger_for(services)
    result = commands.deploy(
        fleet,
        target_name,
        groups,
        options,
        services,
        output,
        version=version,
        allow_dirty=allow_dirty,
        dry_run=dry_run,
        templates=templates,
        out_dir=out_dir,
        tagger=tagger,
        on_prepared=on_prepared,
    )
    if result is None:
        return Deployed(None, tagger)
    if not result.succeeded and settings is not None:
        say(services, "reconcile skipped: the rollout did not succeed (exit 1); `fab reconcile` shows the fleet")
    elif result.record is not None and not result.record.written and settings is not None:
        say(services, "reconcile skipped: the release record it reads was not written (exit 4)")
    commands.verdict(result)
    if settings is None:
        return Deployed(result, tagger)
    report = reconcile_command.reconcile_after_deploy(
        fleet,
        services.console,
        settings=settings,
        services=reconciling or reconcile_services(fleet, services),
        env=env,
    )
    return Deployed(result, tagger, report)


@dataclass(frozen=True)
class SessionReleases:
    """`fab deploy` on the sandbox this process runs: what `fab sandbox` (deploytool.sandbox.run) releases through."""

    target_name: str
    services: Services
    reconciling: ReconcileServices
    output: Output
    templates: Templates | None = None

    def watch(self, reporter: Reporter) -> None:
        self.services.extra_reporters.append(reporter)

    def release(
        self,
        fleet: Fleet,
        groups: Sequence[Group],
        options: RolloutOptions,
        *,
        out_dir: Path,
        on_prepared: Callable[[Prepared], None] | None = None,
    ) -> RolloutResult:
        """`fab deploy --no-reconcile` of the work tree's HEAD; DeployFailed (exit 1) unless it succeeded."""
        done = deploy_and_reconcile(
            fleet,
            self.target_name,
            groups,
            options,
            self.services,
            self.output,
            version=None,
            allow_dirty=False,
            reconcile=False,
            templates=self.templates,
            out_dir=out_dir,
            on_prepared=on_prepared,
        )
        assert done.result is not None  # not a dry run
        return done.result

    def reconcile(self, fleet: Fleet, groups: Sequence[Group]) -> ReconcileReport:
        """The reconcile `fab deploy` ends with, over these groups; DriftFound (exit 3) on drift."""
        settings = targets.settings_for(fleet, self.target_name, groups=[g.name for g in groups])
        return reconcile_command.reconcile_after_deploy(
            fleet, self.services.console, settings=settings, services=self.reconciling
        )


def sandbox_releases(
    console: Console,
    *,
    ci: bool,
    templates: Templates | None = None,
) -> Callable[[SandboxSession], SessionReleases]:
    """For `fab sandbox`: given its running session, `fab deploy`'s path on it (deploytool.targets.in_session).

    A Ctrl-C is let through at once (on_interrupt "raise"): the session then stops everything it started."""

    def connect(sandbox: SandboxSession) -> SessionReleases:
        connected = targets.in_session(sandbox.config, sandbox)
        services = replace(connected.services(sandbox.config, console, ci=ci), on_interrupt="raise")
        return SessionReleases(
            connected.target.name, services, connected.reconcile_services(sandbox.config), Output(ci=ci), templates
        )

    return connect
