"""`fab doctor`'s verdicts on facts moto cannot produce (a 403 for a missing key, refused calls, no credentials,
a bucket of another region): deploytool.doctor.checks is pure, so the facts are built by hand."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from deploytool.aws.autoscaling import AsgInfo, AsgInstance
from deploytool.aws.iam import RoleInfo
from deploytool.aws.kms import KeyInfo
from deploytool.aws.s3_bucket import Encryption
from deploytool.aws.sts import CallerIdentity
from deploytool.config import CodeDeployTarget, Fleet, load_fleet
from deploytool.doctor.checks import Check, checks
from deploytool.doctor.command import line
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
from deploytool.rollout.setup import SetupPlan

ROOT = Path(__file__).resolve().parent.parent
ROLE = "arn:aws:iam::123456789012:role/CodeDeployServiceRole"
TRUST = {
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "codedeploy.amazonaws.com"}, "Action": "sts:AssumeRole"}]
}
DENIED = Problem("IAM GetRole CodeDeployServiceRole: AccessDenied: not authorized to perform iam:GetRole")


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return load_fleet(ROOT / "deploy.toml")


def target(fleet: Fleet) -> CodeDeployTarget:
    _, found = fleet.target("production")
    assert isinstance(found, CodeDeployTarget)
    return found


def healthy(fleet: Fleet) -> Facts:
    groups = {
        g.name: {
            "autoScalingGroups": [{"name": g.asg, "hook": f"launch-{g.name}", "terminationHook": f"term-{g.name}"}]
        }
        for g in fleet.groups
    }
    return Facts(
        target="production",
        region="us-east-1",
        botocore_version="1.44.8",
        botocore_problem=None,
        identity=CallerIdentity("123456789012", "arn:aws:iam::123456789012:user/ci", "AID"),
        bucket=BucketFacts(
            "acme-deploy-artifacts",
            "yes",
            region="us-east-1",
            versioning="Enabled",
            encryption=Encryption("aws:kms", None),
            encryption_read=True,
            missing_key="404",
            probe=Probe("deploytool/doctor/probe-x.txt", version_id="v1"),
        ),
        kms=None,
        codedeploy=CodeDeployFacts(
            application="acme-workers",
            plan=SetupPlan("acme-workers", ()),
            groups=groups,
            on_asg={g.asg: (f"acme-workers/{g.name}",) for g in fleet.groups},
            role_arn=ROLE,
            role=RoleInfo("CodeDeployServiceRole", ROLE, TRUST),
        ),
        asgs={g.asg: AsgInfo(g.asg, 2, 2, 4, (AsgInstance("i-1", "a", "InService", "Healthy"),)) for g in fleet.groups},
        hooks={g.asg: {f"launch-{g.name}": "L", f"term-{g.name}": "T"} for g in fleet.groups},
        queues=tuple(QueueFacts(q, (f"https://sqs/{q}", {"VisibilityTimeout": "1800"})) for q in ("email", "reports")),
        athena=AthenaFacts("deploytool", True, {"inventory": True, "releases": True}),
    )


def verdicts(fleet: Fleet, facts: Facts) -> dict[str, Check]:
    return {c.name: c for c in checks(fleet, target(fleet), facts)}


def test_the_hand_built_healthy_facts_pass(fleet: Fleet) -> None:
    found = verdicts(fleet, healthy(fleet))
    assert {c.status for c in found.values()} == {"ok"}, [line(c) for c in found.values()]


def test_a_missing_key_answering_403_fails_and_explains_s3_list_bucket(fleet: Fleet) -> None:
    facts = healthy(fleet)
    assert facts.bucket is not None
    found = verdicts(fleet, replace(facts, bucket=replace(facts.bucket, missing_key="403")))
    check = found["bucket-missing-key"]
    assert check.status == "fail"
    assert "answers 403 AccessDenied, not 404: without s3:ListBucket" in check.message
    assert "the first publish and deploy read keys that do not exist yet" in check.message
    assert check.fix.startswith("grant s3:ListBucket on arn:aws:s3:::acme-deploy-artifacts")
    assert 's3:prefix = "deploytool/*"' in check.fix


def test_a_refused_probe_write_fails_and_names_the_permission(fleet: Fleet) -> None:
    facts = healthy(fleet)
    assert facts.bucket is not None
    refused = Probe("deploytool/doctor/probe-x.txt", written=Problem("PUT s3://...: AccessDenied: Access Denied"))
    check = verdicts(fleet, replace(facts, bucket=replace(facts.bucket, probe=refused)))["bucket-write"]
    assert check.status == "fail"
    assert check.fix == "grant s3:PutObject on arn:aws:s3:::acme-deploy-artifacts/deploytool/*"


def test_a_probe_that_could_not_be_deleted_warns_with_the_command_to_delete_it(fleet: Fleet) -> None:
    facts = healthy(fleet)
    assert facts.bucket is not None
    stuck = Probe("deploytool/doctor/probe-x.txt", deleted=Problem("DELETE ...: AccessDenied"), version_id="v7")
    check = verdicts(fleet, replace(facts, bucket=replace(facts.bucket, probe=stuck)))["bucket-write"]
    assert check.status == "warn"
    assert check.fix == (
        "aws s3api delete-object --bucket acme-deploy-artifacts --key deploytool/doctor/probe-x.txt --version-id v7"
    )


def test_a_bucket_of_another_region_fails(fleet: Fleet) -> None:
    facts = healthy(fleet)
    assert facts.bucket is not None
    check = verdicts(fleet, replace(facts, bucket=replace(facts.bucket, region="eu-west-1")))["bucket"]
    assert check.status == "fail"
    assert "is in eu-west-1, the fleet's region is us-east-1" in check.message


def test_a_bucket_answering_403_fails_naming_owner_and_list_bucket(fleet: Fleet) -> None:
    facts = healthy(fleet)
    found = checks(fleet, target(fleet), replace(facts, bucket=BucketFacts("acme-deploy-artifacts", "denied")))
    bucket = [c for c in found if c.name.startswith("bucket")]
    assert [(c.name, c.status) for c in bucket] == [("bucket", "fail")]  # nothing more can be read
    assert "expected_bucket_owner" in bucket[0].message and "s3:ListBucket" in bucket[0].fix


def test_without_credentials_only_two_lines_and_a_fail(fleet: Fleet) -> None:
    facts = Facts("production", "us-east-1", "1.44.8", None, Problem("STS GetCallerIdentity: no AWS credentials found"))
    found = checks(fleet, target(fleet), facts)
    assert [(c.name, c.status) for c in found] == [("credentials", "fail"), ("botocore", "ok")]
    assert "every other check needs working credentials: not run" in found[0].message


def test_refused_reads_warn_without_failing(fleet: Fleet) -> None:
    facts = healthy(fleet)
    assert facts.codedeploy is not None and facts.athena is not None
    refused = Problem("AccessDenied")
    facts = replace(
        facts,
        codedeploy=replace(facts.codedeploy, role=DENIED, on_asg=refused),
        athena=replace(facts.athena, database_exists=refused),
        queues=(QueueFacts("email", refused),),
    )
    found = verdicts(fleet, facts)
    for name in ("service-role", "one-group-per-asg", "athena", "sqs:email"):
        assert found[name].status == "warn", line(found[name])
    assert found["service-role"].fix == "grant iam:GetRole"
    assert not [c for c in found.values() if c.status == "fail"]


def test_kms_key_refusing_generate_data_key_fails(fleet: Fleet) -> None:
    facts = replace(
        healthy(fleet),
        kms=KmsFacts(
            "alias/deploy",
            KeyInfo(
                "k1", "arn:aws:kms:us-east-1:123456789012:key/k1", "Enabled", "ENCRYPT_DECRYPT", "SYMMETRIC_DEFAULT"
            ),
            generate=Problem("KMS GenerateDataKey alias/deploy: AccessDeniedException: not authorized"),
        ),
    )
    check = verdicts(fleet, facts)["kms-key"]
    assert check.status == "fail" and "GenerateDataKey (dry run) refused" in check.message
    assert check.fix.startswith("grant kms:GenerateDataKey on arn:aws:kms:us-east-1:123456789012:key/k1")


def test_an_asymmetric_key_fails(fleet: Fleet) -> None:
    key = KeyInfo("k2", "arn:k2", "Enabled", "SIGN_VERIFY", "RSA_2048")
    check = verdicts(fleet, replace(healthy(fleet), kms=KmsFacts("k2", key)))["kms-key"]
    assert check.status == "fail" and "S3 encrypts only with symmetric ENCRYPT_DECRYPT keys" in check.message


def test_a_setup_conflict_fails_the_setup_check_with_its_message(fleet: Fleet) -> None:
    facts = healthy(fleet)
    assert facts.codedeploy is not None
    conflict = Problem("ASG acme-email-workers (group email) already belongs to deployment group old of ...")
    check = verdicts(fleet, replace(facts, codedeploy=replace(facts.codedeploy, plan=conflict)))["codedeploy-setup"]
    assert check.status == "fail" and check.message == conflict.reason
    assert check.fix == "resolve it, then fab setup --target production"


def test_without_the_termination_hook_configured_only_the_launch_hook_is_required(fleet: Fleet) -> None:
    facts = healthy(fleet)
    no_term = {g.asg: {f"launch-{g.name}": "L"} for g in fleet.groups}
    with_hook = checks(fleet, target(fleet), replace(facts, hooks=no_term))
    assert {c.status for c in with_hook if c.name.startswith("hooks:")} == {"fail"}
    without = checks(fleet, target(fleet).model_copy(update={"termination_hook": False}), replace(facts, hooks=no_term))
    assert {c.status for c in without if c.name.startswith("hooks:")} == {"ok"}


def test_the_line_shows_the_fix_unless_ok() -> None:
    assert line(Check("bucket", "ok", "fine", "unused"), 8) == "ok    bucket   fine"
    assert line(Check("bucket", "fail", "gone", "create it"), 8) == "fail  bucket   gone; fix: create it"
