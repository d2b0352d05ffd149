"""Which AWS calls a flow makes, and whether an IAM policy allows each of them.

- `Recorder` registers on botocore's events of an AwsSession's clients (those made already and, through the
  boto3 session, those made later): every call, with its parameters and parsed response, paginated pages and
  the S3 transfer manager's parts included. `paused()` leaves out what a test does on the side.
- `needs(call, facts)` is what IAM checks for one call: the actions (HeadObject is s3:GetObject,
  ListObjectsV2 is s3:ListBucket with the s3:prefix condition key...), the resource ARNs and the request's
  condition keys, plus the rights AWS documents as needed besides the API's own (S3 -> KMS for an encrypted
  object, CreateDeployment -> GetDeploymentConfig, an Athena query -> Glue and the S3 results location).
  A call with no mapping here is an error, so a new AWS call cannot slip by unchecked.
- `allowed(policy, need)` evaluates like IAM: any matching Deny wins, else any matching Allow; action and
  resource wildcards (`*`, `?`); the condition operators our policies use. An element or operator it does
  not know is an error, never a silent allow.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp

from deploytool.aws.session import AwsSession

Context = Mapping[str, str | tuple[str, ...]]


@dataclass(frozen=True)
class Call:
    service: str  # botocore's service name: s3, codedeploy, ec2, autoscaling, athena, ...
    operation: str  # PutObject, CreateDeployment, ...
    params: Mapping[str, Any]
    response: Mapping[str, Any]


@dataclass
class Recorder:
    calls: list[Call] = field(default_factory=list)
    on: bool = True

    def _before(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["iam_eval_params"] = {k: v for k, v in params.items() if k != "Body"}

    def _after(self, model: Any, parsed: Mapping[str, Any], context: Mapping[str, Any], **_: Any) -> None:
        if self.on:
            params = context.get("iam_eval_params", {})
            self.calls.append(Call(model.service_model.service_name, model.name, params, parsed or {}))

    def attach(self, aws: AwsSession) -> Recorder:
        emitters = [client.meta.events for client in aws._clients.values()] + [aws.boto.events]
        for events in emitters:
            events.register("before-parameter-build", self._before)
            events.register("after-call", self._after)
        return self

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.on = False
        try:
            yield
        finally:
            self.on = True

    def operations(self) -> set[str]:
        return {f"{c.service}:{c.operation}" for c in self.calls}


@dataclass(frozen=True)
class Need:
    action: str
    resource: str
    context: Context
    call: str  # the call that needs it, for messages


@dataclass
class Facts:
    """What IAM would know besides the request: the account, the bucket's default KMS key, resource tags."""

    region: str
    account: str
    kms_key_arn: str | None = None
    resource_tags: Callable[[str], Mapping[str, str]] = lambda _: {}
    query_workgroups: dict[str, str] = field(default_factory=dict)  # Athena query id -> its workgroup
    data_root: str = ""  # bucket/prefix/app of the tables' data

    def arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account}:{resource}"


def _s3_object(p: Mapping[str, Any]) -> str:
    return f"arn:aws:s3:::{p['Bucket']}/{p['Key']}"


def _kms(facts: Facts, actions: Sequence[str], call: str) -> list[Need]:
    if not facts.kms_key_arn:
        return []
    via = {"kms:ViaService": f"s3.{facts.region}.amazonaws.com"}
    return [Need(a, facts.kms_key_arn, via, call) for a in actions]


_TLS = {"aws:SecureTransport": "true"}  # botocore talks https to AWS


