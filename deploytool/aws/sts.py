"""STS gateway: who the credentials are (GetCallerIdentity needs no permission, so it only fails without
credentials, or with expired or invalid ones)."""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from deploytool.aws.session import AwsSession, describe_aws_error


@dataclass(frozen=True)
class CallerIdentity:
    account: str
    arn: str
    user_id: str


class StsGateway:
    def __init__(self, session: AwsSession) -> None:
        self.client = session.client("sts")

    def caller_identity(self) -> CallerIdentity:
        try:
            r = self.client.get_caller_identity()
        except (ClientError, BotoCoreError) as exc:
            raise describe_aws_error(exc, "STS GetCallerIdentity") from exc
        return CallerIdentity(str(r["Account"]), str(r["Arn"]), str(r.get("UserId", "")))
