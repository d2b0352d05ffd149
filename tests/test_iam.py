"""`fab iam-policy`: the policies of each role for a fleet, checked by parliament, and the task's input rules.
(What the deployer policy must allow is proven against recorded calls in tests/test_iam_flows.py.)"""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import parliament
import pytest

from deploytool import iam
from deploytool.config import Fleet, load_fleet
from deploytool.main import program
from tests.builders import production_scope, sample_fleet

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "123456789012"
KEY_ID = "0b9d1e5c-6f4a-4c1e-9a53-2d8f1f0e7a11"
KEY_ARN = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{KEY_ID}"
# parliament's community auditors flag actions that can change permissions. Ours, and why they stay:
PERMISSIONS_MANAGEMENT = {
    "deployer": {"iam:passrole"},  # `fab setup` names the service role in each deployment group (PassedToService)
    "instance": {"sqs:createqueue"},  # kombu creates a missing queue, and each worker's canary queue
}


def sample(tmp_path: Path, edit: str = "") -> Fleet:
    return sample_fleet(tmp_path, edit)


def scope(fleet: Fleet, **kwargs: Any) -> iam.Scope:
    return production_scope(fleet, **{"workgroup": "primary", **kwargs})


def findings(document: dict[str, Any], *, community: bool = False) -> list[tuple[str, Any]]:
    analyzed = parliament.analyze_policy_string(json.dumps(document), include_community_auditors=community)
    return [(f.issue, f.location) for f in analyzed.findings if not parliament_gap(f.issue, f.detail)]


def parliament_gap(issue: str, detail: str) -> bool:
    """parliament checks a condition key against the action's own keys only, not its resource type's: AWS's
    Service Authorization Reference lists kms:ResourceAliases on the `key` resource of kms:Decrypt,
    kms:GenerateDataKey and kms:DescribeKey (parliament's own iam_definition.json has it there too). Only that,
    only for an alias."""
    return issue == "UNKNOWN_CONDITION_FOR_ACTION" and detail.startswith(
        "Unknown condition kms:ResourceAliases for action kms:"
    )


def community_actions(document: dict[str, Any]) -> set[str]:
    found = findings(document, community=True)
    assert {issue for issue, _ in found} <= {"PERMISSIONS_MANAGEMENT_ACTIONS"}, found
    return {a for _, where in found for a in where["actions"]}


KEYS = {
    "no key": "",
    "key arn": f'kms_key_id = "{KEY_ARN}"',
    "key id": f'kms_key_id = "{KEY_ID}"',
    "alias": 'kms_key_id = "alias/deploy"',
}


@pytest.mark.parametrize("role", iam.ROLES)
@pytest.mark.parametrize("key", list(KEYS))
def test_parliament_finds_nothing_in_any_role(role: str, key: str, tmp_path: Path) -> None:
    fleet_scope = scope(sample(tmp_path, KEYS[key]))
    document = iam.policy(role, fleet_scope)
    assert findings(document) == []
    assert community_actions(document) == PERMISSIONS_MANAGEMENT.get(role, set())
    trust = iam.trust(role, fleet_scope)
    assert (trust is None) == (role == "athena-reader")


def test_an_unknown_account_is_a_wildcard_and_said(tmp_path: Path) -> None:
    fleet = sample(tmp_path)
    known = scope(fleet)
    unknown = iam.Scope(**{**known.__dict__, "account": None})
    text = json.dumps(iam.policy("deployer", unknown))
    assert text.count(ACCOUNT) == 2  # the service role ARN, as the fleet file gives it (PassRole, doctor's GetRole)
    assert "arn:aws:codedeploy:us-east-1:*:application:acme-workers" in text
    assert findings(iam.policy("deployer", unknown)) == []
    assert any("account is not known" in n for n in iam.notes("deployer", unknown))
    assert not any("account" in n for n in iam.notes("deployer", known))
    assert iam.Scope(**{**known.__dict__, "region": "cn-north-1"}).s3("b") == "arn:aws-cn:s3:::b"


def statement(document: dict[str, Any], sid: str) -> dict[str, Any]:
    return next(s for s in document["Statement"] if s["Sid"] == sid)


