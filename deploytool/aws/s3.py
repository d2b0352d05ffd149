"""S3 gateway: every S3 call deploytool makes.

Every object the tool writes (the bundle, release manifests and their rewrites, the release index,
inventory snapshots, and any write added later) goes through `put_bytes`/`put_json` or `upload_file`,
which all take their encryption and owner arguments from one place, `S3Gateway.write_args()`: SSE-KMS
with the fleet's `artifacts.kms_key_id` when it sets one (a bucket policy that denies PutObject without
`aws:kms` then accepts every write), and ExpectedBucketOwner on every request when set. A caller cannot
override them (its `extra` never replaces them). Build the gateway with `S3Gateway.for_artifacts(session,
fleet.artifacts)` so both settings come from the fleet file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from deploytool.aws.session import AwsSession, describe_aws_error, error_code
from deploytool.errors import AwsError

MULTIPART_THRESHOLD = 16 * 1024 * 1024


def bare_etag(etag: str) -> str:
    """S3 sends ETags in double quotes; CodeDeploy's S3Location.eTag (like `aws deploy push`) and
    the BUNDLE_ETAG a hook sees carry the bare value."""
    return etag.strip('"')


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    etag: str  # without the quotes S3 puts around it
    size: int
    metadata: Mapping[str, str]
    version_id: str | None = None


DENIED = ("AccessDenied", "403", "Forbidden")
# A conditional request whose condition did not hold: another writer got there first, or the key is gone.
CONDITION_FAILED = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404", "NotFound")


class ArtifactSettings(Protocol):
    """What the gateway needs of the fleet's `[artifacts]` (deploytool.config.Artifacts has it)."""

    @property
    def kms_key_id(self) -> str | None: ...

    @property
    def expected_bucket_owner(self) -> str | None: ...

    @property
    def prefix(self) -> str: ...


ENCRYPTION_ARGS = frozenset({"ServerSideEncryption", "SSEKMSKeyId", "SSEKMSEncryptionContext", "BucketKeyEnabled"})


