"""Tags after a group's deployment: the instances that succeeded get the release (deploytool.model.TAG_*).

Contract: `tag_deployments(ec2, backend, done)` reads each deployment's per-instance results from the
Backend, and tags every instance whose status is Succeeded with deploytool:version,
deploytool:release and deploytool:deployed-at. Instances sharing one tag set are tagged together:
one CreateTags call per distinct tag set per 1000 instances (the API's limit), however many groups.
Failed, skipped and pending instances keep the tags of whatever they ran before, and so do the
instances an automatic rollback redeployed (a FinishedDeployment's `rollback_deployment_id`): they
run the previous revision again. The tool tags, not the instance, so instances need no ec2:CreateTags
right. Returns what it tagged; prints nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from deploytool.model import TAG_DEPLOYED_AT, TAG_RELEASE, TAG_VERSION, iso_seconds
from deploytool.rollout.backend import InstanceProgress


class TagWriter(Protocol):
    def create_tags(self, instance_ids: Iterable[str], tags: Mapping[str, str]) -> int:
        """Tag the instances; returns the number of CreateTags calls made."""
        ...


class InstanceResults(Protocol):
    """What tagging reads of a Backend (any Backend has it)."""

    def instance_results(self, deployment_id: str) -> Sequence[InstanceProgress]: ...


@dataclass(frozen=True)
class FinishedDeployment:
    """A group's deployment that has ended, as the orchestrator's caller knows it."""

    group: str
    deployment_id: str
    version: str
    release_id: str
    finished_at: datetime
    rollback_deployment_id: str | None = None  # its automatic rollback, when it had one


@dataclass(frozen=True)
class TagResult:
    tagged: Mapping[str, tuple[str, ...]]  # group -> instance ids tagged
    calls: int

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self.tagged.values())


def deployment_tags(version: str, release_id: str, deployed_at: datetime) -> dict[str, str]:
    return {TAG_VERSION: version, TAG_RELEASE: release_id, TAG_DEPLOYED_AT: iso_seconds(deployed_at)}


def tag_instances(ec2: TagWriter, assignments: Mapping[str, Mapping[str, str]]) -> int:
    """Tag each instance with its tags, one batch per distinct tag set. Returns CreateTags calls."""
    by_tags: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for instance_id, tags in assignments.items():
        by_tags.setdefault(tuple(sorted(tags.items())), []).append(instance_id)
    return sum(ec2.create_tags(ids, dict(tag_set)) for tag_set, ids in sorted(by_tags.items()))


def succeeded_instances(
    backend: InstanceResults, deployment_id: str, rollback_id: str | None = None
) -> tuple[str, ...]:
    """The instances the deployment succeeded on and that still run it: not redeployed by its rollback."""
    ids = {r.instance_id for r in backend.instance_results(deployment_id) if r.status == "Succeeded"}
    if ids and rollback_id:
        ids -= {r.instance_id for r in backend.instance_results(rollback_id) if r.status != "Skipped"}
    return tuple(sorted(ids))


def tag_deployments(ec2: TagWriter, backend: InstanceResults, done: Sequence[FinishedDeployment]) -> TagResult:
    """Tag the succeeded instances of these deployments (one group's, or a whole wave's)."""
    assignments: dict[str, Mapping[str, str]] = {}
    tagged: dict[str, tuple[str, ...]] = {}
    for deployment in done:
        ids = succeeded_instances(backend, deployment.deployment_id, deployment.rollback_deployment_id)
        tags = deployment_tags(deployment.version, deployment.release_id, deployment.finished_at)
        for instance_id in ids:
            assignments[instance_id] = tags
        tagged[deployment.group] = tagged.get(deployment.group, ()) + ids
    calls = tag_instances(ec2, assignments) if assignments else 0
    return TagResult(tagged=tagged, calls=calls)
