"""`fab sandbox`: the whole release on one machine, as the README's main command runs it.

Contract: `run_sandbox(fleet, console=..., connect=...)` inside one SandboxSession (which stops every
process it started, also on Ctrl-C or an error):
1. copies the app and the fleet file into a git work tree (<root>/work) and commits v1;
2. releases v1 the way `fab deploy` does: builds it (deploytool.bundle), publishes it to the sandbox's
   S3 (deploytool.publish), then rolls it out to every group, each group with its strategy and wave, with
   live progress, the release record and the instance tags;
3. starts the load generator (Celery tasks to every queue, ids recorded);
4. changes the app (RELEASE_NOTE), commits v2, builds and publishes it, rolls it out under load;
5. stops the load, waits for the queues to drain (the sample app's ledgers), runs the reconcile
   (inventory snapshot, athena/reconcile.sql on DuckDB) and returns the report data: instances per
   version per group, tasks submitted / completed / lost / duplicated.
Releases and the closing reconcile go through `connect(session)`, given by the caller: `fab deploy`'s own
path on this session (deploytool.deploy_flow.sandbox_releases -> deploy_and_reconcile ->
deploytool.rollout.wiring), so the sandbox proves the production path; this package does not import the
layers above it. Unlike `fab deploy` there is no stop/detach question on Ctrl-C: the sandbox stops
everything at once. It raises DeployFailed when a rollout fails; `SandboxRunResult.ok` says whether the run proved what
it should (every instance on v2, no task lost, no task run twice) and `problems` what it did not.
Nothing here prints except through `console`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console, RenderableType
from rich.text import Text

from deploytool.config import App, Fleet, Group
from deploytool.errors import DriftFound
from deploytool.rollout.events import Event, ReleaseStarted, Reporter, WaveFinished
from deploytool.rollout.plan import RolloutOptions
from deploytool.rollout.release import Prepared
from deploytool.rollout.result import RolloutResult
from deploytool.sandbox.autoscaler import Action, Autoscaler
from deploytool.sandbox.load import CelerySender, LoadGenerator, kinds_for
from deploytool.sandbox.report import (
    TaskTally,
    lost_explained,
    tasks_table,
    versions,
    versions_table,
    wait_for_drain,
)
from deploytool.sandbox.session import SandboxSession
from deploytool.sandbox.workrepo import WorkRepo

V2_NOTE = "v2: rolled out by the deploytool sandbox"


@dataclass(frozen=True)
class SandboxRunOptions:
    target: str | None = None
    groups: tuple[str, ...] | None = None
    load_per_s: float = 15.0
    drain_timeout_s: float = 90.0
    worker_stop_grace_s: float = 15.0
    churn_every_s: float | None = None  # `fab sandbox --churn`: the autoscaler scales a group every N s during v2
    churn_seed: int = 0
    churn_termination_hook: bool = True  # False (`--churn-kill`): a scale-in SIGKILLs the worker, as a spot power-off


@dataclass(frozen=True)
class SandboxRunResult:
    root: Path
    versions: tuple[str, str]
    rollouts: tuple[RolloutResult, RolloutResult]
    instances: dict[str, dict[str, list[str]]]  # group -> version -> instance ids
    tasks: TaskTally
    load_errors: int
    last_load_error: str
    elapsed_s: float
    drift: str = ""  # the closing reconcile's complaint, if any
    churn: dict[str, int] | None = None  # what the autoscaler did during v2 (Autoscaler.summary), with --churn
    churn_errors: tuple[str, ...] = ()
    churn_actions: tuple[Action, ...] = ()  # each scale action, on the sandbox clock (SYSTEM_CLOCK.now())
    interruptions: tuple[tuple[str, dict[str, Any]], ...] = ()  # (instance id, its watcher's interruption.json)
    handoffs: tuple[dict[str, Any], ...] = ()  # what each worker handed off said (run/handoff/<pid>.json)

    @property
    def problems(self) -> list[str]:
        """What the run did not prove, one phrase each; empty when it proved the release: v2 rolled
        out and runs on every instance, no drift, tasks were submitted, none lost, none run twice."""
        v2, tasks = self.versions[1], self.tasks
        off = [group for group, by_version in self.instances.items() if set(by_version) != {v2}]
        found = [
            (not self.rollouts[1].succeeded, f"the {v2} rollout did not succeed"),
            (bool(off), f"not every instance runs {v2} ({', '.join(off)})"),
            (bool(self.drift), "the reconcile found drift"),
            (tasks.submitted == 0, "no task was submitted"),
            (tasks.lost > 0, f"{tasks.lost} task(s) lost"),
            (tasks.duplicated > 0, f"{tasks.duplicated} duplicate run(s): tasks ran more than once"),
        ]
        return [what for wrong, what in found if wrong]

    @property
    def ok(self) -> bool:
        return not self.problems


class Releases(Protocol):
    """`fab deploy`'s path on a running sandbox (deploytool.deploy_flow.SessionReleases)."""

    def release(
        self,
        fleet: Fleet,
        groups: Sequence[Group],
        options: RolloutOptions,
        *,
        out_dir: Path,
        on_prepared: Callable[[Prepared], None] | None = None,
    ) -> RolloutResult: ...

    def reconcile(self, fleet: Fleet, groups: Sequence[Group]) -> object: ...

    def watch(self, reporter: Reporter) -> None:
        """Have `reporter` see the events of the releases from now on."""


