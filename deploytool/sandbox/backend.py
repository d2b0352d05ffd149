"""The `local` rollout backend: the sandbox fleet, deployed with CodeDeploy's semantics.

Contract (deploytool/rollout/backend.py's Backend): `start` returns a `d-XXXXXXXXX` id at once and runs the
deployment in a background thread. The group's instances come from its moto ASG (or `target_instances`);
deploytool.strategy decides how many may be out of service (`startable`) and the outcome (`verdict`); another
instance starts as soon as one finishes; instances run in parallel threads, each through the LifecycleRunner.
CodeDeploy's rules kept here:

- one deployment per group at a time, across the processes attached to the sandbox (checked and recorded under the
  state's file lock): a second one is refused with CodeDeploy's DeploymentLimitExceededException message
  (`DeploymentLimitExceeded`); CodeDeploy's own (`start_own`: launch, follow-on, termination) run beside the group's
  deployment but block the next user one;
- per-instance health persists across deployments (in the state, so a new process sees it): an instance never
  deployed to or whose last deployment failed is unhealthy, deployed first and not counted toward the minimum
  healthy hosts (deploytool.strategy);
- a minimum healthy count >= the instances fails the deployment at once;
- instances never started when a deployment ends are Skipped;
- AllAtOnce with one failure and one success is Succeeded (the snapshot's `failed` says the rest);
- a Succeeded deployment becomes the group's last successful revision (a launch or termination one does not);
- a failed deployment with auto_rollback (or a stop with rollback) starts a NEW deployment of the group's last
  successful revision to the same instances (creator codeDeployRollback), named in `rollback_deployment_id`;
- mode "restart" re-runs ApplicationStop/ApplicationStart/ValidateService of the installed revision;
- `stop` lets running scripts finish and starts nothing more (status Stopped);
- request.ignore_stop_failures: an instance continues past a failing ApplicationStop (the runner's
  ignore_application_stop_failures), and the deployment's warnings say on which instance.

Tasks a drain's cold shutdown cut off become warnings of the deployment: the hook prints one line per task,
`deploytool: interrupted task NAME[ID]: FATE` (scripts/celery_hooks.py), and once an instance is done its event
logs are read for them (`interrupted_tasks`).

Deployments run in threads of the process that started them and end with it (`shutdown`); what they left is on
disk: `poll` and `instance_results` answer from the group records for one an earlier process finished.
A deployment is recorded in flight, with its owner (host, pid, process start time), when it starts; `poll`
answers for one another process started and has not finished: InProgress while that process lives, Abandoned
once it is gone (killed: nothing runs the deployment any more, and a resume deploys the group again);
`group_deployments` lists it, `instance_results` has nothing for it (only its process knows).

`sync` gives instances an ASG launched since the last look the group's last successful revision (creator
autoscaling), each held in Standby until it ends (then InService, or terminated if it failed); `start_own` starts
CodeDeploy's own (the autoscaler's termination and follow-on deployments). `abort` ends running scripts too.

A deployment's record in memory and its snapshots (live, recorded, in flight): deploytool.sandbox.deployment.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any

from deploytool.aws.s3 import S3Gateway
from deploytool.config import App, Group, Strategy
from deploytool.model import Revision
from deploytool.rollout.backend import (
    DeploymentSnapshot,
    DeploymentStatus,
    DeployRequest,
    GroupState,
    InstanceProgress,
)
from deploytool.sandbox.appspec import FileExistsBehavior
from deploytool.sandbox.clock import SYSTEM_CLOCK, Clock
from deploytool.sandbox.deployment import (
    Deployment,
    DeploymentTarget,
    failure_text,
    in_flight_snapshot,
    new_deployment_id,
    recorded_snapshot,
    snapshot,
)
from deploytool.sandbox.errors import DeploymentLimitExceeded, SandboxError
from deploytool.sandbox.fleet import SandboxFleet
from deploytool.sandbox.instance import Instance
from deploytool.sandbox.interrupted import interrupted_tasks
from deploytool.sandbox.owner import Owner
from deploytool.sandbox.procs import PidRecord, pid_alive, read_pidfile
from deploytool.sandbox.runner import DEFAULT_TIMING, DeploymentSpec, InstanceResult, LifecycleRunner, Timing
from deploytool.sandbox.state import SandboxState
from deploytool.strategy import Verdict, health_policy, is_unhealthy, next_health, startable, unhealthy_first, verdict


class LocalBackend:
    name = "local"

    def __init__(
        self,
        fleet: SandboxFleet,
        state: SandboxState,
        *,
        s3: S3Gateway,
        app: App,
        timing: Timing = DEFAULT_TIMING,
        clock: Clock = SYSTEM_CLOCK,
        record: PidRecord | None = None,
        new_id: Callable[[], str] = new_deployment_id,
        file_exists_behavior: FileExistsBehavior = "DISALLOW",
        worker_stop_grace_s: float = 10.0,
    ) -> None:
        self.fleet = fleet
        self.state = state
        self.s3 = s3
        self.app = app
        self.timing = timing
        self.clock = clock
        self.record = record
        self.new_id = new_id
        self.file_exists_behavior: FileExistsBehavior = file_exists_behavior
        self.worker_stop_grace_s = worker_stop_grace_s
        self.abort = threading.Event()
        self._lock = threading.RLock()
        self._deployments: dict[str, Deployment] = {}
        self._active: dict[str, str] = {}
        self._own: dict[str, set[str]] = {}  # CodeDeploy's own deployments in flight per group (they block users')
        self._threads: list[threading.Thread] = []
        self.owner = Owner.current()

    # --- the Backend protocol ------------------------------------------------------------------

    def start(self, request: DeployRequest) -> str:
        return self._start(request, creator="user")

    def poll(self, deployment_ids: Sequence[str]) -> Mapping[str, DeploymentSnapshot]:
        """Snapshots of the deployments this backend runs or ran, of those an earlier process of the same
        sandbox finished (from the group records on disk), and of those another process started and has not
        finished (InProgress while it lives, Abandoned once it is gone); unknown ids are left out."""
        with self._lock:
            found = {d: snapshot(self._deployments[d], self.app) for d in deployment_ids if d in self._deployments}
        earlier = [d for d in deployment_ids if d not in found]
        for group, entry in self.state.finished(earlier) if earlier else ():
            found[str(entry["deployment_id"])] = recorded_snapshot(group, entry)
        others = [d for d in earlier if d not in found]
        for group, entry in self.state.in_flight(others) if others else ():
            found[str(entry["deployment_id"])] = in_flight_snapshot(group, entry)
        return found

    def stop(self, deployment_id: str, *, rollback: bool) -> None:
        dep = self._get(deployment_id)
        dep.rollback_on_stop = rollback
        dep.stop.set()

    def instance_results(self, deployment_id: str) -> Sequence[InstanceProgress]:
        with self._lock:
            known = deployment_id in self._deployments
        if not known:  # finished by an earlier process of this sandbox: its group record has the statuses
            for _group, entry in self.state.finished([deployment_id]):
                return [InstanceProgress(iid, status) for iid, status in dict(entry.get("instances") or {}).items()]
            if self.state.in_flight([deployment_id]):
                return []  # another process runs it: only that process knows its instances' statuses
        dep = self._get(deployment_id)
        with self._lock:
            return [
                InstanceProgress(
                    iid,
                    t.status,
                    t.result.failed_event if t.result and t.result.failed_event else t.event,
                    t.result.diagnostics if t.result and t.status == "Failed" else "",
                )
                for iid, t in dep.targets.items()
            ]

    def group_state(self, group: Group) -> GroupState:
        info = self.fleet.asgs.describe_groups([group.asg]).get(group.asg)
        last = self.state.last_successful(group.name)
        with self._lock:
            active = self._active.get(group.name)
        return GroupState(
            group=group.name,
            exists=info is not None,
            instance_ids=tuple(sorted(i.instance_id for i in info.instances)) if info else (),
            active_deployment_id=active,
            last_successful_version=last[1].version if last else None,
            extra={
                "group_id": self.state.group_id(group.name),
                "last_successful_deployment_id": last[0] if last else "",
            },
        )

    def group_deployments(
        self, group: Group, *, active_only: bool, created_after: float | None = None
    ) -> Sequence[DeploymentSnapshot]:
        """The deployments of the group this backend started, and those another live process attached to the sandbox
        runs (`fab sandbox --churn`'s launch deployments, another `fab deploy`): what ListDeployments would list."""
        with self._lock:
            found = [snapshot(d) for d in self._deployments.values() if d.group.name == group.name]
            mine = set(self._deployments)
        for name, entry in self.state.in_flight():
            if name == group.name and entry["deployment_id"] not in mine:
                found.append(in_flight_snapshot(name, entry))
        if active_only:
            found = [s for s in found if not s.done]
        if created_after is not None:
            found = [s for s in found if s.created_at is not None and s.created_at >= created_after]
        return sorted(found, key=lambda s: (s.created_at or 0.0, s.deployment_id))

    # --- beyond the protocol: tests, the session, scale events ------------------------------------

    def wait(self, deployment_id: str, timeout_s: float | None = None) -> DeploymentSnapshot:
        dep = self._get(deployment_id)
        if not dep.done.wait(timeout_s):
            raise SandboxError(f"deployment {deployment_id} did not finish within {timeout_s} s")
        return self.poll([deployment_id])[deployment_id]

    def sync(self) -> list[str]:
        """Deploy the last successful revision to instances the ASGs launched since the last look."""
        started: list[str] = []
        for group_name, fresh in self.fleet.sync().items():
            group, last = self.fleet.config.group(group_name), self.state.last_successful(group_name)
            if last is None:
                continue
            launch = DeployRequest(group, last[1], release_id="", description="ASG launch", auto_rollback=False)
            self.fleet.hold(group, fresh)  # not InService before its launch deployment (Pending:Wait on AWS)
            started.append(self._start(launch, creator="autoscaling", instances=fresh, exclusive=False))
        return started

    def start_own(self, request: DeployRequest, *, creator: str, instances: Sequence[Instance]) -> str:
        """A deployment CodeDeploy starts by itself (`creator`: autoscaling, autoscalingTermination,
        CodeDeployAutoUpdate) to `instances`: it runs beside the group's deployment, one instance at a time, and
        the group takes no user deployment of this process until it ends."""
        return self._start(request, creator=creator, instances=instances, exclusive=False)

    def installed_version(self, instance: Instance) -> str | None:
        """The version of the revision the instance's group last installed there (the agent's record), if any."""
        installed = self._runner(instance).last_installed_revision(self.state.group_id(instance.group))
        return (installed or {}).get("version")

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop every deployment now (running scripts too) and wait for their threads."""
        self.abort.set()
        for thread in list(self._threads):
            thread.join(timeout_s)

    # --- internals ---------------------------------------------------------------------------------

    def _get(self, deployment_id: str) -> Deployment:
        with self._lock:
            if deployment_id not in self._deployments:
                raise SandboxError(f"no sandbox deployment {deployment_id!r}")
            return self._deployments[deployment_id]

    def _start(
        self,
        request: DeployRequest,
        *,
        creator: str,
        instances: Sequence[Instance] | None = None,
        exclusive: bool = True,
        after: Deployment | None = None,
    ) -> str:
        """`after`: the deployment this one rolls back, ended and not yet recorded: its instances' health counts."""
        group = request.group
        revision = request.revision
        if request.mode == "restart":
            last = self.state.last_successful(group.name)
            if last is None:
                raise SandboxError(f"group {group.name}: nothing to restart: no deployment has succeeded yet")
            revision = last[1]
        if revision is None:
            raise SandboxError(f"group {group.name}: a deployment needs a revision")
        chosen = list(instances) if instances is not None else self.fleet.instances(group)
        if request.target_instances is not None:
            by_id = {i.instance_id: i for i in chosen}
            unknown = [iid for iid in request.target_instances if iid not in by_id]
            if unknown:
                raise SandboxError(f"group {group.name}: not instances of {group.asg}: {', '.join(unknown)}")
            chosen = [by_id[iid] for iid in request.target_instances]
        health: dict[str, str | None] = {**self.state.instance_health(group.name)}
        for iid, target in (after.targets if after else {}).items():
            health[iid] = next_health(health.get(iid), target.status)
        by_id = {i.instance_id: i for i in chosen}
        chosen = [by_id[iid] for iid in unhealthy_first(list(by_id), health)]  # CodeDeploy deploys those first
        with self._lock:
            blocking = self._active.get(group.name) or (creator == "user" and min(self._own.get(group.name) or [""]))
            if exclusive and blocking:
                raise DeploymentLimitExceeded(group.name, blocking, "in this process")
            dep = Deployment(
                id=self.new_id(),
                request=request,
                revision=revision,
                creator=creator,
                policy=health_policy(group.strategy if exclusive else Strategy("OneAtATime"), len(chosen)),
                targets={
                    i.instance_id: DeploymentTarget(i, unhealthy=is_unhealthy(health.get(i.instance_id)))
                    for i in chosen
                },
                started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            self.state.started(
                group.name,
                {
                    "deployment_id": dep.id,
                    "owner": self.owner.to_dict(),
                    "creator": creator,
                    "mode": request.mode,
                    "version": revision.version,
                    "release_id": request.release_id,
                    "description": request.description,
                    "started_at": dep.started_at,
                    "exclusive": exclusive,
                },
                refuse=(lambda in_flight: self._refuse_if_run_elsewhere(group.name, in_flight, creator))
                if exclusive
                else None,
            )
            self._deployments[dep.id] = dep
            if exclusive:
                self._active[group.name] = dep.id
            else:
                self._own.setdefault(group.name, set()).add(dep.id)
            thread = threading.Thread(target=self._drive, args=(dep,), name=f"deploy-{dep.id}", daemon=True)
            self._threads.append(thread)
        thread.start()
        return dep.id

    def _refuse_if_run_elsewhere(self, group: str, in_flight: Mapping[str, Mapping[str, Any]], creator: str) -> None:
        """CodeDeploy's one deployment per group, across the processes attached to this sandbox: called by the
        state under its file lock with the group's deployments in flight (one whose process is gone is abandoned:
        nothing runs it). CodeDeploy's own (a launch, follow-on or termination deployment) block a user's."""
        for deployment_id, entry in in_flight.items():
            if deployment_id in self._deployments or (not entry.get("exclusive", True) and creator != "user"):
                continue
            owner = Owner.from_dict(dict(entry.get("owner") or {}))
            if owner.alive() is not False:
                raise DeploymentLimitExceeded(group, deployment_id, f"run by another process: {owner.describe()}")

    def _counts(self, dep: Deployment, in_flight: int, pending: int) -> dict[str, int]:
        return {
            "succeeded": dep.count("Succeeded"),
            "failed": dep.count("Failed"),
            "in_flight": in_flight,
            "pending": pending,
        }

    def _drive(self, dep: Deployment) -> None:
        outcome = Verdict.FAILED
        try:
            if dep.policy.error:
                dep.error = dep.policy.error
            else:
                with self._lock:
                    dep.status = "InProgress"
                outcome = self._schedule(dep)
        except Exception as exc:  # a bug must not leave the deployment InProgress forever
            dep.error = f"the sandbox backend failed: {type(exc).__name__}: {exc}"
            outcome = Verdict.FAILED
        finally:
            self._finish(dep, outcome)

    def _schedule(self, dep: Deployment) -> Verdict:
        pending = list(dep.targets)
        running: dict[Future[InstanceResult], str] = {}
        size = max(1, dep.policy.max_in_flight)
        with ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"{dep.id}-instance") as pool:
            while True:
                stopping = dep.stop.is_set() or self.abort.is_set()
                if not stopping:
                    free = startable(
                        dep.policy,
                        failed=dep.count("Failed"),
                        in_flight=len(running),
                        pending=len(pending),
                        pending_unhealthy=self._unhealthy(dep, pending),
                    )
                    for _ in range(free):
                        iid = pending.pop(0)
                        with self._lock:
                            dep.targets[iid].status = "InProgress"
                        running[pool.submit(self._run_instance, dep, iid)] = iid
                if not running:
                    break
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in finished:
                    iid = running.pop(future)
                    result = future.result()
                    warnings = [*result.warnings, *interrupted_tasks(dep.targets[iid].instance, dep.id)]
                    with self._lock:
                        dep.targets[iid].result = result
                        dep.targets[iid].status = result.status
                        dep.warnings += warnings
        return verdict(
            dep.policy, **self._counts(dep, 0, len(pending)), pending_unhealthy=self._unhealthy(dep, pending)
        )

    @staticmethod
    def _unhealthy(dep: Deployment, pending: Sequence[str]) -> int:
        return sum(1 for iid in pending if dep.targets[iid].unhealthy)

    def _run_instance(self, dep: Deployment, iid: str) -> InstanceResult:
        target = dep.targets[iid]

        def on_event(event: str) -> None:
            with self._lock:
                ended, target.event = target.event, event
            if ended == "ApplicationStart":
                self._record_worker(target.instance)

        spec = self._spec(
            dep.id, dep.group, dep.revision, mode=dep.request.mode, ignore_stop=dep.request.ignore_stop_failures
        )
        events = ("ApplicationStop",) if dep.creator == "autoscalingTermination" else None  # the drain only
        try:
            return self._runner(target.instance).run(spec, events=events, on_event=on_event, stop=dep.stop)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            return InstanceResult(iid, dep.id, "Failed", failed_event=target.event, message=message)
        finally:  # also when ApplicationStart was the last event run (a worker that then failed to start)
            self._record_worker(target.instance)

    def _record_worker(self, instance: Instance) -> None:
        """The worker and watcher ApplicationStart started (it writes their pidfiles) join the pid record, once."""
        if self.record is None:
            return
        pidfiles = {"worker": instance.worker_pidfile(self.app), "watcher": instance.watcher_pidfile(self.app)}
        for kind, pidfile in pidfiles.items():
            if (pid := read_pidfile(pidfile)) is not None and pid_alive(pid):
                self.record.add_once(pid, kind, f"{instance.instance_id} {instance.shown(pidfile)}")

    def _runner(self, instance: Instance) -> LifecycleRunner:
        return LifecycleRunner(
            instance, s3=self.s3, timing=self.timing, clock=self.clock, record=self.record, abort=self.abort
        )

    def _spec(
        self, deployment_id: str, group: Group, revision: Revision | None, *, mode: Any, ignore_stop: bool = False
    ) -> DeploymentSpec:
        return DeploymentSpec(
            deployment_id=deployment_id,
            application_name=self.app.name,
            group_name=group.name,
            group_id=self.state.group_id(group.name),
            revision=revision,
            mode=mode,
            file_exists_behavior=self.file_exists_behavior,
            ignore_application_stop_failures=ignore_stop,
        )

    def _finish(self, dep: Deployment, outcome: Verdict) -> None:
        stopped = dep.stop.is_set() or self.abort.is_set()
        status: DeploymentStatus
        if stopped:
            status = "Stopped"
            dep.error = dep.error or ("the sandbox is shutting down" if self.abort.is_set() else "stopped on request")
        else:
            status = "Succeeded" if outcome == Verdict.SUCCEEDED else "Failed"
            if status == "Failed" and not dep.error:
                dep.error = failure_text(dep)
        entry: dict[str, Any] = {
            "deployment_id": dep.id,
            "status": status,
            "creator": dep.creator,
            "mode": dep.request.mode,
            "version": dep.revision.version,
            "release_id": dep.request.release_id,
            "description": dep.request.description,
            "started_at": dep.started_at,
            "ended_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "error": dep.error,
            "warnings": list(dep.warnings),
        }
        with self._lock:
            for target in dep.targets.values():
                if target.status == "Pending":
                    target.status = "Skipped"
            entry["instances"] = {iid: t.status for iid, t in dep.targets.items()}
            if self._active.get(dep.group.name) == dep.id:
                del self._active[dep.group.name]
            self._own.get(dep.group.name, set()).discard(dep.id)
            wants_rollback = not self.abort.is_set() and (
                (status == "Failed" and dep.request.auto_rollback) or (status == "Stopped" and dep.rollback_on_stop)
            )
            if wants_rollback:
                self._roll_back(dep)  # its thread records nothing before this lock is released
            entry["rollback_deployment_id"] = dep.rollback_id
            entry["error"] = dep.error
            # A launch or termination deployment deploys the group's revision as it was when it started: ending
            # after a newer one succeeded, it must not make the older one the group's revision again.
            keeps = status == "Succeeded" and dep.creator not in ("autoscaling", "autoscalingTermination")
            self.state.record(dep.group.name, entry, succeeded_with=dep.revision if keeps else None)
            dep.status = status
        if dep.creator == "autoscaling":  # a launch deployment ended: out of Standby, or abandoned
            self.fleet.admit(dep.group, [t.instance for t in dep.targets.values()], ok=status == "Succeeded")
        dep.done.set()

    def _roll_back(self, dep: Deployment) -> None:
        last = self.state.last_successful(dep.group.name)
        if last is None:
            dep.error += "; no earlier successful revision to roll back to"
            return
        request = DeployRequest(
            dep.group,
            last[1],
            release_id=dep.request.release_id,
            description=f"rollback of {dep.id}",
            auto_rollback=False,
            ignore_stop_failures=dep.request.ignore_stop_failures,
        )
        instances = [t.instance for t in dep.targets.values()]
        dep.rollback_id = self._start(request, creator="codeDeployRollback", instances=instances, after=dep)