def test_the_deployer_is_scoped_to_the_fleet(tmp_path: Path) -> None:
    deployer = iam.policy("deployer", scope(sample(tmp_path, KEYS["key arn"])))
    listing = statement(deployer, "ListOwnPrefix")
    assert listing["Resource"] == "arn:aws:s3:::acme-deploy-artifacts"
    assert listing["Condition"] == {
        "StringLikeIfExists": {"s3:prefix": ["deploytool/acme-workers/*", "deploytool/athena-results/*"]}
    }
    assert statement(deployer, "BundlesReleasesInventory")["Resource"] == (
        "arn:aws:s3:::acme-deploy-artifacts/deploytool/acme-workers/*"
    )
    assert statement(deployer, "CodeDeployFleetGroups")["Resource"] == [
        f"arn:aws:codedeploy:us-east-1:{ACCOUNT}:deploymentgroup:acme-workers/{g}"
        for g in ("email", "reports", "video")
    ]
    assert statement(deployer, "CodeDeployCreateConfigs")["Resource"] == (
        f"arn:aws:codedeploy:us-east-1:{ACCOUNT}:deploymentconfig:deploytool-min-healthy-percent-50"
    )
    assert statement(deployer, "PassServiceRoleToCodeDeploy") == {
        "Sid": "PassServiceRoleToCodeDeploy",
        "Effect": "Allow",
        "Action": ["iam:PassRole"],
        "Resource": f"arn:aws:iam::{ACCOUNT}:role/CodeDeployServiceRole",
        "Condition": {"StringEquals": {"iam:PassedToService": "codedeploy.amazonaws.com"}},
    }
    tags = statement(deployer, "TagFleetInstances")["Condition"]
    assert tags["StringEquals"] == {
        "aws:ResourceTag/aws:autoscaling:groupName": [
            "acme-email-workers",
            "acme-reports-workers",
            "acme-video-workers",
        ]
    }
    assert statement(deployer, "ArtifactsKey") == {
        "Sid": "ArtifactsKey",
        "Effect": "Allow",
        "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
        "Resource": KEY_ARN,
        "Condition": {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}},
    }
    assert statement(deployer, "AthenaQueries")["Resource"] == f"arn:aws:athena:us-east-1:{ACCOUNT}:workgroup/primary"


def test_doctors_rights_are_scoped_too(tmp_path: Path) -> None:
    """`fab doctor`'s one write (the probe) and its deletes only under <prefix>/doctor/; GetRole on the service
    role only; DescribeKey and GenerateDataKey (a dry run, authorized as the call: not via S3) on the key only;
    account-wide only what has no resource-level permission; nothing when the fleet has no key or no SQS."""
    fleet_scope = scope(sample(tmp_path, KEYS["key arn"]))
    deployer = iam.policy("deployer", fleet_scope)
    assert statement(deployer, "DoctorProbe") == {
        "Sid": "DoctorProbe",
        "Effect": "Allow",
        "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:GetObject", "s3:PutObject"],
        "Resource": "arn:aws:s3:::acme-deploy-artifacts/deploytool/doctor/*",
    }
    assert statement(deployer, "DoctorBucketSettings")["Resource"] == "arn:aws:s3:::acme-deploy-artifacts"
    assert statement(deployer, "DoctorServiceRole")["Resource"] == f"arn:aws:iam::{ACCOUNT}:role/CodeDeployServiceRole"
    assert statement(deployer, "DoctorKey") == {
        "Sid": "DoctorKey",
        "Effect": "Allow",
        "Action": ["kms:DescribeKey", "kms:GenerateDataKey"],
        "Resource": KEY_ARN,
    }
    assert statement(deployer, "DoctorQueues")["Resource"] == [
        f"arn:aws:sqs:us-east-1:{ACCOUNT}:{q}" for q in ("email", "reports", "video")
    ]
    assert statement(deployer, "CodeDeployReadEveryGroup")["Resource"] == [
        f"arn:aws:codedeploy:us-east-1:{ACCOUNT}:application:*",
        f"arn:aws:codedeploy:us-east-1:{ACCOUNT}:deploymentgroup:*",
    ]
    anywhere = {a for s in deployer["Statement"] if s["Resource"] == "*" for a in s["Action"]}
    assert anywhere == {
        "codedeploy:StopDeployment",
        "codedeploy:ListDeploymentTargets",
        "codedeploy:BatchGetDeploymentTargets",
        "codedeploy:ListApplications",
        "autoscaling:DescribeAutoScalingGroups",
        "autoscaling:DescribeLifecycleHooks",
        "ec2:DescribeInstances",
        "cloudwatch:ListMetrics",  # reconcile --live: CloudWatch has no resource-level rights for these
        "cloudwatch:GetMetricData",
    }
    assert any("probe object" in n for n in iam.notes("deployer", fleet_scope))
    plain = iam.policy("deployer", iam.Scope(**{**fleet_scope.__dict__, "kms_key_id": None, "sqs": False}))
    assert {s["Sid"] for s in plain["Statement"]} & {"DoctorKey", "DoctorQueues", "ArtifactsKey"} == set()