def _s3(call: Call, facts: Facts) -> list[Need]:
    p, op, name = call.params, call.operation, f"s3:{call.operation}"
    put: dict[str, str] = dict(_TLS)
    if p.get("ServerSideEncryption"):
        put["s3:x-amz-server-side-encryption"] = p["ServerSideEncryption"]
    # S3 answers a GET or HEAD of a missing key 404 only to a caller with s3:ListBucket on the bucket (else 403,
    # which deploytool would report as "access denied"): that check has no s3:prefix.
    missing = Need("s3:ListBucket", f"arn:aws:s3:::{p['Bucket']}", _TLS, name)
    if op in ("HeadObject",):
        return [Need("s3:GetObject", _s3_object(p), _TLS, name), missing]
    if op == "GetObject":
        versioned = [Need("s3:GetObjectVersion", _s3_object(p), {}, name)] if p.get("VersionId") else []
        return [Need("s3:GetObject", _s3_object(p), {}, name), *versioned, *_kms(facts, ["kms:Decrypt"], name)]
    if op == "PutObject":
        return [Need("s3:PutObject", _s3_object(p), {}, name), *_kms(facts, ["kms:GenerateDataKey"], name)]
    if op in ("CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"):
        # A multipart upload to SSE-KMS needs kms:GenerateDataKey and kms:Decrypt (S3 user guide).
        return [
            Need("s3:PutObject", _s3_object(p), {}, name),
            *_kms(facts, ["kms:GenerateDataKey", "kms:Decrypt"], name),
        ]
    if op == "AbortMultipartUpload":
        return [Need("s3:AbortMultipartUpload", _s3_object(p), {}, name)]
    if op in ("ListObjectsV2", "ListObjects"):
        return [Need("s3:ListBucket", f"arn:aws:s3:::{p['Bucket']}", {"s3:prefix": p.get("Prefix", "")}, name)]
    if op == "HeadBucket":
        return [Need("s3:ListBucket", f"arn:aws:s3:::{p['Bucket']}", {}, name)]
    if op == "DeleteObject":  # the lease's release (If-Match) and doctor's probe; deleting one version (VersionId)
        # is its own action, and needs no s3:DeleteObject
        action = "s3:DeleteObjectVersion" if p.get("VersionId") else "s3:DeleteObject"
        return [Need(action, _s3_object(p), {}, name)]
    if op in _S3_BUCKET_READS:
        return [Need(_S3_BUCKET_READS[op], f"arn:aws:s3:::{p['Bucket']}", {}, name)]
    raise KeyError(name)


# `fab doctor`'s reads of the bucket's settings: the API operation and the IAM action it needs
_S3_BUCKET_READS = {
    "GetBucketLocation": "s3:GetBucketLocation",
    "GetBucketVersioning": "s3:GetBucketVersioning",
    "GetBucketEncryption": "s3:GetEncryptionConfiguration",
}


_CD_APPLICATION = {
    "GetApplication",
    "CreateApplication",
    "ListDeploymentGroups",
    "RegisterApplicationRevision",
    "GetApplicationRevision",
    "BatchGetApplicationRevisions",
}
_CD_GROUP = {"GetDeploymentGroup", "CreateDeploymentGroup", "ListDeployments", "CreateDeployment"}
_CD_NO_RESOURCE = {"StopDeployment", "ListDeploymentTargets", "BatchGetDeploymentTargets", "ListApplications"}


def _codedeploy(call: Call, facts: Facts) -> list[Need]:
    p, op = call.params, call.operation
    name = f"codedeploy:{op}"

    def group(app: str, group_name: str) -> str:
        return facts.arn("codedeploy", f"deploymentgroup:{app}/{group_name}")

    if op in _CD_NO_RESOURCE:
        return [Need(name, "*", {}, name)]
    if op in _CD_APPLICATION:
        return [Need(name, facts.arn("codedeploy", f"application:{p['applicationName']}"), {}, name)]
    if op in ("GetDeploymentConfig", "CreateDeploymentConfig"):
        return [Need(name, facts.arn("codedeploy", f"deploymentconfig:{p['deploymentConfigName']}"), {}, name)]
    if op == "BatchGetDeploymentGroups":
        return [Need(name, group(p["applicationName"], g), {}, name) for g in p["deploymentGroupNames"]]
    if op in ("BatchGetDeployments", "GetDeployment"):
        infos = call.response.get("deploymentsInfo") or [call.response.get("deploymentInfo") or {}]
        return [Need(name, group(i["applicationName"], i["deploymentGroupName"]), {}, name) for i in infos if i]
    if op in _CD_GROUP or op == "UpdateDeploymentGroup":
        group_name = p.get("deploymentGroupName") or p["currentDeploymentGroupName"]
        needs = [Need(name, group(p["applicationName"], group_name), {}, name)]
        if p.get("serviceRoleArn"):
            passed = {"iam:PassedToService": "codedeploy.amazonaws.com"}
            needs.append(Need("iam:PassRole", p["serviceRoleArn"], passed, name))
        if op == "CreateDeployment":
            # CodeDeploy's permissions reference: creating a deployment also reads its config and revision.
            if p.get("deploymentConfigName"):
                config = facts.arn("codedeploy", f"deploymentconfig:{p['deploymentConfigName']}")
                needs.append(Need("codedeploy:GetDeploymentConfig", config, {}, name))
            if p.get("revision"):
                app = facts.arn("codedeploy", f"application:{p['applicationName']}")
                needs.append(Need("codedeploy:GetApplicationRevision", app, {}, name))
        return needs
    raise KeyError(name)


