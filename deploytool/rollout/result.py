"""The outcome of a rollout as plain data: one GroupResult per group, one RolloutResult per release.

`RolloutResult.record` says whether the release record in S3 holds the release's final state
(deploytool.rollout.record): a release can reach every instance and still leave a stale record.

A group counts as succeeded only when its deployment succeeded on EVERY instance: CodeDeploy calls an
AllAtOnce deployment with one good instance a success; deploytool does not. A release succeeded only
when every group did (or already ran the version, on a resumed release).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from deploytool.rollout.backend import InstanceProgress

Outcome = Literal["succeeded", "already-deployed", "failed", "stopped", "not-started", "detached"]
OK_OUTCOMES: frozenset[str] = frozenset({"succeeded", "already-deployed"})


@dataclass(frozen=True)
class FollowOn:
    """A deployment CodeDeploy started of the release's revision after the group's own (deploytool.rollout.coexist)."""

    deployment_id: str
    creator: str  # CodeDeployAutoUpdate (follow-on) or autoscaling (launch)
    status: str
    succeeded: int = 0
    failed: int = 0
    total: int = 0


@dataclass(frozen=True)
class GroupResult:
    group: str
    wave: int
    strategy: str
    outcome: Outcome
    deployment_id: str | None = None
    status: str = ""  # the backend's last status of the deployment (CodeDeploy words)
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    total: int = 0
    rollback_deployment_id: str | None = None
    rollback_status: str | None = None
    error: str = ""
    instance_failures: tuple[InstanceProgress, ...] = ()
    elapsed_s: float | None = None
    attached: bool = False  # followed a deployment an earlier run started
    warnings: tuple[str, ...] = ()  # the deployment's (and its rollback's) warnings, e.g. interrupted tasks
    follow_ons: tuple[FollowOn, ...] = ()  # CodeDeploy's deployments of the release after the group's own

    @property
    def ok(self) -> bool:
        return self.outcome in OK_OUTCOMES

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["instance_failures"] = [asdict(f) for f in self.instance_failures]
        data["ok"] = self.ok
        return data


@dataclass(frozen=True)
class RecordState:
    """What became of a release's record in S3 once the rollout ended (RolloutResult.record)."""

    written: bool  # the manifest and the target's history hold the release's final state
    errors: tuple[str, ...] = ()  # every write that failed (after its retries), in order
    stale: tuple[str, ...] = ()  # what is not up to date: "manifest", "history"

    def to_dict(self) -> dict[str, object]:
        return {"written": self.written, "errors": list(self.errors), "stale": list(self.stale)}


@dataclass(frozen=True)
class RolloutResult:
    release_id: str
    version: str
    target: str
    mode: str
    groups: tuple[GroupResult, ...]
    elapsed_s: float
    detached: bool = False
    stopped: bool = False  # stopped on request (Ctrl-C, stop-all)
    record: RecordState | None = None  # a release's record in S3 (None: no record, e.g. a restart)
    gate: Mapping[str, Any] | None = None  # the health gate's checks (deploytool.rollout.gate), when it ran

    @property
    def succeeded(self) -> bool:
        return bool(self.groups) and not self.detached and all(g.ok for g in self.groups)

    def group(self, name: str) -> GroupResult:
        for g in self.groups:
            if g.group == name:
                return g
        raise KeyError(name)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for g in self.groups:
            out[g.outcome] = out.get(g.outcome, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "release_id": self.release_id,
            "version": self.version,
            "target": self.target,
            "mode": self.mode,
            "succeeded": self.succeeded,
            "detached": self.detached,
            "stopped": self.stopped,
            "elapsed_s": round(self.elapsed_s, 3),
            "outcomes": self.counts(),
            "groups": [g.to_dict() for g in self.groups],
            # null when the rollout keeps no record (a restart); written false: deployed, record stale (exit 4)
            "record": self.record.to_dict() if self.record is not None else None,
            "gate": dict(self.gate) if self.gate is not None else None,
        }
