"""The one rollout wiring: every entry point that rolls something out runs its plan here.

Contract: `run_rollout(plan, services, output, manifest=..., tagger=...)` builds the Orchestrator on
`services.backend` and `services.clock` with these reporters, runs it and returns its RolloutResult:
- progress: a rich live table on a terminal, plain lines with --ci or without one (deploytool.rollout.progress);
- `services.extra_reporters` (what a caller or a test adds);
- for a release (a `manifest` is given): each group's last good revision for a partly failed deployment
  (deploytool.rollout.partial.LastGood, read from the record only when one happens), the release record
  writer (deploytool.rollout.record: deployments and each group's outcome into the manifest in S3, the
  target's history at the end) and the
  DeploymentTagger (deploytool.rollout.tagger: each group's instances tagged as its deployment ends, on
  `services.ec2`, else the EC2 of `services.aws`), then one line with what was tagged. A plan that is no
  release (a restart, a reconcile --fix) writes neither: versions do not change, or the fix tags itself;
- the result writers (--json-out, $GITHUB_STEP_SUMMARY; deploytool.rollout.summary);
- with a bake (`fab deploy --bake`, the fleet's [rollout] bake) and more than one wave, the health gate
  (deploytool.rollout.gate): asked before each wave with the lease's gate, its checks in the result.
With `services.lease` set (deploytool.targets sets it for every fab task), the plan runs under the target's
release lease (deploytool.rollout.lease): taken before the Orchestrator starts anything (LeaseHeld, exit 1, when
another release holds it; --wait, --break-lease), renewed while it runs (a lost lease starts no new wave), and
released at the end, also on Ctrl-C or an error; a broken stale lease goes into the manifest as `lease_broken`.
Ctrl-C (deploytool.rollout.interrupt): `services.on_interrupt` "ask" asks whether to stop (with rollback)
or detach, and only stops when the deployments run in this process (`services.detachable` False); "raise"
lets the KeyboardInterrupt through at once (`fab sandbox`, whose session then stops everything it started).
Warnings (a release-record write failed, tagging failed, CodeDeploy keeps hook output) are one line each
on `services.console`; nothing else is printed here. The record's final state (written, or which part is
stale and why) goes into the returned result (`RolloutResult.record`), the --json-out file and the step
summary; `commands.verdict` turns a stale record of a release that reached every instance into exit 4.

Its users: `fab deploy`, `fab rollback`, `fab restart` (deploytool.rollout.commands), `fab sandbox`
(deploytool.sandbox.run, through the same commands.deploy), `reconcile --fix` (deploytool.reconcile.fix_runner)
and the benchmarks (bench/rollout.py, bench/drain.py). The Services of a target come from deploytool.targets.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from rich.console import Console

from deploytool.aws.cloudwatch import CloudWatchGateway
from deploytool.aws.ec2 import Ec2Gateway
from deploytool.aws.session import AwsSession
from deploytool.aws.sqs import SqsGateway, sqs_queue_name
from deploytool.model import ReleaseManifest
from deploytool.rollout.backend import Backend
from deploytool.rollout.clock import Clock, SystemClock
from deploytool.rollout.events import Fanout, Reporter
from deploytool.rollout.gate import HealthGate
from deploytool.rollout.interrupt import Pausable, console_prompt, follow
from deploytool.rollout.lease import Lease, LeaseKeeper, LeaseStore, Taken, acquire, broken_record
from deploytool.rollout.orchestrator import Orchestrator
from deploytool.rollout.partial import LastGood
from deploytool.rollout.plan import RolloutPlan, wave_bakes
from deploytool.rollout.progress import LiveTable, PlainLines
from deploytool.rollout.record import RecordWriter, ReleaseStore
from deploytool.rollout.result import RolloutResult
from deploytool.rollout.summary import ResultWriters
from deploytool.rollout.tagger import DeploymentTagger, TagStore

NOTHING_RAN = ("already-deployed", "not-started")
CODEDEPLOY_HOOK_OUTPUT = (
    "note: CodeDeploy does not return the output of hooks that succeeded, so tasks a drain's cold shutdown "
    "interrupted are not shown here: on each instance, grep 'deploytool: interrupted task' "
    "/opt/codedeploy-agent/deployment-root/<deployment-group-id>/<deployment-id>/logs/scripts.log"
)


@dataclass
class Services:
    """What a rollout runs with: the target's session and backend (deploytool.targets), and the seams tests replace."""

    aws: AwsSession
    backend: Backend
    store: ReleaseStore
    console: Console
    clock: Clock = field(default_factory=SystemClock)
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    interactive: bool = True
    extra_reporters: list[Reporter] = field(default_factory=list)
    # False when the backend's deployments run inside this process (the sandbox): never detach, stop instead
    detachable: bool = True
    on_interrupt: Literal["ask", "raise"] = "ask"
    ec2: TagStore | None = None  # where tags are written; None: the EC2 of `aws`
    lease: LeaseOptions | None = None  # one release at a time per target (deploytool.rollout.lease); None: no lease
    telemetry_s: float | None = None  # the workers publish this often: the health gate looks as often; None: at the end


