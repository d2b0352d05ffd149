"""KMS gateway: the artifacts key as the deployer sees it (describe it; may it generate a data key, which
an SSE-KMS upload asks for). Reads only: GenerateDataKey is sent with DryRun."""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from deploytool.aws.session import AwsSession, describe_aws_error, error_code


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    arn: str
    state: str  # Enabled, Disabled, PendingDeletion, ...
    usage: str  # ENCRYPT_DECRYPT for a key S3 can use
    spec: str  # SYMMETRIC_DEFAULT for a key S3 can use


class KmsGateway:
    def __init__(self, session: AwsSession) -> None:
        self.client = session.client("kms")

    def describe_key(self, key_id: str) -> KeyInfo | None:
        """The key, or None when it does not exist (NotFoundException)."""
        try:
            meta = self.client.describe_key(KeyId=key_id)["KeyMetadata"]
        except ClientError as exc:
            if error_code(exc) == "NotFoundException":
                return None
            raise describe_aws_error(exc, f"KMS DescribeKey {key_id}") from exc
        except BotoCoreError as exc:
            raise describe_aws_error(exc, f"KMS DescribeKey {key_id}") from exc
        return KeyInfo(
            key_id=str(meta["KeyId"]),
            arn=str(meta.get("Arn", "")),
            state=str(meta.get("KeyState", "")),
            usage=str(meta.get("KeyUsage", "")),
            spec=str(meta.get("KeySpec", meta.get("CustomerMasterKeySpec", ""))),
        )

    def may_generate_data_key(self, key_id: str) -> None:
        """GenerateDataKey with DryRun: returns when the call would succeed (the service answers
        DryRunOperationException; an endpoint that ignores DryRun returns a key, which is dropped), else
        AwsError with the service's reason (AccessDeniedException, DisabledException, ...)."""
        try:
            self.client.generate_data_key(KeyId=key_id, KeySpec="AES_256", DryRun=True)
        except ClientError as exc:
            if error_code(exc) == "DryRunOperationException":
                return
            raise describe_aws_error(exc, f"KMS GenerateDataKey {key_id}") from exc
        except BotoCoreError as exc:
            raise describe_aws_error(exc, f"KMS GenerateDataKey {key_id}") from exc
