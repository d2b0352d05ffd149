"""The orchestrator: the one thing that sequences a release's waves and groups, on any Backend.

Contract: `Orchestrator(backend, plan, reporter=..., clock=...).run()` returns a RolloutResult.
- Waves run in order; inside a wave every group starts at once (at most `max_parallel` in flight),
  one deployment per group with its own strategy (Backend.start; up to `start_concurrency` calls at a time).
- ONE poll loop asks Backend.poll for every deployment in flight at once. The interval is
  `poll_min_s` after the orchestrator acts (starts, stops, a rollback appears) and doubles up to
  `poll_max_s` while it does not. Polling errors (throttling past the client's retries) are reported
  and retried after the longest interval; they fail the release only after `poll_error_limit_s`.
- A deployment that ends without succeeding on every instance fails its group; its automatic rollback
  (snapshot.rollback_deployment_id) is followed to its end; instance results are fetched only for such groups.
  Called Succeeded with failed instances (no automatic rollback), with options.partial_failure "rollback" it
  gets one from the orchestrator: the group's `last_good` revision, deployed and followed the same way
  (deploytool.rollout.partial). Then no new group starts (not in this wave, not in later waves); with
  on_failure=stop-all the wave's other deployments are stopped with rollback.
- A start meeting a deployment it did not start waits or fails; after the last wave CodeDeploy's follow-on
  deployments are followed into the result (deploytool.rollout.coexist).
- Resume: plan.prior's deployments still in flight are followed (GroupStarted attached=True); groups whose
  recorded deployment succeeded on the version are reported already-deployed, with no second deployment.
- Ctrl-C: run() lets KeyboardInterrupt through with the state intact; the caller then calls
  `stop_all()` and `run()` again (stops every deployment in flight with rollback and follows them to
  the end), or `detach()` (returns at once; the deployments keep running, the record holds their ids),
  or just `run()` again to keep following.
- `gate()` before each wave: False starts no new wave, in-flight ones are followed (the lease's; rollout.wiring).
Time comes only from the injected Clock; progress only goes out as events to the Reporter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Literal

from deploytool.config import Group
from deploytool.errors import DeployToolError
from deploytool.model import Revision
from deploytool.rollout.backend import Backend, DeploymentSnapshot, DeployRequest, InstanceProgress
from deploytool.rollout.clock import Clock, SystemClock
from deploytool.rollout.coexist import Coexist
from deploytool.rollout.events import (
    Checkpoint,
    Collect,
    DeploymentRef,
    Event,
    GroupFinished,
    GroupProgressed,
    GroupStarted,
    PlannedGroup,
    PollFailed,
    ReleaseFinished,
    ReleaseStarted,
    Reporter,
    WaveFinished,
    WaveStarted,
)
from deploytool.rollout.partial import line as partial_line
from deploytool.rollout.partial import rollback_request as partial_rollback
from deploytool.rollout.plan import RolloutPlan
from deploytool.rollout.result import OK_OUTCOMES, GroupResult, Outcome, RolloutResult
from deploytool.rollout.resume import resolve

State = Literal["waiting", "running", "rolling-back", "done"]


@dataclass
class _Run:
    """One group's mutable state inside the orchestrator."""

    group: Group
    wave: int
    state: State = "waiting"
    deployment_id: str | None = None
    snapshot: DeploymentSnapshot | None = None
    rollback_id: str | None = None
    rollback: DeploymentSnapshot | None = None
    outcome: Outcome | None = None
    error: str = ""
    failures: tuple[InstanceProgress, ...] = ()
    started_at: float | None = None
    finished_at: float | None = None
    failed_at: float | None = None
    attached: bool = False
    stop_requested: bool = False
    result: GroupResult | None = None
    partial_to: str | None = None  # the version the orchestrator rolled a partly failed deployment back to


