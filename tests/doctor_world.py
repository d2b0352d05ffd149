"""A healthy codedeploy target for `fab doctor` tests: moto (S3, KMS, IAM, STS, Auto Scaling, SQS, Glue)
plus the CodeDeploy simulator, set up as a user would before the first deploy; `run` runs doctor on it."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from deploytool.config import CodeDeployTarget, Fleet, load_fleet
from deploytool.doctor.checks import Check
from deploytool.doctor.command import DoctorFailed, run_doctor
from deploytool.rollout.setup import apply_setup, plan_setup
from tests.cdsim.env import CodeDeployEnv, codedeploy_env

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"acme-email-workers": 2, "acme-reports-workers": 3, "acme-video-workers": 2}
BUCKET = "acme-deploy-artifacts"
ROLE = "CodeDeployServiceRole"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "codedeploy.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}
QUEUES = {"email": 1800, "reports": 1800, "video": 60}  # the sample fleet's visibility_timeout per queue
TABLES = ("inventory", "releases")


@dataclass
class Outcome:
    checks: list[Check]
    output: str
    exit_code: int

    def status(self, name: str) -> str:
        return next(c.status for c in self.checks if c.name == name)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def failed(self) -> list[str]:
        return [c.name for c in self.checks if c.status == "fail"]


@dataclass
class World:
    env: CodeDeployEnv
    fleet: Fleet
    key_arn: str

    def client(self, service: str) -> Any:
        return self.env.boto.client(service)

    def run(self, *, as_json: bool = False, read_only: bool = False) -> Outcome:
        out = io.StringIO()
        _, target = self.fleet.target("production")
        assert isinstance(target, CodeDeployTarget)
        console = Console(file=out, width=400, color_system=None)
        try:
            found = run_doctor(
                self.fleet,
                "production",
                target,
                self.env.aws,
                console,
                athena_database="deploytool",
                as_json=as_json,
                read_only=read_only,
            )
            code = 0
        except DoctorFailed as exc:
            code = exc.exit_code
            out.write(f"error: {exc}\n")
            found = []
        text = out.getvalue()
        if as_json:
            document = json.loads(text.split("error: ")[0])
            found = [Check(**c) for c in document["checks"]]
        elif not found:
            found = [parse(line) for line in text.splitlines() if not line.startswith("error: ")]
        return Outcome(found, text, code)


def parse(line: str) -> Check:
    status, name, rest = line.split(None, 2)
    message, _, fix = rest.partition("; fix: ")
    return Check(name, status, message, fix)  # type: ignore[arg-type]


def encryption_rule(key_arn: str) -> dict[str, Any]:
    return {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}}]}


def install_hooks(world_env: CodeDeployEnv, application: str, names: list[str]) -> None:
    """The ASG lifecycle hooks CodeDeploy installs when a deployment group is created (the simulator only
    names them in the group's info; moto's Auto Scaling holds them)."""
    autoscaling = world_env.boto.client("autoscaling")
    for info in world_env.gateway.get_deployment_groups(application, names):
        for asg in info["autoScalingGroups"]:
            for key, transition in (("hook", "LAUNCHING"), ("terminationHook", "TERMINATING")):
                if key in asg:
                    autoscaling.put_lifecycle_hook(
                        LifecycleHookName=asg[key],
                        AutoScalingGroupName=asg["name"],
                        LifecycleTransition=f"autoscaling:EC2_INSTANCE_{transition}",
                        HeartbeatTimeout=600,
                        DefaultResult="ABANDON",
                    )


@contextmanager
def healthy_world(tmp_path: Path) -> Iterator[World]:
    """The sample fleet's production target, set up: a versioned, SSE-KMS bucket in the fleet's region, an
    enabled key, the service role, `fab setup` applied with CodeDeploy's hooks on the
    ASGs, the queues with the fleet's visibility timeouts, and the Athena database with both tables."""
    with codedeploy_env(SIZES) as env:
        boto = env.boto
        key_arn = boto.client("kms").create_key(Description="deploytool artifacts")["KeyMetadata"]["Arn"]
        s3 = boto.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration=encryption_rule(key_arn))
        boto.client("iam").create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(TRUST))
        sqs = boto.client("sqs")
        for queue, visibility in QUEUES.items():
            sqs.create_queue(QueueName=queue, Attributes={"VisibilityTimeout": str(visibility)})
        glue = boto.client("glue")
        glue.create_database(DatabaseInput={"Name": "deploytool"})
        for table in TABLES:
            glue.create_table(DatabaseName="deploytool", TableInput={"Name": table})

        text = (ROOT / "deploy.toml").read_text()
        text = text.replace('prefix = "deploytool"\n', f'prefix = "deploytool"\nkms_key_id = "{key_arn}"\n')
        (tmp_path / "deploy.toml").write_text(text)
        shutil.copytree(ROOT / "sample_app", tmp_path / "sample_app", ignore=shutil.ignore_patterns("__pycache__"))
        fleet = load_fleet(tmp_path / "deploy.toml")
        assert fleet.artifacts.kms_key_id == key_arn

        _, target = fleet.target("production")
        assert isinstance(target, CodeDeployTarget)
        apply_setup(plan_setup(fleet, target, env.gateway), env.gateway)
        install_hooks(env, "acme-workers", [g.name for g in fleet.groups])
        yield World(env, fleet, key_arn)
