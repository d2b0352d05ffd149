"""Least-privilege IAM policies for one fleet, as plain IAM policy JSON (`fab iam-policy`, `fab infra`).

Contract: no I/O. `scope_for(fleet, target, ...)` reads what the policies name from the fleet file (bucket,
prefix, app, CodeDeploy application, deployment groups and their configs, ASGs, queues, KMS key, region,
account) plus the Athena names `fab reconcile` uses; `policy(role, scope)` gives the permissions policy and
`trust(role, scope)` the assume-role policy of one of ROLES; `notes(role, scope)` says what was not known
(an account put as `*`) and what the role assumes. Every dict is a complete policy document a user can
paste (console, Terraform's `aws_iam_policy`, CloudFormation). Roles, and what each command needs:

- deployer: the person or CI running fab publish / setup / deploy / rollback / restart / status / reconcile
  [--fix] / athena-ddl --apply / doctor. tests/test_iam_flows.py records every AWS call those flows make and
  proves each one is allowed by this policy.
- instance: the workers' instance profile: the CodeDeploy agent reads the bundle (and decrypts it), the
  Celery worker consumes its queues on SQS (unless sqs=False), the interruption watcher records its notices
  under <prefix>/<app>/interruptions/ (encrypted with the fleet's key when it has one), the workers publish their
  telemetry (cloudwatch:PutMetricData in the `deploytool` namespace only).
- codedeploy-service: the role CodeDeploy assumes (`service_role_arn`): AWS's AWSCodeDeployRole reduced to
  what an in-place deployment to these ASGs uses (lifecycle hooks, suspended processes, describes), scoped
  to the fleet's ASGs where IAM allows it.
- athena-reader: a dashboard (Grafana's Athena data source): query the reconcile tables, nothing else.

An ARN part that is not known is `*` (only the account can be: a codedeploy target always names its
region, and its service role's ARN gives the account), and `notes` says so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from deploytool.iam_scope import Scope as Scope  # the Scope and its builder live in iam_scope.py
from deploytool.iam_scope import scope_for as scope_for
from deploytool.iam_scope import sqs_queue_name as sqs_queue_name
from deploytool.reconcile.sql import TABLES

ROLES = ("deployer", "instance", "codedeploy-service", "athena-reader")
TAG_KEYS = ("deploytool:deployed-at", "deploytool:release", "deploytool:version")  # deploytool.rollout.tags
ASG_NAME_TAG = "aws:autoscaling:groupName"  # set by Auto Scaling on every instance it launches
TELEMETRY_NAMESPACE = "deploytool"  # deploytool_instance.telemetry.NAMESPACE
CANARY_QUEUES = "deploytool-canary-*"  # deploytool_instance.brokers.sqs.canary_queue
Json = dict[str, Any]
MANAGED_POLICY_LIMIT = 6144  # characters of a managed policy, whitespace not counted (IAM quotas)


def _statement(sid: str, actions: Sequence[str], resources: Sequence[str], condition: Json | None = None) -> Json:
    out: Json = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": sorted(set(actions)),
        "Resource": sorted(set(resources)) if len(set(resources)) > 1 else resources[0],
    }
    if condition:
        out["Condition"] = condition
    return out


def _document(statements: Sequence[Json]) -> Json:
    return {"Version": "2012-10-17", "Statement": list(statements)}


# --- the pieces several roles share ----------------------------------------------------------------


def kms_statements(scope: Scope, sid: str, actions: Sequence[str], *, via_s3: bool = True) -> list[Json]:
    """Use of the fleet's key, only through S3 (kms:ViaService) unless not via_s3; none without a key."""
    key = scope.kms_key_id
    if not key:
        return []
    via: Json = {"StringEquals": {"kms:ViaService": f"s3.{scope.region}.amazonaws.com"}} if via_s3 else {}
    if key.startswith("arn:") and ":key/" in key:
        return [_statement(sid, actions, [key], via)]
    alias = key.split(":", 5)[-1] if key.startswith("arn:") else key
    if alias.startswith("alias/"):
        # An alias cannot be a policy's resource for these actions: any key of the account that carries it.
        condition = {**via, "ForAnyValue:StringEquals": {"kms:ResourceAliases": [alias]}}
        return [_statement(sid, actions, [scope.arn("kms", "key/*")], condition)]
    return [_statement(sid, actions, [scope.arn("kms", f"key/{key}")], via)]