def _ec2(call: Call, facts: Facts) -> list[Need]:
    op, name = call.operation, f"ec2:{call.operation}"
    if op in ("DescribeInstances", "DescribeTags"):
        return [Need(name, "*", {}, name)]
    if op == "CreateTags":
        keys = tuple(sorted(t["Key"] for t in call.params["Tags"]))
        out = []
        for instance_id in call.params["Resources"]:
            context: dict[str, str | tuple[str, ...]] = {"aws:TagKeys": keys}
            for key, value in facts.resource_tags(instance_id).items():
                context[f"aws:ResourceTag/{key}"] = value
            out.append(Need(name, facts.arn("ec2", f"instance/{instance_id}"), context, name))
        return out
    raise KeyError(name)


def _tables(sql: str) -> set[str]:
    """The tables a query reads (its CTEs left out), as Athena resolves them in the Glue catalog."""
    tree = sqlglot.parse_one(sql, read="trino")
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    return {t.name.lower() for t in tree.find_all(exp.Table)} - ctes


_CREATE_TABLE = re.compile(r"create\s+external\s+table\s+(?:if\s+not\s+exists\s+)?(\w+)", re.IGNORECASE)
_CREATE_DB = re.compile(r"^\s*create\s+database\s+(?:if\s+not\s+exists\s+)?(\w+)", re.IGNORECASE)


def _athena_query(p: Mapping[str, Any], response: Mapping[str, Any], facts: Facts) -> list[Need]:
    """What Athena checks with the caller's rights for one query: Glue for the tables, S3 for the data it reads
    and the results it writes (Athena user guide, access to Glue and to Amazon S3)."""
    name = "athena:StartQueryExecution"
    sql = str(p["QueryString"])
    db = (p.get("QueryExecutionContext") or {}).get("Database", "default")
    catalog, database = facts.arn("glue", "catalog"), facts.arn("glue", f"database/{db}")
    needs: list[Need] = []

    def glue(action: str, *arns: str) -> None:
        needs.extend(Need(action, arn, {}, name) for arn in (catalog, *arns))

    if m := _CREATE_DB.match(sql):
        glue("glue:CreateDatabase", facts.arn("glue", f"database/{m.group(1)}"))
    elif m := _CREATE_TABLE.search(sql):
        table = facts.arn("glue", f"table/{db}/{m.group(1)}")
        glue("glue:GetDatabase", database)
        glue("glue:CreateTable", database, table)
    else:
        bucket, _, root = facts.data_root.partition("/")
        for table_name in sorted(_tables(sql)):
            table = facts.arn("glue", f"table/{db}/{table_name}")
            glue("glue:GetDatabase", database)
            glue("glue:GetTable", database, table)
            prefix = f"{root}/{table_name}/"
            needs.append(Need("s3:ListBucket", f"arn:aws:s3:::{bucket}", {"s3:prefix": prefix}, name))
            needs.append(Need("s3:GetObject", f"arn:aws:s3:::{bucket}/{prefix}dt=2025-01-01/x.json.gz", {}, name))
            needs += _kms(facts, ["kms:Decrypt"], name)
    output = (p.get("ResultConfiguration") or {}).get("OutputLocation")
    if output:
        out_bucket, _, out_path = output.removeprefix("s3://").partition("/")
        query_id = response.get("QueryExecutionId", "q")
        results = f"arn:aws:s3:::{out_bucket}/{out_path}{query_id}.csv"
        needs += [
            Need("s3:GetBucketLocation", f"arn:aws:s3:::{out_bucket}", {}, name),
            Need("s3:PutObject", results, {}, name),
            Need("s3:GetObject", results, {}, name),
            *_kms(facts, ["kms:GenerateDataKey", "kms:Decrypt"], name),
        ]
    return needs


def _athena(call: Call, facts: Facts) -> list[Need]:
    p, op, name = call.params, call.operation, f"athena:{call.operation}"
    if op == "StartQueryExecution":
        workgroup = p.get("WorkGroup", "primary")
        if "QueryExecutionId" in call.response:
            facts.query_workgroups[call.response["QueryExecutionId"]] = workgroup
        return [
            Need(name, facts.arn("athena", f"workgroup/{workgroup}"), {}, name),
            *_athena_query(p, call.response, facts),
        ]
    if op in ("GetQueryExecution", "GetQueryResults", "StopQueryExecution"):
        workgroup = facts.query_workgroups[p["QueryExecutionId"]]
        return [Need(name, facts.arn("athena", f"workgroup/{workgroup}"), {}, name)]
    raise KeyError(name)


