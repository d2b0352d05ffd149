"""The deployer policy of `fab iam-policy` allows every AWS call the flows make, and no more than they need.

The sample fleet is set up and released on moto (S3, EC2, Auto Scaling, Athena; KMS, IAM, SQS, Glue for doctor)
and the CodeDeploy simulator, through the code `fab setup / publish / deploy / rollback / restart / status /
reconcile [--fix] / athena-ddl --apply / doctor` run, with a Recorder on the AwsSession's clients from before
`fab setup` on. Each recorded call becomes the IAM requests AWS would check (tests/iam_eval.py), and each must
be allowed by the deployer policy built for that fleet. A call deploytool starts making without a permission,
or without a mapping in tests/iam_eval.py, fails here. The other way round, every action of the policy is
used by the flows or listed in NOT_EXERCISED with why it is there.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from rich.console import Console

from deploytool import iam, infra, targets
from deploytool.aws.iam import role_name
from deploytool.bundle import BundleResult
from deploytool.config import CodeDeployTarget
from deploytool.deploy_flow import deploy_and_reconcile, reconcile_services
from deploytool.doctor.command import DoctorFailed, run_doctor
from deploytool.errors import DeployFailed, DriftFound
from deploytool.publish import publish
from deploytool.reconcile.command import athena_setup, fix_runner_for, run_reconcile
from deploytool.reconcile.sql import TABLES
from deploytool.rollout import commands
from deploytool.rollout.plan import RolloutOptions
from deploytool.rollout.wiring import LeaseOptions, Output
from tests.builders import TEMPLATES
from tests.cdsim.env import CodeDeployEnv
from tests.doctor_world import QUEUES, TRUST, encryption_rule, install_hooks
from tests.iam_eval import (
    Call,
    Facts,
    Need,
    Recorder,
    denied,
    explicitly_denied,
    policy_actions,
    requests,
    used_actions,
    without_action,
)
from tests.rollout_helpers import World, sample_world

pytestmark = pytest.mark.slow  # in process, but tens of seconds of flows (the fast tier stays under 2 min)

ACCOUNT = "123456789012"  # moto's, and the sample fleet's service role's
KEY_ID = "0b9d1e5c-6f4a-4c1e-9a53-2d8f1f0e7a11"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{KEY_ID}"

# Actions of the deployer policy the recorded flows do not reach, and why each is there.
NOT_EXERCISED = {
    "s3:AbortMultipartUpload": "boto3's transfer manager aborts a failed multipart upload (bundles above 16 MiB)",
    "s3:ListMultipartUploadParts": "Athena's writes to the results location (Athena user guide)",
    "s3:ListBucketMultipartUploads": "Athena's writes to the results location (Athena user guide)",
    "athena:StopQueryExecution": "a reconcile whose query runs past its timeout stops it",
}


@dataclass
class Run:
    world: World
    recorder: Recorder
    facts: Facts
    needs: list[Need]


def _facts(world: World) -> Facts:
    ec2 = world.env.boto.client("ec2")

    @functools.cache
    def tags(instance_id: str) -> dict[str, str]:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return {t["Key"]: t["Value"] for t in reservations[0]["Instances"][0].get("Tags", [])}

    fleet = world.fleet
    return Facts(
        region=fleet.aws.region,
        account=ACCOUNT,
        kms_key_arn=fleet.artifacts.kms_key_id,
        resource_tags=tags,
        data_root=f"{fleet.artifacts.bucket}/{fleet.artifacts.prefix}/{fleet.app.name}",
    )


def _deploy(world: World, version: str, *, engine: str, groups: list[str] | None = None, **options: Any) -> Any:
    world.later()
    return deploy_and_reconcile(
        world.fleet,
        "production",
        world.fleet.select_groups(groups),
        RolloutOptions(**options),
        world.services,
        Output(ci=True),
        version=version,
        allow_dirty=False,
        reconcile=True,
        engine=engine,
        mirror=str(world.tmp / "mirror"),
        templates=TEMPLATES,
        out_dir=world.tmp / "dist",
        env={},
    )


def _reconcile(world: World, *, engine: str, fix: bool = False, live: bool = False) -> None:
    world.later()
    settings = targets.settings_for(
        world.fleet, "production", engine=engine, mirror=str(world.tmp / "mirror"), live=live
    )
    if live:  # a worker's heartbeat (the flows run none), so --live reads one: ListMetrics, then GetMetricData
        import boto3

        boto3.client("cloudwatch", region_name=world.fleet.aws.region).put_metric_data(
            Namespace="deploytool",
            MetricData=[
                {
                    "MetricName": "WorkerHeartbeat",
                    "Value": 1,
                    "Dimensions": [
                        {"Name": k, "Value": v}
                        for k, v in (("App", world.fleet.app.name), ("Group", "email"), ("Instance", "i-0"),
                                     ("Release", "v1"), ("State", "running"))
                    ],
                }
            ],
        )  # fmt: skip
    runner, backend = fix_runner_for(world.services, "production") if fix else (None, None)
    try:
        run_reconcile(
            world.fleet,
            settings,
            reconcile_services(world.fleet, world.services),
            Console(file=io.StringIO(), width=200),
            as_json=True,
            env={},
            fix=fix,
            runner=runner,
            backend=backend,
        )
    except DriftFound:
        pass


def run_every_flow(world: World, recorder: Recorder) -> None:
    """setup (before this), publish + deploy + tags + the Athena reconcile, a failed release, reconcile --fix on
    DuckDB, a stop-all, rollback, restart, status, the Athena reconcile, setup again (updates), athena-ddl
    --apply, a publish of a bundle big enough for a multipart upload, and doctor (twice)."""
    env = world.env
    _deploy(world, "v1", engine="athena")
    bad = env.asg_instances["acme-email-workers"][1]
    env.sim.inject_failure(bad, "ApplicationStart")  # AllAtOnce: v2 reaches one email instance, the release fails
    with pytest.raises(DeployFailed):
        _deploy(world, "v2", engine="athena", groups=["email"])
    env.sim.failures.clear()
    _reconcile(world, engine="duckdb", fix=True)  # puts v1 back on the instance v2 reached
    env.sim.inject_failure(env.asg_instances["acme-reports-workers"][0], "ValidateService")
    with pytest.raises(DeployFailed):  # reports fails in wave 1: stop-all stops video's deployment too
        _deploy(world, "v3", engine="athena", groups=["reports", "video"], on_failure="stop-all")
    env.sim.failures.clear()
    world.later()
    commands.rollback(
        world.fleet,
        "production",
        world.fleet.groups,
        RolloutOptions(),
        world.services,
        Output(ci=True),
        to_version=None,
    )
    world.later()
    commands.restart(world.fleet, "production", world.fleet.groups, RolloutOptions(), world.services, Output(ci=True))
    commands.status(world.fleet, "production", world.services, None)
    _reconcile(world, engine="athena", live=True)
    target = world.fleet.targets["production"]
    assert isinstance(target, CodeDeployTarget)
    changed = target.model_copy(update={"outdated_instances": "IGNORE"})  # `fab setup` again: updates every group
    commands.setup(world.fleet, changed, env.gateway, Console(file=io.StringIO()), dry_run=False)
    athena_setup(
        world.fleet,
        Console(file=io.StringIO()),
        targets.athena_settings(world.fleet),
        apply=True,
        services=reconcile_services(world.fleet, world.services),
    )
    publish(big_bundle(world.tmp), world.fleet, world.services.aws, target="production", created_by="ci@test")
    run_doctor_twice(world, recorder, changed)


def make_doctors_world(world: World, recorder: Recorder) -> None:
    """What `fab doctor` finds in a set-up account besides what the flows made, made with the recorder paused:
    the fleet's KMS key (moto has no custom key ids: its id generator gives this one key the fleet's id), the
    bucket's default encryption, the service role, CodeDeploy's lifecycle hooks on the ASGs, the queues, the
    Glue database and tables, and another team's CodeDeploy application (doctor reads every application's
    groups to find one on the fleet's ASGs)."""
    boto, fleet = world.env.boto, world.fleet
    with recorder.paused():
        if fleet.artifacts.kms_key_id:
            with mock.patch("moto.kms.models.generate_key_id", return_value=KEY_ID):
                assert boto.client("kms").create_key()["KeyMetadata"]["Arn"] == fleet.artifacts.kms_key_id
        rule = (
            encryption_rule(KEY)
            if fleet.artifacts.kms_key_id
            else {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
        )
        boto.client("s3").put_bucket_encryption(Bucket=fleet.artifacts.bucket, ServerSideEncryptionConfiguration=rule)
        target = fleet.targets["production"]
        assert isinstance(target, CodeDeployTarget)
        boto.client("iam").create_role(
            RoleName=role_name(target.service_role_arn), AssumeRolePolicyDocument=json.dumps(TRUST)
        )
        install_hooks(world.env, "acme-workers", [g.name for g in fleet.groups])
        for queue, visibility in QUEUES.items():
            boto.client("sqs").create_queue(QueueName=queue, Attributes={"VisibilityTimeout": str(visibility)})
        glue, database = boto.client("glue"), targets.athena_settings(fleet).database
        glue.create_database(DatabaseInput={"Name": database})
        for table in TABLES:
            glue.create_table(DatabaseName=database, TableInput={"Name": table})
        world.env.gateway.create_application("other-team")
        other_role = f"arn:aws:iam::{ACCOUNT}:role/OtherTeamCodeDeploy"
        world.env.gateway.create_deployment_group("other-team", "web", {"serviceRoleArn": other_role})


def run_doctor_twice(world: World, recorder: Recorder, target: CodeDeployTarget) -> None:
    """`fab doctor` (not --read-only: it writes and deletes its probe) on the bucket as the flows left it,
    without versioning (the probe's plain DELETE; bucket-versioning fails), then with versioning (the DELETE
    of the probe's version): every other check passes."""
    make_doctors_world(world, recorder)

    def doctor() -> dict[str, str]:
        """The checks that are not ok, with their status."""
        out = io.StringIO()
        with contextlib.suppress(DoctorFailed):
            run_doctor(
                world.fleet,
                "production",
                target,
                world.env.aws,
                Console(file=out, width=400),
                athena_database=targets.athena_settings(world.fleet).database,
                as_json=True,
            )
        checks = json.loads(out.getvalue())["checks"]
        assert len(checks) > 20
        return {c["name"]: c["status"] for c in checks if c["status"] != "ok"}

    assert doctor() == {"bucket-versioning": "fail"}
    with recorder.paused():
        bucket = world.fleet.artifacts.bucket
        world.env.boto.client("s3").put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert doctor() == {}


def big_bundle(tmp: Path) -> BundleResult:
    """A bundle above the 16 MiB multipart threshold: `fab publish` uploads it in parts."""
    path = tmp / "big.tgz"
    path.write_bytes(os.urandom(17 * 1024 * 1024))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return BundleResult(path, path.stat().st_size, 1, digest, "v-big", None, datetime(2025, 5, 2, tzinfo=UTC))


def _with_kms(text: str) -> str:
    return text.replace('prefix = "deploytool"', f'prefix = "deploytool"\nkms_key_id = "{KEY}"')


@pytest.fixture(params=["sample", "kms"], scope="module")
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Every flow once per fleet (the sample fleet, and the same with an SSE-KMS key), shared by the tests here."""
    recorder = Recorder()

    def attach(env: CodeDeployEnv) -> None:
        recorder.attach(env.aws)

    edit = _with_kms if request.param == "kms" else None
    with sample_world(tmp_path_factory.mktemp(request.param), fleet_text=edit, before_setup=attach) as world:
        world.services.lease = LeaseOptions()  # as deploytool.targets builds the services: under the release lease
        run_every_flow(world, recorder)
        recorder.on = False
        facts = _facts(world)
        yield Run(world, recorder, facts, requests(recorder.calls, facts))


def fleet_scope(world: World) -> iam.Scope:
    fleet = world.fleet
    target = fleet.targets["production"]
    assert isinstance(target, CodeDeployTarget)
    settings = targets.athena_settings(fleet)
    return iam.scope_for(
        fleet,
        target,
        database=settings.database,
        workgroup=settings.workgroup,
        output_location=str(settings.output_location),
    )


def deployer_policy(world: World) -> dict[str, Any]:
    return iam.policy("deployer", fleet_scope(world))


def test_the_flows_make_the_calls_this_test_is_about(run: Run) -> None:
    """Guards the test itself: an empty or partial recording would prove nothing."""
    seen = run.recorder.operations()
    expected = {
        "codedeploy:CreateApplication",
        "codedeploy:CreateDeploymentGroup",
        "codedeploy:UpdateDeploymentGroup",
        "codedeploy:CreateDeploymentConfig",
        "codedeploy:RegisterApplicationRevision",
        "codedeploy:CreateDeployment",
        "codedeploy:BatchGetDeployments",
        "codedeploy:StopDeployment",
        "codedeploy:ListDeploymentTargets",
        "codedeploy:BatchGetDeploymentTargets",
        "s3:HeadObject",
        "s3:PutObject",
        "s3:GetObject",
        "s3:ListObjectsV2",
        "s3:CreateMultipartUpload",
        "s3:UploadPart",
        "s3:CompleteMultipartUpload",
        "ec2:CreateTags",
        "ec2:DescribeInstances",
        "autoscaling:DescribeAutoScalingGroups",
        "athena:StartQueryExecution",
        "athena:GetQueryExecution",
        "athena:GetQueryResults",
        # fab doctor
        "sts:GetCallerIdentity",
        "s3:HeadBucket",
        "s3:GetBucketLocation",
        "s3:GetBucketVersioning",
        "s3:GetBucketEncryption",
        "s3:DeleteObject",
        "codedeploy:ListApplications",
        "codedeploy:ListDeploymentGroups",
        "codedeploy:BatchGetDeploymentGroups",
        "iam:GetRole",
        "autoscaling:DescribeLifecycleHooks",
        "sqs:GetQueueUrl",
        "sqs:GetQueueAttributes",
        "glue:GetDatabase",
        "glue:GetTable",
    }
    if run.world.fleet.artifacts.kms_key_id:
        expected |= {"kms:DescribeKey", "kms:GenerateDataKey"}
    assert expected <= seen, f"not recorded: {sorted(expected - seen)}"
    assert len(run.recorder.calls) > 100


def test_every_recorded_call_is_allowed_by_the_deployer_policy(run: Run) -> None:
    policy = deployer_policy(run.world)
    assert denied(policy, run.needs) == []


def test_taking_any_used_action_out_of_the_policy_denies_a_recorded_call(run: Run) -> None:
    policy = deployer_policy(run.world)
    used = used_actions(run.needs)
    assert "kms:GenerateDataKey" in used if run.world.fleet.artifacts.kms_key_id else "kms:Decrypt" not in used
    for action in sorted(used):
        missing = denied(without_action(policy, action), run.needs)
        assert missing and all(f"needs {action} " in line for line in missing), action


def test_the_policy_grants_nothing_the_flows_do_not_use_but_what_is_listed(run: Run) -> None:
    policy = deployer_policy(run.world)
    unused = policy_actions(policy) - used_actions(run.needs)
    assert unused == set(NOT_EXERCISED)


def test_a_call_outside_the_fleet_is_denied(run: Run) -> None:
    """The scoping is real: the same calls against another bucket, application, ASG, key, role or queue, and
    deletes outside doctor's probe, are refused."""
    policy = deployer_policy(run.world)
    facts = run.facts
    others = [
        Call("s3", "PutObject", {"Bucket": "someone-elses", "Key": "deploytool/acme-workers/x"}, {}),
        Call("s3", "PutObject", {"Bucket": "acme-deploy-artifacts", "Key": "other-app/x"}, {}),
        Call("s3", "ListObjectsV2", {"Bucket": "acme-deploy-artifacts", "Prefix": ""}, {}),
        Call("codedeploy", "CreateDeployment", {"applicationName": "other", "deploymentGroupName": "email"}, {}),
        Call(
            "codedeploy", "CreateDeploymentGroup", {"applicationName": "acme-workers", "deploymentGroupName": "x"}, {}
        ),
        Call("athena", "StartQueryExecution", {"QueryString": "SELECT 1", "WorkGroup": "admin"}, {}),
        # doctor's deletes are for its probe only: no release record, index or bundle (nor a version of one)
        Call(
            "s3", "DeleteObject", {"Bucket": "acme-deploy-artifacts", "Key": "deploytool/acme-workers/index.json"}, {}
        ),
        Call(
            "s3",
            "DeleteObject",
            {"Bucket": "acme-deploy-artifacts", "Key": "deploytool/acme-workers/x", "VersionId": "1"},
            {},
        ),
        Call("s3", "PutObject", {"Bucket": "acme-deploy-artifacts", "Key": "deploytool/other/x"}, {}),
        Call("iam", "GetRole", {"RoleName": "Admin"}, {}),
        Call("sqs", "GetQueueAttributes", {"QueueUrl": f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/payments"}, {}),
        Call("kms", "DescribeKey", {"KeyId": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/another"}, {}),
    ]
    for call in others:
        assert denied(policy, requests([call], facts)), call
    outside = Facts(facts.region, facts.account, resource_tags=lambda _: {"aws:autoscaling:groupName": "web"})
    tag = Call(
        "ec2", "CreateTags", {"Resources": ["i-0abc"], "Tags": [{"Key": "deploytool:version", "Value": "1"}]}, {}
    )
    assert denied(policy, requests([tag], outside))  # an instance of another ASG
    inside = Facts(
        facts.region, facts.account, resource_tags=lambda _: {"aws:autoscaling:groupName": "acme-email-workers"}
    )
    assert not denied(policy, requests([tag], inside))
    renamed = Call("ec2", "CreateTags", {**tag.params, "Tags": [{"Key": "Name", "Value": "x"}]}, {})
    assert denied(policy, requests([renamed], inside))  # a tag that is not deploytool's


def test_the_bucket_policy_of_fab_infra_refuses_none_of_the_calls(run: Run) -> None:
    """TLS only and no other encryption than the bucket's: deploytool's writes (a release record, an index, an
    inventory snapshot without an encryption header; a bundle with SSE-KMS) all pass."""
    policy = infra.bucket_policy(fleet_scope(run.world))
    s3 = [n for n in run.needs if n.action.startswith("s3:")]
    assert any(n.action == "s3:PutObject" for n in s3)
    assert [n for n in s3 if explicitly_denied(policy, n)] == []