def athena_statements(scope: Scope, *, ddl: bool) -> list[Json]:
    """Run queries in the workgroup, read the Glue catalog of the tables (create them with ddl), write the
    results location. Athena reads the tables' S3 data and writes its results with the caller's rights."""
    db = scope.database
    catalog = [scope.arn("glue", "catalog"), scope.arn("glue", f"database/{db}")]
    tables = [scope.arn("glue", f"table/{db}/{t}") for t in TABLES]
    reads = ["glue:GetDatabase", "glue:GetTable"]  # no partition reads: both tables use partition projection
    statements = [
        _statement(
            "AthenaQueries",
            [
                "athena:StartQueryExecution",
                "athena:GetQueryExecution",
                "athena:GetQueryResults",
                "athena:StopQueryExecution",
            ]
            + ([] if ddl else ["athena:GetWorkGroup"]),
            [scope.arn("athena", f"workgroup/{scope.workgroup}")],
        ),
        # ddl, for `fab athena-ddl --apply`: CREATE DATABASE / CREATE EXTERNAL TABLE IF NOT EXISTS.
        _statement("GlueTables", [*reads, "glue:CreateDatabase", "glue:CreateTable"], catalog + tables)
        if ddl
        else _statement("GlueReadTables", reads, catalog + tables),
    ]
    bucket, path = scope.results
    statements += [
        _statement(
            "AthenaResultsObjects",
            ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
            [scope.s3(f"{bucket}/{path}*")],
        ),
        _statement(
            "AthenaResultsBucket", ["s3:GetBucketLocation", "s3:ListBucketMultipartUploads"], [scope.s3(bucket)]
        ),
    ]
    return statements


def _list_bucket(scope: Scope, sid: str, prefixes: Sequence[str]) -> list[Json]:
    """s3:ListBucket limited to key prefixes ('results': the Athena results location, which may be in another
    bucket), one statement per bucket.

    IfExists: a listing must stay under the prefixes, while the ListBucket check S3 makes to answer a GET or
    HEAD of a missing key (404 with s3:ListBucket, 403 without: deploytool reads keys that do not exist yet
    on a first publish or deploy) carries no s3:prefix and passes."""
    by_bucket: dict[str, list[str]] = {}
    for bucket, prefix in (scope.results if p == "results" else (scope.bucket, p) for p in prefixes):
        by_bucket.setdefault(bucket, []).append(f"{prefix}*")
    return [
        _statement(
            sid if i == 0 else f"{sid}{i + 1}",
            ["s3:ListBucket"],
            [scope.s3(bucket)],
            {"StringLikeIfExists": {"s3:prefix": sorted(set(patterns))}},
        )
        for i, (bucket, patterns) in enumerate(sorted(by_bucket.items()))
    ]


# --- the roles -----------------------------------------------------------------------------------


def size(document: Json) -> int:
    """A policy's size as IAM counts it (whitespace not counted)."""
    return len(json.dumps(document, separators=(",", ":")))


def too_big(scope: Scope) -> bool:
    """The deployer policy naming each group would pass IAM's 6,144 characters of a managed policy."""
    return size(deployer(scope, compact=False)) > MANAGED_POLICY_LIMIT


def without_sids(document: Json) -> Json:
    """The same permissions without the statements' names (a Sid only names a statement)."""
    return {**document, "Statement": [{k: v for k, v in s.items() if k != "Sid"} for s in document["Statement"]]}


def deployer(scope: Scope, *, compact: bool | None = None) -> Json:
    """compact (default: when naming every group would be too big): the groups' writes on <application>/*,
    doctor's queue reads on every queue, and, if that is still too big, no Sids."""
    if compact is None:
        compact = too_big(scope)
    document = _deployer(scope, compact=compact)
    return without_sids(document) if compact and size(document) > MANAGED_POLICY_LIMIT else document