def _sqs(call: Call, facts: Facts) -> list[Need]:
    p, name = call.params, f"sqs:{call.operation}"
    if call.operation == "ListQueues":
        return [Need(name, "*", {}, name)]
    if "QueueUrl" in p:  # https://sqs.<region>.amazonaws.com/<account>/<name>
        account, queue = str(p["QueueUrl"]).rstrip("/").split("/")[-2:]
    else:
        account, queue = facts.account, str(p["QueueName"])
    return [Need(name, f"arn:aws:sqs:{facts.region}:{account}:{queue}", {}, name)]


def _kms_direct(call: Call, facts: Facts) -> list[Need]:
    """KMS called by deploytool itself (`fab doctor`: DescribeKey, GenerateDataKey with DryRun, which IAM
    authorizes as the real call): no kms:ViaService, unlike the key use S3 makes on our behalf."""
    name, key = f"kms:{call.operation}", str(call.params["KeyId"])
    if call.operation not in ("DescribeKey", "GenerateDataKey"):
        raise KeyError(name)
    arn = key if key.startswith("arn:") and ":key/" in key else facts.kms_key_arn  # an id or alias: the fleet's key
    if arn is None:
        raise KeyError(f"{name} of {key}: no kms_key_arn in the facts")
    return [Need(name, arn, {}, name)]


def _iam(call: Call, facts: Facts) -> list[Need]:
    name = f"iam:{call.operation}"
    if call.operation != "GetRole":
        raise KeyError(name)
    # IAM checks the role's ARN, path included: the answer has it; a missing role's is built from its name
    arn = (call.response.get("Role") or {}).get("Arn") or f"arn:aws:iam::{facts.account}:role/{call.params['RoleName']}"
    return [Need(name, arn, {}, name)]


def _glue(call: Call, facts: Facts) -> list[Need]:
    """A direct Glue read checks the catalog, the database and (GetTable) the table (Glue developer guide)."""
    p, name = call.params, f"glue:{call.operation}"
    catalog = facts.arn("glue", "catalog")
    if call.operation == "GetDatabase":
        arns = [catalog, facts.arn("glue", f"database/{p['Name']}")]
    elif call.operation == "GetTable":
        db = p["DatabaseName"]
        arns = [catalog, facts.arn("glue", f"database/{db}"), facts.arn("glue", f"table/{db}/{p['Name']}")]
    else:
        raise KeyError(name)
    return [Need(name, arn, {}, name) for arn in arns]


def _autoscaling(call: Call, facts: Facts) -> list[Need]:
    name = f"autoscaling:{call.operation}"
    if call.operation in ("DescribeAutoScalingGroups", "DescribeLifecycleHooks"):  # no resource-level permission
        return [Need(name, "*", {}, name)]
    raise KeyError(name)


def _cloudwatch(call: Call, facts: Facts) -> list[Need]:
    """The reads of `fab reconcile --live` (ListMetrics, GetMetricData): no resource-level permissions exist."""
    if call.operation not in ("ListMetrics", "GetMetricData"):
        raise KeyError(f"cloudwatch:{call.operation}")
    return [Need(f"cloudwatch:{call.operation}", "*", {}, call.operation)]


def moto_calls(recording: str) -> list[Call]:
    """The SQS calls in a moto recording (moto.moto_api.recorder), JSON protocol: kombu's own boto3 clients,
    which no botocore event of ours reaches."""
    out = []
    for line in recording.splitlines():
        entry = json.loads(line)
        headers = {k.lower(): v for k, v in (entry.get("headers") or {}).items()}
        target = str(headers.get("x-amz-target", ""))
        if not target.startswith("AmazonSQS."):
            continue
        body = entry.get("body") or "{}"
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode()
        out.append(Call("sqs", target.removeprefix("AmazonSQS."), json.loads(body), {}))
    return out


def needs(call: Call, facts: Facts) -> list[Need]:
    """The IAM requests one call makes; KeyError naming `service:Operation` when it is not mapped here."""
    if call.service == "sts" and call.operation == "GetCallerIdentity":
        return []  # needs no permission
    mapper = {
        "s3": _s3,
        "codedeploy": _codedeploy,
        "ec2": _ec2,
        "athena": _athena,
        "sqs": _sqs,
        "autoscaling": _autoscaling,
        "kms": _kms_direct,
        "iam": _iam,
        "glue": _glue,
        "cloudwatch": _cloudwatch,
    }.get(call.service)
    if mapper is None:
        raise KeyError(f"{call.service}:{call.operation}")
    return mapper(call, facts)


# --- the evaluator ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _pattern(glob: str, case: bool) -> re.Pattern[str]:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    return re.compile(regex, 0 if case else re.IGNORECASE | re.DOTALL)


