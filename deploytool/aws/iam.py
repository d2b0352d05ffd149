"""IAM gateway: read a role (the CodeDeploy service role: does it exist, who may assume it)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from botocore.exceptions import BotoCoreError, ClientError

from deploytool.aws.session import AwsSession, describe_aws_error, error_code


@dataclass(frozen=True)
class RoleInfo:
    name: str
    arn: str
    trust_policy: Mapping[str, Any]  # AssumeRolePolicyDocument, parsed


def role_name(arn: str) -> str:
    """arn:aws:iam::123456789012:role/path/Name -> Name (GetRole takes the name without its path)."""
    return arn.rsplit("/", 1)[-1]


class IamGateway:
    def __init__(self, session: AwsSession) -> None:
        self.client = session.client("iam")

    def get_role(self, name: str) -> RoleInfo | None:
        """The role, or None when it does not exist (NoSuchEntity)."""
        try:
            role = self.client.get_role(RoleName=name)["Role"]
        except ClientError as exc:
            if error_code(exc) == "NoSuchEntity":
                return None
            raise describe_aws_error(exc, f"IAM GetRole {name}") from exc
        except BotoCoreError as exc:
            raise describe_aws_error(exc, f"IAM GetRole {name}") from exc
        document = role.get("AssumeRolePolicyDocument") or {}
        if isinstance(document, str):  # URL-encoded JSON on the wire; boto3 usually decodes it
            document = json.loads(unquote(document))
        return RoleInfo(str(role["RoleName"]), str(role["Arn"]), document)