def _deployer(scope: Scope, *, compact: bool) -> Json:
    app_arn = scope.arn("codedeploy", f"application:{scope.application}")
    every_group = scope.arn("codedeploy", f"deploymentgroup:{scope.application}/*")
    groups = [scope.arn("codedeploy", f"deploymentgroup:{scope.application}/{g.name}") for g in scope.groups]
    if compact:
        groups = [every_group]
    configs = sorted({g.config for g in scope.groups})
    statements = [
        *_list_bucket(scope, "ListOwnPrefix", [f"{scope.app_root}/", "results"]),
        _statement(
            "BundlesReleasesInventory",
            ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            [scope.s3(f"{scope.bucket}/{scope.app_root}/*")],
        ),
        # `fab reconcile --live` reads the workers' heartbeats (deploytool.aws.cloudwatch): no resource-level rights
        _statement("ReadTelemetry", ["cloudwatch:ListMetrics", "cloudwatch:GetMetricData"], ["*"]),
        # the release lease is deleted (If-Match: its holder's) at a release's end (deploytool.rollout.lease)
        _statement("ReleaseLease", ["s3:DeleteObject"], [scope.s3(f"{scope.bucket}/{scope.app_root}/lease/*")]),
        *kms_statements(scope, "ArtifactsKey", ["kms:GenerateDataKey", "kms:Decrypt"]),
        _statement(
            "CodeDeployApplication",
            [
                "codedeploy:GetApplication",
                "codedeploy:CreateApplication",
                "codedeploy:RegisterApplicationRevision",
                "codedeploy:GetApplicationRevision",
            ],
            [app_arn],
        ),
        _statement(
            "CodeDeployReadGroups",
            [
                "codedeploy:GetDeploymentGroup",
                "codedeploy:ListDeployments",
                "codedeploy:BatchGetDeployments",
            ],
            [every_group],
        ),
        _statement(
            "CodeDeployFleetGroups",
            ["codedeploy:CreateDeploymentGroup", "codedeploy:UpdateDeploymentGroup", "codedeploy:CreateDeployment"],
            groups,
        ),
        _statement(
            "CodeDeployConfigs",
            ["codedeploy:GetDeploymentConfig"],
            [scope.arn("codedeploy", f"deploymentconfig:{c}") for c in configs],
        ),
    ]
    if scope.custom_configs:
        statements.append(
            _statement(
                "CodeDeployCreateConfigs",
                ["codedeploy:CreateDeploymentConfig"],
                [scope.arn("codedeploy", f"deploymentconfig:{c}") for c in scope.custom_configs],
            )
        )
    statements += [
        _statement(
            "NoResourceLevel",  # none of these can be scoped to a resource (Service Authorization Reference)
            [
                "codedeploy:StopDeployment",
                "codedeploy:ListDeploymentTargets",
                "codedeploy:BatchGetDeploymentTargets",
                "codedeploy:ListApplications",  # doctor
                "autoscaling:DescribeAutoScalingGroups",
                "autoscaling:DescribeLifecycleHooks",  # doctor
                "ec2:DescribeInstances",
            ],
            ["*"],
        ),
        _statement(
            "PassServiceRoleToCodeDeploy",
            ["iam:PassRole"],
            [scope.service_role_arn],
            {"StringEquals": {"iam:PassedToService": "codedeploy.amazonaws.com"}},
        ),
        _statement(
            "TagFleetInstances",
            ["ec2:CreateTags"],
            [scope.arn("ec2", "instance/*")],
            {
                "StringEquals": {f"aws:ResourceTag/{ASG_NAME_TAG}": sorted(g.asg for g in scope.groups)},
                "ForAllValues:StringEquals": {"aws:TagKeys": list(TAG_KEYS)},
            },
        ),
        *athena_statements(scope, ddl=True),
        *doctor_statements(scope, compact=compact),
    ]
    return _document(statements)


