"""`fab setup` for a codedeploy target: plan (read-only) then apply.

Contract:
- `plan_setup(fleet, target, gateway)` reads remote state with Get/List/BatchGet calls only and returns
  a SetupPlan: plain actions (create the application; create each custom deployment config a
  min_healthy strategy needs; create or update one deployment group per fleet group). An empty plan
  means everything already matches: running setup twice plans nothing the second time.
- One deployment group per ASG: a group of the application that already sits on a fleet group's ASG
  under another name is a SetupConflict (two groups on one ASG cause lifecycle hook timeouts).
  A custom config of our deterministic name with other minimum healthy hosts is a conflict too
  (configs cannot be changed).
- `apply_setup(plan, gateway)` runs the actions in order; `describe(plan)` renders it for --dry-run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from deploytool.aws.codedeploy import CodeDeployGateway
from deploytool.config import CodeDeployTarget, Fleet, Group, Strategy
from deploytool.errors import DeployToolError

ActionKind = Literal["create-application", "create-config", "create-group", "update-group"]


class SetupConflict(DeployToolError):
    """Remote state that setup must not overwrite (another group on the ASG, a config that differs)."""

    exit_code = 2


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    changes: tuple[str, ...] = ()  # for update-group: the settings that differ

    def line(self) -> str:
        if self.kind == "update-group":
            return f"update deployment group {self.name}: {', '.join(self.changes)}"
        what = {
            "create-application": "application",
            "create-config": "deployment config",
            "create-group": "deployment group",
        }[self.kind]
        return f"create {what} {self.name}"


@dataclass(frozen=True)
class SetupPlan:
    application: str
    actions: tuple[Action, ...]

    @property
    def empty(self) -> bool:
        return not self.actions


def application_name(fleet: Fleet, target: CodeDeployTarget) -> str:
    return target.application or fleet.app.name


def min_healthy_hosts(strategy: Strategy) -> dict[str, Any] | None:
    """The custom config's minimumHealthyHosts, or None for a built-in config."""
    if strategy.kind == "HostCount":
        return {"type": "HOST_COUNT", "value": strategy.value}
    if strategy.kind == "FleetPercent":
        return {"type": "FLEET_PERCENT", "value": strategy.value}
    return None


def desired_group(group: Group, target: CodeDeployTarget) -> dict[str, Any]:
    events = ["DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_REQUEST"]
    if group.alarms:
        events.append("DEPLOYMENT_STOP_ON_ALARM")
    return {
        "deploymentConfigName": group.strategy.deployment_config_name,
        "autoScalingGroups": [group.asg],
        "serviceRoleArn": target.service_role_arn,
        "autoRollbackConfiguration": {"enabled": True, "events": events},
        "outdatedInstancesStrategy": target.outdated_instances,
        "terminationHookEnabled": target.termination_hook,
        "deploymentStyle": {"deploymentType": "IN_PLACE", "deploymentOption": "WITHOUT_TRAFFIC_CONTROL"},
        "alarmConfiguration": {
            "enabled": bool(group.alarms),
            "ignorePollAlarmFailure": False,
            "alarms": [{"name": a} for a in group.alarms],
        },
    }


def _comparable(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings we manage, normalised so desired and remote compare equal when they match."""
    asgs = [a["name"] if isinstance(a, Mapping) else a for a in settings.get("autoScalingGroups") or []]
    rollback = settings.get("autoRollbackConfiguration") or {}
    alarms = settings.get("alarmConfiguration") or {}
    style = settings.get("deploymentStyle") or {}
    return {
        "deploymentConfigName": settings.get("deploymentConfigName"),
        "autoScalingGroups": sorted(asgs),
        "serviceRoleArn": settings.get("serviceRoleArn"),
        "autoRollbackConfiguration": (bool(rollback.get("enabled")), sorted(rollback.get("events") or [])),
        "outdatedInstancesStrategy": settings.get("outdatedInstancesStrategy") or "UPDATE",
        "terminationHookEnabled": bool(settings.get("terminationHookEnabled")),
        "deploymentStyle": (
            style.get("deploymentType", "IN_PLACE"),
            style.get("deploymentOption", "WITHOUT_TRAFFIC_CONTROL"),
        ),
        "alarmConfiguration": (bool(alarms.get("enabled")), sorted(a["name"] for a in alarms.get("alarms") or [])),
    }


def plan_setup(
    fleet: Fleet, target: CodeDeployTarget, gateway: CodeDeployGateway, groups: Sequence[Group] | None = None
) -> SetupPlan:
    app = application_name(fleet, target)
    chosen = list(groups if groups is not None else fleet.groups)
    actions: list[Action] = []
    existing: dict[str, Mapping[str, Any]] = {}
    if gateway.get_application(app) is None:
        actions.append(Action("create-application", app))
    else:
        names = gateway.list_deployment_groups(app)
        existing = {info["deploymentGroupName"]: info for info in gateway.get_deployment_groups(app, names)}

    seen: set[str] = set()
    for group in chosen:
        hosts = min_healthy_hosts(group.strategy)
        name = group.strategy.deployment_config_name
        if hosts is None or name in seen:
            continue
        seen.add(name)
        remote = gateway.get_deployment_config(name)
        if remote is None:
            actions.append(Action("create-config", name, {"minimumHealthyHosts": hosts}))
        elif dict(remote.get("minimumHealthyHosts") or {}) != hosts:
            raise SetupConflict(
                f"deployment config {name} exists with minimumHealthyHosts {remote.get('minimumHealthyHosts')}, "
                f"not {hosts}; configs cannot be changed: delete it or pick another strategy"
            )

    for group in chosen:
        for other, remote_group in existing.items():
            asgs = _comparable(remote_group)["autoScalingGroups"]
            if other != group.name and group.asg in asgs:
                raise SetupConflict(
                    f"ASG {group.asg} (group {group.name}) already belongs to deployment group {other} of "
                    f"application {app}; CodeDeploy needs exactly one deployment group per ASG (two cause "
                    "lifecycle hook timeouts): remove it from that group, or rename the fleet group to "
                    f"{other}"
                )
        want = desired_group(group, target)
        current = existing.get(group.name)
        if current is None:
            actions.append(Action("create-group", group.name, want))
            continue
        have, need = _comparable(current), _comparable(want)
        changes = tuple(k for k in need if have[k] != need[k])
        if changes:
            actions.append(Action("update-group", group.name, want, changes))
    return SetupPlan(app, tuple(actions))


def apply_setup(plan: SetupPlan, gateway: CodeDeployGateway, on_action: Callable[[Action], None] | None = None) -> None:
    for action in plan.actions:
        if on_action is not None:
            on_action(action)
        if action.kind == "create-application":
            gateway.create_application(action.name)
        elif action.kind == "create-config":
            gateway.create_deployment_config(action.name, action.params["minimumHealthyHosts"])
        elif action.kind == "create-group":
            gateway.create_deployment_group(plan.application, action.name, action.params)
        else:
            gateway.update_deployment_group(plan.application, action.name, action.params)


def describe(plan: SetupPlan) -> list[str]:
    if plan.empty:
        return [f"application {plan.application}: everything is set up; nothing to do"]
    return [f"application {plan.application}: {len(plan.actions)} change(s)"] + [f"  {a.line()}" for a in plan.actions]