def test_a_key_alias_is_matched_by_condition(tmp_path: Path) -> None:
    deployer = iam.policy("deployer", scope(sample(tmp_path, KEYS["alias"])))
    raw = parliament.analyze_policy_string(json.dumps(deployer)).findings
    assert [f.issue for f in raw] == ["UNKNOWN_CONDITION_FOR_ACTION"] * 4 and all(
        parliament_gap(f.issue, f.detail) for f in raw
    )
    key = statement(deployer, "ArtifactsKey")
    assert key["Resource"] == f"arn:aws:kms:us-east-1:{ACCOUNT}:key/*"
    assert key["Condition"]["ForAnyValue:StringEquals"] == {"kms:ResourceAliases": ["alias/deploy"]}
    doctor = statement(deployer, "DoctorKey")
    assert doctor["Resource"] == key["Resource"]
    assert doctor["Condition"] == {"ForAnyValue:StringEquals": {"kms:ResourceAliases": ["alias/deploy"]}}


def test_the_instance_reads_bundles_and_consumes_its_queues(tmp_path: Path) -> None:
    fleet = sample(tmp_path, 'kms_key_id = "alias/deploy"')
    instance = iam.policy("instance", scope(fleet))
    assert statement(instance, "ReadBundles") == {
        "Sid": "ReadBundles",
        "Effect": "Allow",
        "Action": ["s3:GetObject", "s3:GetObjectVersion"],
        "Resource": "arn:aws:s3:::acme-deploy-artifacts/deploytool/acme-workers/*.tgz",
    }
    assert statement(instance, "DecryptBundles")["Action"] == ["kms:Decrypt"]
    assert statement(instance, "ConsumeOwnQueues")["Resource"] == [
        f"arn:aws:sqs:us-east-1:{ACCOUNT}:{q}" for q in ("deploytool-canary-*", "email", "reports", "video")
    ]
    no_sqs = iam.policy("instance", scope(fleet, sqs=False))
    assert [s["Sid"] for s in no_sqs["Statement"]] == [
        "ReadBundles", "DecryptBundles", "RecordInterruptions", "EncryptInterruptionRecords", "PublishTelemetry"
    ]  # fmt: skip
    assert statement(instance, "PublishTelemetry")["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": "deploytool"}
    }
    assert statement(instance, "RecordInterruptions")["Resource"] == (
        "arn:aws:s3:::acme-deploy-artifacts/deploytool/acme-workers/interruptions/*"
    )
    assert iam.sqs_queue_name("a.b.c") == "a-b-c" and iam.sqs_queue_name("a.b.fifo") == "a-b.fifo"
    assert iam.trust("instance", scope(fleet))["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}  # type: ignore[index]


def test_the_codedeploy_service_role_is_awscodedeployrole_cut_to_the_fleet(tmp_path: Path) -> None:
    fleet = sample(tmp_path)
    fleet_scope = scope(fleet)
    service = iam.policy("codedeploy-service", fleet_scope)
    hooks = statement(service, "FleetLifecycleHooksAndProcesses")
    assert hooks["Resource"] == [
        f"arn:aws:autoscaling:us-east-1:{ACCOUNT}:autoScalingGroup:*:autoScalingGroupName/{a}"
        for a in ("acme-email-workers", "acme-reports-workers", "acme-video-workers")
    ]
    assert {"autoscaling:SuspendProcesses", "autoscaling:ResumeProcesses"} <= set(
        hooks["Action"]
    )  # ec2DeploymentOptions
    actions = {a for s in service["Statement"] for a in s["Action"]}
    assert not any(a.startswith(("elasticloadbalancing:", "sns:", "iam:")) for a in actions)
    assert "GroupAlarms" not in [s["Sid"] for s in service["Statement"]]  # no group lists alarms
    trust = iam.trust("codedeploy-service", fleet_scope)
    assert trust == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "codedeploy.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": ACCOUNT},
                    "ArnLike": {
                        "aws:SourceArn": f"arn:aws:codedeploy:us-east-1:{ACCOUNT}:deploymentgroup:acme-workers/*"
                    },
                },
            }
        ],
    }


