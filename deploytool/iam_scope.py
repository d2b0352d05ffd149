"""What the IAM policies of deploytool.iam name, read from one fleet: its Scope.

Contract: no I/O. `scope_for(fleet, target, ...)` reads the bucket, prefix, app, CodeDeploy application,
deployment groups and their configs, ASGs, queues, KMS key, region and account from the fleet file, plus the
Athena names `fab reconcile` uses; `Scope.arn` and `Scope.s3` write ARNs in the region's partition (an
unknown account is `*`).
"""

from __future__ import annotations

from dataclasses import dataclass

from deploytool.aws.sqs import sqs_queue_name as sqs_queue_name  # where the SQS gateway needs it too
from deploytool.config import CodeDeployTarget, Fleet
from deploytool.rollout.setup import application_name, min_healthy_hosts


@dataclass(frozen=True)
class GroupScope:
    name: str
    asg: str
    queues: tuple[str, ...]
    config: str  # its CodeDeploy deployment config
    alarms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scope:
    region: str
    account: str | None  # None: unknown, `*` in ARNs
    bucket: str
    prefix: str
    app: str
    application: str  # the CodeDeploy application
    groups: tuple[GroupScope, ...]
    custom_configs: tuple[str, ...]  # deployment configs `fab setup` creates
    service_role_arn: str
    kms_key_id: str | None
    database: str
    workgroup: str
    output_location: str  # s3://bucket/path/ of Athena's results
    sqs: bool = True  # the workers' broker is SQS

    @property
    def partition(self) -> str:
        if self.region.startswith("cn-"):
            return "aws-cn"
        if self.region.startswith("us-gov-"):
            return "aws-us-gov"
        return "aws"

    @property
    def acct(self) -> str:
        return self.account or "*"

    def arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
        return (
            f"arn:{self.partition}:{service}:{self.region if region else ''}:{self.acct if account else ''}:{resource}"
        )

    def s3(self, path: str) -> str:
        return f"arn:{self.partition}:s3:::{path}"

    @property
    def app_root(self) -> str:
        return f"{self.prefix}/{self.app}" if self.prefix else self.app

    @property
    def results(self) -> tuple[str, str]:
        """(bucket, key prefix ending in '/') of the Athena results location."""
        bucket, _, path = self.output_location.removeprefix("s3://").partition("/")
        return bucket, (path.rstrip("/") + "/") if path else ""


def account_of(arn: str | None) -> str | None:
    parts = (arn or "").split(":")
    return parts[4] if len(parts) > 5 and parts[4].isdigit() else None


def scope_for(
    fleet: Fleet,
    target: CodeDeployTarget,
    *,
    database: str,
    workgroup: str,
    output_location: str,
    account: str | None = None,
    sqs: bool = True,
) -> Scope:
    groups = tuple(
        GroupScope(g.name, g.asg, tuple(g.queues or ()), g.strategy.deployment_config_name, tuple(g.alarms))
        for g in fleet.groups
    )
    custom = tuple(
        sorted({g.strategy.deployment_config_name for g in fleet.groups if min_healthy_hosts(g.strategy) is not None})
    )
    return Scope(
        region=fleet.aws.region,
        account=account or account_of(target.service_role_arn) or fleet.artifacts.expected_bucket_owner,
        bucket=fleet.artifacts.bucket,
        prefix=fleet.artifacts.prefix,
        app=fleet.app.name,
        application=application_name(fleet, target),
        groups=groups,
        custom_configs=custom,
        service_role_arn=target.service_role_arn,
        kms_key_id=fleet.artifacts.kms_key_id,
        database=database,
        workgroup=workgroup,
        output_location=output_location,
        sqs=sqs,
    )
