"""Read what `fab doctor` judges, through the deploytool.aws gateways, into Facts.

Every call is a read (Get/Describe/List/Head, and KMS GenerateDataKey with DryRun) but one: the probe
object PUT under `<prefix>/doctor/` to prove the prefix is writable with the release uploads' encryption,
deleted at once (by its version id when the bucket keeps versions, so no delete marker is left). A read
that fails becomes a Problem in the facts; nothing here raises for a refused call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from deploytool.aws.autoscaling import AutoScalingGateway
from deploytool.aws.codedeploy import CodeDeployGateway
from deploytool.aws.glue import GlueGateway
from deploytool.aws.iam import IamGateway, role_name
from deploytool.aws.kms import KmsGateway
from deploytool.aws.s3_bucket import BucketGateway
from deploytool.aws.session import AwsSession
from deploytool.aws.sqs import SqsGateway
from deploytool.aws.sts import StsGateway
from deploytool.aws.versions import botocore_problem, botocore_version
from deploytool.config import CodeDeployTarget, Fleet
from deploytool.doctor.facts import (
    AthenaFacts,
    BucketFacts,
    CodeDeployFacts,
    Facts,
    KmsFacts,
    Probe,
    Problem,
    QueueFacts,
)
from deploytool.errors import DeployToolError
from deploytool.reconcile.sql import TABLES
from deploytool.rollout.setup import application_name, plan_setup

T = TypeVar("T")

PROBE_BODY = b"written by `fab doctor` to check that this prefix is writable; deleted at once\n"
QUEUE_ATTRIBUTES = ("VisibilityTimeout",)


def probe_key(prefix: str) -> str:
    """The probe's key: under our prefix, named for what it is (a probe left behind by a refused delete is
    recognisable)."""
    return f"{prefix}/doctor/probe-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.txt"


MAX_REASON = 300


def one_line(text: str) -> str:
    """An error's text on one line (a proxy's HTML error page has many), cut to MAX_REASON characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_REASON else flat[: MAX_REASON - 3] + "..."


def read(call: Callable[[], T]) -> T | Problem:
    try:
        return call()
    except DeployToolError as exc:
        return Problem(one_line(str(exc)))


@dataclass(frozen=True)
class Gateways:
    """The gateways doctor reads through, all on one session (the target's)."""

    sts: StsGateway
    buckets: BucketGateway
    kms: KmsGateway
    codedeploy: CodeDeployGateway
    iam: IamGateway
    autoscaling: AutoScalingGateway
    sqs: SqsGateway
    glue: GlueGateway

    @classmethod
    def on(cls, session: AwsSession, fleet: Fleet) -> Gateways:
        return cls(
            StsGateway(session),
            BucketGateway(session, expected_bucket_owner=fleet.artifacts.expected_bucket_owner),
            KmsGateway(session),
            CodeDeployGateway(session),
            IamGateway(session),
            AutoScalingGateway(session),
            SqsGateway(session),
            GlueGateway(session),
        )


def gather(
    fleet: Fleet,
    target_name: str,
    target: CodeDeployTarget,
    gateways: Gateways,
    *,
    region: str,
    athena_database: str,
    write_probe: bool = True,
) -> Facts:
    version = botocore_version()
    identity = read(gateways.sts.caller_identity)
    facts = Facts(target_name, region, version, botocore_problem(version), identity)
    if isinstance(identity, Problem):
        return facts  # every other call would fail the same way
    asg_names = [g.asg for g in fleet.groups]
    asgs = read(lambda: gateways.autoscaling.describe_groups(asg_names))
    hooks = {}
    if not isinstance(asgs, Problem):
        hooks = {name: read(lambda n=name: gateways.autoscaling.lifecycle_hooks(n)) for name in asgs}  # type: ignore[misc]
    return Facts(
        target_name,
        region,
        version,
        facts.botocore_problem,
        identity,
        bucket=gather_bucket(fleet, gateways.buckets, write_probe=write_probe),
        kms=gather_kms(fleet, gateways.kms),
        codedeploy=gather_codedeploy(fleet, target, gateways),
        asgs=asgs,
        hooks=hooks,
        queues=gather_queues(fleet, gateways.sqs),
        athena=gather_athena(athena_database, gateways.glue),
    )


