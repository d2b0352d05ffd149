"""Which Backend deploys to a target: the one module where a target kind is mapped to its backend.

Contract: `backend_for(fleet, target_name)` returns the target's AWS session and Backend:
- `codedeploy`: an AwsSession on the fleet's region/profile and CodeDeployBackend on its shared
  CodeDeploy client. Deployments run in AWS: a rollout task may detach and leave them running.
- `local`: the AWS session (its moto server) and LocalBackend of the sandbox `fab sandbox-up` left
  running (deploytool.sandbox.session.attach); UsageError (exit 2) when none runs. Its deployments
  run in threads of THIS process, so they cannot outlive it: `detachable` is False, and the rollout
  tasks then turn a detach (Ctrl-C, no terminal) into "stop every deployment and roll back" and follow
  that to the end (deploytool.rollout.interrupt). As a last guard, the process aborts any deployment
  of that backend still running when it exits (its scripts are ended, the deployment recorded Stopped).
"""

from __future__ import annotations

import atexit
from dataclasses import dataclass

from deploytool.aws.codedeploy import CodeDeployGateway
from deploytool.aws.session import AwsSession
from deploytool.config import Fleet, LocalTarget
from deploytool.rollout.backend import Backend
from deploytool.rollout.codedeploy import CodeDeployBackend
from deploytool.rollout.setup import application_name


@dataclass(frozen=True)
class TargetBackend:
    aws: AwsSession  # release store, tags and reconcile use this session too
    backend: Backend
    detachable: bool  # True when deployments keep running without this process


def backend_for(fleet: Fleet, target_name: str) -> TargetBackend:
    _, target = fleet.target(target_name)
    if isinstance(target, LocalTarget):
        from deploytool.sandbox.session import attach  # the sandbox package only when a local target is used

        attached = attach(fleet, target_name)
        atexit.register(attached.backend.shutdown)  # no deployment thread is silently cut off at exit
        return TargetBackend(attached.aws, attached.backend, detachable=False)
    aws = AwsSession(region=fleet.aws.region, profile=fleet.aws.profile)
    backend = CodeDeployBackend(CodeDeployGateway(aws), application=application_name(fleet, target))
    return TargetBackend(aws, backend, detachable=True)