@dataclass(frozen=True)
class LeaseOptions:
    """The release lease a rollout takes: the command named in it, and what to do when someone else holds it."""

    command: str = "deploy"
    wait: bool = False
    break_lease: bool = False


@dataclass(frozen=True)
class Output:
    ci: bool = False
    json_out: str | None = None


def say(services: Services, line: str) -> None:
    services.console.print(line, markup=False, highlight=False)


def tagger_for(services: Services) -> DeploymentTagger:
    return DeploymentTagger(
        services.ec2 or Ec2Gateway(services.aws),
        services.backend,
        now=services.now,
        say=lambda line: say(services, line),
    )


def tag_summary(services: Services, tagger: DeploymentTagger) -> None:
    if tagger.count or tagger.calls:
        say(services, f"tags: {tagger.count} instance(s) tagged in {tagger.calls} CreateTags call(s)")
    if tagger.warnings:
        say(
            services,
            f"warning: tagging failed for {len(tagger.warnings)} group(s); their instances keep their old tags",
        )


def take_lease(plan: RolloutPlan, services: Services) -> Taken | None:
    """The target's release lease, taken before any deployment starts (LeaseHeld, exit 1, when someone holds it)."""
    if services.lease is None:
        return None
    store = services.store
    leases = LeaseStore(store.s3, bucket=store.bucket, prefix=store.prefix, app=store.app)
    return acquire(
        leases,
        target=plan.target,
        release_id=plan.release_id,
        command=services.lease.command,
        now=services.now,
        clock=services.clock,
        say=lambda line: say(services, line),
        wait=services.lease.wait,
        break_lease=services.lease.break_lease,
    )


class LeaseGuard:
    """Keeps a held lease renewed while the rollout runs; once it is lost, no new wave starts (said once)."""

    def __init__(self, lease: Lease, services: Services) -> None:
        self.lease, self.services = lease, services
        self._said = False
        self.keeper = LeaseKeeper(lease, self._lost)

    def _lost(self, why: str) -> None:
        if not self._said:
            self._said = True
            say(self.services, f"lease lost: {why}; this release starts no new wave (the deployments under way go on)")

    def gate(self) -> bool:
        if self.lease.check():
            return True
        self._lost(self.lease.lost or "lost")
        return False

    def end(self) -> None:
        self.keeper.stop()
        if not self.lease.release() and self.lease.lost:
            self._lost(self.lease.lost)


def waiting(sqs: SqsGateway, queues: list[str]) -> dict[str, int]:
    """Messages waiting in each queue (its SQS name, as kombu names it) that exists."""
    names = {sqs_queue_name(q): q for q in queues}
    return {names[name]: depth.visible for name, depth in sqs.depths(list(names)).items()}


def health_gate(plan: RolloutPlan, services: Services, output: Output, display: Pausable | None) -> HealthGate | None:
    """The health gate between waves, when the plan asks for a bake and has a wave after its first."""
    bakes = wave_bakes(plan.waves, plan.options)
    if not any(bakes.get(w.number, 0) > 0 for w in plan.waves[:-1]) or plan.mode != "deploy":
        return None  # no bake after any wave but the last: no gate
    ask = None
    if services.interactive and not output.ci and services.console.is_terminal:

        def ask(evidence: str) -> bool:
            if display is not None:
                display.pause()
            try:
                services.console.print(evidence, markup=False, highlight=False)
                answer = services.console.input("The health gate holds (not enough data). Start the next wave? [y/N] ")
            finally:
                if display is not None:
                    display.resume()
            return answer.strip().lower() in ("y", "yes")

    return HealthGate(
        app=services.store.app,
        version=plan.version,
        bakes=bakes,
        telemetry=CloudWatchGateway(services.aws),
        queues={g.name: tuple(g.queues or ()) for g in plan.groups},
        not_enough_data={g.name: g.not_enough_data for g in plan.groups},
        depths=lambda names: waiting(SqsGateway(services.aws), names),
        clock=services.clock,
        now=services.now,
        ask=ask,
        look_s=services.telemetry_s,
    )


