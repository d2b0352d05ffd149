"""Test support for reconcile: a moto fleet (ASGs with instances, tags, release manifests in S3), the tests'
FakeBackend (tests/fakes.py) deploying to its instances, and a --fix runner on it. Used by tests/test_reconcile_*.py."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from deploytool.aws.autoscaling import AutoScalingGateway
from deploytool.aws.ec2 import Ec2Gateway
from deploytool.aws.s3 import S3Gateway
from deploytool.aws.session import AwsSession
from deploytool.config import Group
from deploytool.model import manifest_key as release_key
from deploytool.reconcile.fix import FixRunner
from deploytool.reconcile.pipeline import ReconcileServices
from deploytool.rollout.backend import DeployRequest
from deploytool.rollout.tags import FinishedDeployment
from tests.builders import BUCKET, PRODUCTION
from tests.fakes import EPOCH, FakeBackend, FakeClock

REGION = "us-east-1"
PREFIX = "deploytool"
APP = "acme-workers"
T0 = EPOCH
TARGETS = {"sandbox": {"backend": "local"}, "production": PRODUCTION}  # make_fleet(..., targets=TARGETS)


@contextlib.contextmanager
def mocked_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsSession]:
    """moto for every AWS service, with fake credentials; yields the one AwsSession."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield AwsSession(region=REGION)


def stubbed_session() -> AwsSession:
    """A session whose clients talk to nothing (for botocore's Stubber)."""
    return AwsSession(
        region=REGION, boto_session=boto3.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name=REGION)
    )


@dataclass
class MotoFleet:
    """A fleet on moto (inside mock_aws): one ASG per group, the bucket, and the gateways."""

    session: AwsSession
    clock: FakeClock = field(default_factory=FakeClock)

    def __post_init__(self) -> None:
        self.ec2 = Ec2Gateway(self.session)
        self.asg = AutoScalingGateway(self.session)
        self.s3 = S3Gateway(self.session)
        self.s3.create_bucket(BUCKET, REGION)
        self.template = self.ec2.ensure_launch_template("acme-workers", self.ec2.any_image_id())

    def services(self) -> ReconcileServices:
        from deploytool.aws.athena import AthenaGateway

        return ReconcileServices(
            s3=self.s3,
            autoscaling=self.asg,
            ec2=self.ec2,
            athena=AthenaGateway(self.session),
            now=self.clock.wall,
            sleep=self.clock.sleep,
            clock=self.clock.now,
        )

    def create_group(self, group: Group, size: int) -> list[str]:
        self.asg.create_group(
            group.asg,
            launch_template_id=self.template,
            size=size,
            zones=[f"{REGION}a", f"{REGION}b"],
            tags={"deploytool:group": group.name},
        )
        return self.instance_ids(group)

    def instance_ids(self, group: Group) -> list[str]:
        info = self.asg.describe_groups([group.asg])[group.asg]
        return sorted(i.instance_id for i in info.instances)

    def scale(self, group: Group, size: int) -> list[str]:
        """Set desired capacity; returns the instances that were added."""
        before = set(self.instance_ids(group))
        self.asg.set_desired_capacity(group.asg, size)
        return sorted(set(self.instance_ids(group)) - before)

    def write_release(
        self,
        release_id: str,
        version: str,
        groups: Sequence[Group],
        *,
        target: str = "sandbox",
        pretty: bool = False,
        outcomes: Mapping[str, str | None] | None = None,
        deployments: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A release manifest as the rollout leaves it: each group's `outcome` is "succeeded" unless
        `outcomes` says otherwise (None: no outcome field, as in manifests written before it)."""
        created = datetime.strptime(release_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        key = f"{PREFIX}/{APP}/{version}/{'0' * 64}.tgz"
        manifest = {
            "release_id": release_id,
            "app": APP,
            "version": version,
            "target": target,
            "bundle_uri": f"s3://{BUCKET}/{key}",
            "bucket": BUCKET,
            "key": key,
            "etag": '"etag"',
            "sha256": "0" * 64,
            "commit": "abc1234",
            "created_by": "tests",
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "groups": [
                {
                    "group": g.name,
                    "asg": g.asg,
                    "expected_version": version,
                    "strategy": g.strategy.label,
                    "wave": g.wave,
                }
                | ({} if (outcome := (outcomes or {}).get(g.name, "succeeded")) is None else {"outcome": outcome})
                for g in groups
            ],
            "deployments": dict(deployments or {}),
        }
        body = json.dumps(manifest, indent=2 if pretty else None) + "\n"
        self.s3.put_bytes(BUCKET, release_key(PREFIX, APP, release_id), body.encode(), content_type="application/json")
        return manifest


def fake_backend(fleet: MotoFleet, failing: Collection[str] = ()) -> FakeBackend:
    """The tests' FakeBackend on this moto fleet: a deployment goes to the group's ASG instances (or the
    request's targets); the `failing` ones fail."""
    return FakeBackend(fleet.clock, instances=fleet.instance_ids, failing=set(failing))


def fix_runner(backend: FakeBackend) -> FixRunner:
    """`reconcile --fix`'s runner on the fake backend, in one step per request: started, finished at once
    (at the clock's wall time)."""

    def run(requests: Sequence[DeployRequest]) -> list[FinishedDeployment]:
        finished = []
        for request in requests:
            deployment_id = backend.start(request)
            assert request.revision is not None
            finished.append(
                FinishedDeployment(
                    request.group.name,
                    deployment_id,
                    request.revision.version,
                    request.release_id,
                    backend.clock.wall(),
                )
            )
        return finished

    return run
