"""One exception hierarchy. A fab task turns any of these into one line and an exit code.

Exit codes: 2 bad input, 1 failed deploy (or any other failure), 3 drift found, 4 deployed but the
release record could not be written.
"""

from __future__ import annotations


class DeployToolError(Exception):
    """Base of every error deploytool reports to a user as one clear line."""

    exit_code = 1


class UsageError(DeployToolError):
    """Bad input on the command line or in a file: exit 2."""

    exit_code = 2


class ConfigError(UsageError):
    """The fleet file is missing, malformed or invalid."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        self.path = path
        self.key = key
        self.detail = message
        where = ": ".join(part for part in (path, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class VersionError(UsageError):
    """A release version that cannot be used (bad pattern, dirty tree, no git)."""


class BundleError(DeployToolError):
    """The bundle cannot be built (a symlink escaping the tree, a template error...)."""

    exit_code = 2


class AwsError(DeployToolError):
    """An AWS call failed in a way the user must act on (missing bucket, access denied...).

    `code` is AWS's error code when there is one; `transient` is True for what may pass if tried again
    (throttling, a 5xx, a timeout or a dropped connection), after botocore's own retries gave up."""

    def __init__(self, message: str, *, code: str = "", transient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient


class DeployFailed(DeployToolError):
    """A release did not reach every instance of every group."""


class RecordNotWritten(DeployToolError):
    """The release reached every instance, but its release record in S3 could not be written (it is stale)."""

    exit_code = 4


class DriftFound(DeployToolError):
    """Reconcile found instances that do not run the expected version."""

    exit_code = 3
