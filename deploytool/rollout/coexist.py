"""Coexisting with the deployments CodeDeploy starts of its own (../shared/reference/fleet-dynamics.md).

A fleet that scales during a release gets launch deployments (creator autoscaling), follow-on deployments
to instances launched mid-release (CodeDeployAutoUpdate, outdatedInstancesStrategy UPDATE), termination
deployments (autoscalingTermination) and rollbacks (codeDeployRollback); CodeDeploy allows one active
deployment per group, so CreateDeployment fails while one of them runs.

Contract (the Orchestrator owns one `Coexist` and calls it at four points):
- `start(request)`: Backend.start; when it fails and the group's active deployment is this very request's
  (same description, which carries the release id: a CreateDeployment that reached the service but whose
  answer was lost, then retried and refused), that deployment is adopted (its id returned), not started twice.
- `hold(group, error)`: a start failed. The group's active deployments are read (Backend.group_deployments:
  ListDeployments with the active statuses + BatchGetDeployments). One CodeDeploy created, or one of this
  release (its description carries the release id: an earlier run's), makes the group wait (GroupWaiting
  event: "waiting for launch deployment d-... on group video"; None returned) and its start is retried when
  it ends. One someone else started (creator user) is not overridden: the line returned names it and the
  group fails (the release exits 1), unless `options.wait_for_others` (--wait): then it is waited for too.
  A group waits at most `options.wait_s` in all, then fails with a line saying what it waited for.
  Any other failure (no active deployment found) returns the start's own error line.
- `ids()` / `observe(snapshots)`: the deployments waited for are polled in the orchestrator's one poll;
  observe says (True) when one ended, or a wait ran out, so the start is retried.
- `settle(finished, skip)`: after the last wave, for each group whose deployment succeeded, the deployments
  CodeDeploy created in the group since (follow-ons to instances launched mid-release, launches) are
  followed to their end, bounded by `options.wait_s`; those of the release's version are kept in the group's
  result (`GroupResult.follow_ons`) and published (FollowOnFinished: the tagger tags the instances they
  deployed with the release). One that failed, or still runs when the wait runs out, fails its group: some
  of its instances are not on the release's version. A launch deployment of an older revision that succeeded
  (an instance launched while the group's deployment ran) is due a follow-on: once nothing runs, the group is
  watched up to FOLLOW_ON_GRACE_S more for a follow-on created after that launch (CodeDeploy starts it when the
  group's deployments end, not in the same instant); with outdatedInstancesStrategy IGNORE none comes, and the
  reconcile reports the instance. A follow-on started later than that is not seen either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from deploytool.config import Group
from deploytool.errors import DeployToolError
from deploytool.rollout.backend import Backend, DeploymentSnapshot, DeployRequest
from deploytool.rollout.events import Event, FollowOnFinished, GroupWaiting
from deploytool.rollout.plan import RolloutPlan
from deploytool.rollout.result import FollowOn, GroupResult

CODEDEPLOY_OWN: Mapping[str, str] = {
    "autoscaling": "launch deployment",
    "CodeDeployAutoUpdate": "follow-on deployment",
    "autoscalingTermination": "termination deployment",
    "codeDeployRollback": "rollback deployment",
    "CodeDeploy": "CodeDeploy deployment",
}
FOLLOW_ON_GRACE_S = 30.0  # settle: how long a launch of an older revision waits for its follow-on to appear
FOLLOWED = ("CodeDeployAutoUpdate", "autoscaling")  # deploy a revision to instances: ours, when of our version
ANOTHER = "deployment someone else started"
OURS = "deployment of this release (an earlier run)"


def kind(snap: DeploymentSnapshot, release_id: str) -> str:
    if snap.creator in CODEDEPLOY_OWN:
        return CODEDEPLOY_OWN[snap.creator]
    return OURS if release_id and release_id in snap.description else ANOTHER


@dataclass
class _Wait:
    deployment_id: str
    what: str
    since: float  # when the group first waited: its whole wait is bounded from here
    over: bool = False


class Coexist:
    def __init__(
        self,
        backend: Backend,
        plan: RolloutPlan,
        *,
        emit: Callable[[Event], None],
        now: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self.backend, self.plan, self.options = backend, plan, plan.options
        self.emit, self.now, self.sleep = emit, now, sleep
        self._waits: dict[str, _Wait] = {}
        self._groups = {g.name: g for g in plan.groups}

    # -- before a group's deployment -------------------------------------------------------------

    def start(self, request: DeployRequest) -> str:
        try:
            return self.backend.start(request)
        except DeployToolError:
            try:
                active = self.backend.group_deployments(request.group, active_only=True)
            except DeployToolError:
                active = ()
            wanted = request.description or f"deploytool {request.release_id}"
            for snap in active:
                if snap.creator == "user" and snap.description == wanted and snap.version == self._version(request):
                    return snap.deployment_id
            raise

    @staticmethod
    def _version(request: DeployRequest) -> str | None:
        return request.revision.version if request.revision is not None else None

    def blocked(self, group: str) -> bool:
        wait = self._waits.get(group)
        return wait is not None and not wait.over

    def hold(self, group: Group, error: object) -> str | None:
        failed = f"could not start the deployment: {error}"
        try:
            active = self.backend.group_deployments(group, active_only=True)
        except DeployToolError as exc:
            return f"{failed} (its active deployments could not be read: {exc})"
        if not active:
            return failed
        snap, now = active[0], self.now()
        what = kind(snap, self.plan.release_id)
        if what == ANOTHER and not self.options.wait_for_others:
            about = f" ({snap.description})" if snap.description else ""
            return (
                f"deployment {snap.deployment_id}{about} that someone else started is in progress on group "
                f"{group.name}; deploytool does not override it: wait for it to end, or run again with --wait"
            )
        earlier = self._waits.get(group.name)
        since = earlier.since if earlier else now
        if now - since >= self.options.wait_s:
            return (
                f"waited {now - since:.0f} s (--max-wait {self.options.wait_s:g}) for {what} "
                f"{snap.deployment_id} on group {group.name}; it is still in progress"
            )
        self._waits[group.name] = _Wait(snap.deployment_id, what, since)
        self.emit(GroupWaiting(group.name, snap.deployment_id, what, now))
        return None

    def ids(self) -> list[str]:
        return [w.deployment_id for w in self._waits.values() if not w.over]

    def observe(self, snapshots: Mapping[str, DeploymentSnapshot]) -> bool:
        acted, now = False, self.now()
        for wait in self._waits.values():
            snap = snapshots.get(wait.deployment_id)
            if not wait.over and ((snap is not None and snap.done) or now - wait.since >= self.options.wait_s):
                wait.over = acted = True
        return acted

    # -- after the release -----------------------------------------------------------------------

    def settle(
        self, finished: Sequence[tuple[GroupResult, DeploymentSnapshot | None]], *, skip: bool
    ) -> tuple[GroupResult, ...]:
        results = [result for result, _ in finished]
        if skip or self.plan.mode != "deploy":
            return tuple(results)
        watch = {
            r.group: (self._groups[r.group], snap)
            for r, snap in finished
            if r.outcome == "succeeded" and snap is not None and snap.created_at is not None and r.group in self._groups
        }
        seen: dict[str, dict[str, DeploymentSnapshot]] = {name: {} for name in watch}
        idle_since: dict[str, float] = {}
        announced: set[str] = set()
        deadline = self.now() + self.options.wait_s
        while watch:
            for name, (group, own) in list(watch.items()):
                after = (own.created_at or 0.0) + 0.001  # createTime has milliseconds: not our own deployment
                try:
                    found = self.backend.group_deployments(group, active_only=False, created_after=after)
                except DeployToolError:
                    continue  # read again after the next sleep, until the deadline
                theirs = [s for s in found if s.creator in CODEDEPLOY_OWN and s.deployment_id != own.deployment_id]
                seen[name].update({s.deployment_id: s for s in theirs})
                running = [s for s in theirs if not s.done]
                if running:
                    idle_since.pop(name, None)
                else:
                    idle_s = self.now() - idle_since.setdefault(name, self.now())
                    grace_s = min(FOLLOW_ON_GRACE_S, self.options.wait_s)
                    if not self._follow_on_due(seen[name]) or idle_s >= grace_s:
                        del watch[name]
                for s in running:
                    if s.deployment_id not in announced:
                        announced.add(s.deployment_id)
                        self.emit(GroupWaiting(name, s.deployment_id, kind(s, self.plan.release_id), self.now()))
            if not watch or self.now() >= deadline:
                break
            self.sleep(self.options.poll_max_s)
        return tuple(self._with_follow_ons(r, seen.get(r.group, {})) for r in results)

    def _follow_on_due(self, seen: Mapping[str, DeploymentSnapshot]) -> bool:
        """A launch of an older revision succeeded and no follow-on was created after it (yet)."""
        old = [
            s.created_at or 0.0
            for s in seen.values()
            if s.creator == "autoscaling" and s.status == "Succeeded" and s.version != self.plan.version
        ]
        return bool(old) and not any(
            s.creator == "CodeDeployAutoUpdate" and (s.created_at or 0.0) >= max(old) for s in seen.values()
        )

    def _with_follow_ons(self, result: GroupResult, seen: Mapping[str, DeploymentSnapshot]) -> GroupResult:
        ours = [s for s in seen.values() if s.creator in FOLLOWED and s.version == self.plan.version]
        if not ours:
            return result
        for snap in ours:
            if snap.done:
                self.emit(FollowOnFinished(result.group, snap, self.now()))
        follow_ons = tuple(FollowOn(s.deployment_id, s.creator, s.status, s.succeeded, s.failed, s.total) for s in ours)
        bad = [s for s in ours if not s.all_succeeded]
        if not bad:
            return replace(result, follow_ons=follow_ons)
        lines = [
            f"{CODEDEPLOY_OWN[s.creator]} {s.deployment_id} to instances launched during the release "
            + (f"{s.status} ({s.failed}/{s.total} failed)" if s.done else f"still {s.status} after the wait")
            for s in bad
        ]
        error = "; ".join([*([result.error] if result.error else []), *lines])
        return replace(result, follow_ons=follow_ons, outcome="failed", error=error)