def _glob(pattern: str, value: str, *, case: bool = True) -> bool:
    return _pattern(pattern, case).fullmatch(value) is not None


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _values(context: Context, key: str) -> tuple[str, ...] | None:
    for k, v in context.items():
        if k.lower() == key.lower():
            return (v,) if isinstance(v, str) else tuple(v)
    return None


_MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "Bool": lambda p, v: p.lower() == v.lower(),
    "StringEquals": lambda p, v: p == v,
    "StringLike": lambda p, v: _glob(p, v),
    "ArnEquals": lambda p, v: p == v,
    "ArnLike": lambda p, v: _glob(p, v),
}


def _condition_holds(operator: str, key: str, wanted: list[str], context: Context) -> bool:
    have = _values(context, key)
    if operator.endswith("IfExists"):  # true when the key is absent, else the operator without IfExists
        return have is None or _condition_holds(operator.removesuffix("IfExists"), key, wanted, context)
    if operator == "Null":  # "true": the key is absent; "false": it is present
        return (have is None) == (wanted == ["true"])
    if operator == "StringNotEquals":  # negated: true when absent, else true when no value matches
        return have is None or not any(w == v for w in wanted for v in have)
    qualifier, _, base = operator.rpartition(":")
    if base not in _MATCHERS or qualifier not in ("", "ForAllValues", "ForAnyValue"):
        raise NotImplementedError(f"condition operator {operator} is not modelled by tests/iam_eval.py")
    match = _MATCHERS[base]
    if qualifier == "ForAllValues":
        return have is None or all(any(match(w, v) for w in wanted) for v in have)
    if have is None:
        return False
    if qualifier == "ForAnyValue":
        return any(any(match(w, v) for w in wanted) for v in have)
    if len(have) != 1:
        raise ValueError(f"{key} has several values: use ForAllValues/ForAnyValue")
    return any(match(w, have[0]) for w in wanted)


def statement_matches(statement: Mapping[str, Any], need: Need) -> bool:
    unknown = set(statement) - {"Sid", "Effect", "Action", "Resource", "Condition", "Principal"}
    if unknown or statement.get("Principal", "*") != "*":
        raise NotImplementedError(f"policy elements {sorted(unknown)} are not modelled by tests/iam_eval.py")
    if not any(_glob(a, need.action, case=False) for a in _listed(statement["Action"])):
        return False
    if not any(_glob(r, need.resource) for r in _listed(statement["Resource"])):
        return False
    for operator, keys in (statement.get("Condition") or {}).items():
        for key, wanted in keys.items():
            if not _condition_holds(operator, key, _listed(wanted), need.context):
                return False
    return True


def explicitly_denied(policy: Mapping[str, Any], need: Need) -> bool:
    """A bucket policy's part of the decision: does a Deny statement match (for anyone: Principal "*")?"""
    return any(s["Effect"] == "Deny" and statement_matches(s, need) for s in policy["Statement"])


def allowed(policy: Mapping[str, Any], need: Need) -> bool:
    """IAM's decision for one request under one identity policy: explicit Deny, else Allow, else implicit deny."""
    decision = False
    for statement in policy["Statement"]:
        if statement_matches(statement, need):
            if statement["Effect"] == "Deny":
                return False
            decision = True
    return decision


def requests(calls: Sequence[Call], facts: Facts) -> list[Need]:
    """Every IAM request of the calls, in order (an Athena query's id is learnt from its start), once each."""
    out: dict[tuple[str, str, str], Need] = {}
    for call in calls:
        for need in needs(call, facts):
            out.setdefault((need.action, need.resource, repr(sorted(need.context.items()))), need)
    return list(out.values())


def denied(policy: Mapping[str, Any], wanted: Sequence[Need]) -> list[str]:
    """One line per request that `policy` does not allow (empty: every one is allowed)."""
    out = []
    for need in wanted:
        if not allowed(policy, need):
            out.append(f"{need.call} needs {need.action} on {need.resource} {dict(need.context) or ''}".rstrip())
    return sorted(set(out))


def used_actions(wanted: Sequence[Need]) -> set[str]:
    return {need.action for need in wanted}


def policy_actions(policy: Mapping[str, Any]) -> set[str]:
    return {a for s in policy["Statement"] for a in _listed(s["Action"])}


def without_action(policy: Mapping[str, Any], action: str) -> dict[str, Any]:
    """The policy with one action taken out of every statement (statements left empty are dropped)."""
    statements = []
    for s in policy["Statement"]:
        actions = [a for a in _listed(s["Action"]) if a != action]
        if actions:
            statements.append({**s, "Action": actions})
    return {**policy, "Statement": statements}