def gather_bucket(fleet: Fleet, buckets: BucketGateway, *, write_probe: bool) -> BucketFacts:
    name = fleet.artifacts.bucket
    exists = read(lambda: buckets.exists(name))
    if exists != "yes":
        return BucketFacts(name, exists)
    key = probe_key(fleet.artifacts.prefix)
    missing_key = read(lambda: buckets.missing_key_answer(name, key))
    probe = None
    if write_probe:
        kms = fleet.artifacts.kms_key_id
        extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms} if kms else {}
        written = read(lambda: buckets.put_probe(name, key, PROBE_BODY, extra))
        if isinstance(written, Problem):
            probe = Probe(key, written=written)
        else:
            deleted = read(lambda: buckets.delete_probe(name, key, written))
            probe = Probe(key, deleted=deleted if isinstance(deleted, Problem) else None, version_id=written)
    encryption = read(lambda: buckets.default_encryption(name))
    return BucketFacts(
        name,
        exists,
        region=read(lambda: buckets.region(name)),
        versioning=read(lambda: buckets.versioning(name)),
        encryption=encryption,
        encryption_read=True,
        missing_key=missing_key,
        probe=probe,
    )


def gather_kms(fleet: Fleet, kms: KmsGateway) -> KmsFacts | None:
    key_id = fleet.artifacts.kms_key_id
    if key_id is None:
        return None
    key = read(lambda: kms.describe_key(key_id))
    if key is None or isinstance(key, Problem):
        return KmsFacts(key_id, key)
    generated = read(lambda: kms.may_generate_data_key(key_id))
    return KmsFacts(key_id, key, generate=generated if isinstance(generated, Problem) else None)


def groups_on_asgs(gateway: CodeDeployGateway, asgs: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Every deployment group of every application in the region that sits on one of these ASGs, as
    'application/group' (ListApplications, then ListDeploymentGroups and BatchGetDeploymentGroups each)."""
    wanted = set(asgs)
    found: dict[str, list[str]] = {asg: [] for asg in asgs}
    for app in gateway.list_applications():
        names = gateway.list_deployment_groups(app)
        for info in gateway.get_deployment_groups(app, names) if names else []:
            for asg in info.get("autoScalingGroups") or []:
                asg_name = asg["name"] if isinstance(asg, Mapping) else str(asg)
                if asg_name in wanted:
                    found[asg_name].append(f"{app}/{info['deploymentGroupName']}")
    return {asg: tuple(sorted(groups)) for asg, groups in found.items()}


def gather_codedeploy(fleet: Fleet, target: CodeDeployTarget, gateways: Gateways) -> CodeDeployFacts:
    gateway = gateways.codedeploy
    app = application_name(fleet, target)
    plan = read(lambda: plan_setup(fleet, target, gateway))

    def ours() -> dict[str, Mapping[str, Any]]:
        if gateway.get_application(app) is None:
            return {}
        return {i["deploymentGroupName"]: i for i in gateway.get_deployment_groups(app, [g.name for g in fleet.groups])}

    groups = read(ours)
    role_arn = target.service_role_arn
    if not isinstance(groups, Problem):
        remote = sorted({str(i["serviceRoleArn"]) for i in groups.values() if i.get("serviceRoleArn")})
        if len(remote) == 1:
            role_arn = remote[0]
    return CodeDeployFacts(
        application=app,
        plan=plan,
        groups=groups,
        on_asg=read(lambda: groups_on_asgs(gateway, [g.asg for g in fleet.groups])),
        role_arn=role_arn,
        role=read(lambda: gateways.iam.get_role(role_name(role_arn))),
    )


def gather_queues(fleet: Fleet, sqs: SqsGateway) -> tuple[QueueFacts, ...]:
    names = sorted({q for g in fleet.groups for q in g.queues or []})
    return tuple(QueueFacts(name, read(lambda n=name: sqs.attributes(n, QUEUE_ATTRIBUTES))) for name in names)  # type: ignore[misc]


def gather_athena(database: str, glue: GlueGateway) -> AthenaFacts:
    exists = read(lambda: glue.database_exists(database))
    if exists is not True:
        return AthenaFacts(database, exists)
    return AthenaFacts(database, exists, {t: read(lambda t=t: glue.table_exists(database, t)) for t in TABLES})  # type: ignore[misc]
