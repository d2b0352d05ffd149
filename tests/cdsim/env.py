"""A whole simulated AWS for rollout tests and benchmarks: moto (S3, EC2, Auto Scaling) plus the
CodeDeploy simulator, one boto3 session, one simulated clock.

    with codedeploy_env({"asg-email": 3, "asg-video": 2}) as env:
        env.gateway / env.backend / env.sim / env.clock / env.aws (AwsSession) / env.asg_instances
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from moto import mock_aws

from deploytool.aws.codedeploy import CodeDeployGateway
from deploytool.aws.session import AwsSession
from deploytool.rollout.clock import SimulatedClock
from deploytool.rollout.codedeploy import CodeDeployBackend
from tests.cdsim.sim import CodeDeploySim, Durations
from tests.cdsim.wire import install

REGION = "us-east-1"
MOTO_AMI = "ami-12c6146b"  # moto's EXAMPLE_AMI_ID
# moto answers every AWS URL it knows; CodeDeploy must reach the simulator's handler instead.
MOTO_CONFIG: Any = {"core": {"passthrough": {"services": ["codedeploy"]}}}
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


def moto_fleet(autoscaling: Any) -> Callable[[str], Sequence[str] | None]:
    """Instances of an ASG as moto's Auto Scaling has them (InService only); None when it does not exist."""

    def instances(asg: str) -> Sequence[str] | None:
        found = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[asg])["AutoScalingGroups"]
        if not found:
            return None
        return [i["InstanceId"] for i in found[0]["Instances"] if i["LifecycleState"] == "InService"]

    return instances


def create_asgs(session: boto3.Session, sizes: Mapping[str, int]) -> dict[str, list[str]]:
    ec2, autoscaling = session.client("ec2"), session.client("autoscaling")
    # one of moto's built-in AMIs by id: listing all of them (1300) takes seconds of serialisation
    images = ec2.describe_images(Filters=[{"Name": "image-id", "Values": [MOTO_AMI]}])["Images"]
    image = (images or ec2.describe_images(Owners=["amazon"])["Images"])[0]["ImageId"]
    ec2.create_launch_template(
        LaunchTemplateName="deploytool-test", LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"}
    )
    for name, size in sizes.items():
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchTemplate={"LaunchTemplateName": "deploytool-test"},
            MinSize=size,
            MaxSize=size,
            DesiredCapacity=size,
            AvailabilityZones=[f"{REGION}a"],
        )
    fleet = moto_fleet(autoscaling)
    return {name: sorted(fleet(name) or []) for name in sizes}


@dataclass
class CodeDeployEnv:
    clock: SimulatedClock
    sim: CodeDeploySim
    boto: boto3.Session
    aws: AwsSession
    gateway: CodeDeployGateway
    asg_instances: dict[str, list[str]]

    def backend(self, application: str = "acme-workers", *, restart_mode: bool = False) -> CodeDeployBackend:
        """restart_mode: the fleet declares agents 2.1.0+ (App.restart_mode), as deploytool.targets passes it."""
        return CodeDeployBackend(self.gateway, application=application, restart_mode=restart_mode)


@contextmanager
def codedeploy_env(
    sizes: Mapping[str, int],
    *,
    throttle_rate: float = 0.0,
    durations: Durations | None = None,
    seed: int = 0,
    retries: dict[str, Any] | None = None,
) -> Iterator[CodeDeployEnv]:
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    try:
        with mock_aws(config=MOTO_CONFIG):
            boto = boto3.Session(region_name=REGION)
            instances = create_asgs(boto, sizes)
            clock = SimulatedClock()
            sim = CodeDeploySim(
                clock,
                fleet=moto_fleet(boto.client("autoscaling")),
                durations=durations,
                throttle_rate=throttle_rate,
                seed=seed,
            )
            install(sim, boto)
            aws = AwsSession(region=REGION, boto_session=boto, retries=retries)
            yield CodeDeployEnv(clock, sim, boto, aws, CodeDeployGateway(aws), instances)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
