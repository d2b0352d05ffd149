"""The sandbox's errors, inside deploytool's one hierarchy (deploytool/errors.py)."""

from __future__ import annotations

from deploytool.errors import DeployToolError, UsageError


class SandboxError(DeployToolError):
    """The sandbox cannot start, provision or stop something (exit 1)."""


class AppSpecError(UsageError):
    """An appspec.yml the CodeDeploy agent would refuse, or one this runner cannot honour (exit 2)."""
