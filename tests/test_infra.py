"""`fab infra`: the fleet's CloudFormation template. The committed infra/cloudformation.yaml is what `fab infra`
generates for the sample fleet; cfn-lint finds nothing in it (nor in a KMS or an unknown-account variant);
moto's CloudFormation creates it (the bucket, its encryption, the roles with exactly `fab iam-policy`'s
policies, the instance profile, the reader policy); the bucket policy's denies are evaluated like IAM."""

from __future__ import annotations

import ast
import io
import json
import warnings
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from cfnlint.api import lint
from moto import mock_aws

from deploytool import iam, infra
from deploytool.config import Fleet
from deploytool.main import program
from tests.builders import production_scope, sample_fleet
from tests.iam_eval import Need, explicitly_denied

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "infra" / "cloudformation.yaml"
ACCOUNT = "123456789012"
KEY_ARN = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/0b9d1e5c-6f4a-4c1e-9a53-2d8f1f0e7a11"
# Types moto's CloudFormation does not create (it warns and goes on): checked by cfn-lint and below instead.
NOT_IN_MOTO = {"AWS::S3::BucketPolicy", "AWS::Glue::Database", "AWS::Athena::WorkGroup"}


def sample(tmp_path: Path, edit: str = "") -> Fleet:
    return sample_fleet(tmp_path, edit)


def scope(fleet: Fleet, **kwargs: Any) -> iam.Scope:
    return production_scope(fleet, **{"workgroup": "deploytool", **kwargs})


