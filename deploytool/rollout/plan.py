"""The rollout plan: what the orchestrator runs, as plain data.

Contract: `rollout_plan(...)` turns the selected groups of a fleet into ordered waves (lowest wave
first, fleet order inside a wave) plus options; nothing here talks to a backend. `prior` carries the
deployments a previous run of the same release recorded (release record `deployments` map), so the
orchestrator attaches to those still in flight and skips those already done instead of starting
new ones.
`check_min_healthy(target, groups, sizes)` refuses a group whose minimum of healthy hosts is not below
its known instance count (the rollout tasks call it before anything is published or started).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from deploytool.config import Group
from deploytool.errors import UsageError
from deploytool.model import Revision
from deploytool.strategy import health_policy

OnFailure = Literal["stop-wave", "stop-all"]
PartialFailure = Literal["rollback", "keep"]
PARTIAL_FAILURE: tuple[str, ...] = ("rollback", "keep")
ON_FAILURE: tuple[str, ...] = ("stop-wave", "stop-all")
Mode = Literal["deploy", "restart"]


@dataclass(frozen=True)
class RolloutOptions:
    """How the orchestrator paces and guards a release.

    max_parallel: deployments in flight at once inside a wave (0 = no limit).
    on_failure: stop-wave (a failed group rolls back, the wave's other groups finish, later waves do
    not start) or stop-all (also stop the wave's other deployments, with rollback).
    poll_min_s / poll_max_s: the shared poll loop starts at the minimum after the orchestrator acts
    and doubles up to the maximum while nothing needs it.
    rollback_grace_s: how long a failed deployment is watched for its automatic rollback to appear.
    start_concurrency: how many Backend.start calls run at once (each is one API call).
    partial_failure: a deployment the backend calls Succeeded with failed instances: "rollback" (deploy the
    group's last good revision; deploytool.rollout.partial) or "keep" (the fleet file's [rollout]).
    ignore_stop_failures: deployments continue past a failing ApplicationStop (ignoreApplicationStopFailures).
    wait_s: how long a group waits for a deployment it did not start to end before its own (CodeDeploy's launch,
    follow-on, termination deployments; with wait_for_others also someone else's), and how long the release
    waits for the follow-on deployments CodeDeploy starts after it (deploytool.rollout.coexist).
    wait_for_others: wait for a deployment someone else started in a group (--wait); without it the group fails.
    allow_task_changes: deploy although the release drops (or requires more of) a task the last release that
    succeeded on the target registers (deploytool.contract; --allow-task-changes).
    bake_s: the health gate between waves waits this long, then judges the new release's telemetry (--bake, else the
    fleet's [rollout] bake); a group's own `bake` sets its wave's (the longest in a wave), unless --bake was given
    (bake_given); gate False (--no-gate): no gate at all.
    """

    max_parallel: int = 0
    on_failure: OnFailure = "stop-wave"
    poll_min_s: float = 1.0
    poll_max_s: float = 10.0
    rollback_grace_s: float = 15.0
    start_concurrency: int = 8
    poll_error_limit_s: float = 900.0
    partial_failure: PartialFailure = "rollback"
    ignore_stop_failures: bool = False
    wait_s: float = 1800.0
    wait_for_others: bool = False
    allow_task_changes: bool = False
    bake_s: float = 0.0  # the health gate's bake after each wave (deploytool.rollout.gate); 0: no gate
    bake_given: bool = False  # --bake: it wins over the groups' own `bake`
    gate: bool = True  # --no-gate: False

    def __post_init__(self) -> None:
        if self.max_parallel < 0:
            raise UsageError(f"--max-parallel must be 0 (no limit) or more, got {self.max_parallel}")
        if self.on_failure not in ON_FAILURE:
            raise UsageError(f"--on-failure {self.on_failure!r} is not allowed; allowed: {', '.join(ON_FAILURE)}")
        if self.partial_failure not in PARTIAL_FAILURE:
            raise UsageError(
                f"partial_failure {self.partial_failure!r} is not allowed; allowed: {', '.join(PARTIAL_FAILURE)}"
            )
        if self.wait_s < 0:
            raise UsageError(f"--max-wait must be 0 seconds or more, got {self.wait_s:g}")
        if not 0 <= self.bake_s <= 3600:
            raise UsageError(f"--bake {self.bake_s:g}: allowed: 0 to 3600 seconds")
        if not 0 < self.poll_min_s <= self.poll_max_s:
            raise UsageError(f"poll interval must satisfy 0 < min <= max, got {self.poll_min_s}..{self.poll_max_s}")


@dataclass(frozen=True)
class PriorDeployment:
    """A deployment an earlier run of this release recorded for one group."""

    deployment_id: str
    status: str = ""
    rollback_deployment_id: str | None = None

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> PriorDeployment:
        rollback = data.get("rollback_deployment_id")
        return cls(str(data["deployment_id"]), str(data.get("status") or ""), str(rollback) if rollback else None)


@dataclass(frozen=True)
class WavePlan:
    number: int
    groups: tuple[Group, ...]


def wave_bakes(waves: tuple[WavePlan, ...], options: RolloutOptions) -> dict[int, float]:
    """Each wave's bake (the health gate's wait after it): --bake when given, else the longest `bake` its groups
    set, else the release's; {} when there is no gate."""
    if not options.gate:
        return {}
    out = {}
    for wave in waves:
        own = [g.bake for g in wave.groups if g.bake is not None]
        out[wave.number] = options.bake_s if options.bake_given or not own else float(max(own))
    return out


@dataclass(frozen=True)
class RolloutPlan:
    release_id: str
    version: str
    target: str
    revision: Revision | None  # None only for mode="restart"
    waves: tuple[WavePlan, ...]
    options: RolloutOptions = field(default_factory=RolloutOptions)
    mode: Mode = "deploy"
    prior: Mapping[str, PriorDeployment] = field(default_factory=dict)
    target_instances: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""

    @property
    def groups(self) -> tuple[Group, ...]:
        return tuple(g for wave in self.waves for g in wave.groups)

    def wave_of(self, group: str) -> int:
        for wave in self.waves:
            if any(g.name == group for g in wave.groups):
                return wave.number
        raise KeyError(group)


def check_min_healthy(target: str, groups: Sequence[Group], sizes: Mapping[str, int]) -> None:
    """Refuse (UsageError) a group whose minimum of healthy hosts is not below its instance count, which
    CodeDeploy fails at once (deploytool.strategy). `sizes`: instances per group name where known (on a
    codedeploy target, its ASG's InService instances; a local target's fleet file is refused earlier)."""
    for group in groups:
        size = sizes.get(group.name)
        policy = health_policy(group.strategy, size) if size else None
        if policy is not None and policy.error:
            raise UsageError(
                f"group {group.name!r} on target {target!r}: {group.strategy.label} needs {policy.min_healthy} "
                f"healthy host(s), not below the {size} instance(s) in service in ASG {group.asg!r}: CodeDeploy "
                "would fail the deployment at once; lower the group's strategy in the fleet file or scale the ASG"
            )


def waves_of(groups: Sequence[Group]) -> tuple[WavePlan, ...]:
    """Groups by wave number, lowest first; the given (fleet) order inside a wave."""
    numbers = sorted({g.wave for g in groups})
    return tuple(WavePlan(n, tuple(g for g in groups if g.wave == n)) for n in numbers)


def rollout_plan(
    *,
    release_id: str,
    version: str,
    target: str,
    groups: Sequence[Group],
    revision: Revision | None,
    options: RolloutOptions | None = None,
    mode: Mode = "deploy",
    prior: Mapping[str, PriorDeployment] | None = None,
    target_instances: Mapping[str, tuple[str, ...]] | None = None,
) -> RolloutPlan:
    if not groups:
        raise UsageError("no groups to deploy")
    if mode == "deploy" and revision is None:
        raise UsageError("a deploy needs a revision (only a restart goes without one)")
    names = {g.name for g in groups}
    return RolloutPlan(
        release_id=release_id,
        version=version,
        target=target,
        revision=revision if mode == "deploy" else None,
        waves=waves_of(groups),
        options=options or RolloutOptions(),
        mode=mode,
        prior={k: v for k, v in (prior or {}).items() if k in names},
        target_instances=dict(target_instances or {}),
        description=f"deploytool {mode} {release_id}",
    )