def test_group_alarms_are_readable_by_codedeploy(tmp_path: Path) -> None:
    text = (
        (ROOT / "deploy.toml")
        .read_text()
        .replace('strategy = "HalfAtATime"', 'strategy = "HalfAtATime"\nalarms = ["video-errors"]')
    )
    (tmp_path / "deploy.toml").write_text(text)
    shutil.copytree(ROOT / "sample_app", tmp_path / "sample_app")
    service = iam.policy("codedeploy-service", scope(load_fleet(tmp_path / "deploy.toml")))
    assert statement(service, "GroupAlarms")["Resource"] == f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:video-errors"
    assert findings(service) == []


def test_the_athena_reader_reads_the_tables_and_writes_results_only(tmp_path: Path) -> None:
    reader = iam.policy("athena-reader", scope(sample(tmp_path)))
    writes = {a for s in reader["Statement"] for a in s["Action"] if "Put" in a or "Create" in a}
    assert writes == {"s3:PutObject"}
    assert statement(reader, "AthenaResultsObjects")["Resource"] == (
        "arn:aws:s3:::acme-deploy-artifacts/deploytool/athena-results/*"
    )
    assert statement(reader, "ReadTables")["Resource"] == [
        "arn:aws:s3:::acme-deploy-artifacts/deploytool/acme-workers/inventory/*",
        "arn:aws:s3:::acme-deploy-artifacts/deploytool/acme-workers/releases/*",
    ]
    elsewhere = scope(load_fleet(tmp_path / "deploy.toml"), output_location="s3://results-bucket/athena/")
    listing = [s for s in iam.policy("athena-reader", elsewhere)["Statement"] if s["Action"] == ["s3:ListBucket"]]
    assert [(s["Resource"], s["Condition"]["StringLikeIfExists"]["s3:prefix"]) for s in listing] == [
        (
            "arn:aws:s3:::acme-deploy-artifacts",
            ["deploytool/acme-workers/inventory/*", "deploytool/acme-workers/releases/*"],
        ),
        ("arn:aws:s3:::results-bucket", ["athena/*"]),
    ]


# --- the task --------------------------------------------------------------------------------------