def run(repo: Path, *args: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.chdir(repo)
    for name in ("DEPLOYTOOL_ATHENA_WORKGROUP", "DEPLOYTOOL_ATHENA_DATABASE", "DEPLOYTOOL_ATHENA_OUTPUT"):
        monkeypatch.delenv(name, raising=False)
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            program.run(["deploytool", "infra", *args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def test_the_committed_template_is_what_fab_infra_generates(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run(ROOT, "--out", "-", monkeypatch=monkeypatch)
    assert code == 0, err
    assert out == COMMITTED.read_text(), "run `fab infra --force` after changing deploy.toml or deploytool/iam.py"


def variants(tmp_path: Path) -> dict[str, str]:
    kms = scope(sample(tmp_path / "kms", f'kms_key_id = "{KEY_ARN}"'))
    alias = scope(sample(tmp_path / "alias", 'kms_key_id = "alias/deploy"'))
    return {
        "committed": COMMITTED.read_text(),
        "kms": infra.render(infra.template(kms)),
        "unknown account": infra.render(infra.template(iam.Scope(**{**alias.__dict__, "account": None}))),
    }


def test_cfn_lint_finds_nothing(tmp_path: Path) -> None:
    for name, text in variants(tmp_path).items():
        assert [str(m) for m in lint(text, regions=["us-east-1"])] == [], name


def test_an_unknown_account_is_the_stacks_own(tmp_path: Path) -> None:
    text = variants(tmp_path)["unknown account"]
    document = yaml.safe_load(text)
    assert ACCOUNT not in text.replace(f"arn:aws:iam::{ACCOUNT}:role/CodeDeployServiceRole", "")
    trust = document["Resources"]["DeployerRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"AWS": {"Fn::Sub": "arn:aws:iam::${AWS::AccountId}:root"}}
    assert [a["AssertDescription"] for a in document["Rules"]["FleetAccountAndRegion"]["Assertions"]] == [
        "the fleet's region is us-east-1 (aws.region)"
    ]


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield


def create_stack(text: str) -> set[str]:
    """Create the stack on moto; the resource types moto skipped."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cloudformation = boto3.client("cloudformation")
        cloudformation.create_stack(
            StackName="acme-workers-deploytool", TemplateBody=text, Capabilities=["CAPABILITY_NAMED_IAM"]
        )
        status = cloudformation.describe_stacks(StackName="acme-workers-deploytool")["Stacks"][0]["StackStatus"]
    assert status == "CREATE_COMPLETE"
    return {str(w.message).split()[3] for w in seen if "not supported by moto's CloudFormation" in str(w.message)}


def as_dict(document: Any) -> dict[str, Any]:
    """A policy document as moto gives it back: a dict, JSON, or (an inline policy made by its CloudFormation)
    the Python repr of the template's dict."""
    if isinstance(document, dict):
        return document
    try:
        return dict(json.loads(document))
    except ValueError:
        return dict(ast.literal_eval(document))


def inline(role: str) -> dict[str, Any]:
    client = boto3.client("iam")
    [name] = client.list_role_policies(RoleName=role)["PolicyNames"]
    return as_dict(client.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])


@pytest.mark.parametrize("key", [None, KEY_ARN])
def test_moto_creates_the_stack(key: str | None, aws: None, tmp_path: Path) -> None:
    fleet_scope = scope(sample(tmp_path, f'kms_key_id = "{key}"' if key else ""))
    template = infra.template(fleet_scope)
    assert create_stack(infra.render(template)) <= NOT_IN_MOTO

    s3 = boto3.client("s3")
    [rule] = s3.get_bucket_encryption(Bucket="acme-deploy-artifacts")["ServerSideEncryptionConfiguration"]["Rules"]
    if key:
        assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
    else:
        assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    # moto's CloudFormation leaves out versioning and the S3 Bucket Key: the template's own word for them
    bucket = template["Resources"]["ArtifactsBucket"]
    assert bucket["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}
    [default] = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert default.get("BucketKeyEnabled", False) is bool(key)
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"

    client = boto3.client("iam")
    roles = {
        "acme-workers-deploytool-deployer": "deployer",
        "acme-workers-deploytool-instance": "instance",
        "CodeDeployServiceRole": "codedeploy-service",
    }
    for name, role in roles.items():
        assert inline(name) == iam.policy(role, fleet_scope), role
        trust = client.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"]
        assert as_dict(trust) == iam.trust(role, fleet_scope), role
    assert client.get_role(RoleName="CodeDeployServiceRole")["Role"]["Arn"] == fleet_scope.service_role_arn
    [profile] = client.list_instance_profiles()["InstanceProfiles"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["acme-workers-deploytool-instance"]
    reader = client.get_policy(PolicyArn=f"arn:aws:iam::{ACCOUNT}:policy/acme-workers-deploytool-athena-reader")
    version = client.get_policy_version(
        PolicyArn=reader["Policy"]["Arn"], VersionId=reader["Policy"]["DefaultVersionId"]
    )
    assert as_dict(version["PolicyVersion"]["Document"]) == iam.policy("athena-reader", fleet_scope)


def test_the_glue_database_and_the_workgroup(tmp_path: Path) -> None:
    resources = infra.template(scope(sample(tmp_path, f'kms_key_id = "{KEY_ARN}"')))["Resources"]
    assert resources["GlueDatabase"]["Properties"]["DatabaseInput"]["Name"] == "deploytool"
    workgroup = resources["AthenaWorkGroup"]["Properties"]
    assert workgroup["Name"] == "deploytool"
    assert workgroup["WorkGroupConfiguration"]["EnforceWorkGroupConfiguration"] is True
    assert workgroup["WorkGroupConfiguration"]["ResultConfiguration"] == {
        "OutputLocation": "s3://acme-deploy-artifacts/deploytool/athena-results/",
        "EncryptionConfiguration": {"EncryptionOption": "SSE_KMS", "KmsKey": KEY_ARN},
    }


def _put(headers: dict[str, str], *, tls: bool = True) -> Need:
    context = {"aws:SecureTransport": "true" if tls else "false", **headers}
    return Need("s3:PutObject", "arn:aws:s3:::acme-deploy-artifacts/deploytool/acme-workers/x", context, "s3:PutObject")


@pytest.mark.parametrize("key", [None, KEY_ARN])
def test_the_bucket_policy_wants_tls_and_no_other_encryption(key: str | None, tmp_path: Path) -> None:
    policy = infra.bucket_policy(scope(sample(tmp_path, f'kms_key_id = "{key}"' if key else "")))
    own, other = ("aws:kms", "AES256") if key else ("AES256", "aws:kms")
    header = "s3:x-amz-server-side-encryption"
    assert not explicitly_denied(policy, _put({}))  # no header: the bucket's default encryption applies
    assert not explicitly_denied(policy, _put({header: own}))
    assert explicitly_denied(policy, _put({header: other}))
    assert explicitly_denied(policy, _put({}, tls=False))
    listing = Need("s3:ListBucket", "arn:aws:s3:::acme-deploy-artifacts", {"aws:SecureTransport": "false"}, "x")
    assert explicitly_denied(policy, listing)


# --- the task --------------------------------------------------------------------------------------


def test_fab_infra_writes_refuses_to_overwrite_a_different_file_and_forces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample(tmp_path)
    code, out, _ = run(tmp_path, monkeypatch=monkeypatch)
    written = tmp_path / "infra" / "cloudformation.yaml"
    assert code == 0 and f"wrote {written}" in out and "DEPLOYTOOL_ATHENA_WORKGROUP=deploytool" in out
    assert written.read_text() == COMMITTED.read_text()  # the same fleet: the same bytes
    code, out, _ = run(tmp_path, monkeypatch=monkeypatch)
    assert code == 0 and out == f"{written}: up to date\n"

    written.write_text(written.read_text() + "# edited by hand\n")
    code, out, err = run(tmp_path, monkeypatch=monkeypatch)
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert err.startswith(f"error: {written} exists and differs from what deploy.toml gives: run `fab infra --force`")
    assert written.read_text().endswith("# edited by hand\n")
    code, out, _ = run(tmp_path, "--force", monkeypatch=monkeypatch)
    assert code == 0 and written.read_text() == COMMITTED.read_text()

    mine = tmp_path / "notes.yaml"  # a file fab infra did not write: --force does not replace it
    mine.write_text("my notes\n")
    code, out, err = run(tmp_path, "--out", str(mine), "--force", monkeypatch=monkeypatch)
    assert (code, out) == (2, "") and err.count("\n") == 1 and "not written by `fab infra`" in err
    assert mine.read_text() == "my notes\n"

    other = tmp_path / "elsewhere" / "stack.yaml"
    code, _, _ = run(tmp_path, "--out", str(other), "--workgroup", "reconcile", "--no-sqs", monkeypatch=monkeypatch)
    resources = yaml.safe_load(other.read_text())["Resources"]
    assert code == 0 and resources["AthenaWorkGroup"]["Properties"]["Name"] == "reconcile"
    instance = resources["InstanceRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    assert not any(a.startswith("sqs:") for s in instance["Statement"] for a in s["Action"])


@pytest.mark.parametrize(
    "args, line",
    [
        (["--workgroup", "primary"], "error: --workgroup 'primary' exists in every account and cannot be created"),
        (["--out", ""], "error: --out '' is empty"),
        (["--target", "sandbox"], "error: --target 'sandbox' is a local sandbox"),
        (["--account", "x"], "error: --account 'x' is not allowed"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample(tmp_path)
    code, out, err = run(tmp_path, *args, monkeypatch=monkeypatch)
    assert (code, out) == (2, "") and err.startswith(line) and err.count("\n") == 1, err
    assert not (tmp_path / "infra").exists()
