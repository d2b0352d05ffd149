"""Resume: decide, for each group an earlier run of the release recorded, what this run does.

Contract: `resolve(backend, plan)` polls the recorded deployment ids (one Backend.poll) and returns,
per group: `attach` (the deployment, or its automatic rollback, is still in flight: follow it, never
start a second one), `done` (it succeeded on every instance and the group still runs the version:
skip it) or nothing (start a fresh deployment, e.g. a retry of a failed group). A group that
succeeded but has since been deployed with something else is deployed again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from deploytool.config import Group
from deploytool.errors import DeployToolError
from deploytool.rollout.backend import Backend, DeploymentSnapshot
from deploytool.rollout.plan import RolloutPlan


@dataclass(frozen=True)
class Resolution:
    action: Literal["attach", "done"]
    deployment_id: str
    snapshot: DeploymentSnapshot | None = None


def resolve(backend: Backend, plan: RolloutPlan) -> Mapping[str, Resolution]:
    if not plan.prior:
        return {}
    ids: list[str] = []
    for prior in plan.prior.values():
        ids.append(prior.deployment_id)
        if prior.rollback_deployment_id:
            ids.append(prior.rollback_deployment_id)
    snapshots = backend.poll(ids)
    groups = {g.name: g for g in plan.groups}
    out: dict[str, Resolution] = {}
    for name, prior in plan.prior.items():
        snap = snapshots.get(prior.deployment_id)
        if snap is None:
            continue  # unknown to the backend (expired, other account): deploy afresh
        rollback_id = snap.rollback_deployment_id or prior.rollback_deployment_id
        rollback = snapshots.get(rollback_id) if rollback_id else None
        if not snap.done or (rollback_id and (rollback is None or not rollback.done)):
            out[name] = Resolution("attach", prior.deployment_id, snap)
        elif snap.all_succeeded and plan.mode == "deploy" and _still_on(backend, groups[name], plan.version):
            out[name] = Resolution("done", prior.deployment_id, snap)
    return out


def _still_on(backend: Backend, group: Group, version: str) -> bool:
    try:
        state = backend.group_state(group)
    except DeployToolError:
        return False
    return state.last_successful_version == version