def run(repo: Path, *args: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.chdir(repo)
    for name in ("DEPLOYTOOL_ATHENA_WORKGROUP", "DEPLOYTOOL_ATHENA_DATABASE", "DEPLOYTOOL_ATHENA_OUTPUT"):
        monkeypatch.delenv(name, raising=False)
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            program.run(["deploytool", "iam-policy", *args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("role", iam.ROLES)
def test_fab_iam_policy_prints_the_policy_as_json(role: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = sample(tmp_path)
    code, out, err = run(tmp_path, "--role", role, monkeypatch=monkeypatch)
    assert code == 0, err
    assert json.loads(out) == iam.policy(role, scope(fleet))
    assert err and all(line.startswith("note: ") for line in err.splitlines())


def test_fab_iam_policy_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = sample(tmp_path)
    code, out, _ = run(tmp_path, "--role", "codedeploy-service", "--trust", monkeypatch=monkeypatch)
    assert code == 0 and json.loads(out) == iam.trust("codedeploy-service", scope(fleet))
    code, out, _ = run(
        tmp_path,
        "--role",
        "deployer",
        "--account",
        "210987654321",
        "--workgroup",
        "deploytool",
        monkeypatch=monkeypatch,
    )
    assert code == 0
    assert json.loads(out) == iam.policy("deployer", scope(fleet, account="210987654321", workgroup="deploytool"))
    monkeypatch.setenv("DEPLOYTOOL_ATHENA_WORKGROUP", "fromenv")
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        program.run(["deploytool", "iam-policy", "--role", "athena-reader"], exit=False)
    assert "workgroup/fromenv" in out.getvalue()  # the workgroup `fab reconcile` would use


@pytest.mark.parametrize(
    "args, line",
    [
        ([], "error: iam-policy needs --role; allowed: deployer, instance, codedeploy-service, athena-reader"),
        (["--role", "deployr"], "error: --role 'deployr' is not allowed (did you mean 'deployer'?); allowed: "),
        (["--role", ""], "error: --role '' is empty"),
        (["--role", "deployer", "--target", "sandbox"], "error: --target 'sandbox' is a local sandbox: IAM policies"),
        (["--role", "deployer", "--target", "prod"], "error: --target 'prod': no such target in "),
        (["--role", "deployer", "--account", "12345"], "error: --account '12345' is not allowed; allowed: a 12-digit"),
        (["--role", "deployer", "--workgroup", "a b"], "error: --workgroup 'a b' is not allowed"),
        (["--role", "athena-reader", "--trust"], "error: --role athena-reader has no trust policy"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample(tmp_path)
    code, out, err = run(tmp_path, *args, monkeypatch=monkeypatch)
    assert (code, out) == (2, "")
    assert err.startswith(line) and err.count("\n") == 1, err


def test_a_fleet_without_a_codedeploy_target_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sample(tmp_path)
    text = (tmp_path / "deploy.toml").read_text()
    (tmp_path / "deploy.toml").write_text(text[: text.index("[targets.production]")])
    code, _, err = run(tmp_path, "--role", "deployer", monkeypatch=monkeypatch)
    assert code == 2 and "no codedeploy target" in err and err.count("\n") == 1


def test_a_large_fleet_stays_within_a_managed_policys_size(tmp_path: Path) -> None:
    """IAM takes at most 6,144 characters (whitespace not counted) in a managed policy: with many groups the
    deployer's group writes become <application>/*, and a note says so; small fleets name each group."""
    text = (ROOT / "deploy.toml").read_text()
    extra = "".join(
        f'\n[[groups]]\nname = "group-{i:03d}"\nasg = "acme-group-{i:03d}-workers"\nqueues = ["q{i}"]\n'
        for i in range(60)
    )
    (tmp_path / "deploy.toml").write_text(text.replace("[targets.sandbox]", extra + "\n[targets.sandbox]"))
    shutil.copytree(ROOT / "sample_app", tmp_path / "sample_app")
    big = scope(load_fleet(tmp_path / "deploy.toml"))
    deployer = iam.policy("deployer", big)
    assert iam.size(iam.deployer(big, compact=False)) > iam.MANAGED_POLICY_LIMIT >= iam.size(deployer)
    # still too big with the groups as <application>/*: the statements lose their Sids, nothing else
    assert not any("Sid" in s for s in deployer["Statement"])
    assert deployer == iam.without_sids(iam._deployer(big, compact=True))
    creates = next(s for s in deployer["Statement"] if "codedeploy:CreateDeployment" in s["Action"])
    assert creates["Resource"] == f"arn:aws:codedeploy:us-east-1:{ACCOUNT}:deploymentgroup:acme-workers/*"
    queues = next(s for s in deployer["Statement"] if "sqs:GetQueueAttributes" in s["Action"])
    assert queues["Resource"] == f"arn:aws:sqs:us-east-1:{ACCOUNT}:*"
    notes = iam.notes("deployer", big)
    assert any("63 groups" in n for n in notes) and any("no Sid" in n for n in notes)
    assert findings(deployer) == []
    small = scope(sample(tmp_path / "small"))
    assert not any("groups:" in n for n in iam.notes("deployer", small))
    assert iam.policy("deployer", small) == iam.deployer(small, compact=False)
