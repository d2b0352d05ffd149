"""The CodeDeploy simulator: state plus time. Deployments advance lazily to the clock's `now` at every
API call, instance by instance, with deploytool.strategy deciding how many instances may run at once
(`startable`) and when a deployment has succeeded or failed (`verdict`).

Each instance runs the in-place lifecycle events with durations from `durations(group, instance,
mode)` (default: 60 to 180 s per instance, seeded per instance). ApplicationStop is skipped on an
instance's first deployment. Per-instance health persists across deployments (`instance_health`): an
instance never deployed to or whose last deployment failed is unhealthy, deployed first, and not counted
toward the minimum healthy hosts (deploytool.strategy). A group takes one active deployment at a time:
CreateDeployment meanwhile fails with DeploymentLimitExceededException (api_deploy). `inject_failure`
makes an instance fail a lifecycle event; an ApplicationStop failure (the previous revision's stop script
failing or missing) fails the instance unless the deployment has ignoreApplicationStopFailures. A failed
deployment whose group has DEPLOYMENT_FAILURE auto-rollback, and a deployment stopped with rollback, start
a rollback deployment (creator codeDeployRollback) of the group's last successful revision.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from deploytool.rollout.backend import LIFECYCLE_EVENTS
from deploytool.rollout.clock import Clock
from deploytool.strategy import Verdict, health_policy, is_unhealthy, next_health, startable, unhealthy_first, verdict
from tests.cdsim.model import (
    BUILTIN_CONFIGS,
    EPOCH,
    NO_INSTANCES_MESSAGE,
    Application,
    Deployment,
    DeploymentConfig,
    DeploymentGroup,
    InstanceRun,
)

Plan = Sequence[tuple[str, float]]
STOPPED = ("MANUAL_STOP", "The deployment was stopped by the user")
Durations = Callable[[str, str, str], Plan]

# Share of an instance's lifecycle time per event (in-place, no load balancer).
SHARES = {
    "STANDARD": (
        ("ApplicationStop", 0.30),
        ("DownloadBundle", 0.05),
        ("BeforeInstall", 0.05),
        ("Install", 0.10),
        ("AfterInstall", 0.05),
        ("ApplicationStart", 0.20),
        ("ValidateService", 0.25),
    ),
    "RESTART": (("ApplicationStop", 0.45), ("ApplicationStart", 0.25), ("ValidateService", 0.30)),
}
assert tuple(name for name, _ in SHARES["STANDARD"]) == LIFECYCLE_EVENTS


def seeded_durations(seed: int = 0, low: float = 60.0, high: float = 180.0) -> Durations:
    """Each instance gets its own total time in [low, high], split over the events."""

    def plan(group: str, instance_id: str, mode: str) -> Plan:
        total = random.Random(f"{seed}:{group}:{instance_id}").uniform(low, high)
        return [(event, total * share) for event, share in SHARES[mode]]

    return plan


class SimError(Exception):
    """A service error: becomes an HTTP 400 with {"__type": code, "message": ...}."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CodeDeploySim:
    def __init__(
        self,
        clock: Clock,
        *,
        fleet: Mapping[str, Sequence[str]] | Callable[[str], Sequence[str] | None],
        durations: Durations | None = None,
        start_delay_s: float = 1.0,
        throttle_rate: float = 0.0,
        seed: int = 0,
        account: str = "123456789012",
        region: str = "us-east-1",
    ) -> None:
        self.clock = clock
        self._fleet = fleet
        self.durations = durations or seeded_durations(seed)
        self.start_delay_s = start_delay_s
        self.throttle_rate = throttle_rate
        self.rng = random.Random(seed)
        self.account, self.region = account, region
        self.apps: dict[str, Application] = {}
        self.groups: dict[tuple[str, str], DeploymentGroup] = {}
        self.configs: dict[str, DeploymentConfig] = {
            name: DeploymentConfig(name, f"cfg-{name}", {}, 0.0) for name in BUILTIN_CONFIGS
        }
        self.deployments: dict[str, Deployment] = {}
        self.instance_revision: dict[str, str] = {}  # instance id -> revision key it runs
        # instance id -> Healthy/Unhealthy after its last deployment (absent: never deployed, unhealthy)
        self.instance_health: dict[str, str] = {}
        self.failures: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.failure_versions: dict[str, str] = {}
        self.failure_codes: dict[str, str] = {}
        self.calls: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.lock = threading.RLock()
        # The fleet moves (tests.cdsim.autoscale): instances not InService yet (their launch deployment runs) or
        # no longer (their termination deployment runs); instances launched during a deployment, on the old
        # revision; `after_end` is called with every deployment that ends (follow-ons, terminations).
        self.launching: set[str] = set()
        self.terminating: set[str] = set()
        self.after_end: Callable[[Deployment, DeploymentGroup, float], None] | None = None
        self._serial = 0
        self._throttle_debt = 0.0

    # -- set-up by tests ----------------------------------------------------------------------

    def instances_of(self, asg: str) -> list[str] | None:
        found = self._fleet.get(asg) if isinstance(self._fleet, Mapping) else self._fleet(asg)
        if found is None:
            return None
        return sorted(set(found) - self.launching - self.terminating)

    def inject_failure(
        self,
        instance_id: str,
        event: str = "ValidateService",
        *,
        creators: tuple[str, ...] = ("user",),
        version: str | None = None,
        error_code: str = "ScriptFailed",
    ) -> None:
        """Make `instance_id` fail `event` in deployments created by one of `creators` (and, with `version`, only
        in those of a revision whose key has that version: deploytool's bundle key P/A/<version>/<sha>.tgz).
        error_code "ScriptMissing": the script is listed in the appspec but absent. An event the instance skips
        (ApplicationStop on its first deployment) cannot fail; a deployment with ignoreApplicationStopFailures
        goes on past a failing ApplicationStop (the event shows Failed, the instance continues)."""
        self.failures[instance_id] = (event, creators)
        self.failure_codes[instance_id] = error_code
        if version is None:
            self.failure_versions.pop(instance_id, None)
        else:
            self.failure_versions[instance_id] = version

    def next_id(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}{self._serial:0{11 - len(prefix)}d}"

    def now(self) -> float:
        return self.clock.now()

    def should_throttle(self) -> bool:
        """Throttle `throttle_rate` of the calls, spread evenly (deterministic, unlike the service)."""
        self._throttle_debt += self.throttle_rate
        if self._throttle_debt >= 1.0:
            self._throttle_debt -= 1.0
            return True
        return False

    # -- time ------------------------------------------------------------------------------------

    def advance(self) -> None:
        """Bring every deployment to the clock's now (a rollback started meanwhile included)."""
        now = self.now()
        while True:
            active = [d for d in self.deployments.values() if not d.done]
            before = len(self.deployments)
            for d in active:
                self._advance(d, now)
            if len(self.deployments) == before:
                return

    def _advance(self, d: Deployment, now: float) -> None:
        if d.status == "Created":
            begin = d.created_at + self.start_delay_s
            if begin > now:
                return
            d.status, d.started_at = "InProgress", begin
            if not d.instances:
                self._end(d, "Failed", begin, ("NO_INSTANCES", NO_INSTANCES_MESSAGE))
                return
            if d.policy.error:
                self._end(d, "Failed", begin, ("HEALTH_CONSTRAINTS_INVALID", d.policy.error))
                return
            self._start_instances(d, begin)
            self._judge(d, begin)
        while not d.done:
            ends = [(run.ends_at, run.instance_id) for run in d.instances.values() if run.status == "InProgress"]
            due = [(t, i) for t, i in ends if t is not None and t <= now]
            if not due:
                return
            t = min(e for e, _ in due)
            for end, instance_id in due:
                if end == t:
                    self._finish_instance(d, d.instances[instance_id], t)
            self._judge(d, t)

    def _judge(self, d: Deployment, t: float) -> None:
        counts = self._counts(d)
        if d.stop_requested:  # a Pending stop: it ends once no instance is in flight, and nothing starts
            if not counts["in_flight"]:
                self._end(d, "Stopped", t, STOPPED)
            return
        v = verdict(d.policy, **counts)
        if v is Verdict.SUCCEEDED:
            self._end(d, "Succeeded", t, None)
        elif v is Verdict.FAILED:
            failed = counts["failed"]
            self._end(
                d,
                "Failed",
                t,
                (
                    "HEALTH_CONSTRAINTS",
                    f"The overall deployment failed because too many individual instances failed deployment, "
                    f"too few healthy instances are available for deployment, or some instances in your "
                    f"deployment group are experiencing problems. ({failed} failed)",
                ),
            )
        else:
            self._start_instances(d, t)

    def _counts(self, d: Deployment) -> dict[str, int]:
        return {
            "succeeded": d.count("Succeeded"),
            "failed": d.count("Failed"),
            "in_flight": d.count("InProgress"),
            "pending": d.count("Pending"),
            "pending_unhealthy": sum(1 for r in d.instances.values() if r.status == "Pending" and r.unhealthy),
        }

    def _start_instances(self, d: Deployment, t: float) -> None:
        c = self._counts(d)
        n = startable(
            d.policy,
            failed=c["failed"],
            in_flight=c["in_flight"],
            pending=c["pending"],
            pending_unhealthy=c["pending_unhealthy"],
        )
        for run in [r for r in d.instances.values() if r.status == "Pending"][:n]:  # the unhealthy ones first
            run.status, run.started_at = "InProgress", t

    def _finish_instance(self, d: Deployment, run: InstanceRun, t: float) -> None:
        run.ended_at = t
        if run.fail_event:
            run.status = "Failed"
        else:
            run.status = "Succeeded"
            if d.revision is not None:
                self.instance_revision[run.instance_id] = revision_key(d.revision)
        health = next_health(self.instance_health.get(run.instance_id), run.status)
        if health is not None:
            self.instance_health[run.instance_id] = health

    def _end(self, d: Deployment, status: str, t: float, error: tuple[str, str] | None) -> None:
        d.status, d.completed_at = status, t
        if error:
            d.error = {"code": error[0], "message": error[1]}
        for run in d.instances.values():
            if run.status == "Pending":
                run.status = "Skipped"
        group = self.groups[(d.app, d.group)]
        group.active = next((x.deployment_id for x in self.active_in(group) if x is not d), None)
        info = {
            "deploymentId": d.deployment_id,
            "status": status,
            "endTime": EPOCH + t,
            "createTime": EPOCH + d.created_at,
        }
        group.last_attempted = info
        if status == "Succeeded":
            group.last_successful = info
            if d.creator not in ("autoscaling", "autoscalingTermination"):  # they deploy the revision as it was
                group.target_revision = d.revision
        elif d.instances and self._rollback_wanted(d, group, status):  # NO_INSTANCES: nothing to roll back
            self._start_rollback(d, group, t)
        if self.after_end is not None:
            self.after_end(d, group, t)

    def active_in(self, group: DeploymentGroup) -> list[Deployment]:
        return [d for d in self.deployments.values() if (d.app, d.group) == (group.app, group.name) and not d.done]

    def _rollback_wanted(self, d: Deployment, group: DeploymentGroup, status: str) -> bool:
        if d.creator == "codeDeployRollback":
            return False
        override = d.request.get("autoRollbackConfiguration")
        cfg = override if override is not None else group.settings.get("autoRollbackConfiguration") or {}
        if status == "Stopped":
            return bool(d.request.get("_stop_rollback"))
        return bool(cfg.get("enabled")) and "DEPLOYMENT_FAILURE" in (cfg.get("events") or [])

    def _start_rollback(self, d: Deployment, group: DeploymentGroup, t: float) -> None:
        if group.target_revision is None:
            d.rollback_info = {
                "rollbackMessage": "Automatic rollback is not possible: the deployment group has "
                "no previous successful deployment."
            }
            return
        rollback = self.create(
            group,
            group.target_revision,
            creator="codeDeployRollback",
            at=t,
            description=f"Rollback of {d.deployment_id}",
            request={},
            instance_ids=list(d.instances),
            config_name=d.config_name,
        )
        rollback.rollback_info = {"rollbackTriggeringDeploymentId": d.deployment_id}
        d.rollback_info = {
            "rollbackDeploymentId": rollback.deployment_id,
            "rollbackMessage": f"Deployment {d.deployment_id} rolled back by {rollback.deployment_id}",
        }

    # -- operations the API layer calls ---------------------------------------------------------

    def create(
        self,
        group: DeploymentGroup,
        revision: dict[str, Any] | None,
        *,
        creator: str,
        at: float,
        description: str,
        request: dict[str, Any],
        instance_ids: Sequence[str],
        config_name: str,
        mode: str = "STANDARD",
    ) -> Deployment:
        config = self.configs[config_name]
        deployment = Deployment(
            deployment_id=self.next_id("d-"),
            app=group.app,
            group=group.name,
            config_name=config_name,
            policy=health_policy(config.strategy, len(instance_ids)),
            revision=revision,
            created_at=at,
            creator=creator,
            description=description,
            mode=mode,
            request=request,
            previous_revision=group.target_revision,
        )
        for instance_id in unhealthy_first(instance_ids, self.instance_health):  # CodeDeploy deploys those first
            plan = list(self.durations(group.name, instance_id, "STANDARD" if mode == "TERMINATION" else mode))
            if mode == "TERMINATION":  # scale-in with the termination hook: the stop side only
                plan = [(e, s) for e, s in plan if e == "ApplicationStop"]
            skipped: frozenset[str] = frozenset()
            if instance_id not in self.instance_revision:  # first deployment: no ApplicationStop
                skipped = frozenset({"ApplicationStop"})
                plan = [(e, 0.0 if e in skipped else s) for e, s in plan]
            fail = self.failures.get(instance_id)
            only = self.failure_versions.get(instance_id)
            if only is not None and f"/{only}/" not in str(((revision or {}).get("s3Location") or {}).get("key")):
                fail = None
            fail_event = fail[0] if fail and creator in fail[1] and fail[0] in dict(plan) else None
            if fail_event in skipped:  # no ApplicationStop on a first install: nothing to fail
                fail_event = None
            ignored = None
            if fail_event == "ApplicationStop" and request.get("ignoreApplicationStopFailures"):
                fail_event, ignored = None, "ApplicationStop"
            deployment.instances[instance_id] = InstanceRun(
                instance_id,
                plan,
                fail_event,
                skipped_events=skipped,
                ignored_failure=ignored,
                error_code=self.failure_codes.get(instance_id, "ScriptFailed"),
                unhealthy=is_unhealthy(self.instance_health.get(instance_id)),
            )
        self.deployments[deployment.deployment_id] = deployment
        group.active = group.active or deployment.deployment_id
        return deployment

    def stop(self, d: Deployment, *, rollback: bool) -> str:
        """StopDeployment: "Succeeded" when no instance is in flight (the deployment is Stopped now), else
        "Pending": each instance in flight ends its current lifecycle event (failed), none starts, and the
        deployment becomes Stopped when the last one ends (a later poll sees it)."""
        now = self.now()
        d.request["_stop_rollback"] = rollback
        d.stop_requested = True
        running = [run for run in d.instances.values() if run.status == "InProgress"]
        for run in running:
            run.fail_event = run.current_event(now) or next(
                (name for name, _ in run.plan if name not in run.skipped_events), run.plan[-1][0]
            )
        if running:
            return "Pending"
        self._end(d, "Stopped", now, STOPPED)
        return "Succeeded"


def revision_key(revision: Mapping[str, Any]) -> str:
    s3 = revision.get("s3Location") or {}
    return f"s3://{s3.get('bucket')}/{s3.get('key')}#{s3.get('eTag', '')}"
