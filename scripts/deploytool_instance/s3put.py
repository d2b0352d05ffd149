"""One signed S3 PutObject from the instance, with the standard library only (the instance side has no boto3).

The interruption watcher records what it did where reconcile can read it after the instance is gone:
`<prefix>/<app>/interruptions/dt=<day>/<instance>-<group>-<noticed>.json` in the fleet's artifacts bucket
(fleet.json "records": bucket, prefix, region, kms_key_id, expected_bucket_owner).

- Credentials: the instance profile's, from IMDSv2 (meta-data/iam/security-credentials/<role>), else
  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN in the environment.
- Endpoint: DEPLOYTOOL_S3_ENDPOINT (path-style; the sandbox's moto server), else
  https://<bucket>.s3.<region>.amazonaws.com (https://s3.<region>.amazonaws.com/<bucket> for a bucket name
  with a dot, which no virtual-host certificate covers).
- Signature Version 4 (`sign`), with the payload's SHA-256, the session token, and the SSE-KMS and expected
  bucket owner headers when the fleet sets a key or an owner (a bucket policy that demands them then holds).
- Bounded: every request has a timeout; `put_record` never raises: it returns what happened in one line, which
  the watcher logs. A record that cannot be written stays in run/interruption.json on the instance.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deploytool_instance.imds import Imds, ImdsUnavailable

SERVICE = "s3"
TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None


@dataclass(frozen=True)
class Target:
    bucket: str
    prefix: str
    region: str
    kms_key_id: str | None = None
    expected_bucket_owner: str | None = None

    @classmethod
    def of(cls, records: Mapping[str, Any] | None) -> Target | None:
        if not records or not records.get("bucket"):
            return None
        return cls(
            bucket=str(records["bucket"]),
            prefix=str(records.get("prefix") or ""),
            region=str(records.get("region") or "us-east-1"),
            kms_key_id=str(records["kms_key_id"]) if records.get("kms_key_id") else None,
            expected_bucket_owner=str(records["expected_bucket_owner"])
            if records.get("expected_bucket_owner")
            else None,
        )


def interruption_key(prefix: str, app: str, instance: str, group: str, noticed_at: float) -> str:
    """Where a notice's record goes (deploytool.model.interruption_key reads the same layout)."""
    moment = datetime.datetime.fromtimestamp(noticed_at, datetime.timezone.utc)
    root = f"{prefix}/{app}" if prefix else app
    return f"{root}/interruptions/dt={moment:%Y-%m-%d}/{instance}-{group}-{moment:%Y%m%dT%H%M%SZ}.json"


def credentials(imds: Imds | None, environ: Mapping[str, str]) -> Credentials | None:
    """The instance profile's credentials (IMDS), else the environment's, else None."""
    if imds is not None:
        try:
            roles = imds.get("iam/security-credentials/")
            role = (roles or "").strip().splitlines()[0] if (roles or "").strip() else ""
            if role:
                data = json.loads(imds.get(f"iam/security-credentials/{role}") or "{}")
                if data.get("AccessKeyId") and data.get("SecretAccessKey"):
                    return Credentials(str(data["AccessKeyId"]), str(data["SecretAccessKey"]), data.get("Token"))
        except (ImdsUnavailable, ValueError, AttributeError):
            pass
    key, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return Credentials(key, secret, environ.get("AWS_SESSION_TOKEN") or None)
    return None


def object_url(target: Target, key: str, endpoint: str | None) -> str:
    path = urllib.parse.quote(key, safe="/-_.~")
    if endpoint:
        return f"{endpoint.rstrip('/')}/{target.bucket}/{path}"
    if "." in target.bucket:
        return f"https://s3.{target.region}.amazonaws.com/{target.bucket}/{path}"
    return f"https://{target.bucket}.s3.{target.region}.amazonaws.com/{path}"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    creds: Credentials,
    region: str,
    now: datetime.datetime,
    service: str = SERVICE,
) -> dict[str, str]:
    """`headers` plus host, x-amz-date, x-amz-content-sha256, the session token and the SigV4 Authorization for
    `service` (s3; monitoring for CloudWatch: telemetry.py)."""
    parts = urllib.parse.urlsplit(url)
    stamp = now.astimezone(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    payload = hashlib.sha256(body).hexdigest()
    signed = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
    signed.update({"host": parts.netloc, "x-amz-date": stamp, "x-amz-content-sha256": payload})
    if creds.token:
        signed["x-amz-security-token"] = creds.token
    names = sorted(signed)
    canonical = "\n".join(
        [
            method,
            parts.path or "/",
            parts.query,
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            payload,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{creds.secret_key}".encode(), day), region), service), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = {name: signed[name] for name in names if name != "host"}
    credential = f"{creds.access_key}/{scope}"
    out["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return out


def put_record(
    target: Target, key: str, record: Mapping[str, Any], imds: Imds | None, environ: Mapping[str, str]
) -> str:
    """PUT the record as JSON; one line saying where it went or why not. Never raises."""
    where = f"s3://{target.bucket}/{key}"
    creds = credentials(imds, environ)
    if creds is None:
        return f"not recorded at {where}: no credentials (no instance profile, no AWS_ACCESS_KEY_ID)"
    body = (json.dumps(dict(record), sort_keys=True) + "\n").encode()
    headers = {"content-type": "application/json"}
    if target.kms_key_id:
        headers["x-amz-server-side-encryption"] = "aws:kms"
        headers["x-amz-server-side-encryption-aws-kms-key-id"] = target.kms_key_id
    if target.expected_bucket_owner:
        headers["x-amz-expected-bucket-owner"] = target.expected_bucket_owner
    url = object_url(target, key, environ.get("DEPLOYTOOL_S3_ENDPOINT"))
    all_headers = sign("PUT", url, headers, body, creds, target.region, datetime.datetime.now(datetime.timezone.utc))
    request = urllib.request.Request(url, data=body, method="PUT", headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode(errors="replace").replace("\n", " ")
        return f"not recorded at {where}: HTTP {exc.code} {detail}".strip()
    except (OSError, ValueError) as exc:
        return f"not recorded at {where}: {exc}"
    return f"recorded at {where}"
