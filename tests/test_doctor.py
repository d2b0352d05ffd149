"""`fab doctor` on moto and the CodeDeploy simulator: a healthy set-up passes every check; each broken set-up
fails exactly the check that covers it, and doctor then exits 1."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import botocore
import pytest

from tests.doctor_world import BUCKET, ROLE, TABLES, TRUST, World, encryption_rule, healthy_world, install_hooks

pytestmark = pytest.mark.slow  # in process, but tens of seconds of flows (the fast tier stays under 2 min)

ROLE_ARN = f"arn:aws:iam::123456789012:role/{ROLE}"

SETUP_READS = {
    "GetApplication",
    "ListApplications",
    "ListDeploymentGroups",
    "BatchGetDeploymentGroups",
    "GetDeploymentConfig",
}
EVERY_CHECK = [
    "credentials",
    "botocore",
    "bucket",
    "bucket-versioning",
    "bucket-encryption",
    "bucket-missing-key",
    "bucket-write",
    "kms-key",
    "codedeploy-setup",
    "service-role",
    "asg:acme-email-workers",
    "asg:acme-reports-workers",
    "asg:acme-video-workers",
    "one-group-per-asg",
    "hooks:acme-email-workers",
    "hooks:acme-reports-workers",
    "hooks:acme-video-workers",
    "sqs:email",
    "sqs:reports",
    "sqs:video",
    "athena",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One healthy world for the module (moto's start-up takes seconds): each broken case breaks it and repairs
    it on leaving, then proves every check passes again."""
    with healthy_world(tmp_path_factory.mktemp("doctor")) as world:
        yield world


def test_a_healthy_target_passes_every_check_and_leaves_nothing_behind(world: World) -> None:
    writes_before = {op: n for op, n in world.env.sim.calls.items() if op not in SETUP_READS}
    outcome = world.run()
    assert outcome.exit_code == 0, outcome.output
    assert [c.name for c in outcome.checks] == EVERY_CHECK
    assert {c.name: c.status for c in outcome.checks} == dict.fromkeys(EVERY_CHECK, "ok"), outcome.output
    # one line per check: status, name, message
    lines = outcome.output.splitlines()
    assert len(lines) == len(EVERY_CHECK)
    assert lines[0].startswith("ok    credentials                account 123456789012 as arn:aws:")
    assert "CodeDeploy" not in outcome.check("codedeploy-setup").fix
    # the probe was written (SSE-KMS, as the release uploads) and deleted by its version: no object, no version,
    # no delete marker remains
    probe = outcome.check("bucket-write").message
    assert f"wrote and deleted the probe s3://{BUCKET}/deploytool/doctor/probe-" in probe
    versions = world.client("s3").list_object_versions(Bucket=BUCKET)
    assert "Versions" not in versions and "DeleteMarkers" not in versions
    # CodeDeploy was only read
    writes_after = {op: n for op, n in world.env.sim.calls.items() if op not in SETUP_READS}
    assert writes_after == writes_before


def test_read_only_writes_nothing_and_warns_that_writability_was_not_checked(world: World) -> None:
    outcome = world.run(read_only=True)
    assert outcome.exit_code == 0  # a warn does not fail
    assert outcome.status("bucket-write") == "warn"
    assert "not checked (--read-only)" in outcome.check("bucket-write").message
    assert "Versions" not in world.client("s3").list_object_versions(Bucket=BUCKET)


def test_json_lists_every_check_with_status_message_and_fix(world: World) -> None:
    with versioning_off(world):
        outcome = world.run(as_json=True)
    assert outcome.exit_code == 1
    document = json.loads(outcome.output.split("error: ")[0])
    assert document["target"] == "production" and document["ok"] is False
    assert [c["name"] for c in document["checks"]] == EVERY_CHECK
    versioning = next(c for c in document["checks"] if c["name"] == "bucket-versioning")
    assert versioning["status"] == "fail"
    assert versioning["fix"] == (
        f"aws s3api put-bucket-versioning --bucket {BUCKET} --versioning-configuration Status=Enabled"
    )
    assert set(document["checks"][0]) == {"name", "status", "message", "fix"}


# Each broken set-up: a context manager that breaks the shared healthy world, and repairs it on leaving.


