"""Simulated CodeDeploy operations for set-up: applications, deployment groups, configs, revisions.

Each handler takes the simulator and the request's JSON (already validated by botocore against the
service model) and returns the response JSON, or raises SimError with the service's error code.
"""

from __future__ import annotations

from typing import Any

from tests.cdsim.model import BUILTIN_MIN_HEALTHY, EPOCH, Application, DeploymentConfig, DeploymentGroup
from tests.cdsim.sim import CodeDeploySim, SimError, revision_key

Params = dict[str, Any]
PAGE = 100
GROUP_FIELDS = (
    "deploymentConfigName",
    "autoScalingGroups",
    "serviceRoleArn",
    "alarmConfiguration",
    "autoRollbackConfiguration",
    "outdatedInstancesStrategy",
    "deploymentStyle",
    "terminationHookEnabled",
    "ec2TagFilters",
    "triggerConfigurations",
)


def app_of(sim: CodeDeploySim, name: str) -> Application:
    if name not in sim.apps:
        raise SimError("ApplicationDoesNotExistException", f"No application found for name: {name}")
    return sim.apps[name]


def group_of(sim: CodeDeploySim, app: str, name: str) -> DeploymentGroup:
    app_of(sim, app)
    if (app, name) not in sim.groups:
        raise SimError("DeploymentGroupDoesNotExistException", f"No Deployment Group found for name: {name}")
    return sim.groups[(app, name)]


def page(items: list[str], token: str | None) -> tuple[list[str], str | None]:
    start = int(token or 0)
    end = start + PAGE
    return items[start:end], (str(end) if end < len(items) else None)


def create_application(sim: CodeDeploySim, p: Params) -> Params:
    name = p["applicationName"]
    if name in sim.apps:
        raise SimError("ApplicationAlreadyExistsException", f"An application with the name {name} already exists")
    app = Application(name, sim.next_id("app-"), sim.now())
    sim.apps[name] = app
    return {"applicationId": app.application_id}


def get_application(sim: CodeDeploySim, p: Params) -> Params:
    app = app_of(sim, p["applicationName"])
    return {
        "application": {
            "applicationId": app.application_id,
            "applicationName": app.name,
            "createTime": EPOCH + app.created_at,
            "linkedToGitHub": False,
            "computePlatform": "Server",
        }
    }


def list_applications(sim: CodeDeploySim, p: Params) -> Params:
    items, token = page(sorted(sim.apps), p.get("nextToken"))
    return {"applications": items, **({"nextToken": token} if token else {})}


def _check_group_settings(sim: CodeDeploySim, settings: Params) -> None:
    for asg in settings.get("autoScalingGroups") or []:
        if sim.instances_of(asg) is None:
            raise SimError("InvalidAutoScalingGroupException", f"Auto Scaling group {asg} does not exist")
    config = settings.get("deploymentConfigName")
    if config and config not in sim.configs:
        raise SimError("DeploymentConfigDoesNotExistException", f"No deployment configuration found for name: {config}")
    alarms = (settings.get("alarmConfiguration") or {}).get("alarms") or []
    if len(alarms) > 10:
        raise SimError("AlarmsLimitExceededException", "The maximum number of alarms for a deployment group is 10")


def create_deployment_group(sim: CodeDeploySim, p: Params) -> Params:
    app = app_of(sim, p["applicationName"])
    name = p["deploymentGroupName"]
    if (app.name, name) in sim.groups:
        raise SimError("DeploymentGroupAlreadyExistsException", f"Deployment group {name} already exists")
    settings = {k: p[k] for k in GROUP_FIELDS if k in p}
    _check_group_settings(sim, settings)
    group = DeploymentGroup(app.name, name, sim.next_id("dg-"), settings)
    sim.groups[(app.name, name)] = group
    return {"deploymentGroupId": group.group_id}


def update_deployment_group(sim: CodeDeploySim, p: Params) -> Params:
    group = group_of(sim, p["applicationName"], p["currentDeploymentGroupName"])
    settings = {k: p[k] for k in GROUP_FIELDS if k in p}
    _check_group_settings(sim, settings)
    group.settings.update(settings)
    new_name = p.get("newDeploymentGroupName")
    if new_name and new_name != group.name:
        del sim.groups[(group.app, group.name)]
        group.name = new_name
        sim.groups[(group.app, new_name)] = group
    return {"hooksNotCleanedUp": []}


def group_info(sim: CodeDeploySim, group: DeploymentGroup) -> Params:
    s = group.settings
    info: Params = {
        "applicationName": group.app,
        "deploymentGroupId": group.group_id,
        "deploymentGroupName": group.name,
        "deploymentConfigName": group.config_name,
        "autoScalingGroups": [
            {
                "name": asg,
                "hook": f"CodeDeploy-managed-automatic-launch-deployment-hook-{group.name}-{group.group_id}",
                **(
                    {"terminationHook": f"CodeDeploy-managed-termination-hook-{group.name}-{group.group_id}"}
                    if s.get("terminationHookEnabled")
                    else {}
                ),
            }
            for asg in group.asgs
        ],
        "serviceRoleArn": s.get("serviceRoleArn"),
        "ec2TagFilters": s.get("ec2TagFilters", []),
        "triggerConfigurations": s.get("triggerConfigurations", []),
        "alarmConfiguration": s.get(
            "alarmConfiguration", {"enabled": False, "ignorePollAlarmFailure": False, "alarms": []}
        ),
        "autoRollbackConfiguration": s.get("autoRollbackConfiguration", {"enabled": False, "events": []}),
        "deploymentStyle": s.get(
            "deploymentStyle", {"deploymentType": "IN_PLACE", "deploymentOption": "WITHOUT_TRAFFIC_CONTROL"}
        ),
        "outdatedInstancesStrategy": s.get("outdatedInstancesStrategy", "UPDATE"),
        "computePlatform": "Server",
        "terminationHookEnabled": bool(s.get("terminationHookEnabled", False)),
    }
    if group.last_successful:
        info["lastSuccessfulDeployment"] = group.last_successful
    if group.last_attempted:
        info["lastAttemptedDeployment"] = group.last_attempted
    if group.target_revision:
        info["targetRevision"] = group.target_revision
    return info


