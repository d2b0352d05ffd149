"""The small interface every rollout backend implements, and the plain data it exchanges.

A backend deploys one revision to one deployment group (one ASG) with that group's strategy and
reports progress when polled. `codedeploy` talks to AWS CodeDeploy; `local` runs the sandbox
fleet through the CodeDeploy-compatible lifecycle runner. The orchestrator only sees this module.

Statuses use CodeDeploy's words so the two backends read the same in reports and JSON, plus one of the
sandbox's own: Abandoned, a deployment whose process died before it ended (sandbox deployments run inside
`fab`; nothing runs them then). It is terminal and never a success; CodeDeploy never reports it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from deploytool.config import Group
from deploytool.model import Revision

DeploymentStatus = Literal[
    "Created", "Queued", "InProgress", "Baking", "Succeeded", "Failed", "Stopped", "Ready", "Abandoned"
]
InstanceStatus = Literal["Pending", "InProgress", "Succeeded", "Failed", "Skipped", "Unknown", "Ready"]
TERMINAL: frozenset[str] = frozenset({"Succeeded", "Failed", "Stopped", "Abandoned"})

LIFECYCLE_EVENTS: tuple[str, ...] = (
    "ApplicationStop",
    "DownloadBundle",
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
)


@dataclass(frozen=True)
class DeployRequest:
    """One deployment of one group."""

    group: Group
    revision: Revision | None  # None only for mode="restart"
    release_id: str
    mode: Literal["deploy", "restart"] = "deploy"
    description: str = ""
    # Redeploy to these instances only (reconcile --fix); None means the whole group.
    target_instances: tuple[str, ...] | None = None
    auto_rollback: bool = True
    # Continue past a failing ApplicationStop (the previous revision's stop script): CodeDeploy's
    # ignoreApplicationStopFailures; the sandbox then warns of each instance it happened on.
    ignore_stop_failures: bool = False


@dataclass(frozen=True)
class InstanceProgress:
    instance_id: str
    status: InstanceStatus
    lifecycle_event: str | None = None  # the event running now, or the one that failed
    message: str = ""  # diagnostics of a failure (script name, exit code, log tail)


@dataclass(frozen=True)
class DeploymentSnapshot:
    """A deployment as last polled."""

    deployment_id: str
    group: str
    status: DeploymentStatus
    pending: int = 0
    in_progress: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    current_event: str | None = None  # the most advanced lifecycle event running on any instance
    error: str = ""
    error_code: str = ""  # CodeDeploy's errorInformation.code, e.g. NO_INSTANCES (an empty group)
    rollback_deployment_id: str | None = None  # set when the backend started an automatic rollback
    creator: str = "user"  # user | autoscaling | codeDeployRollback | CodeDeployAutoUpdate | autoscalingTermination
    description: str = ""  # deploytool's own carry the release id ("deploytool deploy <release id>")
    created_at: float | None = None  # epoch seconds
    version: str | None = None  # the release version of its revision, when the backend can tell
    # What did not fail the deployment but a person must know, e.g. tasks a drain's cold shutdown cut off
    # ("i-1: interrupted task NAME[ID] in ApplicationStop: FATE"); only the sandbox sees hook output to report it.
    warnings: tuple[str, ...] = ()
    # Workers still finishing their tasks after a hand-off (restart = "handoff") on the deployment's instances, when
    # the backend can see them (the sandbox); None when it cannot (CodeDeploy).
    draining: int | None = None

    @property
    def total(self) -> int:
        return self.pending + self.in_progress + self.succeeded + self.failed + self.skipped

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def all_succeeded(self) -> bool:
        """deploytool's verdict: every instance succeeded (CodeDeploy may say Succeeded with failures)."""
        return self.status == "Succeeded" and self.failed == 0 and self.skipped == 0 and self.total > 0


@dataclass(frozen=True)
class GroupState:
    """What a backend knows of a group before deploying: for plans and resume."""

    group: str
    exists: bool
    instance_ids: tuple[str, ...] = ()
    active_deployment_id: str | None = None
    last_successful_version: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


class Backend(Protocol):
    """What the orchestrator needs from a place to deploy to."""

    name: str

    def start(self, request: DeployRequest) -> str:
        """Start a deployment of one group; returns its deployment id."""
        ...

    def poll(self, deployment_ids: Sequence[str]) -> Mapping[str, DeploymentSnapshot]:
        """The state of many deployments at once (CodeDeploy: BatchGetDeployments, 25 a call)."""
        ...

    def stop(self, deployment_id: str, *, rollback: bool) -> None:
        """Stop a deployment, rolling back its instances when asked."""
        ...

    def instance_results(self, deployment_id: str) -> Sequence[InstanceProgress]:
        """Per-instance results: asked only for failing groups or on request."""
        ...

    def group_state(self, group: Group) -> GroupState:
        """Read-only view of the group (instances, deployment in flight, last good version)."""
        ...

    def group_deployments(
        self, group: Group, *, active_only: bool, created_after: float | None = None
    ) -> Sequence[DeploymentSnapshot]:
        """The group's deployments, whoever created them, oldest first: the active ones (active_only), or all
        created at or after `created_after` (epoch seconds). CodeDeploy: ListDeployments + BatchGetDeployments."""
        ...