def run_rollout(
    plan: RolloutPlan,
    services: Services,
    output: Output,
    *,
    manifest: ReleaseManifest | None = None,
    tagger: DeploymentTagger | None = None,
) -> RolloutResult:
    """Run the plan with progress, Ctrl-C handling and, for a release, its record and tags (module doc); with
    `services.lease`, under the target's release lease (taken here, before any deployment starts)."""
    taken = take_lease(plan, services)
    if taken is not None and taken.broken is not None and manifest is not None:
        manifest = replace(
            manifest, extra={**manifest.extra, "lease_broken": broken_record(taken.broken, taken.lease.info)}
        )
    guard = LeaseGuard(taken.lease, services) if taken is not None else None
    try:
        return _run(plan, services, output, manifest, tagger, guard)
    finally:
        if guard is not None:
            guard.end()  # at the end, on Ctrl-C and on an error: the lease is released (If-Match: ours)


def _run(
    plan: RolloutPlan,
    services: Services,
    output: Output,
    manifest: ReleaseManifest | None,
    tagger: DeploymentTagger | None,
    guard: LeaseGuard | None,
) -> RolloutResult:
    display: Reporter
    pausable: Pausable | None = None
    if output.ci or not services.console.is_terminal:
        display = PlainLines(services.console)
    else:
        live = LiveTable(services.console, clock=services.clock)
        display, pausable = live, live
    reporters: list[Reporter] = [display, *services.extra_reporters]
    record: RecordWriter | None = None
    if manifest is not None:
        record = RecordWriter(
            services.store, manifest, say=lambda line: say(services, line), sleep=services.clock.sleep
        )
        tagger = tagger or tagger_for(services)
        reporters += [record, tagger]

    health = health_gate(plan, services, output, pausable)
    if health is not None:
        reporters.append(health)

    def with_record(result: RolloutResult) -> RolloutResult:
        if health is not None:
            result = replace(result, gate=health.to_dict())
        return result if record is None else replace(result, record=record.state())

    # after the record writer: the JSON result and the step summary say whether the record was written
    reporters.append(ResultWriters.from_env(output.json_out, dict(os.environ), annotate=with_record))
    last_good = LastGood(services.store, manifest) if manifest is not None else None
    fanout = Fanout(reporters)
    gates = [g.gate for g in (guard, health) if g is not None]
    if health is not None:
        health.emit = fanout.publish
    orchestrator = Orchestrator(
        services.backend,
        plan,
        reporter=fanout,
        clock=services.clock,
        last_good=last_good,
        gate=(lambda: all(gate() for gate in gates)) if gates else None,  # the lease's first: a lost one stops
    )
    if guard is not None:
        guard.keeper.start()
    try:
        if services.on_interrupt == "raise":
            result = orchestrator.run()
        else:
            ask = console_prompt(
                services.console, interactive=services.interactive, display=pausable, detachable=services.detachable
            )
            result = follow(orchestrator, ask, detachable=services.detachable)
    except BaseException:
        if pausable is not None:
            pausable.pause()  # the live display ends with the run, also on Ctrl-C or an error
        raise
    if services.backend.name == "codedeploy" and any(g.outcome not in NOTHING_RAN for g in result.groups):
        services.console.print(CODEDEPLOY_HOOK_OUTPUT, markup=False, highlight=False, soft_wrap=True)
    result = with_record(result)
    if result.record is not None and not result.record.written:
        say(
            services,
            f"warning: release record NOT written: {' and '.join(result.record.stale)} in s3://"
            f"{services.store.bucket}/ stale after {len(result.record.errors)} failed write(s); last: "
            f"{result.record.errors[-1]}",
        )
    elif result.record is not None and result.record.errors:
        say(
            services,
            f"warning: the release record could not always be written ({len(result.record.errors)} "
            f"time(s)), but its final state was; last: {result.record.errors[-1]}",
        )
    if tagger is not None and record is not None:
        tag_summary(services, tagger)
    return result