def doctor_statements(scope: Scope, *, compact: bool) -> list[Json]:
    """`fab doctor`'s reads the flows do not make, and its one write: the probe object it PUTs under
    <prefix>/doctor/ (deploytool.doctor.gather.probe_key), HEADs before and deletes at once (by its version
    in a versioned bucket). Its other reads are in the flows' statements: the Glue catalog (GlueTables), and
    ListApplications and DescribeLifecycleHooks, which have no resource-level permission (NoResourceLevel)."""
    statements = [
        _statement(
            "DoctorProbe",
            ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"],
            [scope.s3(f"{scope.bucket}/{scope.prefix}/doctor/*")],
        ),
        _statement(
            "DoctorBucketSettings",
            ["s3:GetBucketLocation", "s3:GetBucketVersioning", "s3:GetEncryptionConfiguration"],
            [scope.s3(scope.bucket)],
        ),
        # DescribeKey, and GenerateDataKey with DryRun, which KMS authorizes as the call itself: not via S3
        *kms_statements(scope, "DoctorKey", ["kms:DescribeKey", "kms:GenerateDataKey"], via_s3=False),
        _statement("DoctorServiceRole", ["iam:GetRole"], [scope.service_role_arn]),
        _statement(  # one-group-per-asg: every application's groups, to find another one on the fleet's ASGs
            "CodeDeployReadEveryGroup",
            ["codedeploy:ListDeploymentGroups", "codedeploy:BatchGetDeploymentGroups"],
            [scope.arn("codedeploy", "application:*"), scope.arn("codedeploy", "deploymentgroup:*")],
        ),
    ]
    queues = sorted({q for g in scope.groups for q in g.queues})  # the names doctor asks SQS for, as they are
    if scope.sqs and queues:
        queues = ["*"] if compact else queues
        statements.append(
            _statement(
                "DoctorQueues", ["sqs:GetQueueUrl", "sqs:GetQueueAttributes"], [scope.arn("sqs", q) for q in queues]
            )
        )
    return statements


def instance(scope: Scope) -> Json:
    statements = [
        _statement(
            "ReadBundles",
            ["s3:GetObject", "s3:GetObjectVersion"],
            [scope.s3(f"{scope.bucket}/{scope.app_root}/*.tgz")],
        ),
        *kms_statements(scope, "DecryptBundles", ["kms:Decrypt"]),
        # the interruption watcher records each notice it handles (deploytool_instance.s3put)
        _statement(
            "RecordInterruptions", ["s3:PutObject"], [scope.s3(f"{scope.bucket}/{scope.app_root}/interruptions/*")]
        ),
        *kms_statements(scope, "EncryptInterruptionRecords", ["kms:GenerateDataKey"]),
        # the workers' telemetry (deploytool_instance.telemetry): PutMetricData has no resource, only a namespace
        _statement(
            "PublishTelemetry",
            ["cloudwatch:PutMetricData"],
            ["*"],
            {"StringEquals": {"cloudwatch:namespace": TELEMETRY_NAMESPACE}},
        ),
    ]
    if scope.sqs:
        queues = [*sorted({sqs_queue_name(q) for g in scope.groups for q in g.queues}), CANARY_QUEUES]
        statements += [
            _statement(
                "ConsumeOwnQueues",
                [  # what kombu's SQS transport calls (it finds queue URLs with ListQueues)
                    "sqs:GetQueueAttributes",
                    "sqs:CreateQueue",
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:SendMessage",
                ],
                [scope.arn("sqs", q) for q in queues],
            ),
            _statement("ListQueues", ["sqs:ListQueues"], ["*"]),
        ]
    return _document(statements)


def codedeploy_service(scope: Scope) -> Json:
    asgs = [scope.arn("autoscaling", f"autoScalingGroup:*:autoScalingGroupName/{g.asg}") for g in scope.groups]
    alarms = sorted({a for g in scope.groups for a in g.alarms})
    statements = [
        _statement(
            "FleetLifecycleHooksAndProcesses",
            [
                "autoscaling:PutLifecycleHook",
                "autoscaling:DeleteLifecycleHook",
                "autoscaling:CompleteLifecycleAction",
                "autoscaling:RecordLifecycleActionHeartbeat",
                "autoscaling:SuspendProcesses",
                "autoscaling:ResumeProcesses",
            ],
            asgs,
        ),
        _statement(
            "DescribeNoResourceLevel",
            [
                "autoscaling:DescribeAutoScalingGroups",
                "autoscaling:DescribeLifecycleHooks",
                "autoscaling:DescribeScheduledActions",
                "autoscaling:DescribePolicies",
                "autoscaling:DescribeNotificationConfigurations",
                "ec2:DescribeInstances",
                "ec2:DescribeInstanceStatus",
                "tag:GetResources",
            ],
            ["*"],
        ),
    ]
    if alarms:
        statements.append(
            _statement(
                "GroupAlarms", ["cloudwatch:DescribeAlarms"], [scope.arn("cloudwatch", f"alarm:{a}") for a in alarms]
            )
        )
    return _document(statements)


