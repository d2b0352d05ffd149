"""Progress events the orchestrator publishes, and the Reporter protocol that consumes them.

Contract: events are frozen plain data stamped with the orchestrator's clock (`at`). Renderers
(deploytool.rollout.progress), the release record writer and anything else subscribe through a
Reporter; the orchestrator never prints. Order for one release: ReleaseStarted, then per wave
WaveStarted, GroupStarted / GroupProgressed / GroupFinished (interleaved across the wave's groups),
WaveFinished; groups that never start get a GroupFinished with outcome not-started; Checkpoint after
each step that started or finished deployments; ReleaseFinished last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from deploytool.rollout.backend import DeploymentSnapshot
from deploytool.rollout.result import GroupResult, RolloutResult


@dataclass(frozen=True)
class PlannedGroup:
    name: str
    wave: int
    strategy: str
    asg: str


@dataclass(frozen=True)
class ReleaseStarted:
    release_id: str
    version: str
    target: str
    mode: str
    groups: tuple[PlannedGroup, ...]
    at: float


@dataclass(frozen=True)
class WaveStarted:
    wave: int
    groups: tuple[str, ...]
    at: float


@dataclass(frozen=True)
class GroupStarted:
    group: str
    wave: int
    deployment_id: str
    attached: bool  # an earlier run started it; this run follows it
    at: float


@dataclass(frozen=True)
class GroupProgressed:
    group: str
    snapshot: DeploymentSnapshot
    rollback: bool  # the snapshot is of the group's automatic rollback deployment
    at: float


@dataclass(frozen=True)
class GroupFinished:
    result: GroupResult
    at: float


@dataclass(frozen=True)
class GroupWaiting:
    """The group waits for a deployment it did not start (one active deployment per group):
    CodeDeploy's own (a launch, follow-on, termination or rollback deployment), or, with --wait, someone else's."""

    group: str
    deployment_id: str
    what: str  # "launch deployment", "follow-on deployment", ..., "deployment someone else started"
    at: float


@dataclass(frozen=True)
class FollowOnFinished:
    """A deployment CodeDeploy started of this release's revision in a group after the group's deployment
    (a follow-on to instances launched mid-release, or a launch deployment), followed to its end."""

    group: str
    snapshot: DeploymentSnapshot
    at: float


@dataclass(frozen=True)
class GateChecked:
    """The health gate's verdict after wave `after_wave` (deploytool.rollout.gate), with its evidence."""

    after_wave: int
    decision: str  # continue | hold | halt
    evidence: tuple[str, ...]
    bake_s: float
    at: float
    took_s: float = 0.0  # what the gate cost the release: the bake and reading the telemetry
    early: bool = False  # halted at a look during the bake, before the bake was over
    # what it judged: {"alpha": the test's, "new": {key: [[failures, tasks] per interval]}, "base": {key: [f, t]}}
    counts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WaveFinished:
    wave: int
    succeeded: bool
    at: float


@dataclass(frozen=True)
class DeploymentRef:
    deployment_id: str
    status: str
    rollback_deployment_id: str | None = None


@dataclass(frozen=True)
class Checkpoint:
    """The release's deployments now: what the release record must hold to resume."""

    deployments: Mapping[str, DeploymentRef]
    at: float


@dataclass(frozen=True)
class PollFailed:
    error: str
    at: float


@dataclass(frozen=True)
class ReleaseFinished:
    result: RolloutResult
    at: float


Event = (
    ReleaseStarted
    | WaveStarted
    | GroupStarted
    | GroupProgressed
    | GroupFinished
    | GroupWaiting
    | FollowOnFinished
    | WaveFinished
    | GateChecked
    | Checkpoint
    | PollFailed
    | ReleaseFinished
)


class Reporter(Protocol):
    def publish(self, event: Event) -> None: ...


class Fanout:
    """Publishes every event to several reporters, in order."""

    def __init__(self, reporters: Sequence[Reporter]) -> None:
        self.reporters = list(reporters)

    def publish(self, event: Event) -> None:
        for reporter in self.reporters:
            reporter.publish(event)


class Collect:
    """Keeps every event (tests, and callers that want the history)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, event: Event) -> None:
        self.events.append(event)
