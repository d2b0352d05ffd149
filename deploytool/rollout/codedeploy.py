"""The `codedeploy` Backend: one CodeDeploy deployment per fleet group (deployment group = group name).

Contract:
- start: RegisterApplicationRevision once per revision, then CreateDeployment with the S3 revision
  (bundleType tgz, eTag, the S3 object version when there is one), the group's deployment config
  (Strategy.deployment_config_name, created by `fab setup`), ec2DeploymentOptions suspending AZRebalance
  and ScheduledActions (and Terminate when the group sets suspend_terminate) for the deployment.
  mode="restart" sends deploymentMode RESTART and no revision when the backend may (`restart_mode`: the fleet
  declares CodeDeploy agents 2.1.0+, app.codedeploy_agent); otherwise it is a normal deployment of the revision
  of the group's last successful deployment (GetDeploymentGroup, BatchGetDeployments): every hook runs and
  the workers restart on the code they run. request.ignore_stop_failures sends ignoreApplicationStopFailures
  (a failing stop script of the previous revision fails no instance). A redeploy to some instances
  (request.target_instances) sends updateOutdatedInstancesOnly: CodeDeploy itself picks the instances
  not on the group's revision (its targetInstances parameter is for blue/green only).
- poll: BatchGetDeployments, 25 ids a call; the lifecycle event per instance is not fetched while
  polling (that would cost calls per instance), so snapshots carry counts, not current_event; a deployment
  with ignoreApplicationStopFailures carries a warning saying so (which instances it spared is not polled).
- instance_results: ListDeploymentTargets + BatchGetDeploymentTargets (25 a call).
- stop: StopDeployment(autoRollbackEnabled).
- group_deployments: ListDeployments (the active statuses, or a createTimeRange from `created_after`) +
  BatchGetDeployments; snapshots carry creator, description, createTime and the revision's version, which
  deploytool.rollout.coexist uses to tell CodeDeploy's own deployments (launch, follow-on, termination) from
  someone else's and from this release's.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from deploytool.aws.codedeploy import CodeDeployGateway
from deploytool.config import Group
from deploytool.errors import AwsError
from deploytool.model import Revision
from deploytool.rollout.backend import (
    DeploymentSnapshot,
    DeploymentStatus,
    DeployRequest,
    GroupState,
    InstanceProgress,
    InstanceStatus,
)

ACTIVE = ("Created", "Queued", "InProgress", "Ready", "Baking")
STOP_FAILURES_IGNORED = (
    "ApplicationStop failures are ignored in this deployment (--ignore-stop-failures): an instance whose previous "
    "stop script failed went on, and its old worker may still run; CodeDeploy does not say which: look for a failed "
    "ApplicationStop in the deployment's instance events or in scripts.log"
)
ALWAYS_SUSPENDED = ("AZRebalance", "ScheduledActions")


def s3_revision(revision: Revision) -> dict[str, Any]:
    location: dict[str, Any] = {
        "bucket": revision.bucket,
        "key": revision.key,
        "bundleType": revision.bundle_type,
        "eTag": revision.etag.strip('"'),
    }
    if revision.object_version:
        location["version"] = revision.object_version
    return {"revisionType": "S3", "s3Location": location}


def version_from_key(key: str) -> str | None:
    """The release version in a bundle key P/A/<version>/<sha256>.tgz (deploytool.model.bundle_key)."""
    parts = key.split("/")
    return parts[-2] if len(parts) >= 3 else None


def create_params(request: DeployRequest, *, last_good: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """CreateDeployment's parameters (besides application and group) for one request. A restart with
    `last_good` (a RevisionLocation, that of the group's last successful deployment) redeploys it."""
    group = request.group
    processes = [*ALWAYS_SUSPENDED, *(["Terminate"] if group.suspend_terminate else [])]
    params: dict[str, Any] = {
        "deploymentConfigName": group.strategy.deployment_config_name,
        "description": (request.description or f"deploytool {request.release_id}")[:1000],
        "ec2DeploymentOptions": {"autoScalingGroupProcessesToSuspend": processes},
        "fileExistsBehavior": "OVERWRITE",
    }
    if request.mode == "restart" and last_good is not None:
        params["revision"] = dict(last_good)
    elif request.mode == "restart":
        params["deploymentMode"] = "RESTART"
    else:
        assert request.revision is not None
        params["revision"] = s3_revision(request.revision)
        if request.target_instances:
            params["updateOutdatedInstancesOnly"] = True
    if not request.auto_rollback:
        params["autoRollbackConfiguration"] = {"enabled": False, "events": []}
    if request.ignore_stop_failures:
        params["ignoreApplicationStopFailures"] = True
    return params


def snapshot(info: Mapping[str, Any]) -> DeploymentSnapshot:
    overview = info.get("deploymentOverview") or {}
    rollback = info.get("rollbackInfo") or {}
    error = info.get("errorInformation") or {}
    return DeploymentSnapshot(
        deployment_id=str(info["deploymentId"]),
        group=str(info.get("deploymentGroupName", "")),
        status=cast(DeploymentStatus, info.get("status", "Created")),
        pending=int(overview.get("Pending", 0)),
        in_progress=int(overview.get("InProgress", 0)),
        succeeded=int(overview.get("Succeeded", 0)),
        failed=int(overview.get("Failed", 0)),
        skipped=int(overview.get("Skipped", 0)),
        error=str(error.get("message", "")),
        error_code=str(error.get("code", "")),
        rollback_deployment_id=rollback.get("rollbackDeploymentId"),
        creator=str(info.get("creator", "user")),
        description=str(info.get("description") or ""),
        created_at=_epoch(info.get("createTime")),
        version=version_from_key(str(key))
        if (key := ((info.get("revision") or {}).get("s3Location") or {}).get("key"))
        else None,
        warnings=(STOP_FAILURES_IGNORED,) if info.get("ignoreApplicationStopFailures") else (),
    )


def _epoch(value: Any) -> float | None:
    """A CodeDeploy timestamp (botocore parses it to a datetime) as epoch seconds."""
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value) if isinstance(value, (int, float)) else None


