"""One boto3 session, one retry configuration, one client per service shared by every thread."""

from __future__ import annotations

import threading
from typing import Any

import boto3
import botocore.config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from deploytool.errors import AwsError

# Adaptive retries: standard backoff plus client-side rate limiting, which only works when every
# thread shares the same client. Throttling then slows a release down instead of failing it.
DEFAULT_RETRY = {"mode": "adaptive", "max_attempts": 12}


class AwsSession:
    """Builds and caches clients. `endpoint_url` points every client at a moto server (sandbox)."""

    def __init__(
        self,
        *,
        region: str,
        profile: str | None = None,
        endpoint_url: str | None = None,
        boto_session: boto3.Session | None = None,
        retries: dict[str, Any] | None = None,
        max_pool_connections: int = 50,
    ) -> None:
        try:
            self.boto = boto_session or boto3.Session(region_name=region, profile_name=profile)
        except ProfileNotFound as exc:
            raise AwsError(f"AWS profile {profile!r} not found in your AWS config (aws.profile)") from exc
        self.region = region
        self.endpoint_url = endpoint_url
        self._config = botocore.config.Config(
            region_name=region,
            retries=dict(retries or DEFAULT_RETRY),  # type: ignore[arg-type]
            max_pool_connections=max_pool_connections,
            # An unreachable endpoint should fail in seconds, not after a minute of retried connects.
            connect_timeout=5,
            read_timeout=60,
        )
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str) -> Any:
        """The shared client for a service (created once; boto3 clients are thread-safe)."""
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self.boto.client(  # type: ignore[call-overload]
                    service, config=self._config, endpoint_url=self.endpoint_url
                )
            return self._clients[service]


# What may pass if tried again (botocore's standard retry mode treats these codes as transient or throttling).
TRANSIENT_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "500",
        "502",
        "503",
        "504",
    }
)


def is_transient(exc: BaseException) -> bool:
    """Throttling, a 5xx, a timeout or a dropped connection: worth another try once botocore's retries gave up."""
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return error_code(exc) in TRANSIENT_CODES or status >= 500
    return isinstance(exc, BotoConnectionError | ReadTimeoutError)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def describe_aws_error(exc: BaseException, what: str) -> AwsError:
    """Turn a botocore error into one clear line saying what failed and why."""
    if isinstance(exc, NoCredentialsError):
        return AwsError(f"{what}: no AWS credentials found (set AWS_PROFILE or aws.profile in the fleet file)")
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "Error")
        message = err.get("Message") or ""
        return AwsError(
            f"{what}: {code}{': ' + message if message else ''}", code=str(code), transient=is_transient(exc)
        )
    if isinstance(exc, BotoCoreError):
        return AwsError(f"{what}: {exc}", transient=is_transient(exc))
    return AwsError(f"{what}: {exc}")
