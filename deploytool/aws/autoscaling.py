"""Auto Scaling gateway: describe groups (paginated, 50 names a call) and the sandbox's ASG calls."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deploytool.aws.session import AwsSession, describe_aws_error

NAMES_PER_CALL = 50


@dataclass(frozen=True)
class AsgInstance:
    instance_id: str
    availability_zone: str
    lifecycle_state: str  # InService, Pending, Terminating, ...
    health_status: str  # Healthy | Unhealthy


@dataclass(frozen=True)
class AsgInfo:
    name: str
    desired: int
    minimum: int
    maximum: int
    instances: tuple[AsgInstance, ...]
    tags: Mapping[str, str] = field(default_factory=dict)
    suspended: tuple[str, ...] = ()


def _asg(raw: Mapping[str, Any]) -> AsgInfo:
    return AsgInfo(
        name=raw["AutoScalingGroupName"],
        desired=raw.get("DesiredCapacity", 0),
        minimum=raw.get("MinSize", 0),
        maximum=raw.get("MaxSize", 0),
        instances=tuple(
            AsgInstance(
                i["InstanceId"], i.get("AvailabilityZone", ""), i.get("LifecycleState", ""), i.get("HealthStatus", "")
            )
            for i in raw.get("Instances", [])
        ),
        tags={t["Key"]: t["Value"] for t in raw.get("Tags", [])},
        suspended=tuple(p["ProcessName"] for p in raw.get("SuspendedProcesses", [])),
    )


class AutoScalingGateway:
    def __init__(self, session: AwsSession) -> None:
        self.client = session.client("autoscaling")

    def describe_groups(self, names: Sequence[str]) -> dict[str, AsgInfo]:
        """The named ASGs that exist, by name (missing ones are simply absent)."""
        out: dict[str, AsgInfo] = {}
        paginator = self.client.get_paginator("describe_auto_scaling_groups")
        for start in range(0, len(names), NAMES_PER_CALL):
            chunk = list(names[start : start + NAMES_PER_CALL])
            try:
                for page in paginator.paginate(AutoScalingGroupNames=chunk):
                    for raw in page.get("AutoScalingGroups", []):
                        info = _asg(raw)
                        out[info.name] = info
            except (ClientError, BotoCoreError) as exc:
                raise describe_aws_error(exc, "DescribeAutoScalingGroups") from exc
        return out

    def lifecycle_hooks(self, name: str) -> dict[str, str]:
        """The ASG's lifecycle hooks: name -> transition (autoscaling:EC2_INSTANCE_LAUNCHING / _TERMINATING)."""
        try:
            hooks = self.client.describe_lifecycle_hooks(AutoScalingGroupName=name).get("LifecycleHooks", [])
        except (ClientError, BotoCoreError) as exc:
            raise describe_aws_error(exc, f"DescribeLifecycleHooks {name}") from exc
        return {str(h["LifecycleHookName"]): str(h.get("LifecycleTransition", "")) for h in hooks}

    # --- sandbox provisioning (moto) -----------------------------------------------------------

    def create_group(
        self, name: str, *, launch_template_id: str, size: int, zones: Sequence[str], tags: Mapping[str, str]
    ) -> None:
        try:
            self.client.create_auto_scaling_group(
                AutoScalingGroupName=name,
                LaunchTemplate={"LaunchTemplateId": launch_template_id, "Version": "$Latest"},
                MinSize=0,
                MaxSize=max(size * 2, size + 5),
                DesiredCapacity=size,
                AvailabilityZones=list(zones),
                Tags=[
                    {
                        "Key": k,
                        "Value": v,
                        "PropagateAtLaunch": True,
                        "ResourceId": name,
                        "ResourceType": "auto-scaling-group",
                    }
                    for k, v in sorted(tags.items())
                ],
            )
        except (ClientError, BotoCoreError) as exc:
            raise describe_aws_error(exc, f"CreateAutoScalingGroup {name}") from exc

    def set_desired_capacity(self, name: str, desired: int) -> None:
        try:
            self.client.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=desired)
        except (ClientError, BotoCoreError) as exc:
            raise describe_aws_error(exc, f"SetDesiredCapacity {name}") from exc

    def enter_standby(self, name: str, instance_ids: Sequence[str]) -> None:
        """Out of service without a replacement (the desired capacity decremented): the sandbox holds an instance
        there during its launch deployment, as a real ASG's launch lifecycle hook holds it in Pending:Wait."""
        try:
            self.client.enter_standby(
                AutoScalingGroupName=name, InstanceIds=list(instance_ids), ShouldDecrementDesiredCapacity=True
            )
        except (ClientError, BotoCoreError) as exc:
            raise describe_aws_error(exc, f"EnterStandby {name}") from exc

    def exit_standby(self, name: str, instance_ids: Sequence[str]) -> None:
        try:
            self.client.exit_standby(AutoScalingGroupName=name, InstanceIds=list(instance_ids))
        except (ClientError, BotoCoreError) as exc:
            raise describe_aws_error(exc, f"ExitStandby {name}") from exc

    def terminate_instance(self, instance_id: str, *, decrement: bool) -> None:
        try:
            self.client.terminate_instance_in_auto_scaling_group(
                InstanceId=instance_id, ShouldDecrementDesiredCapacity=decrement
            )
        except (ClientError, BotoCoreError) as exc:
            raise describe_aws_error(exc, f"TerminateInstanceInAutoScalingGroup {instance_id}") from exc