class S3Gateway:
    """`prefix`: the fleet's artifacts.prefix, named in the fix a 403 for a key that may not exist gets."""

    def __init__(
        self,
        session: AwsSession,
        *,
        expected_bucket_owner: str | None = None,
        kms_key_id: str | None = None,
        prefix: str | None = None,
    ) -> None:
        self.client = session.client("s3")
        self.owner = expected_bucket_owner
        self.kms_key_id = kms_key_id
        self.prefix = prefix

    @classmethod
    def for_artifacts(cls, session: AwsSession, artifacts: ArtifactSettings) -> S3Gateway:
        """The gateway for the fleet's bucket: its KMS key, expected owner and prefix on every request."""
        return cls(
            session,
            expected_bucket_owner=artifacts.expected_bucket_owner,
            kms_key_id=artifacts.kms_key_id,
            prefix=artifacts.prefix,
        )

    def _owner(self) -> dict[str, str]:
        return {"ExpectedBucketOwner": self.owner} if self.owner else {}

    def write_args(self) -> dict[str, str]:
        """The arguments every write carries (PutObject, CreateMultipartUpload, CopyObject): SSE-KMS with the
        fleet's key when it sets one, and the expected bucket owner. The one place they are built."""
        args = dict(self._owner())
        if self.kms_key_id:
            args.update({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id})
        return args

    def _with_write_args(self, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        """A caller's extra arguments (metadata, content type), never its own encryption: write_args() wins."""
        args = {k: v for k, v in (extra or {}).items() if k not in ENCRYPTION_ARGS}
        args.update(self.write_args())
        return args

    def _fail(self, exc: Exception, what: str, bucket: str) -> AwsError:
        code = error_code(exc)
        if code in ("NoSuchBucket",):
            return AwsError(f"{what}: bucket {bucket!r} does not exist (artifacts.bucket)", code=code)
        if code in DENIED:
            return AwsError(
                f"{what}: access denied to bucket {bucket!r} (check your credentials, the bucket policy "
                "and artifacts.expected_bucket_owner)",
                code=code,
            )
        return describe_aws_error(exc, what)

    def _maybe_missing(self, exc: Exception, what: str, bucket: str, key: str) -> AwsError:
        """A read of a key that may not exist yet: without s3:ListBucket on the bucket, S3 answers a missing key
        with 403 (HEAD: "403 Forbidden", GET: AccessDenied) instead of 404, so "access denied" would send the
        user the wrong way; the line says so and names the grant."""
        if error_code(exc) not in DENIED:
            return self._fail(exc, what, bucket)
        prefix = self.prefix or key.split("/", 1)[0]
        return AwsError(
            f"{what}: S3 answered 403 Forbidden; S3 answers 403 instead of 404 for a missing key when the caller "
            f"lacks s3:ListBucket on the bucket, so the key may simply not exist yet: grant s3:ListBucket on "
            f'arn:aws:s3:::{bucket} with the condition StringLikeIfExists s3:prefix "{prefix}/*" '
            "(`fab iam-policy --role deployer` prints it; if the key does exist: "
            f"check s3:GetObject on arn:aws:s3:::{bucket}/{prefix}/*, the bucket policy, the KMS key and "
            "artifacts.expected_bucket_owner)"
        )

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """The object's info, or None when it does not exist (one HEAD request)."""
        try:
            r = self.client.head_object(Bucket=bucket, Key=key, **self._owner())
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._maybe_missing(exc, f"HEAD s3://{bucket}/{key}", bucket, key) from exc
        except BotoCoreError as exc:
            raise self._fail(exc, f"HEAD s3://{bucket}/{key}", bucket) from exc
        return ObjectInfo(key, bare_etag(r["ETag"]), r["ContentLength"], r.get("Metadata", {}), r.get("VersionId"))

    def check_bucket(self, bucket: str) -> None:
        try:
            self.client.head_bucket(Bucket=bucket, **self._owner())
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
                raise AwsError(f"bucket {bucket!r} does not exist (artifacts.bucket)") from exc
            raise self._fail(exc, f"bucket {bucket!r}", bucket) from exc
        except BotoCoreError as exc:
            raise self._fail(exc, f"bucket {bucket!r}", bucket) from exc

    def create_bucket(self, bucket: str, region: str) -> None:
        args: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**args)
        except ClientError as exc:
            if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self._fail(exc, f"create bucket {bucket!r}", bucket) from exc

    def upload_file(self, path: Path, bucket: str, key: str, *, extra: Mapping[str, Any] | None = None) -> ObjectInfo:
        """Upload through boto3's transfer manager (multipart above 16 MiB), then HEAD it."""
        args = self._with_write_args(extra)
        config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD)
        try:
            self.client.upload_file(str(path), bucket, key, ExtraArgs=args, Config=config)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, f"upload s3://{bucket}/{key}", bucket) from exc
        except Exception as exc:  # S3UploadFailedError wraps the ClientError
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ClientError):
                raise self._fail(cause, f"upload s3://{bucket}/{key}", bucket) from exc
            raise AwsError(f"upload s3://{bucket}/{key}: {exc}") from exc
        info = self.head(bucket, key)
        if info is None:
            raise AwsError(f"upload s3://{bucket}/{key}: the object is not there after the upload")
        return info

    def put_bytes(
        self,
        bucket: str,
        key: str,
        body: bytes,
        *,
        content_type: str = "application/octet-stream",
        extra: Mapping[str, Any] | None = None,
    ) -> ObjectInfo:
        args = self._with_write_args(extra)
        try:
            r = self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, **args)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, f"PUT s3://{bucket}/{key}", bucket) from exc
        return ObjectInfo(key, bare_etag(r["ETag"]), len(body), {}, r.get("VersionId"))

    def put_conditional(
        self, bucket: str, key: str, body: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> ObjectInfo | None:
        """A conditional PutObject (with write_args(), like every write): `if_none_match` creates the key only when it
        does not exist (If-None-Match: *), `if_match` replaces it only while its ETag is that one. None when the
        condition failed (412 PreconditionFailed, 409 ConditionalRequestConflict: another writer was first; 404: the
        key is gone)."""
        args = self._with_write_args(None)
        if if_none_match:
            args["IfNoneMatch"] = "*"
        if if_match is not None:
            args["IfMatch"] = f'"{bare_etag(if_match)}"'
        try:
            r = self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", **args)
        except ClientError as exc:
            if error_code(exc) in CONDITION_FAILED:
                return None
            raise self._fail(exc, f"PUT s3://{bucket}/{key}", bucket) from exc
        except BotoCoreError as exc:
            raise self._fail(exc, f"PUT s3://{bucket}/{key}", bucket) from exc
        return ObjectInfo(key, bare_etag(r["ETag"]), len(body), {}, r.get("VersionId"))

    def get_with_etag(self, bucket: str, key: str) -> tuple[bytes, str] | None:
        """The object's body and bare ETag (one GET), or None when it does not exist."""
        try:
            r = self.client.get_object(Bucket=bucket, Key=key, **self._owner())
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._maybe_missing(exc, f"GET s3://{bucket}/{key}", bucket, key) from exc
        except BotoCoreError as exc:
            raise self._fail(exc, f"GET s3://{bucket}/{key}", bucket) from exc
        return r["Body"].read(), bare_etag(r["ETag"])

    def delete_if_match(self, bucket: str, key: str, etag: str) -> bool:
        """DeleteObject only while the object's ETag is `etag` (If-Match); False when it is another one or gone."""
        try:
            self.client.delete_object(Bucket=bucket, Key=key, IfMatch=f'"{bare_etag(etag)}"', **self._owner())
        except ClientError as exc:
            if error_code(exc) in CONDITION_FAILED:
                return False
            raise self._fail(exc, f"DELETE s3://{bucket}/{key}", bucket) from exc
        except BotoCoreError as exc:
            raise self._fail(exc, f"DELETE s3://{bucket}/{key}", bucket) from exc
        return True

    def get_bytes(self, bucket: str, key: str) -> bytes | None:
        try:
            r = self.client.get_object(Bucket=bucket, Key=key, **self._owner())
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._maybe_missing(exc, f"GET s3://{bucket}/{key}", bucket, key) from exc
        except BotoCoreError as exc:
            raise self._fail(exc, f"GET s3://{bucket}/{key}", bucket) from exc
        body: bytes = r["Body"].read()
        return body

    def put_json(self, bucket: str, key: str, data: Any, *, extra: Mapping[str, Any] | None = None) -> ObjectInfo:
        body = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
        return self.put_bytes(bucket, key, body, content_type="application/json", extra=extra)

    def get_json(self, bucket: str, key: str) -> Any:
        body = self.get_bytes(bucket, key)
        return None if body is None else json.loads(body)

    def list_keys(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix, **self._owner()):
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"], bare_etag(item["ETag"]), item["Size"], {})
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, f"list s3://{bucket}/{prefix}", bucket) from exc
