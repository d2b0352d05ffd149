"""Hand-written fakes at the seams: an in-memory Backend driven by the one test clock (FakeClock).

FakeBackend models a deployment per group as a script: it runs `duration` seconds, its instances
finish evenly over that time, `fail` of them fail at the end. Given `instances` (where a group's instances
come from: a moto ASG's), a deployment goes to those (or to its request's target instances) instead, and
the ones in `failing` fail. A failed (or stopped) deployment
starts an automatic rollback deployment lasting `rollback_s` (None: no rollback). Every call is
recorded so tests assert what the orchestrator asked for.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from deploytool.config import Group
from deploytool.errors import AwsError
from deploytool.rollout.backend import (
    LIFECYCLE_EVENTS,
    DeploymentSnapshot,
    DeploymentStatus,
    DeployRequest,
    GroupState,
    InstanceProgress,
)
from deploytool.rollout.clock import SimulatedClock

EPOCH = datetime(2024, 5, 6, 9, 0, 0, tzinfo=UTC)  # FakeClock's wall time at 0


@dataclass(frozen=True)
class Script:
    duration: float = 60.0
    instances: int = 2
    fail: int = 0
    fail_status: DeploymentStatus = "Failed"  # "Succeeded": AllAtOnce calling a partial failure a success
    rollback_s: float | None = 30.0
    start_error: str | None = None


@dataclass
class FakeDeployment:
    deployment_id: str
    group: str
    version: str | None
    created_at: float
    script: Script
    rollback_of: str | None = None
    stopped_at: float | None = None
    stop_rollback: bool = False
    rollback_id: str | None = None
    ended_at: float | None = None
    targets: tuple[str, ...] | None = None  # the instances it went to (None: the script's i-<group>-<k>)

    def shape(self, failing: Collection[str]) -> tuple[int, int]:
        """(instances, failed instances)."""
        if self.targets is None:
            return self.script.instances, self.script.fail
        return len(self.targets), sum(1 for i in self.targets if i in failing)

    def end(self) -> float:
        natural = self.created_at + self.script.duration
        return min(natural, self.stopped_at) if self.stopped_at is not None else natural


@dataclass
class FakeBackend:
    clock: FakeClock
    scripts: Mapping[str, Script] = field(default_factory=dict)
    default: Script = field(default_factory=Script)
    instances: Callable[[Group], Sequence[str]] | None = None
    failing: Collection[str] = ()
    name: str = "fake"
    deployments: dict[str, FakeDeployment] = field(default_factory=dict)
    starts: list[DeployRequest] = field(default_factory=list)
    polls: list[tuple[str, ...]] = field(default_factory=list)
    stops: list[tuple[str, bool]] = field(default_factory=list)
    results_asked: list[str] = field(default_factory=list)
    poll_errors: int = 0  # the next N polls raise AwsError (throttled past the retries)
    last_good: dict[str, str] = field(default_factory=dict)
    versions: Mapping[str, Script] = field(default_factory=dict)  # a version's script, over the group's

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def script(self, group: str) -> Script:
        return self.scripts.get(group, self.default)

    def _new_id(self) -> str:
        return f"d-FAKE{next(self._ids):05d}"

    def start(self, request: DeployRequest) -> str:
        with self._lock:
            self.starts.append(request)
            script = self.script(request.group.name)
            if request.revision is not None and request.revision.version in self.versions:
                script = self.versions[request.revision.version]
            if script.start_error:
                raise AwsError(script.start_error)
            deployment_id = self._new_id()
            version = request.revision.version if request.revision else None
            targets = None
            if self.instances is not None:
                targets = request.target_instances or tuple(self.instances(request.group))
            self.deployments[deployment_id] = FakeDeployment(
                deployment_id, request.group.name, version, self.clock.now(), script, targets=targets
            )
            return deployment_id

    def poll(self, deployment_ids: Sequence[str]) -> Mapping[str, DeploymentSnapshot]:
        with self._lock:
            self.polls.append(tuple(deployment_ids))
            if self.poll_errors:
                self.poll_errors -= 1
                raise AwsError("BatchGetDeployments: ThrottlingException: Rate exceeded")
            return {i: self._snapshot(self.deployments[i]) for i in deployment_ids if i in self.deployments}

    def stop(self, deployment_id: str, *, rollback: bool) -> None:
        with self._lock:
            self.stops.append((deployment_id, rollback))
            d = self.deployments[deployment_id]
            if self.clock.now() < d.end():
                d.stopped_at = self.clock.now()
                d.stop_rollback = rollback

    def instance_results(self, deployment_id: str) -> Sequence[InstanceProgress]:
        with self._lock:
            self.results_asked.append(deployment_id)
            d = self.deployments[deployment_id]
            if d.targets is None:
                ids, failed = [f"i-{d.group}-{k}" for k in range(d.script.instances)], d.script.fail
                fails = [k < failed for k in range(len(ids))]
            else:
                ids, fails = list(d.targets), [i in self.failing for i in d.targets]
            return [
                InstanceProgress(
                    i,
                    "Failed" if bad else "Succeeded",
                    "ValidateService" if bad else None,
                    "script exited with 1" if bad else "",
                )
                for i, bad in zip(ids, fails, strict=True)
            ]

    def group_state(self, group: Group) -> GroupState:
        with self._lock:
            ids = tuple(self.instances(group)) if self.instances is not None else ()
            return GroupState(
                group.name, True, instance_ids=ids, last_successful_version=self.last_good.get(group.name)
            )

    def group_deployments(
        self, group: Group, *, active_only: bool, created_after: float | None = None
    ) -> Sequence[DeploymentSnapshot]:
        """Its own deployments of the group (created_at on the simulated clock)."""
        with self._lock:
            mine = [d for d in self.deployments.values() if d.group == group.name]
            mine = [d for d in mine if created_after is None or d.created_at >= created_after]
            found = [replace(self._snapshot(d), created_at=d.created_at) for d in mine]
        return [s for s in found if not (active_only and s.done)]

    # -- model ------------------------------------------------------------------------------

    def _snapshot(self, d: FakeDeployment) -> DeploymentSnapshot:
        now = self.clock.now()
        s = d.script
        n, fail = d.shape(self.failing)
        creator = "codeDeployRollback" if d.rollback_of else "user"
        if now < d.end():
            progress = (now - d.created_at) / s.duration if s.duration else 1.0
            done = min(n - 1, int(progress * n))
            event = LIFECYCLE_EVENTS[min(len(LIFECYCLE_EVENTS) - 1, int(progress * len(LIFECYCLE_EVENTS)))]
            return DeploymentSnapshot(
                d.deployment_id,
                d.group,
                "InProgress",
                pending=n - done - 1,
                in_progress=1,
                succeeded=done,
                current_event=event,
                creator=creator,
            )
        if d.stopped_at is not None:
            if d.stop_rollback and d.rollback_id is None and s.rollback_s is not None:
                d.rollback_id = self._start_rollback(d, d.stopped_at)
            return DeploymentSnapshot(
                d.deployment_id,
                d.group,
                "Stopped",
                skipped=n,
                error="stopped on request",
                rollback_deployment_id=d.rollback_id,
                creator=creator,
            )
        if fail and s.fail_status == "Failed":
            if d.rollback_id is None and s.rollback_s is not None and not d.rollback_of:
                d.rollback_id = self._start_rollback(d, d.end())
            return DeploymentSnapshot(
                d.deployment_id,
                d.group,
                "Failed",
                succeeded=n - fail,
                failed=fail,
                error=f"{fail} instance(s) failed",
                rollback_deployment_id=d.rollback_id,
                creator=creator,
            )
        if d.version and not d.rollback_of and d.ended_at is None:
            d.ended_at = d.end()
            self.last_good[d.group] = d.version
        return DeploymentSnapshot(
            d.deployment_id, d.group, "Succeeded", succeeded=n - fail, failed=fail, creator=creator
        )

    def _start_rollback(self, d: FakeDeployment, at: float) -> str:
        rollback_id = self._new_id()
        script = Script(duration=d.script.rollback_s or 0.0, instances=d.script.instances)
        self.deployments[rollback_id] = FakeDeployment(
            rollback_id, d.group, None, at, script, rollback_of=d.deployment_id, targets=d.targets
        )
        return rollback_id

    def created(self, group: str) -> list[FakeDeployment]:
        return [d for d in self.deployments.values() if d.group == group and not d.rollback_of]


class FakeClock(SimulatedClock):
    """The tests' one clock: the product's SimulatedClock (seconds that move only when someone sleeps on it,
    or by `advance`), and what tests need around it:

    - `wall()`: the same time as a UTC datetime, `epoch` at 0 (for code that stamps what it does);
    - `intervals`: every sleep asked for, in order;
    - `ctrl_c_at`: the first sleep that reaches this time raises KeyboardInterrupt (Ctrl-C while it waits);
    - `on_sleep`: called with the new time after each sleep (a test changes the world there).
    """

    def __init__(
        self,
        start: float = 0.0,
        *,
        epoch: datetime = EPOCH,
        ctrl_c_at: float | None = None,
        on_sleep: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__(start)
        self.epoch = epoch
        self.ctrl_c_at = ctrl_c_at
        self.on_sleep = on_sleep
        self.intervals: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.intervals.append(seconds)
        super().sleep(seconds)
        if self.on_sleep is not None:
            self.on_sleep(self.now())
        if self.ctrl_c_at is not None and self.now() >= self.ctrl_c_at:
            self.ctrl_c_at = None
            raise KeyboardInterrupt

    def wall(self) -> datetime:
        return self.epoch + timedelta(seconds=self.now())
