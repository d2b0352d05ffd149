"""A group the backend calls Succeeded although instances failed: roll it back to its last good revision, or keep.

CodeDeploy calls an AllAtOnce deployment with one good instance a success, and a OneAtATime deployment whose
LAST instance failed too. Such a deployment becomes the group's last successful one, so CodeDeploy neither
rolls it back (no DEPLOYMENT_FAILURE) nor could (its rollback would redeploy the same revision): the failed
instances keep a broken worker. The fleet file's `[rollout] partial_failure` decides (RolloutOptions):

- "rollback" (the default): the orchestrator deploys the group's last good revision, the revision of the newest
  EARLIER release on this target whose outcome for the group is `succeeded` (found in the release record by
  `LastGood`), as a new deployment without automatic rollback, and follows it to its end. The group is failed
  and, when that deployment succeeds, `rolled_back` in the release record.
- "keep": the group is failed with its failed instances named; they keep what the deployment left.

With no earlier good revision (the group's first release), or a rollout that is no release, the group is
failed with one line saying why it was not rolled back (`rollback_request` decides; `line` words every case).
A resumed release follows the rollback an earlier run started (the record's rollback_deployment_id).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from deploytool.config import Group
from deploytool.errors import DeployToolError
from deploytool.model import ReleaseManifest, Revision
from deploytool.rollout.backend import DeploymentSnapshot, DeployRequest, InstanceProgress
from deploytool.rollout.plan import RolloutPlan
from deploytool.rollout.record import ReleaseStore


def succeeded_for(manifest: ReleaseManifest, group: str) -> bool:
    """Whether this release's outcome for the group is `succeeded` (manifests from before outcomes existed: its
    recorded deployment status Succeeded), as athena/reconcile.sql reads it."""
    for entry in manifest.groups:
        if entry.get("group") == group and "outcome" in entry:
            return entry.get("outcome") == "succeeded"
    return str((manifest.deployments.get(group) or {}).get("status", "")) == "Succeeded"


class LastGood:
    """The last good revision of each group, from the target's release history (newest first), skipping the
    current release and any release of the current revision. Manifests are read once, and only when asked."""

    def __init__(self, store: ReleaseStore, current: ReleaseManifest) -> None:
        self.store = store
        self.current = current
        self._earlier: list[ReleaseManifest] | None = None
        self.errors: list[str] = []

    def _manifests(self) -> list[ReleaseManifest]:
        if self._earlier is None:
            self._earlier = []
            try:
                refs = self.store.history(self.current.target)
            except DeployToolError as exc:
                self.errors.append(str(exc))
                refs = []
            ids = [r.release_id for r in refs]
            if self.current.release_id in ids:  # only releases older than this one
                ids = ids[ids.index(self.current.release_id) + 1 :]
            for release_id in ids:
                try:
                    manifest = self.store.load(release_id)
                except DeployToolError as exc:
                    self.errors.append(str(exc))
                    continue
                if manifest.key != self.current.key:
                    self._earlier.append(manifest)
        return self._earlier

    def __call__(self, group: Group) -> Revision | None:
        for manifest in self._manifests():
            if succeeded_for(manifest, group.name):
                return manifest.revision
        return None


def failed_ids(failures: Sequence[InstanceProgress]) -> str:
    shown = ", ".join(f.instance_id for f in failures[:10])
    return shown + (f" and {len(failures) - 10} more" if len(failures) > 10 else "")


def line(snap: DeploymentSnapshot, failures: Sequence[InstanceProgress], why: str) -> str:
    """The group's error line for a deployment called Succeeded with failed instances; `why` says what was done."""
    head = f"{snap.failed} of {snap.total} instances failed (the backend called it Succeeded)"
    named = f" ({failed_ids(failures)})" if failures else ""
    return f"{head}{named}; {why}"


def rollback_request(
    group: Group,
    snap: DeploymentSnapshot,
    plan: RolloutPlan,
    last_good: Callable[[Group], Revision | None] | None,
) -> DeployRequest | str:
    """The deployment rolling back a partly failed one (the plan's options decide), or why there is none."""
    if plan.options.partial_failure == "keep":
        return 'kept as they are ([rollout] partial_failure = "keep")'
    if plan.mode != "deploy" or last_good is None:
        return "not rolled back: this rollout is no release (no release record to find a last good revision)"
    revision = last_good(group)
    if revision is None:
        return "not rolled back: no earlier release succeeded for this group (its first release?)"
    return DeployRequest(
        group=group,
        revision=revision,
        release_id=plan.release_id,
        description=f"deploytool: roll back to {revision.version}: {snap.deployment_id} failed on "
        f"{snap.failed} of {snap.total} instances",
        auto_rollback=False,
        ignore_stop_failures=plan.options.ignore_stop_failures,
    )
