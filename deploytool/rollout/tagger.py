"""Tags as the rollout goes: a Reporter that tags each group's instances when its deployment ends.

Contract: `DeploymentTagger(ec2, backend, now=..., say=...)` subscribes to a release's events (the
rollout wiring adds one to every release: deploytool.rollout.wiring). ReleaseStarted gives it the release
id, version and mode. On each GroupFinished of a deploy (never a restart: versions do not change) that
names a deployment and whose outcome is succeeded, failed, stopped or already-deployed, it calls
deploytool.rollout.tags.tag_deployments for that one deployment: every instance the deployment succeeded
on, and that its automatic rollback (if any) did not redeploy, gets deploytool:version,
deploytool:release and deploytool:deployed-at (= now() when the group finished). Failed instances
keep their old tags. Detached (still running) and not-started groups are not tagged. A group a
resumed release finds already deployed is tagged only where this release's tag is missing (an earlier
run that died before the deployment ended could not tag it).

Any Backend works: only Backend.instance_results is read. A tagging failure never reaches the
orchestrator (the release goes on and its exit code does not change): it is said as one warning line
and kept in `warnings`; the untouched instances then show up as drift in the next reconcile, and
running the same release again (a resume: nothing is redeployed) writes the tags that are missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from deploytool.aws.ec2 import InstanceInfo
from deploytool.errors import DeployToolError
from deploytool.model import TAG_RELEASE
from deploytool.rollout.backend import Backend, InstanceProgress
from deploytool.rollout.events import Event, FollowOnFinished, GroupFinished, ReleaseStarted
from deploytool.rollout.result import GroupResult
from deploytool.rollout.tags import (
    FinishedDeployment,
    InstanceResults,
    TagResult,
    TagWriter,
    tag_deployments,
)

TAGGED_OUTCOMES = frozenset({"succeeded", "failed", "stopped", "already-deployed"})


class TagStore(TagWriter, Protocol):
    def describe_instances(self, instance_ids: Sequence[str]) -> list[InstanceInfo]: ...


class _Untagged:
    """The backend's instance results, without the instances already tagged with the release."""

    def __init__(self, backend: InstanceResults, ec2: TagStore, release_id: str) -> None:
        self.backend, self.ec2, self.release_id = backend, ec2, release_id

    def instance_results(self, deployment_id: str) -> Sequence[InstanceProgress]:
        results = self.backend.instance_results(deployment_id)
        done = {
            i.instance_id
            for i in self.ec2.describe_instances([r.instance_id for r in results])
            if i.tags.get(TAG_RELEASE) == self.release_id
        }
        return [r for r in results if r.instance_id not in done]


class DeploymentTagger:
    def __init__(
        self,
        ec2: TagStore,
        backend: Backend,
        *,
        now: Callable[[], datetime],
        say: Callable[[str], None],
    ) -> None:
        self.ec2 = ec2
        self.backend = backend
        self.now = now
        self.say = say
        self.release: ReleaseStarted | None = None
        self.tagged: dict[str, tuple[str, ...]] = {}  # group -> instances tagged
        self.calls = 0
        self.warnings: list[str] = []

    def publish(self, event: Event) -> None:
        if isinstance(event, ReleaseStarted):
            self.release = event
        elif isinstance(event, GroupFinished):
            self._finished(event.result)
        elif isinstance(event, FollowOnFinished) and event.snapshot.succeeded:
            # CodeDeploy's follow-on (or launch) deployment of the release: the instances it deployed are on it
            self._finished(
                GroupResult(event.group, 0, "", "succeeded", event.snapshot.deployment_id, event.snapshot.status)
            )

    def _finished(self, result: GroupResult) -> None:
        release = self.release
        if release is None or release.mode != "deploy" or result.outcome not in TAGGED_OUTCOMES:
            return
        if not result.deployment_id:
            return
        done = FinishedDeployment(
            result.group,
            result.deployment_id,
            release.version,
            release.release_id,
            self.now(),
            rollback_deployment_id=result.rollback_deployment_id,
        )
        try:
            source: InstanceResults = self.backend
            if result.outcome == "already-deployed":
                source = _Untagged(self.backend, self.ec2, release.release_id)
            tags = tag_deployments(self.ec2, source, [done])
        except Exception as exc:  # tagging must never stop a release, whatever went wrong
            why = str(exc) if isinstance(exc, DeployToolError) else f"{type(exc).__name__}: {exc}"
            line = (
                f"warning: tagging {result.group} ({result.deployment_id}) failed: {why}; its instances keep "
                "their old tags (reconcile reports them; `fab deploy` of the same version writes the missing tags)"
            )
            self.warnings.append(line)
            self.say(line)
            return
        self._record(result.group, tags, release.version)

    def _record(self, group: str, tags: TagResult, version: str) -> None:
        ids = tags.tagged.get(group, ())
        self.calls += tags.calls
        if ids:
            self.tagged[group] = self.tagged.get(group, ()) + ids
            self.say(f"tags: {group}: {len(ids)} instance(s) tagged deploytool:version={version}")

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self.tagged.values())
