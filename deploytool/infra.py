"""The fleet's AWS resources as one CloudFormation template (`fab infra`), built from the IAM policies of
deploytool.iam, so the roles it creates are exactly what `fab iam-policy` prints.

Contract: no I/O. `template(scope, ...)` -> the template as a dict; `render(template)` -> its YAML text (the
same bytes for the same fleet). It holds:
- the artifacts bucket (the fleet's name): versioned, public access blocked, objects owned by the bucket
  owner, default encryption SSE-KMS with the fleet's key (S3 Bucket Key on) or SSE-S3 without one, kept when
  the stack is deleted (bundles and release records outlive it), Athena results expiring after 30 days;
- its policy: every request over TLS only, and no upload that asks for another encryption than the
  bucket's (an upload without the header gets the default, so deploytool's writes need no header);
- the roles: deployer, the workers' instance role and instance profile, the CodeDeploy service role named
  as the fleet's `service_role_arn` says (so `fab setup` finds it), each with its iam.py policy and trust;
  the athena-reader policy as a managed policy to attach to a dashboard's role;
- the Glue database and an Athena workgroup whose results go to `<prefix>/athena-results/` (enforced,
  encrypted like the bucket). The tables come from `fab athena-ddl --apply` (athena/*.sql stays the one
  source of their DDL).
When the fleet names the account and region, a Rules section refuses a stack in another one (the ARNs in
the policies name them); an unknown account is `${AWS::AccountId}` instead.
"""

from __future__ import annotations

from typing import Any

import yaml

from deploytool import iam

Json = dict[str, Any]
RESULTS_DAYS = 30


def _sub(value: Any) -> Any:
    """Wrap every string that names a pseudo parameter (${AWS::...}) in Fn::Sub."""
    if isinstance(value, str):
        return {"Fn::Sub": value} if "${AWS::" in value else value
    if isinstance(value, list):
        return [_sub(v) for v in value]
    if isinstance(value, dict):
        return {k: _sub(v) for k, v in value.items()}
    return value


def _role_name(arn: str) -> tuple[str, str]:
    """(path, name) of a role ARN: arn:aws:iam::1:role/a/b/Name -> ('/a/b/', 'Name')."""
    resource = arn.split(":", 5)[5].removeprefix("role/")
    *path, name = resource.split("/")
    return ("/" + "/".join(path) + "/" if path else "/"), name


def _role(name: str, scope: iam.Scope, role: str, *, path: str = "/") -> Json:
    properties: Json = {
        "RoleName": name,
        "Path": path,
        "Description": f"deploytool {role} of {scope.app} (fab iam-policy --role {role})",
        "AssumeRolePolicyDocument": iam.trust(role, scope),
        "Policies": [{"PolicyName": f"deploytool-{role}", "PolicyDocument": iam.policy(role, scope)}],
    }
    return {"Type": "AWS::IAM::Role", "Properties": properties}


def _encryption(scope: iam.Scope) -> Json:
    if scope.kms_key_id:
        default: Json = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": scope.kms_key_id}
        return {
            "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": default, "BucketKeyEnabled": True}]
        }
    return {"ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}


def bucket_policy(scope: iam.Scope) -> Json:
    """TLS only; an upload that asks for an encryption other than the bucket's is refused."""
    bucket, objects = scope.s3(scope.bucket), scope.s3(f"{scope.bucket}/*")
    wanted = "aws:kms" if scope.kms_key_id else "AES256"
    header = "s3:x-amz-server-side-encryption"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TlsOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket, objects],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
            {
                "Sid": "NoOtherEncryption",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": objects,
                "Condition": {"Null": {header: "false"}, "StringNotEquals": {header: wanted}},
            },
        ],
    }


def _workgroup(scope: iam.Scope) -> Json:
    bucket, path = scope.results
    encryption: Json = (
        {"EncryptionOption": "SSE_KMS", "KmsKey": scope.kms_key_id}
        if scope.kms_key_id
        else {"EncryptionOption": "SSE_S3"}
    )
    return {
        "Type": "AWS::Athena::WorkGroup",
        "Properties": {
            "Name": scope.workgroup,
            "Description": f"deploytool reconcile queries of {scope.app}",
            "State": "ENABLED",
            "WorkGroupConfiguration": {
                "EnforceWorkGroupConfiguration": True,
                "PublishCloudWatchMetricsEnabled": True,
                "ResultConfiguration": {
                    "OutputLocation": f"s3://{bucket}/{path}",
                    "EncryptionConfiguration": encryption,
                },
            },
        },
    }