@contextmanager
def bucket_deleted(world: World) -> Iterator[None]:
    s3 = world.client("s3")
    s3.delete_bucket(Bucket=BUCKET)  # empty: the probe was deleted by its version
    yield
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration=encryption_rule(world.key_arn))


@contextmanager
def versioning_off(world: World) -> Iterator[None]:
    s3 = world.client("s3")
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"})
    yield
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})


@contextmanager
def no_default_encryption(world: World) -> Iterator[None]:
    s3 = world.client("s3")
    s3.delete_bucket_encryption(Bucket=BUCKET)
    yield
    s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration=encryption_rule(world.key_arn))


@contextmanager
def key_disabled(world: World) -> Iterator[None]:
    kms, key = world.client("kms"), world.key_arn.rsplit("/", 1)[1]
    kms.disable_key(KeyId=key)
    yield
    kms.enable_key(KeyId=key)


@contextmanager
def key_pending_deletion(world: World) -> Iterator[None]:
    kms, key = world.client("kms"), world.key_arn.rsplit("/", 1)[1]
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    yield
    kms.cancel_key_deletion(KeyId=key)
    kms.enable_key(KeyId=key)


@contextmanager
def second_group_on_asg(world: World, application: str, group: str) -> Iterator[None]:
    gateway = world.env.gateway
    if gateway.get_application(application) is None:
        gateway.create_application(application)
    if gateway.get_deployment_group(application, group) is None:
        gateway.create_deployment_group(application, group, {"serviceRoleArn": ROLE_ARN})
    gateway.update_deployment_group(application, group, {"autoScalingGroups": ["acme-email-workers"]})
    yield
    gateway.update_deployment_group(application, group, {"autoScalingGroups": []})  # the simulator deletes none


def other_application_on_asg(world: World) -> AbstractContextManager[None]:
    return second_group_on_asg(world, "legacy-workers", "email-old")


def our_second_group_on_asg(world: World) -> AbstractContextManager[None]:
    return second_group_on_asg(world, "acme-workers", "email-copy")


@contextmanager
def asg_without_instances(world: World) -> Iterator[None]:
    autoscaling = world.client("autoscaling")
    autoscaling.update_auto_scaling_group(AutoScalingGroupName="acme-video-workers", MinSize=0, DesiredCapacity=0)
    yield
    autoscaling.update_auto_scaling_group(AutoScalingGroupName="acme-video-workers", MinSize=2, DesiredCapacity=2)


@contextmanager
def termination_hook_deleted(world: World) -> Iterator[None]:
    autoscaling = world.client("autoscaling")
    hooks = autoscaling.describe_lifecycle_hooks(AutoScalingGroupName="acme-reports-workers")["LifecycleHooks"]
    hook = next(h for h in hooks if h["LifecycleTransition"].endswith("TERMINATING"))
    autoscaling.delete_lifecycle_hook(
        AutoScalingGroupName="acme-reports-workers", LifecycleHookName=hook["LifecycleHookName"]
    )
    yield
    install_hooks(world.env, "acme-workers", ["reports"])


@contextmanager
def queue_visibility_too_short(world: World) -> Iterator[None]:
    sqs = world.client("sqs")
    url = sqs.get_queue_url(QueueName="reports")["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "400"})  # task_time_limit 300
    yield
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "1800"})


@contextmanager
def athena_table_missing(world: World) -> Iterator[None]:
    glue = world.client("glue")
    glue.delete_table(DatabaseName="deploytool", Name="releases")
    yield
    glue.create_table(DatabaseName="deploytool", TableInput={"Name": "releases"})


@contextmanager
def athena_database_missing(world: World) -> Iterator[None]:
    glue = world.client("glue")
    for table in TABLES:
        glue.delete_table(DatabaseName="deploytool", Name=table)
    glue.delete_database(Name="deploytool")
    yield
    glue.create_database(DatabaseInput={"Name": "deploytool"})
    for table in TABLES:
        glue.create_table(DatabaseName="deploytool", TableInput={"Name": table})


@contextmanager
def role_missing(world: World) -> Iterator[None]:
    iam = world.client("iam")
    iam.delete_role(RoleName=ROLE)
    yield
    iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(TRUST))


@contextmanager
def role_not_trusting_codedeploy(world: World) -> Iterator[None]:
    iam = world.client("iam")
    ec2_only = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
    iam.update_assume_role_policy(RoleName=ROLE, PolicyDocument=json.dumps(ec2_only))
    yield
    iam.update_assume_role_policy(RoleName=ROLE, PolicyDocument=json.dumps(TRUST))


