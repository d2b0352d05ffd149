"""`fab doctor`'s verdicts: pure functions of the fleet and the gathered Facts, one Check per output line.

Contract: `checks(fleet, target, facts)` returns the checks in a fixed order, each ok, warn or fail with
one line saying what was found and, unless ok, what to do. warn never fails the preflight: it marks what
doctor could not read (a permission the deployer does not need) or what works but is not advised.
No I/O here: tests build Facts by hand or through gather.py on moto and the CodeDeploy simulator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from deploytool.aws.versions import MIN_BOTOCORE
from deploytool.config import CodeDeployTarget, Fleet
from deploytool.doctor.facts import BucketFacts, CodeDeployFacts, Facts, KmsFacts, Problem, QueueFacts
from deploytool.rollout.setup import describe

Status = Literal["ok", "warn", "fail"]
CODEDEPLOY = "codedeploy.amazonaws.com"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    message: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ok(name: str, message: str) -> Check:
    return Check(name, "ok", message)


def warn(name: str, message: str, fix: str = "") -> Check:
    return Check(name, "warn", message, fix)


def fail(name: str, message: str, fix: str) -> Check:
    return Check(name, "fail", message, fix)


def checks(fleet: Fleet, target: CodeDeployTarget, facts: Facts) -> list[Check]:
    out = [credentials(facts), botocore(facts)]
    if isinstance(facts.identity, Problem):
        return out
    if facts.bucket is not None:
        out += bucket(fleet, facts.bucket, facts.region)
    out.append(kms(facts.kms))
    if facts.codedeploy is not None:
        out.append(setup_plan(facts.codedeploy, facts.target))
        out.append(service_role(facts.codedeploy, facts.identity.account))
    out += asgs(fleet, facts)
    if facts.codedeploy is not None:
        out.append(one_group_per_asg(fleet, facts.codedeploy))
        out += lifecycle_hooks(fleet, target, facts)
    out += [queue(fleet, q, facts.region) for q in facts.queues]
    if facts.athena is not None:
        out.append(athena(facts))
    return out


def credentials(facts: Facts) -> Check:
    if isinstance(facts.identity, Problem):
        return fail(
            "credentials",
            f"{facts.identity.reason} (every other check needs working credentials: not run)",
            "set AWS_PROFILE or aws.profile in the fleet file, or refresh the session (aws sso login)",
        )
    return ok("credentials", f"account {facts.identity.account} as {facts.identity.arn} (region {facts.region})")


def botocore(facts: Facts) -> Check:
    if facts.botocore_problem:
        floor = ".".join(map(str, MIN_BOTOCORE))
        return fail("botocore", facts.botocore_problem, f"pip install 'boto3>={floor}' 'botocore>={floor}'")
    return ok("botocore", f"botocore {facts.botocore_version}")


def bucket(fleet: Fleet, b: BucketFacts, region: str) -> list[Check]:
    name = b.name
    if isinstance(b.exists, Problem):
        return [fail("bucket", b.exists.reason, "check the endpoint and your network, then run doctor again")]
    if b.exists == "missing":
        return [
            fail(
                "bucket",
                f"bucket {name} does not exist",
                f"create it in {region} with versioning and default encryption, or fix artifacts.bucket",
            )
        ]
    if b.exists == "denied":
        return [
            fail(
                "bucket",
                f"HeadBucket {name} answered 403: the bucket is another account's (artifacts.expected_bucket_owner "
                "says whose it must be), or these credentials lack s3:ListBucket on it",
                f"grant s3:ListBucket on arn:aws:s3:::{name}, or fix artifacts.bucket",
            )
        ]
    return [
        bucket_region(name, b.region, region),
        versioning(name, b.versioning),
        encryption(fleet, name, b),
        missing_key(fleet, name, b.missing_key),
        writable(fleet, name, b),
    ]


def bucket_region(name: str, found: str | Problem | None, region: str) -> Check:
    if isinstance(found, Problem) or found is None:
        why = found.reason if isinstance(found, Problem) else "not read"
        return warn("bucket", f"bucket {name} exists; its region is unknown ({why})", "grant s3:GetBucketLocation")
    if found != region:
        return fail(
            "bucket",
            f"bucket {name} is in {found}, the fleet's region is {region}: CodeDeploy only reads revisions "
            "from a bucket in the deployment's region",
            f"use a bucket in {region} (artifacts.bucket), or set aws.region = {found!r}",
        )
    return ok("bucket", f"bucket {name} exists in {region}")


def versioning(name: str, status: str | Problem | None) -> Check:
    if isinstance(status, Problem) or status is None:
        why = status.reason if isinstance(status, Problem) else "not read"
        return warn("bucket-versioning", f"not checked ({why})", "grant s3:GetBucketVersioning")
    if status != "Enabled":
        state = status or "never enabled"
        return fail(
            "bucket-versioning",
            f"versioning is {state}: a deployment pins its bundle by S3 version id, and an overwritten release "
            "record or index cannot be recovered",
            f"aws s3api put-bucket-versioning --bucket {name} --versioning-configuration Status=Enabled",
        )
    return ok("bucket-versioning", "Enabled")


def encryption(fleet: Fleet, name: str, b: BucketFacts) -> Check:
    found = b.encryption
    key = fleet.artifacts.kms_key_id
    if isinstance(found, Problem) or not b.encryption_read:
        why = found.reason if isinstance(found, Problem) else "not read"
        return warn("bucket-encryption", f"not checked ({why})", "grant s3:GetEncryptionConfiguration")
    uploads = f"deploytool's uploads ask for SSE-KMS with {key} themselves" if key else "uploads are not encrypted"
    if found is None:
        return warn(
            "bucket-encryption",
            f"no default encryption rule: {uploads}",
            f"aws s3api put-bucket-encryption --bucket {name} (aws:kms with your key, or AES256)",
        )
    if key and found.algorithm != "aws:kms":
        return warn(
            "bucket-encryption",
            f"default {found.algorithm}, not aws:kms: {uploads}, objects written by others are not",
            "make aws:kms with artifacts.kms_key_id the bucket's default encryption",
        )
    named = f" with {found.kms_key}" if found.kms_key else ""
    return ok("bucket-encryption", f"default {found.algorithm}{named}")


def missing_key(fleet: Fleet, name: str, answer: str | Problem | None) -> Check:
    prefix = fleet.artifacts.prefix
    if isinstance(answer, Problem) or answer is None:
        why = answer.reason if isinstance(answer, Problem) else "not read"
        return warn("bucket-missing-key", f"not checked ({why})")
    if answer == "403":
        return fail(
            "bucket-missing-key",
            "a key that does not exist answers 403 AccessDenied, not 404: without s3:ListBucket S3 does not say "
            "whether a key exists, and the first publish and deploy read keys that do not exist yet (the release "
            "records and index), so they fail with 'access denied'",
            f"grant s3:ListBucket on arn:aws:s3:::{name} (it may be limited with the condition "
            f's3:prefix = "{prefix}/*")',
        )
    return ok("bucket-missing-key", "a missing key answers 404 (s3:ListBucket granted)")


def writable(fleet: Fleet, name: str, b: BucketFacts) -> Check:
    where = f"s3://{name}/{fleet.artifacts.prefix}/"
    probe = b.probe
    if probe is None:
        return warn("bucket-write", f"not checked (--read-only): doctor did not write under {where}")
    if probe.written is not None:
        kms = " and kms:GenerateDataKey on artifacts.kms_key_id" if fleet.artifacts.kms_key_id else ""
        return fail(
            "bucket-write",
            f"cannot write under {where}: {probe.written.reason}",
            f"grant s3:PutObject on arn:aws:s3:::{name}/{fleet.artifacts.prefix}/*{kms}",
        )
    if probe.deleted is not None:
        version = f" --version-id {probe.version_id}" if probe.version_id else ""
        return warn(
            "bucket-write",
            f"wrote the probe s3://{name}/{probe.key} but could not delete it: {probe.deleted.reason}",
            f"aws s3api delete-object --bucket {name} --key {probe.key}{version}",
        )
    return ok("bucket-write", f"wrote and deleted the probe s3://{name}/{probe.key} (the one write doctor makes)")


def kms(facts: KmsFacts | None) -> Check:
    if facts is None:
        return ok("kms-key", "no artifacts.kms_key_id: objects get the bucket's default encryption")
    key = facts.key_id
    if isinstance(facts.key, Problem):
        return warn("kms-key", f"cannot describe key {key} ({facts.key.reason}): not checked", "grant kms:DescribeKey")
    if facts.key is None:
        return fail("kms-key", f"no KMS key {key} in this region", "fix artifacts.kms_key_id (a key of the region)")
    info = facts.key
    if info.state != "Enabled":
        return fail(
            "kms-key",
            f"key {key} is {info.state}: S3 refuses every upload encrypted with it",
            f"aws kms enable-key --key-id {info.key_id}" if info.state == "Disabled" else "use an enabled key",
        )
    if info.usage not in ("", "ENCRYPT_DECRYPT") or info.spec not in ("", "SYMMETRIC_DEFAULT"):
        return fail(
            "kms-key",
            f"key {key} is {info.spec}/{info.usage}: S3 encrypts only with symmetric ENCRYPT_DECRYPT keys",
            "use a symmetric encryption key (SYMMETRIC_DEFAULT)",
        )
    if facts.generate is not None:
        return fail(
            "kms-key",
            f"GenerateDataKey (dry run) refused: {facts.generate.reason}",
            f"grant kms:GenerateDataKey on {info.arn or key} (and the instances' role kms:Decrypt)",
        )
    return ok("kms-key", f"key {key} Enabled, symmetric; GenerateDataKey allowed (dry run)")


def setup_plan(cd: CodeDeployFacts, target_name: str) -> Check:
    fix = f"fab setup --target {target_name}"
    if isinstance(cd.plan, Problem):
        return fail("codedeploy-setup", cd.plan.reason, f"resolve it, then {fix}")
    if cd.plan.empty:
        groups = 0 if isinstance(cd.groups, Problem) else len(cd.groups)
        return ok(
            "codedeploy-setup",
            f"application {cd.application} and its {groups} deployment group(s) match the fleet "
            "(`fab setup` plans nothing)",
        )
    lines = describe(cd.plan)
    return fail("codedeploy-setup", f"{lines[0]}: " + "; ".join(line.strip() for line in lines[1:]), fix)


def trusts_codedeploy(policy: Mapping[str, Any]) -> bool:
    statements = policy.get("Statement") or []
    for statement in statements if isinstance(statements, list) else [statements]:
        actions = statement.get("Action") or []
        actions = [actions] if isinstance(actions, str) else actions
        principal = (statement.get("Principal") or {}).get("Service") or []
        principal = [principal] if isinstance(principal, str) else principal
        if statement.get("Effect") == "Allow" and "sts:AssumeRole" in actions and CODEDEPLOY in principal:
            return True
    return False


def service_role(cd: CodeDeployFacts, account: str) -> Check:
    arn = cd.role_arn
    if isinstance(cd.role, Problem):
        return warn("service-role", f"cannot read {arn} ({cd.role.reason}): not checked", "grant iam:GetRole")
    if cd.role is None:
        return fail(
            "service-role",
            f"role {arn} does not exist",
            f"create it trusted by {CODEDEPLOY} with the AWSCodeDeployRole managed policy, or fix "
            "targets.<name>.service_role_arn",
        )
    if not trusts_codedeploy(cd.role.trust_policy):
        return fail(
            "service-role",
            f"role {arn} does not let {CODEDEPLOY} assume it (its trust policy): every deployment fails",
            f"add a trust statement: Allow, Principal Service {CODEDEPLOY}, Action sts:AssumeRole",
        )
    if arn.split(":")[4:5] != [account]:
        return warn("service-role", f"role {arn} is not in account {account}: CodeDeploy needs its own account's")
    return ok("service-role", f"role {arn} exists and trusts {CODEDEPLOY}")


def asgs(fleet: Fleet, facts: Facts) -> list[Check]:
    found = facts.asgs
    out = []
    for index, group in enumerate(fleet.groups):
        name = f"asg:{group.asg}"
        if isinstance(found, Problem) or found is None:
            why = found.reason if isinstance(found, Problem) else "not read"
            out.append(fail(name, why, "grant autoscaling:DescribeAutoScalingGroups"))
            continue
        info = found.get(group.asg)
        if info is None:
            out.append(fail(name, f"ASG {group.asg} (group {group.name}) does not exist", f"fix groups[{index}].asg"))
            continue
        running = sum(1 for i in info.instances if i.lifecycle_state == "InService")
        if running == 0:
            out.append(
                fail(
                    name,
                    f"ASG {group.asg} (group {group.name}) has no InService instance (desired {info.desired}): "
                    "CodeDeploy fails a deployment to it",
                    "scale it out (desired capacity >= 1), or deploy without group "
                    f"{group.name} (fab deploy --groups {','.join(g.name for g in fleet.groups if g != group)})",
                )
            )
            continue
        out.append(ok(name, f"group {group.name}: {running} InService instance(s), desired {info.desired}"))
    return out


def one_group_per_asg(fleet: Fleet, cd: CodeDeployFacts) -> Check:
    if isinstance(cd.on_asg, Problem):
        return warn(
            "one-group-per-asg",
            f"not checked ({cd.on_asg.reason})",
            "grant codedeploy:ListApplications, ListDeploymentGroups and BatchGetDeploymentGroups",
        )
    extra = []
    for group in fleet.groups:
        others = [g for g in cd.on_asg.get(group.asg, ()) if g != f"{cd.application}/{group.name}"]
        if others:
            extra.append(f"ASG {group.asg} is also in {', '.join(others)}")
    if extra:
        return fail(
            "one-group-per-asg",
            "; ".join(extra) + " (each group installs a launch hook on the ASG: new instances wait for both "
            "and time out)",
            "remove the ASG from the other deployment group(s) (aws deploy update-deployment-group "
            "--auto-scaling-groups), or delete them",
        )
    return ok("one-group-per-asg", "no other deployment group, of any application, is on the fleet's ASGs")


def lifecycle_hooks(fleet: Fleet, target: CodeDeployTarget, facts: Facts) -> list[Check]:
    cd = facts.codedeploy
    assert cd is not None
    out = []
    for group in fleet.groups:
        name = f"hooks:{group.asg}"
        info = None if isinstance(cd.groups, Problem) else cd.groups.get(group.name)
        if info is None:
            out.append(warn(name, f"not checked: no deployment group {group.name} (see codedeploy-setup)"))
            continue
        entry = next((a for a in info.get("autoScalingGroups") or [] if a.get("name") == group.asg), None)
        if entry is None:
            out.append(warn(name, f"not checked: deployment group {group.name} is not on ASG {group.asg}"))
            continue
        wanted = {"launch": entry.get("hook")}
        if target.termination_hook:
            wanted["termination"] = entry.get("terminationHook")
        hooks = facts.hooks.get(group.asg)
        if isinstance(hooks, Problem) or hooks is None:
            why = hooks.reason if isinstance(hooks, Problem) else "not read"
            out.append(warn(name, f"not checked ({why})", "grant autoscaling:DescribeLifecycleHooks"))
            continue
        fix = (
            f"set the ASG on the group again so CodeDeploy re-installs its hooks: aws deploy update-deployment-group "
            f"--application-name {cd.application} --current-deployment-group-name {group.name} "
            f"--auto-scaling-groups {group.asg}"
        )
        if target.termination_hook and not wanted["termination"]:
            out.append(
                fail(
                    name,
                    f"deployment group {group.name} has no termination hook: scale-in kills workers without a drain",
                    f"fab setup --target {facts.target} (terminationHookEnabled)",
                )
            )
            continue
        missing = [f"{kind} hook {hook}" for kind, hook in wanted.items() if hook and hook not in hooks]
        if not wanted["launch"] or missing:
            out.append(fail(name, f"ASG {group.asg} lacks CodeDeploy's {', '.join(missing) or 'launch hook'}", fix))
            continue
        out.append(ok(name, f"{' and '.join(wanted)} hook(s) of deployment group {group.name} present"))
    return out


def queue(fleet: Fleet, q: QueueFacts, region: str) -> Check:
    name = f"sqs:{q.name}"
    consumers = [g for g in fleet.groups if q.name in (g.queues or [])]
    needed = max(g.min_visibility_timeout for g in consumers)
    rule = (
        "above every consumer's rule (task_time_limit + 120 s, or its visibility_heartbeat_step + 10 s with the "
        "heartbeat)"
    )
    wanted = max(g.visibility_timeout for g in consumers)
    if isinstance(q.found, Problem):
        return warn(name, f"not checked ({q.found.reason})", "grant sqs:GetQueueUrl and sqs:GetQueueAttributes")
    if q.found is None:
        return ok(
            name,
            f"no SQS queue {q.name} in {region}: not checked (a Redis or RabbitMQ broker; or kombu creates it, "
            f"with VisibilityTimeout {wanted})",
        )
    url, attributes = q.found
    try:
        visibility = int(attributes.get("VisibilityTimeout", ""))
    except ValueError:
        return warn(name, f"queue {q.name} did not say its VisibilityTimeout")
    if visibility < needed:
        return fail(
            name,
            f"VisibilityTimeout {visibility} s is below {needed} s, {rule}: SQS delivers a task still running "
            "again and it runs twice (kombu sets the attribute only when it creates the queue; an existing "
            "queue keeps its value)",
            f"aws sqs set-queue-attributes --queue-url {url} --attributes VisibilityTimeout={wanted}",
        )
    return ok(name, f"VisibilityTimeout {visibility} s >= {needed} s, {rule}")


def athena(facts: Facts) -> Check:
    a = facts.athena
    assert a is not None
    fix = f"fab athena-ddl --apply --database {a.database}"
    if isinstance(a.database_exists, Problem):
        return warn("athena", f"not checked ({a.database_exists.reason})", "grant glue:GetDatabase and glue:GetTable")
    if not a.database_exists:
        return fail("athena", f"no database {a.database} in the Glue Data Catalog: reconcile cannot query", fix)
    problems = [f"{t} ({r.reason})" for t, r in a.tables.items() if isinstance(r, Problem)]
    missing = [t for t, r in a.tables.items() if r is False]
    if missing:
        return fail("athena", f"database {a.database} lacks table(s) {', '.join(missing)}: reconcile cannot query", fix)
    if problems:
        return warn("athena", f"tables not checked: {', '.join(problems)}", "grant glue:GetTable")
    return ok("athena", f"database {a.database} with tables {', '.join(a.tables)}")
