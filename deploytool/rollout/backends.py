"""Which Backend deploys to a target: the one module where a target kind is mapped to its backend.

`codedeploy` targets get CodeDeployBackend on the session's shared CodeDeploy client. `local` targets
are the sandbox's: deploytool.sandbox builds its backend with its own moto server session. This module
is the hook where it is plugged in (until then the rollout tasks refuse a local target up front).
"""

from __future__ import annotations

from deploytool.aws.codedeploy import CodeDeployGateway
from deploytool.aws.session import AwsSession
from deploytool.config import CodeDeployTarget, Fleet, Target
from deploytool.errors import UsageError
from deploytool.rollout.backend import Backend
from deploytool.rollout.codedeploy import CodeDeployBackend
from deploytool.rollout.setup import application_name


def require_codedeploy(target_name: str, target: Target) -> CodeDeployTarget:
    if isinstance(target, CodeDeployTarget):
        return target
    raise UsageError(
        f"target {target_name!r} is a local sandbox: deploy to it with `fab sandbox` (its backend is not "
        "wired into the rollout tasks on this branch)"
    )


def backend_for(fleet: Fleet, target_name: str, target: Target, *, aws: AwsSession) -> Backend:
    chosen = require_codedeploy(target_name, target)
    return CodeDeployBackend(CodeDeployGateway(aws), application=application_name(fleet, chosen))
