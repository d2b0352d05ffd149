"""Which Backend deploys to a target: the one place a target kind is mapped to its backend.

`codedeploy` targets get CodeDeployBackend on the session's shared CodeDeploy client. `local`
targets are the sandbox's (deploytool.sandbox builds its backend with its own moto server session);
this is the hook where it is plugged in.
"""

from __future__ import annotations

from deploytool.aws.codedeploy import CodeDeployGateway
from deploytool.aws.session import AwsSession
from deploytool.config import CodeDeployTarget, Fleet, Target
from deploytool.errors import UsageError
from deploytool.rollout.backend import Backend
from deploytool.rollout.codedeploy import CodeDeployBackend
from deploytool.rollout.setup import application_name


def backend_for(fleet: Fleet, target_name: str, target: Target, *, aws: AwsSession) -> Backend:
    if isinstance(target, CodeDeployTarget):
        return CodeDeployBackend(CodeDeployGateway(aws), application=application_name(fleet, target))
    raise UsageError(
        f"target {target_name!r} is a local sandbox: deploy to it with `fab sandbox` (its backend is not "
        "wired into the rollout tasks on this branch)"
    )