def athena_reader(scope: Scope) -> Json:
    root = scope.app_root
    statements = [
        *athena_statements(scope, ddl=False),
        *_list_bucket(scope, "ListTables", [f"{root}/inventory/", f"{root}/releases/", "results"]),
        _statement(
            "ReadTables",
            ["s3:GetObject"],
            [scope.s3(f"{scope.bucket}/{root}/inventory/*"), scope.s3(f"{scope.bucket}/{root}/releases/*")],
        ),
        *kms_statements(scope, "ArtifactsKey", ["kms:Decrypt", "kms:GenerateDataKey"]),
    ]
    return _document(statements)


BUILDERS = {
    "deployer": deployer,
    "instance": instance,
    "codedeploy-service": codedeploy_service,
    "athena-reader": athena_reader,
}


def policy(role: str, scope: Scope) -> Json:
    """The permissions policy of `role` (one of ROLES)."""
    return BUILDERS[role](scope)


def trust(role: str, scope: Scope) -> Json | None:
    """Who may assume the role; None for athena-reader (a policy to attach to your dashboard's own role)."""
    if role == "instance":
        principal: Json = {"Service": "ec2.amazonaws.com"}
        condition: Json = {}
    elif role == "codedeploy-service":
        principal = {"Service": "codedeploy.amazonaws.com"}
        condition = {}
        if scope.account:  # the confused-deputy guard: only this account's deployments of this application
            condition = {
                "StringEquals": {"aws:SourceAccount": scope.account},
                "ArnLike": {
                    "aws:SourceArn": scope.arn("codedeploy", f"deploymentgroup:{scope.application}/*"),
                },
            }
    elif role == "deployer":
        # Any principal of the account whose own policy allows sts:AssumeRole on it (your CI's role, your users).
        principal = {"AWS": f"arn:{scope.partition}:iam::{scope.acct}:root"}
        condition = {}
    else:
        return None
    statement: Json = {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}
    if condition:
        statement["Condition"] = condition
    return _document([statement])


def notes(role: str, scope: Scope) -> list[str]:
    """What the policy assumes or could not know, one line each."""
    out: list[str] = []
    if scope.account is None:
        out.append("the AWS account is not known (no --account, no account in service_role_arn): ARNs use '*' for it")
    if role == "deployer":
        out.append(f"Athena: workgroup {scope.workgroup}, database {scope.database}, results {scope.output_location}")
        if too_big(scope):
            out.append(
                f"{len(scope.groups)} groups: naming each would pass IAM's {MANAGED_POLICY_LIMIT} characters of a "
                f"managed policy, so deployment groups are written as {scope.application}/* (and doctor reads "
                "every queue's attributes)"
            )
            if size(_deployer(scope, compact=True)) > MANAGED_POLICY_LIMIT:
                out.append("the statements have no Sid (names only): the policy is still that big without them")
        out.append(
            f"fab doctor reads; its one write is a probe object, PUT and deleted at once under s3://{scope.bucket}/"
            f"{scope.prefix}/doctor/" + ("" if scope.sqs else " (--no-sqs: its queue checks warn 'not checked')")
        )
    if role == "instance":
        if scope.sqs:
            out.append(
                "SQS: the groups' queues as kombu names them, without a queue_name_prefix (add yours if the app sets "
                "one); --no-sqs when the broker is Redis or RabbitMQ"
            )
        out.append("the CodeDeploy agent needs only the bundle read (AWS's AmazonEC2RoleforAWSCodeDeploy: S3 reads)")
    if role == "codedeploy-service":
        out.append(
            "in-place deployments without a load balancer: AWSCodeDeployRole's ELB, blue/green and SNS rights "
            "are left out"
        )
    if role == "athena-reader":
        out.append(f"Athena: workgroup {scope.workgroup}, database {scope.database}, results {scope.output_location}")
        out.append(
            "picking values from Grafana's data source menus also lists catalogs, databases and workgroups "
            "(athena:ListDataCatalogs, ListDatabases, ListWorkGroups): add them if you use those menus"
        )
    if not scope.kms_key_id and role != "codedeploy-service":
        out.append("no artifacts.kms_key_id: no KMS statement (objects use S3's default encryption)")
    return out
