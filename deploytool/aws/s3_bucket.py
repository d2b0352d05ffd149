"""S3 bucket settings, read for `fab doctor`: where the bucket is, versioning, default encryption, what a
missing key answers, and the one write doctor makes (a probe object, deleted at once).

A sibling of deploytool.aws.s3 (the objects deploytool reads and writes) on the same shared S3 client.
Each read returns plain data; an error the caller must report becomes AwsError with one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from deploytool.aws.session import AwsSession, describe_aws_error, error_code

MISSING = ("404", "NoSuchKey", "NotFound", "NoSuchBucket")
DENIED = ("403", "AccessDenied", "Forbidden")


@dataclass(frozen=True)
class Encryption:
    algorithm: str  # AES256, aws:kms, aws:kms:dsse
    kms_key: str | None  # the KMSMasterKeyID of an aws:kms default, if one is named


class BucketGateway:
    def __init__(self, session: AwsSession, *, expected_bucket_owner: str | None = None) -> None:
        self.client = session.client("s3")
        self.owner = expected_bucket_owner

    def _owner(self) -> dict[str, str]:
        return {"ExpectedBucketOwner": self.owner} if self.owner else {}

    def _call(self, operation: str, what: str, **params: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = getattr(self.client, operation)(**params, **self._owner())
        except (ClientError, BotoCoreError) as exc:
            raise describe_aws_error(exc, what) from exc
        return response

    def exists(self, bucket: str) -> Literal["yes", "missing", "denied"]:
        """HeadBucket: the bucket is there (and ours to read), not there, or refused (403: not ours, or no
        s3:ListBucket; with artifacts.expected_bucket_owner, also another account's bucket)."""
        try:
            self.client.head_bucket(Bucket=bucket, **self._owner())
        except ClientError as exc:
            code = error_code(exc)
            if code in MISSING:
                return "missing"
            if code in DENIED:
                return "denied"
            raise describe_aws_error(exc, f"HeadBucket {bucket}") from exc
        except BotoCoreError as exc:
            raise describe_aws_error(exc, f"HeadBucket {bucket}") from exc
        return "yes"

    def region(self, bucket: str) -> str:
        """GetBucketLocation as a region name (S3 answers no constraint for us-east-1 and 'EU' for eu-west-1)."""
        constraint = self._call("get_bucket_location", f"GetBucketLocation {bucket}", Bucket=bucket).get(
            "LocationConstraint"
        )
        return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(constraint, str(constraint))

    def versioning(self, bucket: str) -> str:
        """'Enabled', 'Suspended', or '' for a bucket whose versioning was never turned on."""
        return str(
            self._call("get_bucket_versioning", f"GetBucketVersioning {bucket}", Bucket=bucket).get("Status", "")
        )

    def default_encryption(self, bucket: str) -> Encryption | None:
        """The bucket's default encryption rule, or None when it has none."""
        try:
            r = self.client.get_bucket_encryption(Bucket=bucket, **self._owner())
        except ClientError as exc:
            if error_code(exc) == "ServerSideEncryptionConfigurationNotFoundError":
                return None
            raise describe_aws_error(exc, f"GetBucketEncryption {bucket}") from exc
        except BotoCoreError as exc:
            raise describe_aws_error(exc, f"GetBucketEncryption {bucket}") from exc
        rules = r.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
        if not rules:
            return None
        default: Mapping[str, Any] = rules[0].get("ApplyServerSideEncryptionByDefault", {})
        return Encryption(str(default.get("SSEAlgorithm", "")), default.get("KMSMasterKeyID"))

    def missing_key_answer(self, bucket: str, key: str) -> Literal["404", "403", "exists"]:
        """HeadObject on a key that should not exist: S3 answers 404 only to a caller with s3:ListBucket on
        the bucket; without it, 403, the same as a refused read."""
        try:
            self.client.head_object(Bucket=bucket, Key=key, **self._owner())
        except ClientError as exc:
            code = error_code(exc)
            if code in MISSING:
                return "404"
            if code in DENIED:
                return "403"
            raise describe_aws_error(exc, f"HEAD s3://{bucket}/{key}") from exc
        except BotoCoreError as exc:
            raise describe_aws_error(exc, f"HEAD s3://{bucket}/{key}") from exc
        return "exists"

    def put_probe(self, bucket: str, key: str, body: bytes, extra: Mapping[str, Any]) -> str | None:
        """PUT the probe object (with the same encryption arguments a release upload sends); its VersionId:
        None in a bucket that never had versioning, 'null' in one whose versioning is suspended."""
        r = self._call("put_object", f"PUT s3://{bucket}/{key}", Bucket=bucket, Key=key, Body=body, **dict(extra))
        version = r.get("VersionId")
        return str(version) if version else None

    def delete_probe(self, bucket: str, key: str, version_id: str | None) -> None:
        """Delete the probe: its own version when the bucket has or had versioning ('null' too: a plain DELETE
        would leave a delete marker behind)."""
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        self._call("delete_object", f"DELETE s3://{bucket}/{key}", **params)
