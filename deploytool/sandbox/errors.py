"""The sandbox's errors, inside deploytool's one hierarchy (deploytool/errors.py)."""

from __future__ import annotations

from deploytool.errors import DeployToolError, UsageError


class SandboxError(DeployToolError):
    """The sandbox cannot start, provision or stop something (exit 1)."""


class AppSpecError(UsageError):
    """An appspec.yml the CodeDeploy agent would refuse, or one this runner cannot honour (exit 2)."""


class DeploymentLimitExceeded(SandboxError):
    """CodeDeploy's one active deployment per deployment group: CreateDeployment meanwhile fails with
    DeploymentLimitExceededException, in the service's words, plus who runs the active one."""

    code = "DeploymentLimitExceededException"

    def __init__(self, group: str, active_id: str, where: str) -> None:
        super().__init__(f"The Deployment Group '{group}' already has an active Deployment '{active_id}' ({where})")
        self.group = group
        self.active_id = active_id