def _rules(scope: iam.Scope, account_known: bool) -> Json:
    assertions = [
        {
            "Assert": {"Fn::Equals": [{"Ref": "AWS::Region"}, scope.region]},
            "AssertDescription": f"the fleet's region is {scope.region} (aws.region)",
        }
    ]
    if account_known:
        assertions.append(
            {
                "Assert": {"Fn::Equals": [{"Ref": "AWS::AccountId"}, scope.account]},
                "AssertDescription": f"the fleet's account is {scope.account} (service_role_arn)",
            }
        )
    return {"FleetAccountAndRegion": {"Assertions": assertions}}


def template(scope: iam.Scope) -> Json:
    """The CloudFormation template of the fleet (see the module's contract)."""
    account_known = scope.account is not None
    if not account_known:
        scope = iam.Scope(**{**scope.__dict__, "account": "${AWS::AccountId}"})
    service_path, service_name = _role_name(scope.service_role_arn)
    results_bucket, results_path = scope.results
    lifecycle: list[Json] = [
        {
            "Id": "AbortIncompleteUploads",
            "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
        }
    ]
    if results_bucket == scope.bucket:
        lifecycle.append(
            {"Id": "AthenaResults", "Status": "Enabled", "Prefix": results_path, "ExpirationInDays": RESULTS_DAYS}
        )
    resources: Json = {
        "ArtifactsBucket": {
            "Type": "AWS::S3::Bucket",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "BucketName": scope.bucket,
                "VersioningConfiguration": {"Status": "Enabled"},
                "BucketEncryption": _encryption(scope),
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True,
                    "BlockPublicPolicy": True,
                    "IgnorePublicAcls": True,
                    "RestrictPublicBuckets": True,
                },
                "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                "LifecycleConfiguration": {"Rules": lifecycle},
            },
        },
        "ArtifactsBucketPolicy": {
            "Type": "AWS::S3::BucketPolicy",
            "Properties": {"Bucket": {"Ref": "ArtifactsBucket"}, "PolicyDocument": bucket_policy(scope)},
        },
        "DeployerRole": _role(f"{scope.app}-deploytool-deployer", scope, "deployer"),
        "InstanceRole": _role(f"{scope.app}-deploytool-instance", scope, "instance"),
        "InstanceProfile": {
            "Type": "AWS::IAM::InstanceProfile",
            "Properties": {
                "InstanceProfileName": f"{scope.app}-deploytool-instance",
                "Roles": [{"Ref": "InstanceRole"}],
            },
        },
        "CodeDeployServiceRole": _role(service_name, scope, "codedeploy-service", path=service_path),
        "AthenaReaderPolicy": {
            "Type": "AWS::IAM::ManagedPolicy",
            "Properties": {
                "ManagedPolicyName": f"{scope.app}-deploytool-athena-reader",
                "Description": f"query deploytool's reconcile tables of {scope.app} (attach to a dashboard's role)",
                "PolicyDocument": iam.policy("athena-reader", scope),
            },
        },
        "GlueDatabase": {
            "Type": "AWS::Glue::Database",
            "Properties": {
                "CatalogId": {"Ref": "AWS::AccountId"},
                "DatabaseInput": {
                    "Name": scope.database,
                    "Description": "deploytool's inventory and releases tables (fab athena-ddl --apply)",
                },
            },
        },
        "AthenaWorkGroup": _workgroup(scope),
    }
    outputs = {
        "ArtifactsBucketName": {"Value": {"Ref": "ArtifactsBucket"}},
        "DeployerRoleArn": {"Value": {"Fn::GetAtt": ["DeployerRole", "Arn"]}},
        "InstanceProfileName": {"Value": {"Ref": "InstanceProfile"}},
        "CodeDeployServiceRoleArn": {"Value": {"Fn::GetAtt": ["CodeDeployServiceRole", "Arn"]}},
        "AthenaReaderPolicyArn": {"Value": {"Ref": "AthenaReaderPolicy"}},
        "GlueDatabaseName": {"Value": {"Ref": "GlueDatabase"}},
        "AthenaWorkGroupName": {"Value": {"Ref": "AthenaWorkGroup"}},
    }
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"deploytool: artifacts bucket, IAM roles, Glue database and Athena workgroup of {scope.app} "
        "(generated by `fab infra` from the fleet file: regenerate, do not edit)",
        "Rules": _rules(scope, account_known),
        "Resources": _sub(resources),
        "Outputs": outputs,
    }


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(document: Json) -> str:
    """YAML, keys in the order built, no line folding: the same text for the same template."""
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=10_000, default_flow_style=False)
