"""The sandbox fleet in moto: a launch template, one Auto Scaling group per fleet group, and a
directory per instance.

Contract: `provision()` creates the launch template and each group's ASG (DesiredCapacity = the
target's instance count for that group) through the same gateways production uses
(deploytool.aws.ec2 / autoscaling), then `sync()`. `sync()` makes the directory and the env file
of every instance the ASGs have that has none yet, and returns those new instances per group (the
backend then deploys them the group's last successful revision, as CodeDeploy's launch hook does).
The env file (the app's env_file, under the instance root) holds CELERY_BROKER_URL,
CELERY_BROKER_TRANSPORT_OPTIONS (JSON) and ACME_LEDGER (the sample app's ledger). Instance
directories are never deleted here, so a terminated instance's logs and ledger stay readable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploytool.aws.autoscaling import AutoScalingGateway
from deploytool.aws.ec2 import Ec2Gateway
from deploytool.aws.session import AwsSession
from deploytool.config import Fleet, Group, LocalTarget
from deploytool.errors import AwsError
from deploytool.sandbox.errors import SandboxError
from deploytool.sandbox.instance import Instance

LAUNCH_TEMPLATE = "deploytool-sandbox"
LIVE_STATES = ("Pending", "Pending:Wait", "Pending:Proceed", "Standby", "InService")


@dataclass(frozen=True)
class Broker:
    """What the workers (and the load generator) connect to."""

    url: str
    transport_options: Mapping[str, Any] = field(default_factory=dict)


TELEMETRY_INTERVAL_S = 5.0  # the workers publish this often here (no bill: fresh figures for the gate, --live)


def sandbox_broker(target: LocalTarget, *, region: str, moto_port: int) -> Broker:
    """`sqs` means the sandbox's own moto SQS; otherwise the target's redis/amqp URL as given."""
    if target.broker == "sqs":
        return Broker(
            f"sqs://sandbox:sandbox@127.0.0.1:{moto_port}",
            {"region": region, "is_secure": False, "wait_time_seconds": 1, "polling_interval": 0.5},
        )
    return Broker(target.broker)


class SandboxFleet:
    def __init__(
        self,
        fleet: Fleet,
        *,
        root: Path,
        aws: AwsSession,
        broker: Broker,
        sizes: Mapping[str, int],
        imds_url: str | None = None,
    ) -> None:
        self.config = fleet
        self.root = root
        self.imds_url = imds_url
        self.s3_endpoint = aws.endpoint_url
        self.broker = broker
        self.sizes = dict(sizes)
        self.ec2 = Ec2Gateway(aws)
        self.asgs = AutoScalingGateway(aws)
        self.zones = (f"{aws.region}a", f"{aws.region}b")

    @property
    def groups(self) -> tuple[Group, ...]:
        return tuple(g for g in self.config.groups if g.name in self.sizes)

    def provision(self) -> dict[str, list[Instance]]:
        template = self.ec2.ensure_launch_template(LAUNCH_TEMPLATE, self.ec2.any_image_id())
        existing = self.asgs.describe_groups([g.asg for g in self.groups])
        for group in self.groups:
            if group.asg in existing:
                continue
            self.asgs.create_group(
                group.asg,
                launch_template_id=template,
                size=self.sizes[group.name],
                zones=self.zones,
                tags={"deploytool:group": group.name, "deploytool:app": self.config.app.name},
            )
        return self.sync()

    def _dir(self, group: str, instance_id: str) -> Instance:
        return Instance(group, instance_id, self.root / group / instance_id)

    def instances(self, group: Group) -> list[Instance]:
        """The group's live instances (per its ASG), each with its directory."""
        info = self.asgs.describe_groups([group.asg]).get(group.asg)
        if info is None:
            raise SandboxError(f"group {group.name}: its Auto Scaling group {group.asg!r} is not in the sandbox")
        live = sorted(i.instance_id for i in info.instances if i.lifecycle_state in LIVE_STATES)
        out = [self._dir(group.name, iid) for iid in live]
        for instance in out:
            if not instance.root.is_dir():
                self._prepare(instance)
        return out

    def sync(self) -> dict[str, list[Instance]]:
        """Create the directory and env file of instances that have none yet; return them per group."""
        fresh: dict[str, list[Instance]] = {}
        infos = self.asgs.describe_groups([g.asg for g in self.groups])
        for group in self.groups:
            info = infos.get(group.asg)
            for asg_instance in info.instances if info else ():
                instance = self._dir(group.name, asg_instance.instance_id)
                if asg_instance.lifecycle_state in LIVE_STATES and not instance.root.is_dir():
                    self._prepare(instance)
                    fresh.setdefault(group.name, []).append(instance)
        return fresh

    def _prepare(self, instance: Instance) -> None:
        instance.root.mkdir(parents=True, exist_ok=True)
        app = self.config.app
        env = {
            "CELERY_BROKER_URL": self.broker.url,
            "CELERY_BROKER_TRANSPORT_OPTIONS": json.dumps(dict(self.broker.transport_options), separators=(",", ":")),
            "ACME_LEDGER": str(instance.ledger),
        }
        if self.imds_url:  # the instance's own fake metadata service (deploytool.sandbox.imds)
            env["DEPLOYTOOL_IMDS_ENDPOINT"] = f"{self.imds_url}/{instance.instance_id}"
        if self.s3_endpoint:  # the watcher's records (s3put) and the workers' telemetry go to the moto server
            env["DEPLOYTOOL_S3_ENDPOINT"] = self.s3_endpoint
            env["DEPLOYTOOL_CLOUDWATCH_ENDPOINT"] = self.s3_endpoint
            env["DEPLOYTOOL_TELEMETRY_INTERVAL_S"] = f"{TELEMETRY_INTERVAL_S:g}"
        path = instance.env_file(app)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))

    def hold(self, group: Group, instances: Sequence[Instance]) -> None:
        """Keep new instances out of service (Standby) while their launch deployment runs."""
        if instances:
            self.asgs.enter_standby(group.asg, [i.instance_id for i in instances])

    def admit(self, group: Group, instances: Sequence[Instance], *, ok: bool) -> None:
        """The launch deployment ended: InService when it succeeded; else terminated, as an ASG abandons an
        instance whose launch hook failed (without a replacement here, so a broken revision cannot loop)."""
        for instance in instances:
            try:
                if ok:
                    self.asgs.exit_standby(group.asg, [instance.instance_id])
                else:
                    self.asgs.terminate_instance(instance.instance_id, decrement=True)
            except AwsError:  # scaled in (terminated) meanwhile
                continue

    def scale_out(self, group: Group, count: int) -> None:
        """Raise the ASG's desired capacity; `sync()` (or the backend's) then sees the new instances."""
        info = self.asgs.describe_groups([group.asg])[group.asg]
        self.asgs.set_desired_capacity(group.asg, info.desired + count)

    def terminate(self, instance: Instance, *, decrement: bool = True) -> None:
        """Terminate in the ASG (which launches a replacement unless decrementing)."""
        self.asgs.terminate_instance(instance.instance_id, decrement=decrement)

    def find(self, instance_id: str) -> Instance:
        for group_dir in sorted(self.root.glob("*")):
            if (group_dir / instance_id).is_dir():
                return self._dir(group_dir.name, instance_id)
        raise SandboxError(f"no sandbox instance {instance_id!r} under {self.root}")

    def on_disk(self) -> list[Instance]:
        """Every instance directory, terminated ones included (for teardown and reports)."""
        return [self._dir(d.parent.name, d.name) for d in sorted(self.root.glob("*/i-*")) if d.is_dir()]