@contextmanager
def group_settings_changed(world: World) -> Iterator[None]:
    gateway = world.env.gateway
    gateway.update_deployment_group("acme-workers", "video", {"outdatedInstancesStrategy": "IGNORE"})
    yield
    gateway.update_deployment_group("acme-workers", "video", {"outdatedInstancesStrategy": "UPDATE"})


@contextmanager
def old_botocore(world: World) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore, "__version__", "1.35.0")
        yield


Breaker = Callable[[World], AbstractContextManager[None]]
BROKEN: list[tuple[Breaker, str, str, str]] = [
    # (how, the check that catches it, its status, a phrase of its message)
    (bucket_deleted, "bucket", "fail", f"bucket {BUCKET} does not exist"),
    (versioning_off, "bucket-versioning", "fail", "versioning is Suspended"),
    (no_default_encryption, "bucket-encryption", "warn", "no default encryption rule"),
    (key_disabled, "kms-key", "fail", "is Disabled: S3 refuses every upload"),
    (key_pending_deletion, "kms-key", "fail", "is PendingDeletion"),
    (other_application_on_asg, "one-group-per-asg", "fail", "is also in legacy-workers/email-old"),
    (our_second_group_on_asg, "one-group-per-asg", "fail", "is also in acme-workers/email-copy"),
    (asg_without_instances, "asg:acme-video-workers", "fail", "has no InService instance (desired 0)"),
    (termination_hook_deleted, "hooks:acme-reports-workers", "fail", "lacks CodeDeploy's termination hook"),
    (queue_visibility_too_short, "sqs:reports", "fail", "VisibilityTimeout 400 s is below 421 s"),
    (athena_table_missing, "athena", "fail", "lacks table(s) releases"),
    (athena_database_missing, "athena", "fail", "no database deploytool"),
    (role_missing, "service-role", "fail", f"role {ROLE_ARN} does not exist"),
    (role_not_trusting_codedeploy, "service-role", "fail", "does not let codedeploy.amazonaws.com assume it"),
    (group_settings_changed, "codedeploy-setup", "fail", "update deployment group video: outdatedInstancesStrategy"),
    (old_botocore, "botocore", "fail", "botocore 1.35.0 is too old for deploytool"),
]


@pytest.mark.parametrize(("breaks", "check", "status", "phrase"), BROKEN, ids=[b[0].__name__ for b in BROKEN])
def test_each_broken_set_up_fails_its_check(
    world: World, breaks: Breaker, check: str, status: str, phrase: str
) -> None:
    with breaks(world):
        outcome = world.run()
    assert outcome.status(check) == status, outcome.output
    assert phrase in outcome.check(check).message, outcome.output
    if status == "fail":
        assert outcome.exit_code == 1
        assert outcome.check(check).fix  # a fail always says what to do
        assert f"failed on target production: {', '.join(outcome.failed())}" in outcome.output
    else:
        assert outcome.exit_code == 0 and outcome.failed() == []
    repaired = world.run()  # the check is exact: repaired, every check passes again
    assert repaired.exit_code == 0 and {c.status for c in repaired.checks} == {"ok"}, repaired.output


@contextmanager
def group_missing(world: World) -> Iterator[None]:
    """The video group taken out of the application (renamed away from its name and its ASG: the simulator
    deletes nothing), as if `fab setup` had never created it."""
    gateway = world.env.gateway
    gateway.update_deployment_group(
        "acme-workers", "video", {"newDeploymentGroupName": "video-old", "autoScalingGroups": []}
    )
    yield
    gateway.update_deployment_group(
        "acme-workers", "video-old", {"newDeploymentGroupName": "video", "autoScalingGroups": ["acme-video-workers"]}
    )


def test_a_missing_deployment_group_fails_setup_and_leaves_its_hooks_unchecked(world: World) -> None:
    with group_missing(world):
        outcome = world.run()
    assert outcome.exit_code == 1
    assert outcome.failed() == ["codedeploy-setup"]
    setup = outcome.check("codedeploy-setup")
    assert setup.message == "application acme-workers: 1 change(s): create deployment group video"
    assert setup.fix == "fab setup --target production"
    assert outcome.status("hooks:acme-video-workers") == "warn"
    assert world.run().exit_code == 0
