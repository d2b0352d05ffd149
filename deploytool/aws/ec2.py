"""EC2 gateway: instances (paginated describe), tags (batched), and the sandbox's launch templates."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deploytool.aws.session import AwsSession, describe_aws_error

MOTO_EXAMPLE_AMI = "ami-12c6146b"  # moto's EXAMPLE_AMI_ID, in every moto region's catalogue

# CreateTags takes up to 1000 resources a call; DescribeInstances up to 1000 ids a call.
TAG_BATCH = 1000
DESCRIBE_BATCH = 1000


@dataclass(frozen=True)
class InstanceInfo:
    instance_id: str
    availability_zone: str
    state: str  # pending | running | shutting-down | terminated | stopping | stopped
    launch_time: datetime | None
    market: str  # "spot" or "on-demand"
    tags: Mapping[str, str] = field(default_factory=dict)


def _instance(raw: Mapping[str, Any]) -> InstanceInfo:
    return InstanceInfo(
        instance_id=raw["InstanceId"],
        availability_zone=raw.get("Placement", {}).get("AvailabilityZone", ""),
        state=raw.get("State", {}).get("Name", "unknown"),
        launch_time=raw.get("LaunchTime"),
        market="spot" if raw.get("InstanceLifecycle") == "spot" else "on-demand",
        tags={t["Key"]: t["Value"] for t in raw.get("Tags", [])},
    )


class Ec2Gateway:
    def __init__(self, session: AwsSession) -> None:
        self.client = session.client("ec2")

    def describe_instances(self, instance_ids: Sequence[str]) -> list[InstanceInfo]:
        """The instances named, in batches of 1000, following NextToken."""
        out: list[InstanceInfo] = []
        paginator = self.client.get_paginator("describe_instances")
        for start in range(0, len(instance_ids), DESCRIBE_BATCH):
            chunk = list(instance_ids[start : start + DESCRIBE_BATCH])
            try:
                for page in paginator.paginate(InstanceIds=chunk):
                    for reservation in page.get("Reservations", []):
                        out.extend(_instance(raw) for raw in reservation.get("Instances", []))
            except (ClientError, BotoCoreError) as exc:
                raise describe_aws_error(exc, "DescribeInstances") from exc
        return out

    def create_tags(self, instance_ids: Iterable[str], tags: Mapping[str, str]) -> int:
        """Tag instances with the same tags in as few CreateTags calls as allowed. Returns calls made."""
        ids = sorted(set(instance_ids))
        pairs = [{"Key": k, "Value": v} for k, v in sorted(tags.items())]
        calls = 0
        for start in range(0, len(ids), TAG_BATCH):
            try:
                self.client.create_tags(Resources=ids[start : start + TAG_BATCH], Tags=pairs)
            except (ClientError, BotoCoreError) as exc:
                raise describe_aws_error(exc, "CreateTags") from exc
            calls += 1
        return calls

    # --- sandbox provisioning (moto) -----------------------------------------------------------

    def any_image_id(self) -> str:
        """An AMI id that exists (the sandbox's moto server ships a catalogue of them). moto's own example AMI
        is asked for by id first: listing the catalogue serialises ~1,300 images (seconds a call)."""
        try:
            known = self.client.describe_images(Filters=[{"Name": "image-id", "Values": [MOTO_EXAMPLE_AMI]}])
            if known.get("Images"):
                return MOTO_EXAMPLE_AMI
            images = self.client.describe_images(Owners=["amazon"], MaxResults=5).get("Images", [])
        except (ClientError, BotoCoreError) as exc:
            raise describe_aws_error(exc, "DescribeImages") from exc
        if not images:
            return MOTO_EXAMPLE_AMI
        return str(images[0]["ImageId"])

    def ensure_launch_template(self, name: str, image_id: str, instance_type: str = "t3.micro") -> str:
        try:
            found = self.client.describe_launch_templates(
                Filters=[{"Name": "launch-template-name", "Values": [name]}]
            ).get("LaunchTemplates", [])
            if found:
                return str(found[0]["LaunchTemplateId"])
            created = self.client.create_launch_template(
                LaunchTemplateName=name,
                LaunchTemplateData={"ImageId": image_id, "InstanceType": instance_type},
            )
        except (ClientError, BotoCoreError) as exc:
            raise describe_aws_error(exc, f"launch template {name}") from exc
        return str(created["LaunchTemplate"]["LaunchTemplateId"])