def instance_progress(target: Mapping[str, Any]) -> InstanceProgress:
    inst = target.get("instanceTarget") or {}
    events = inst.get("lifecycleEvents") or []
    failed = next((e for e in events if e.get("status") == "Failed"), None)
    running = next((e for e in events if e.get("status") == "InProgress"), None)
    event = failed or running
    message = ""
    if failed:
        diag = failed.get("diagnostics") or {}
        message = " ".join(p for p in (diag.get("errorCode"), diag.get("scriptName"), diag.get("message")) if p)
        if diag.get("logTail"):
            message += f" | {diag['logTail'].strip()[-500:]}"
    return InstanceProgress(
        instance_id=str(inst.get("targetId", "")),
        status=cast(InstanceStatus, inst.get("status", "Unknown")),
        lifecycle_event=event.get("lifecycleEventName") if event else None,
        message=message,
    )


class CodeDeployBackend:
    name = "codedeploy"

    def __init__(self, gateway: CodeDeployGateway, *, application: str, restart_mode: bool = False) -> None:
        self.gateway = gateway
        self.application = application
        self.restart_mode = restart_mode  # deploymentMode RESTART allowed: every agent is 2.1.0+
        self._registered: set[str] = set()
        self._lock = threading.Lock()

    def _register(self, request: DeployRequest) -> None:
        revision = request.revision
        if revision is None:
            return
        with self._lock:
            if revision.uri in self._registered:
                return
            self.gateway.register_revision(
                self.application, s3_revision(revision), f"deploytool {revision.version} sha256 {revision.sha256}"
            )
            self._registered.add(revision.uri)

    def start(self, request: DeployRequest) -> str:
        if request.mode == "deploy":
            self._register(request)
        last_good = (
            self.last_good_revision(request.group) if request.mode == "restart" and not self.restart_mode else None
        )
        return self.gateway.create_deployment(
            self.application, request.group.name, create_params(request, last_good=last_good)
        )

    def last_good_revision(self, group: Group) -> dict[str, Any]:
        """The revision of the group's last successful deployment (what RESTART would restart); an AwsError when
        no deployment of the group has succeeded yet."""
        info = self.gateway.get_deployment_group(self.application, group.name)
        if info is None:
            raise AwsError(f"group {group.name}: the deployment group does not exist (run `fab setup` for this target)")
        deployment_id = str((info.get("lastSuccessfulDeployment") or {}).get("deploymentId") or "")
        found = self.gateway.get_deployments([deployment_id]).get(deployment_id, {}) if deployment_id else {}
        revision = found.get("revision") or info.get("targetRevision")
        if not deployment_id or not revision:
            raise AwsError(f"group {group.name}: nothing to restart: no deployment of it has succeeded yet")
        return dict(revision)

    def poll(self, deployment_ids: Sequence[str]) -> Mapping[str, DeploymentSnapshot]:
        return {i: snapshot(info) for i, info in self.gateway.get_deployments(deployment_ids).items()}

    def stop(self, deployment_id: str, *, rollback: bool) -> None:
        self.gateway.stop_deployment(deployment_id, rollback=rollback)

    def instance_results(self, deployment_id: str) -> Sequence[InstanceProgress]:
        ids = self.gateway.list_targets(deployment_id)
        return [instance_progress(t) for t in self.gateway.get_targets(deployment_id, ids)]

    def group_deployments(
        self, group: Group, *, active_only: bool, created_after: float | None = None
    ) -> Sequence[DeploymentSnapshot]:
        ids = self.gateway.list_deployments(
            self.application, group.name, ACTIVE if active_only else (), created_after=created_after
        )
        found = [snapshot(info) for info in self.gateway.get_deployments(ids).values()] if ids else []
        return sorted(found, key=lambda s: (s.created_at or 0.0, s.deployment_id))

    def group_state(self, group: Group) -> GroupState:
        info = self.gateway.get_deployment_group(self.application, group.name)
        if info is None:
            return GroupState(group.name, exists=False)
        active = self.gateway.list_deployments(self.application, group.name, ACTIVE)
        target = (info.get("targetRevision") or {}).get("s3Location") or {}
        last = info.get("lastSuccessfulDeployment") or {}
        return GroupState(
            group=group.name,
            exists=True,
            active_deployment_id=active[0] if active else None,
            last_successful_version=version_from_key(str(target["key"])) if target.get("key") else None,
            extra={
                "deployment_group_id": str(info.get("deploymentGroupId", "")),
                "last_successful_deployment_id": str(last.get("deploymentId", "")),
            },
        )
