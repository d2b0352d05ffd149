"""Simulated CodeDeploy operations for deployments and their targets (instances)."""

from __future__ import annotations

from typing import Any

from tests.cdsim.api_setup import app_of, group_of, page
from tests.cdsim.model import EPOCH, Deployment
from tests.cdsim.sim import CodeDeploySim, SimError, revision_key

Params = dict[str, Any]
BATCH = 25
PROCESSES = {"Terminate", "AZRebalance", "InstanceRefresh", "ScheduledActions"}


def deployment_of(sim: CodeDeploySim, deployment_id: str) -> Deployment:
    if deployment_id not in sim.deployments:
        raise SimError("DeploymentDoesNotExistException", f"Deployment {deployment_id} does not exist")
    return sim.deployments[deployment_id]


def create_deployment(sim: CodeDeploySim, p: Params) -> Params:
    app = app_of(sim, p["applicationName"])
    if "deploymentGroupName" not in p:
        raise SimError("DeploymentGroupNameRequiredException", "Deployment group name is required")
    group = group_of(sim, app.name, p["deploymentGroupName"])
    config = p.get("deploymentConfigName") or group.config_name
    if config not in sim.configs:
        raise SimError("DeploymentConfigDoesNotExistException", f"No deployment configuration found for name: {config}")
    if group.active:
        raise SimError(
            "DeploymentLimitExceededException",
            f"The Deployment Group '{group.name}' already has an active Deployment '{group.active}'",
        )
    processes = (p.get("ec2DeploymentOptions") or {}).get("autoScalingGroupProcessesToSuspend") or []
    if set(processes) - PROCESSES:
        raise SimError("InvalidAutoScalingGroupProcessToSuspendException", f"invalid processes {processes}")
    mode = p.get("deploymentMode", "STANDARD")
    revision = p.get("revision")
    if mode == "RESTART":
        if revision is not None or p.get("updateOutdatedInstancesOnly"):
            raise SimError(
                "InvalidInputException", "A RESTART deployment takes no revision and no updateOutdatedInstancesOnly"
            )
        revision = group.target_revision
        if revision is None:
            raise SimError("InvalidInputException", "No successful deployment to restart from")
    elif revision is None:
        raise SimError("RevisionRequiredException", "The revision ID was not specified")
    instances: list[str] = []
    for asg in group.asgs:
        instances += sim.instances_of(asg) or []
    if p.get("updateOutdatedInstancesOnly"):
        key = revision_key(revision)
        instances = [i for i in instances if sim.instance_revision.get(i) != key]
    d = sim.create(
        group,
        revision,
        creator="user",
        at=sim.now(),
        description=p.get("description", ""),
        request=dict(p),
        instance_ids=instances,
        config_name=config,
        mode=mode,
    )
    return {"deploymentId": d.deployment_id}


def deployment_info(sim: CodeDeploySim, d: Deployment) -> Params:
    group = sim.groups[(d.app, d.group)]
    info: Params = {
        "applicationName": d.app,
        "deploymentGroupName": d.group,
        "deploymentConfigName": d.config_name,
        "deploymentId": d.deployment_id,
        "status": d.status,
        "createTime": EPOCH + d.created_at,
        "creator": d.creator,
        "description": d.description,
        "ignoreApplicationStopFailures": bool(d.request.get("ignoreApplicationStopFailures", False)),
        "updateOutdatedInstancesOnly": bool(d.request.get("updateOutdatedInstancesOnly", False)),
        "autoRollbackConfiguration": d.request.get("autoRollbackConfiguration")
        or group.settings.get("autoRollbackConfiguration", {"enabled": False, "events": []}),
        "deploymentStyle": {"deploymentType": "IN_PLACE", "deploymentOption": "WITHOUT_TRAFFIC_CONTROL"},
        "instanceTerminationWaitTimeStarted": False,
        "computePlatform": "Server",
        "deploymentOverview": {
            "Pending": d.count("Pending"),
            "InProgress": d.count("InProgress"),
            "Succeeded": d.count("Succeeded"),
            "Failed": d.count("Failed"),
            "Skipped": d.count("Skipped"),
            "Ready": 0,
        },
    }
    if d.revision is not None:
        info["revision"] = d.revision
    if d.previous_revision is not None:
        info["previousRevision"] = d.previous_revision
    if d.started_at is not None:
        info["startTime"] = EPOCH + d.started_at
    if d.completed_at is not None:
        info["completeTime"] = EPOCH + d.completed_at
    if d.error:
        info["errorInformation"] = d.error
    if d.rollback_info:
        info["rollbackInfo"] = d.rollback_info
    if "ec2DeploymentOptions" in d.request:
        info["ec2DeploymentOptions"] = d.request["ec2DeploymentOptions"]
    if "fileExistsBehavior" in d.request:
        info["fileExistsBehavior"] = d.request["fileExistsBehavior"]
    return info