def get_deployment_group(sim: CodeDeploySim, p: Params) -> Params:
    return {"deploymentGroupInfo": group_info(sim, group_of(sim, p["applicationName"], p["deploymentGroupName"]))}


def batch_get_deployment_groups(sim: CodeDeploySim, p: Params) -> Params:
    app = app_of(sim, p["applicationName"])
    names = p["deploymentGroupNames"]
    if len(names) > 100:
        raise SimError(
            "BatchLimitExceededException",
            "The maximum number of names or IDs allowed for this request (100) was exceeded.",
        )
    found = [group_info(sim, sim.groups[(app.name, n)]) for n in names if (app.name, n) in sim.groups]
    missing = [n for n in names if (app.name, n) not in sim.groups]
    out: Params = {"deploymentGroupsInfo": found}
    if missing:
        out["errorMessage"] = f"Deployment groups not found: {', '.join(missing)}"
    return out


def list_deployment_groups(sim: CodeDeploySim, p: Params) -> Params:
    app = app_of(sim, p["applicationName"])
    names = sorted(name for (a, name) in sim.groups if a == app.name)
    items, token = page(names, p.get("nextToken"))
    return {"applicationName": app.name, "deploymentGroups": items, **({"nextToken": token} if token else {})}


def create_deployment_config(sim: CodeDeploySim, p: Params) -> Params:
    name = p["deploymentConfigName"]
    if name in sim.configs:
        raise SimError("DeploymentConfigAlreadyExistsException", f"Deployment config {name} already exists")
    hosts = p.get("minimumHealthyHosts")
    if not hosts or hosts.get("type") not in ("HOST_COUNT", "FLEET_PERCENT"):
        raise SimError("InvalidMinimumHealthyHostValueException", "minimumHealthyHosts type and value are required")
    value = int(hosts.get("value", -1))
    if value < 0 or (hosts["type"] == "FLEET_PERCENT" and value >= 100):
        raise SimError("InvalidMinimumHealthyHostValueException", f"invalid minimum healthy hosts value {value}")
    custom = [c for c in sim.configs if not c.startswith("CodeDeployDefault.")]
    if len(custom) >= 200:
        raise SimError("DeploymentConfigLimitExceededException", "The limit of 200 custom configs was reached")
    config = DeploymentConfig(name, sim.next_id("cfg-"), dict(hosts), sim.now())
    sim.configs[name] = config
    return {"deploymentConfigId": config.config_id}


def get_deployment_config(sim: CodeDeploySim, p: Params) -> Params:
    name = p["deploymentConfigName"]
    if name not in sim.configs:
        raise SimError("DeploymentConfigDoesNotExistException", f"No deployment configuration found for name: {name}")
    config = sim.configs[name]
    return {
        "deploymentConfigInfo": {
            "deploymentConfigId": config.config_id,
            "deploymentConfigName": name,
            "minimumHealthyHosts": BUILTIN_MIN_HEALTHY.get(name, config.min_healthy),
            "createTime": EPOCH + config.created_at,
            "computePlatform": "Server",
        }
    }


def list_deployment_configs(sim: CodeDeploySim, p: Params) -> Params:
    items, token = page(sorted(sim.configs), p.get("nextToken"))
    return {"deploymentConfigsList": items, **({"nextToken": token} if token else {})}


def register_application_revision(sim: CodeDeploySim, p: Params) -> Params:
    app = app_of(sim, p["applicationName"])
    revision = p["revision"]
    if revision.get("revisionType") != "S3" or "s3Location" not in revision:
        raise SimError("InvalidRevisionException", "The revision must be an S3 revision")
    app.revisions[revision_key(revision)] = {
        "revision": revision,
        "description": p.get("description", ""),
        "registerTime": EPOCH + sim.now(),
    }
    return {}


def get_application_revision(sim: CodeDeploySim, p: Params) -> Params:
    app = app_of(sim, p["applicationName"])
    entry = app.revisions.get(revision_key(p["revision"]))
    if entry is None:
        raise SimError("RevisionDoesNotExistException", "No application revision found for revision")
    return {
        "applicationName": app.name,
        "revision": entry["revision"],
        "revisionInfo": {"description": entry["description"], "registerTime": entry["registerTime"]},
    }


OPERATIONS = {
    "CreateApplication": create_application,
    "GetApplication": get_application,
    "ListApplications": list_applications,
    "CreateDeploymentGroup": create_deployment_group,
    "UpdateDeploymentGroup": update_deployment_group,
    "GetDeploymentGroup": get_deployment_group,
    "BatchGetDeploymentGroups": batch_get_deployment_groups,
    "ListDeploymentGroups": list_deployment_groups,
    "CreateDeploymentConfig": create_deployment_config,
    "GetDeploymentConfig": get_deployment_config,
    "ListDeploymentConfigs": list_deployment_configs,
    "RegisterApplicationRevision": register_application_revision,
    "GetApplicationRevision": get_application_revision,
}
