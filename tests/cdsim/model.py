"""The CodeDeploy simulator's state: applications, deployment groups, configs, revisions, deployments.

Plain mutable dataclasses; engine.py moves deployments forward in time, api_*.py turn them into the
service's JSON. Times are seconds on the simulated clock; `to_wire` adds an epoch so timestamps
look like real ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deploytool.config import Strategy
from deploytool.strategy import HealthPolicy

EPOCH = 1_700_000_000.0

BUILTIN_CONFIGS: dict[str, Strategy] = {
    "CodeDeployDefault.AllAtOnce": Strategy("AllAtOnce"),
    "CodeDeployDefault.HalfAtATime": Strategy("HalfAtATime"),
    "CodeDeployDefault.OneAtATime": Strategy("OneAtATime"),
}
# What GetDeploymentConfig says of the built-ins. OneAtATime's type is one no request may use: the API
# reference (MinimumHealthyHosts) says GetDeploymentConfig returns MOST_CONCURRENCY with value 1 for it.
BUILTIN_MIN_HEALTHY: dict[str, dict[str, Any]] = {
    "CodeDeployDefault.AllAtOnce": {"type": "FLEET_PERCENT", "value": 0},
    "CodeDeployDefault.HalfAtATime": {"type": "FLEET_PERCENT", "value": 50},
    "CodeDeployDefault.OneAtATime": {"type": "MOST_CONCURRENCY", "value": 1},
}
# errorInformation of a deployment to a group without instances (CreateDeployment itself succeeds).
NO_INSTANCES_MESSAGE = (
    "The deployment failed because no instances were found for your deployment group. Check your deployment "
    "group settings to make sure the tags for your Amazon EC2 instances or Auto Scaling groups correctly "
    "identify the instances you want to deploy to, and then try again."
)


def strategy_of(min_healthy: dict[str, Any]) -> Strategy:
    if min_healthy["type"] == "HOST_COUNT":
        return Strategy("HostCount", int(min_healthy["value"]))
    return Strategy("FleetPercent", int(min_healthy["value"]))


@dataclass
class Application:
    name: str
    application_id: str
    created_at: float
    revisions: dict[str, dict[str, Any]] = field(default_factory=dict)  # revision key -> registration


@dataclass
class DeploymentConfig:
    name: str
    config_id: str
    min_healthy: dict[str, Any]
    created_at: float

    @property
    def strategy(self) -> Strategy:
        return BUILTIN_CONFIGS.get(self.name) or strategy_of(self.min_healthy)


@dataclass
class DeploymentGroup:
    app: str
    name: str
    group_id: str
    settings: dict[str, Any]  # as given to Create/UpdateDeploymentGroup (minus the names)
    last_successful: dict[str, Any] | None = None  # LastDeploymentInfo
    last_attempted: dict[str, Any] | None = None
    target_revision: dict[str, Any] | None = None  # revision of the last successful deployment
    active: str | None = None  # deployment id in flight

    @property
    def asgs(self) -> list[str]:
        return list(self.settings.get("autoScalingGroups") or [])

    @property
    def config_name(self) -> str:
        return str(self.settings.get("deploymentConfigName") or "CodeDeployDefault.OneAtATime")

    def rollback_on(self, event: str) -> bool:
        cfg = self.settings.get("autoRollbackConfiguration") or {}
        return bool(cfg.get("enabled")) and event in (cfg.get("events") or [])


@dataclass
class InstanceRun:
    """One instance's part in one deployment."""

    instance_id: str
    plan: list[tuple[str, float]]  # lifecycle events and their durations, in order
    fail_event: str | None = None  # the event that fails, if any
    status: str = "Pending"
    started_at: float | None = None
    ended_at: float | None = None
    skipped_events: frozenset[str] = frozenset()
    ignored_failure: str | None = None  # ApplicationStop failed, ignored (ignoreApplicationStopFailures)
    error_code: str = "ScriptFailed"  # the failure's diagnostics: ScriptFailed or ScriptMissing
    unhealthy: bool = False  # at the deployment's start: never deployed, or its last deployment failed

    @property
    def ends_at(self) -> float | None:
        """When this instance's run finishes (its failing event's end, or the last event's)."""
        if self.started_at is None:
            return None
        t = self.started_at
        for name, seconds in self.plan:
            t += seconds
            if name == self.fail_event:
                break
        return t

    def events_at(self, now: float) -> list[dict[str, Any]]:
        """LifecycleEvent entries as BatchGetDeploymentTargets shows them at `now`."""
        out: list[dict[str, Any]] = []
        t = self.started_at
        horizon = self.ended_at if self.ended_at is not None else now
        after_failure = False
        for name, seconds in self.plan:
            entry: dict[str, Any] = {"lifecycleEventName": name, "status": "Pending"}
            if self.status == "Skipped" or name in self.skipped_events or after_failure:
                entry["status"] = "Skipped"
            elif t is not None and t <= horizon:
                end = t + seconds
                entry["startTime"] = EPOCH + t
                if self.status == "Failed" and name == self.fail_event:
                    entry.update(status="Failed", endTime=EPOCH + min(end, horizon), diagnostics=_failure(self, name))
                    after_failure = True
                elif name == self.ignored_failure and end <= horizon:  # failed, and the instance went on
                    entry.update(status="Failed", endTime=EPOCH + end, diagnostics=_failure(self, name))
                elif end <= horizon:
                    entry.update(
                        status="Succeeded",
                        endTime=EPOCH + end,
                        diagnostics={"errorCode": "Success", "message": "Succeeded"},
                    )
                else:
                    entry["status"] = "InProgress"
                t = end
            out.append(entry)
        return out

    def current_event(self, now: float) -> str | None:
        for entry in self.events_at(now):
            if entry["status"] == "InProgress":
                return str(entry["lifecycleEventName"])
        return None


def _failure(run: InstanceRun, event: str) -> dict[str, str]:
    script = f"deploytool/hooks/{event.lower()}.sh"
    if run.error_code == "ScriptMissing":  # the agent's words for a script the appspec lists but the archive lacks
        message = f"Script does not exist at specified location: {script}"
        return {"errorCode": "ScriptMissing", "scriptName": script, "message": message, "logTail": ""}
    return {
        "errorCode": "ScriptFailed",
        "scriptName": script,
        "message": f"Script at specified location: {script} run as user root failed with exit code 1",
        "logTail": f"[stderr] {event} failed on {run.instance_id}",
    }


@dataclass
class Deployment:
    deployment_id: str
    app: str
    group: str
    config_name: str
    policy: HealthPolicy
    revision: dict[str, Any] | None
    created_at: float
    creator: str = "user"
    description: str = ""
    mode: str = "STANDARD"
    status: str = "Created"
    started_at: float | None = None
    completed_at: float | None = None
    error: dict[str, str] | None = None
    rollback_info: dict[str, str] = field(default_factory=dict)
    instances: dict[str, InstanceRun] = field(default_factory=dict)
    request: dict[str, Any] = field(default_factory=dict)  # CreateDeployment input as sent
    previous_revision: dict[str, Any] | None = None
    stop_requested: bool = False  # StopDeployment answered Pending: in-flight instances end their current event

    @property
    def done(self) -> bool:
        return self.status in ("Succeeded", "Failed", "Stopped")

    def count(self, status: str) -> int:
        return sum(1 for i in self.instances.values() if i.status == status)