def get_deployment(sim: CodeDeploySim, p: Params) -> Params:
    return {"deploymentInfo": deployment_info(sim, deployment_of(sim, p["deploymentId"]))}


def batch_get_deployments(sim: CodeDeploySim, p: Params) -> Params:
    ids = p["deploymentIds"]
    if len(ids) > BATCH:
        raise SimError(
            "BatchLimitExceededException",
            f"The maximum number of names or IDs allowed for this request ({BATCH}) was exceeded.",
        )
    return {"deploymentsInfo": [deployment_info(sim, sim.deployments[i]) for i in ids if i in sim.deployments]}


def list_deployments(sim: CodeDeploySim, p: Params) -> Params:
    app, group = p.get("applicationName"), p.get("deploymentGroupName")
    if app:
        app_of(sim, app)
    if group:
        group_of(sim, app or "", group)
    statuses = set(p.get("includeOnlyStatuses") or [])
    window = p.get("createTimeRange") or {}  # epoch seconds on the wire
    start, end = float(window.get("start", 0.0)), float(window.get("end", float("inf")))
    ids = [
        d.deployment_id
        for d in sorted(sim.deployments.values(), key=lambda d: -d.created_at)
        if (not app or d.app == app)
        and (not group or d.group == group)
        and (not statuses or d.status in statuses)
        and start <= EPOCH + d.created_at <= end
    ]
    items, token = page(ids, p.get("nextToken"))
    return {"deployments": items, **({"nextToken": token} if token else {})}


def stop_deployment(sim: CodeDeploySim, p: Params) -> Params:
    d = deployment_of(sim, p["deploymentId"])
    if d.done:
        raise SimError("DeploymentAlreadyCompletedException", f"Deployment {d.deployment_id} is already completed")
    group = sim.groups[(d.app, d.group)]
    rollback = p.get("autoRollbackEnabled")
    if rollback is None:
        rollback = group.rollback_on("DEPLOYMENT_STOP_ON_REQUEST")
    if d.stop_requested:
        return {"status": "Pending", "statusMessage": f"Deployment {d.deployment_id} is being stopped"}
    status = sim.stop(d, rollback=bool(rollback))
    message = "stopped" if status == "Succeeded" else "is being stopped"
    return {"status": status, "statusMessage": f"Deployment {d.deployment_id} {message}"}


def list_deployment_targets(sim: CodeDeploySim, p: Params) -> Params:
    d = deployment_of(sim, p["deploymentId"])
    wanted = set((p.get("targetFilters") or {}).get("TargetStatus") or [])
    ids = [i for i, run in sorted(d.instances.items()) if not wanted or run.status in wanted]
    items, token = page(ids, p.get("nextToken"))
    return {"targetIds": items, **({"nextToken": token} if token else {})}


def batch_get_deployment_targets(sim: CodeDeploySim, p: Params) -> Params:
    d = deployment_of(sim, p["deploymentId"])
    ids = p["targetIds"]
    if len(ids) > BATCH:
        raise SimError(
            "DeploymentTargetListSizeExceededException",
            f"The maximum number of targets that can be associated with a deployment ({BATCH}) was exceeded.",
        )
    now = sim.now()
    out = []
    for target_id in ids:
        run = d.instances.get(target_id)
        if run is None:
            raise SimError("DeploymentTargetDoesNotExistException", f"Target {target_id} not in {d.deployment_id}")
        out.append(
            {
                "deploymentTargetType": "InstanceTarget",
                "instanceTarget": {
                    "deploymentId": d.deployment_id,
                    "targetId": target_id,
                    "targetArn": f"arn:aws:ec2:{sim.region}:{sim.account}:instance/{target_id}",
                    "status": run.status,
                    "lastUpdatedAt": EPOCH + (run.ended_at if run.ended_at is not None else now),
                    "lifecycleEvents": run.events_at(now),
                    "instanceLabel": "Blue",
                },
            }
        )
    return {"deploymentTargets": out}


OPERATIONS = {
    "CreateDeployment": create_deployment,
    "GetDeployment": get_deployment,
    "BatchGetDeployments": batch_get_deployments,
    "ListDeployments": list_deployments,
    "StopDeployment": stop_deployment,
    "ListDeploymentTargets": list_deployment_targets,
    "BatchGetDeploymentTargets": batch_get_deployment_targets,
}