class Orchestrator:
    def __init__(
        self,
        backend: Backend,
        plan: RolloutPlan,
        *,
        reporter: Reporter | None = None,
        clock: Clock | None = None,
        last_good: Callable[[Group], Revision | None] | None = None,
        gate: Callable[[], bool] | None = None,
    ) -> None:
        self.backend = backend
        self.last_good = last_good  # a group's last good revision (partial failures); None: not a release
        self.plan = plan
        self.options = plan.options
        self.reporter: Reporter = reporter or Collect()
        self.clock: Clock = clock or SystemClock()
        self.gate = gate  # asked before each wave starts: False = start no new wave (the release lease was lost)
        self._runs = {g.name: _Run(g, wave.number) for wave in plan.waves for g in wave.groups}
        self._wave = -1  # index into plan.waves of the wave running now
        self._began = False
        self._halted = False  # no deployment starts any more
        self._stopped = False  # stopped on request
        self._dirty = False  # deployments started or ended since the last Checkpoint
        self._interval = self.options.poll_min_s
        self._t0 = 0.0
        self._poll_failing_since: float | None = None
        self._result: RolloutResult | None = None
        self.polls = 0
        self.coexist = Coexist(backend, plan, emit=self._emit, now=self._now, sleep=self.clock.sleep)

    # -- public ------------------------------------------------------------------------------

    def run(self) -> RolloutResult:
        """Run (or keep following) the release to its end."""
        if self._result is not None:
            return self._result
        if not self._began:
            self._begin()
        acted = True
        while True:
            acted = self._schedule() or acted
            self._checkpoint()
            if all(r.state == "done" for r in self._runs.values()):
                return self._finish()
            if acted:
                self._interval = self.options.poll_min_s
            self.clock.sleep(self._interval)
            self._interval = min(self.options.poll_max_s, self._interval * 2)
            acted = self._poll()
            self._checkpoint()

    def stop_all(self) -> None:
        """Start nothing more and stop every deployment in flight, rolling back. Then call run()."""
        self._stopped = True
        self._halted = True
        self._stop_running(except_group=None)
        self._checkpoint()

    def detach(self) -> RolloutResult:
        """Stop following: the deployments in flight keep running; the result says which."""
        if self._result is not None:
            return self._result
        for run in self._runs.values():
            if run.state in ("running", "rolling-back"):
                self._finish_group(run, "detached", fetch=False)
            elif run.state == "waiting":
                self._close_waiting(run)
        self._checkpoint()
        return self._finish(detached=True)

    # -- stages ------------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        self.reporter.publish(event)

    def _now(self) -> float:
        return self.clock.now()

    def _begin(self) -> None:
        self._began = True
        self._t0 = self._now()
        plan = self.plan
        planned = tuple(
            PlannedGroup(r.group.name, r.wave, r.group.strategy.label, r.group.asg) for r in self._runs.values()
        )
        self._emit(ReleaseStarted(plan.release_id, plan.version, plan.target, plan.mode, planned, self._t0))
        for name, found in resolve(self.backend, plan).items():
            run = self._runs[name]
            run.deployment_id = found.deployment_id
            run.snapshot = found.snapshot
            run.attached = True
            run.started_at = self._t0
            if found.action == "attach":
                run.state = "running"
                self._emit(GroupStarted(name, run.wave, found.deployment_id, True, self._t0))
                if found.snapshot is not None:
                    self._emit(GroupProgressed(name, found.snapshot, False, self._t0))

    def _schedule(self) -> bool:
        """Wave transitions and starts; True when deployments were started."""
        acted = False
        waves = self.plan.waves
        while self._wave < len(waves):
            if self._wave >= 0:
                runs = self._wave_runs(self._wave)
                if self._halted:
                    for run in runs:
                        if run.state == "waiting":
                            self._close_waiting(run)
                else:
                    acted = self._start_ready(runs) or acted
                if any(r.state != "done" for r in runs):
                    return acted
                ok = all(r.outcome in OK_OUTCOMES for r in runs)
                self._emit(WaveFinished(waves[self._wave].number, ok, self._now()))
                self._halted = self._halted or not ok
            self._wave += 1
            if not self._halted and self._wave < len(waves) and self.gate is not None and not self.gate():
                self._halted = True
            if self._halted:  # later waves do not start
                for index in range(self._wave, len(waves)):
                    for later in self._wave_runs(index):
                        if later.state == "waiting":
                            self._close_waiting(later)
                self._wave = len(waves)
            elif self._wave < len(waves):
                wave = waves[self._wave]
                self._emit(WaveStarted(wave.number, tuple(g.name for g in wave.groups), self._now()))
                for run in self._wave_runs(self._wave):
                    if run.state == "waiting" and run.attached:
                        self._close_waiting(run)
        return acted

    def _close_waiting(self, run: _Run) -> None:
        """A group this run will not start: already deployed (resumed) or not started."""
        self._finish_group(run, "already-deployed" if run.attached else "not-started", fetch=False)

    def _start_ready(self, runs: Sequence[_Run]) -> bool:
        ready = [r for r in runs if r.state == "waiting" and not self.coexist.blocked(r.group.name)]
        in_flight = sum(1 for r in runs if r.state in ("running", "rolling-back"))
        if self.options.max_parallel:
            ready = ready[: max(0, self.options.max_parallel - in_flight)]
        if not ready:
            return False
        outcomes = self._call_start(ready)
        now = self._now()
        started = [(r, got) for r in ready if isinstance(got := outcomes[r.group.name], str)]
        for run, deployment_id in started:  # all of them are ours before any event: a Ctrl-C there orphans none
            run.deployment_id, run.state, run.started_at = deployment_id, "running", now
            self._dirty = True
        for run, deployment_id in started:
            self._emit(GroupStarted(run.group.name, run.wave, deployment_id, False, now))
        for run in ready:
            if run.state == "waiting" and (why := self.coexist.hold(run.group, outcomes[run.group.name])):
                run.error = why  # else it waits for the deployment in its way (deploytool.rollout.coexist)
                run.started_at = now
                self._finish_group(run, "failed", fetch=False)
                self._on_failure(run)
        return True

    def _call_start(self, runs: Sequence[_Run]) -> dict[str, str | DeployToolError]:
        """Backend.start for each run, a few at a time; a Ctrl-C waits for the calls under way."""
        requests = {r.group.name: self._request(r.group) for r in runs}
        out: dict[str, str | DeployToolError] = {}

        def start(name: str) -> Callable[[], None]:
            def call() -> None:
                try:
                    out[name] = self.coexist.start(requests[name])
                except DeployToolError as exc:
                    out[name] = exc

            return call

        workers = max(1, min(self.options.start_concurrency, len(runs)))
        if workers == 1:
            for name in requests:
                start(name)()
            return out
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rollout-start") as pool:
            futures = [pool.submit(start(name)) for name in requests]
            try:
                wait(futures)
            except KeyboardInterrupt:
                # The calls under way still create deployments: record them, then let Ctrl-C through.
                for future in futures:
                    future.cancel()
                wait(futures)
                self._adopt_partial(runs, out)
                raise
            for future in futures:
                future.result()  # re-raise a non-DeployToolError (a bug) here
        return out

    def _adopt_partial(self, runs: Sequence[_Run], out: dict[str, str | DeployToolError]) -> None:
        for run in runs:
            got = out.get(run.group.name)
            if isinstance(got, str):
                run.deployment_id, run.state, run.started_at = got, "running", self._now()
                self._dirty = True
                self._emit(GroupStarted(run.group.name, run.wave, got, False, run.started_at))
        self._checkpoint()

    def _request(self, group: Group) -> DeployRequest:
        plan = self.plan
        return DeployRequest(
            group=group,
            revision=plan.revision,
            release_id=plan.release_id,
            mode=plan.mode,
            description=plan.description,
            target_instances=plan.target_instances.get(group.name),
            ignore_stop_failures=self.options.ignore_stop_failures,
        )

    def _poll(self) -> bool:
        """One shared poll of every deployment in flight; True when the orchestrator acted."""
        ids: list[str] = self.coexist.ids()  # deployments groups wait for
        for run in self._runs.values():
            if run.state == "running" and run.deployment_id:
                ids.append(run.deployment_id)
            elif run.state == "rolling-back" and run.rollback_id:
                ids.append(run.rollback_id)
        if not ids:
            return False
        try:
            self.polls += 1
            snapshots = self.backend.poll(ids)
        except DeployToolError as exc:
            now = self._now()
            self._poll_failing_since = self._poll_failing_since or now
            self._emit(PollFailed(str(exc), now))
            self._interval = self.options.poll_max_s
            if now - self._poll_failing_since >= self.options.poll_error_limit_s:
                raise
            return False
        self._poll_failing_since = None
        acted = self.coexist.observe(snapshots)
        for run in list(self._runs.values()):
            if run.state == "running" and run.deployment_id and run.deployment_id in snapshots:
                acted = self._observe(run, snapshots[run.deployment_id]) or acted
            elif run.state == "rolling-back" and run.rollback_id and run.rollback_id in snapshots:
                self._observe_rollback(run, snapshots[run.rollback_id])
        return acted

    def _observe(self, run: _Run, snap: DeploymentSnapshot) -> bool:
        now = self._now()
        if snap != run.snapshot:
            run.snapshot = snap
            self._emit(GroupProgressed(run.group.name, snap, False, now))
        if not snap.done:
            return False
        if snap.all_succeeded:
            self._finish_group(run, "succeeded")
            return False
        acted = False
        if run.failed_at is None:
            run.failed_at = now
            acted = self._on_failure(run)
        outcome: Outcome = "stopped" if snap.status == "Stopped" else "failed"
        if snap.rollback_deployment_id:
            run.rollback_id = snap.rollback_deployment_id
            run.state = "rolling-back"
            self._dirty = True
            return True
        if snap.status == "Succeeded" and self._roll_back_partial(run, snap):
            return True
        if snap.status == "Succeeded" or now - run.failed_at >= self.options.rollback_grace_s:
            self._finish_group(run, outcome)
        return acted

    def _observe_rollback(self, run: _Run, snap: DeploymentSnapshot) -> None:
        if snap != run.rollback:
            run.rollback = snap
            self._emit(GroupProgressed(run.group.name, snap, True, self._now()))
        if snap.done:
            last = run.snapshot
            self._finish_group(run, "stopped" if last and last.status == "Stopped" else "failed")

    def _roll_back_partial(self, run: _Run, snap: DeploymentSnapshot) -> bool:
        """Succeeded with failed instances: start (or, resumed, follow) the rollback to the last good revision."""
        prior = self.plan.prior.get(run.group.name)
        if prior and prior.deployment_id == snap.deployment_id and prior.rollback_deployment_id:
            rollback_id, to = prior.rollback_deployment_id, "its last good revision"  # an earlier run started it
        else:
            request = partial_rollback(run.group, snap, self.plan, self.last_good)
            if isinstance(request, str):
                run.error = request
                return False
            to = request.revision.version if request.revision else "?"
            try:
                rollback_id = self.backend.start(request)
            except DeployToolError as exc:
                run.error = f"the rollback to {to} could not start: {exc}"
                return False
        run.rollback_id, run.state, run.partial_to = rollback_id, "rolling-back", to
        self._dirty = True
        return True

    def _on_failure(self, run: _Run) -> bool:
        """A group failed: start nothing more; with stop-all, stop the others. True when it stopped some."""
        self._halted = True
        if self.options.on_failure == "stop-all" and not self._stopped:
            return self._stop_running(except_group=run.group.name)
        return False

    def _stop_running(self, *, except_group: str | None) -> bool:
        stopped = False
        for run in self._runs.values():
            if run.group.name == except_group or run.state != "running" or run.stop_requested:
                continue
            if run.deployment_id is None or (run.snapshot is not None and run.snapshot.done):
                continue
            run.stop_requested = True
            try:
                self.backend.stop(run.deployment_id, rollback=True)
                stopped = True
            except DeployToolError as exc:  # it may have ended meanwhile; the next poll tells
                run.error = f"stop failed: {exc}"
        return stopped

    def _finish_group(self, run: _Run, outcome: Outcome, *, fetch: bool = True) -> None:
        run.state = "done"
        run.outcome = outcome
        run.finished_at = self._now()
        if fetch and outcome not in ("succeeded", "already-deployed") and run.deployment_id:
            try:
                results = self.backend.instance_results(run.deployment_id)
                run.failures = tuple(r for r in results if r.status == "Failed")
            except DeployToolError as exc:
                run.error = run.error or f"instance results unavailable: {exc}"
        snap = run.snapshot
        if snap is not None and outcome == "failed" and snap.status == "Succeeded":
            why = run.error or "not rolled back"
            if run.partial_to is not None:
                status = run.rollback.status if run.rollback else "unknown"
                why = f"rolled back to {run.partial_to} by {run.rollback_id} ({status})"
            run.error = partial_line(snap, run.failures, why)
        if snap is not None and snap.error_code == "NO_INSTANCES" and not run.error:
            run.error = (
                f"no instances to deploy to: the deployment group's ASG {run.group.asg} has none in service "
                "(CodeDeploy NO_INSTANCES); scale it up, or leave the group out with --groups"
            )
        if snap is not None and snap.error and not run.error:
            run.error = snap.error
        run.result = self._group_result(run)
        self._dirty = True
        self._emit(GroupFinished(run.result, run.finished_at))

    def _group_result(self, run: _Run) -> GroupResult:
        snap = run.snapshot
        elapsed = None
        if run.started_at is not None and run.finished_at is not None and not run.attached:
            elapsed = run.finished_at - run.started_at
        return GroupResult(
            group=run.group.name,
            wave=run.wave,
            strategy=run.group.strategy.label,
            outcome=run.outcome or "not-started",
            deployment_id=run.deployment_id,
            status=snap.status if snap else "",
            succeeded=snap.succeeded if snap else 0,
            failed=snap.failed if snap else 0,
            skipped=snap.skipped if snap else 0,
            total=snap.total if snap else 0,
            rollback_deployment_id=run.rollback_id,
            rollback_status=run.rollback.status if run.rollback else None,
            error=run.error,
            instance_failures=run.failures,
            elapsed_s=elapsed,
            attached=run.attached,
            warnings=(snap.warnings if snap else ()) + (run.rollback.warnings if run.rollback else ()),
        )

    def _checkpoint(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        refs = {
            name: DeploymentRef(
                run.deployment_id,
                run.snapshot.status if run.snapshot else "Created",
                run.rollback_id,
            )
            for name, run in self._runs.items()
            if run.deployment_id
        }
        self._emit(Checkpoint(refs, self._now()))

    def _finish(self, *, detached: bool = False) -> RolloutResult:
        plan = self.plan
        result = RolloutResult(
            release_id=plan.release_id,
            version=plan.version,
            target=plan.target,
            mode=plan.mode,
            groups=self.coexist.settle(
                [(r.result, r.snapshot) for r in self._runs.values() if r.result], skip=detached or self._stopped
            ),
            elapsed_s=self._now() - self._t0,
            detached=detached,
            stopped=self._stopped,
        )
        self._result = result
        self._emit(ReleaseFinished(result, self._now()))
        return result

    # -- helpers -----------------------------------------------------------------------------

    def _wave_runs(self, index: int) -> list[_Run]:
        return [self._runs[g.name] for g in self.plan.waves[index].groups]