def run_sandbox(
    fleet: Fleet,
    *,
    console: Console,
    connect: Callable[[SandboxSession], Releases],
    options: SandboxRunOptions | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> SandboxRunResult:
    opts = options or SandboxRunOptions()
    started = monotonic()

    def say(text: str) -> None:
        console.print(f"[bold]sandbox[/] {text}", highlight=False)

    with SandboxSession(
        fleet, target=opts.target, groups=opts.groups, log=say, worker_stop_grace_s=opts.worker_stop_grace_s
    ) as sandbox:
        groups = sandbox.groups
        repo = WorkRepo.create(fleet, sandbox.work_dir)
        say(f"work tree {repo.root} (git): v1 committed")

        releases = connect(sandbox)
        rollout = RolloutOptions(
            poll_min_s=0.5, poll_max_s=1.0, rollback_grace_s=5.0, partial_failure=fleet.rollout.partial_failure
        )

        def release(label: str) -> RolloutResult:
            def published(prepared: Prepared) -> None:
                say(f"{label}: built and published {prepared.manifest.version} ({prepared.revision.uri})")

            return releases.release(repo.fleet(), groups, rollout, out_dir=sandbox.root / "dist", on_prepared=published)

        first = release("v1")
        queues = [q for g in groups for q in (g.queues or [])]
        sender = CelerySender(sandbox.fleet.broker)
        load = LoadGenerator(
            sender, kinds_for(queues), sandbox.root / "load" / "submitted.log", rate_per_s=opts.load_per_s
        ).start()
        try:
            say(f"load: submitting {opts.load_per_s:g} tasks/s to {', '.join(k.queue for k in load.kinds)}")
            repo.change_release_note(V2_NOTE)
            say(f"v2: changed RELEASE_NOTE and committed ({repo.git('rev-parse', '--short', 'HEAD').strip()})")
            scaler, churn_errors = None, []
            if opts.churn_every_s is not None:
                scaler = Autoscaler(sandbox.backend, termination_hook=opts.churn_termination_hook)
                bounds = churn_bounds(sandbox, groups)
                shown = ", ".join(f"{g} {lo}..{hi}" for g, (lo, hi) in bounds.items())
                say(f"churn: the autoscaler scales a group out or in every {opts.churn_every_s:g} s ({shown})")
                scaler.churn(
                    opts.churn_every_s,
                    seed=opts.churn_seed,
                    bounds=bounds,
                    on_error=lambda exc: churn_errors.append(f"{type(exc).__name__}: {exc}"),
                )
            if scaler is not None:
                releases.watch(HaltAfterLastWave(scaler))
            try:
                second = release("v2")
            finally:
                if scaler is not None:
                    scaler.stop()
                    if late := scaler.settle():
                        say(f"churn: follow-on deployment(s) after the release: {', '.join(late)}")
                    say(f"churn: stopped: {scaler.summary()}")
        finally:
            load.stop()
            sender.close()
        submitted = [t.task_id for t in load.submitted]
        say(f"load stopped after {len(submitted)} tasks; waiting for the queues to drain")
        ledgers = [i.ledger for i in sandbox.fleet.on_disk()]
        settle = 2 * max((k.max_s for k in load.kinds), default=1.0) + 3
        tasks = wait_for_drain(
            submitted, ledgers, timeout_s=opts.drain_timeout_s, depth=sandbox.queue_depth(queues), settle_s=settle
        )
        live = {g.name: sandbox.fleet.instances(g) for g in groups}
        per_group = versions(live, fleet.app)
        say("reconcile: inventory snapshot to S3, athena/reconcile.sql on DuckDB")
        drift = ""
        try:
            releases.reconcile(fleet, groups)
        except DriftFound as exc:
            drift = str(exc)
        disk = sandbox.fleet.on_disk()
        noticed = tuple((i.instance_id, rec) for i in disk if (rec := i.interruption(fleet.app)) is not None)
        handed = tuple(rec for i in disk for rec in i.handoffs(fleet.app))
    return SandboxRunResult(
        root=sandbox.root,
        versions=(first.version, second.version),
        rollouts=(first, second),
        instances=per_group,
        tasks=tasks,
        load_errors=load.errors,
        last_load_error=load.last_error,
        elapsed_s=monotonic() - started,
        drift=drift,
        churn=scaler.summary() if scaler is not None else None,
        churn_errors=tuple(churn_errors),
        churn_actions=tuple(scaler.actions) if scaler is not None else (),
        interruptions=noticed,
        handoffs=handed,
    )


class HaltAfterLastWave:
    """A reporter: the autoscaler's scale actions end when the release's last wave does, so every instance launched
    meanwhile is one the release sees (its launch or follow-on deployment, waited for and tagged)."""

    def __init__(self, scaler: Autoscaler) -> None:
        self.scaler, self.last_wave = scaler, -1

    def publish(self, event: Event) -> None:
        if isinstance(event, ReleaseStarted):
            self.last_wave = max((g.wave for g in event.groups), default=-1)
        elif isinstance(event, WaveFinished) and (event.wave >= self.last_wave or not event.succeeded):
            self.scaler.halt()


def churn_bounds(sandbox: SandboxSession, groups: Sequence[Group]) -> dict[str, tuple[int, int]]:
    """Each group between the instances it starts with and two more: below, a group's own minimum healthy hosts can
    make its deployment fail at once (FleetPercent 50 of one instance), as it would on CodeDeploy."""
    sizes = {g.name: len(sandbox.fleet.instances(g)) for g in groups}
    return {name: (n, n + 2) for name, n in sizes.items()}


def log_locations(root: Path, app: App) -> Sequence[str]:
    instance = f"{root}/instances/<group>/<instance-id>"
    return (
        f"lifecycle logs: {instance}/logs/<deployment-id>/<event>.log (and summary.json)",
        f"worker logs:    {instance}{app.install_path}/log/worker.log",
        f"moto server:    {root}/logs/moto.log; every process started: {root}/run/pids.txt",
    )


def handoff_line(records: Sequence[dict[str, Any]]) -> str:
    """restart = "handoff": how many workers were handed off and what became of the tasks they held."""
    by_state: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_state.setdefault(str(record.get("state")), []).append(record)
    finished = sum(len(r.get("held") or []) for r in by_state.get("finished", []))
    parts = [f"{len(records)} worker(s) handed off", f"{finished} task(s) finished on the old release after it"]
    if by_state.get("finishing"):
        parts.append(f"{len(by_state['finishing'])} still finishing")
    if by_state.get("reaped"):
        held = sum(len(r.get("held") or []) for r in by_state["reaped"])
        parts.append(f"{len(by_state['reaped'])} reaped (cold shutdown; {held} task(s) back to the broker)")
    if by_state.get("resumed"):
        parts.append(f"{len(by_state['resumed'])} resumed (their successor failed)")
    return "hand-off: " + "; ".join(parts)


def report(result: SandboxRunResult) -> list[RenderableType]:
    """The run's final report as rich renderables."""
    v1, v2 = result.versions
    tasks = result.tasks
    lines: list[RenderableType] = [versions_table(result.instances, v2), tasks_table(tasks)]
    runs = ", ".join(f"{n} on {note!r}" for note, n in sorted(tasks.by_release.items()))
    lines.append(Text(f"task runs by release: {runs or 'none'}"))
    if explained := lost_explained(tasks):
        lines.append(Text(explained, style="yellow"))
    if result.drift:
        lines.append(Text(f"reconcile: {result.drift}", style="bold red"))
    if result.churn is not None:
        done = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in result.churn.items())
        lines.append(Text(f"churn during v2: {done}"))
        for error in result.churn_errors:
            lines.append(Text(f"churn step failed: {error}", style="yellow"))
    for instance_id, record in result.interruptions:
        handed = record.get("interrupted") or []
        lines.append(
            Text(
                f"interrupted: {instance_id}: {record.get('detail')}; {record.get('policy')}: "
                f"{record.get('outcome')} in {float(record.get('drained_s') or 0):.1f}s, "
                f"{len(handed)} task(s) handed back to the broker{': ' + ', '.join(handed) if handed else ''}"
            )
        )
    if result.handoffs:
        lines.append(Text(handoff_line(result.handoffs)))
    if result.load_errors:
        lines.append(Text(f"load: {result.load_errors} sends failed (last: {result.last_load_error})"))
    for rollout in result.rollouts:
        took = ", ".join(f"{g.group} {g.elapsed_s or 0:.1f}s" for g in rollout.groups)
        lines.append(Text(f"{rollout.version}: {rollout.release_id} in {rollout.elapsed_s:.1f}s ({took})"))
    verdict = f"sandbox run ok: {v1} -> {v2} in {result.elapsed_s:.0f}s"
    if problems := result.problems:
        verdict = f"sandbox run NOT OK: {v1} -> {v2} in {result.elapsed_s:.0f}s: {'; '.join(problems)}"
    lines.append(Text(verdict, style="bold" if result.ok else "bold red"))
    return lines
