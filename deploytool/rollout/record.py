"""The release record in S3: the release manifest and a small index to find releases again.

Contract (the manifest's fields and every key: deploytool.model; bucket = artifacts.bucket, P =
artifacts.prefix, A = app.name):
- manifest: P/A/releases/dt=YYYY-MM-DD/<release_id>.json, ONE line of JSON (Athena's JSON SerDe reads
  it as a row); `deployments` {group: {deployment_id, status, rollback_deployment_id}} is rewritten at
  every orchestrator Checkpoint, so a release that dies mid-way can be resumed. Each entry of `groups`
  carries `outcome` (deploytool.model.GROUP_OUTCOMES): `pending` until the group's deployment ends, then what the
  orchestrator concluded for the group (it counts a deployment with a failed instance as failed even
  when the backend says Succeeded). Reconcile expects a group's version only from a release whose
  outcome for that group is `succeeded` (athena/reconcile.sql). dt is the release id's UTC date, so a
  release id alone locates its manifest.
- index: P/A/release-index/<target>/<version>.json points at the release of that version on that
  target (`fab deploy` of the same version resumes it); P/A/release-index/<target>/latest.json keeps
  the target's recent releases, newest first, with their outcome (`fab status`, `fab rollback`).
  The index lives outside releases/ so the Athena table sees manifests only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from deploytool.aws.s3 import S3Gateway
from deploytool.errors import AwsError, DeployToolError, UsageError
from deploytool.model import ReleaseManifest, index_key, manifest_key, releases_prefix
from deploytool.rollout.events import Checkpoint, Event, GroupFinished, ReleaseFinished
from deploytool.rollout.plan import PriorDeployment
from deploytool.rollout.result import GroupResult, RecordState, RolloutResult

HISTORY = 50
# A write that failed on something that may pass (throttling, 5xx, timeout) is tried again after these
# pauses (botocore has already retried it); an access denied or a missing bucket is not.
RETRY_PAUSES_S = (1.0, 2.0, 4.0)


def prior_deployments(manifest: ReleaseManifest) -> dict[str, PriorDeployment]:
    """The manifest's deployments a resumed release follows or skips (the plan's `prior`)."""
    return {name: PriorDeployment.from_record(d) for name, d in manifest.deployments.items() if d.get("deployment_id")}


def group_outcome(result: GroupResult) -> str:
    """The manifest's word (deploytool.model.GROUP_OUTCOMES) for how a group's deployment ended."""
    if result.ok:
        return "succeeded"
    if result.outcome == "failed":
        return "rolled_back" if result.rollback_deployment_id and result.rollback_status == "Succeeded" else "failed"
    if result.outcome in ("stopped", "not-started"):
        return result.outcome.replace("-", "_")
    return "pending"  # detached: the deployment goes on; a later `fab deploy` follows it to its end


def with_outcome(manifest: ReleaseManifest, result: GroupResult) -> ReleaseManifest:
    """The manifest with this group's outcome in its `groups` entry (other entries unchanged)."""
    outcome = group_outcome(result)
    groups = tuple({**g, "outcome": outcome} if g.get("group") == result.group else g for g in manifest.groups)
    return replace(manifest, groups=groups)


@dataclass(frozen=True)
class ReleaseRef:
    """One line of a target's release history."""

    release_id: str
    version: str
    outcome: str = "running"  # running | succeeded | failed | detached


class ReleaseStore:
    """Reads and writes release manifests and the release index through the S3 gateway."""

    def __init__(self, s3: S3Gateway, *, bucket: str, prefix: str, app: str) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix, self.app = prefix, app

    def manifest_key(self, release_id: str) -> str:
        return manifest_key(self.prefix, self.app, release_id)

    def _index_key(self, target: str, name: str) -> str:
        return index_key(self.prefix, self.app, target, name)

    def save(self, manifest: ReleaseManifest) -> None:
        body = (manifest.to_json_line() + "\n").encode()
        self.s3.put_bytes(self.bucket, self.manifest_key(manifest.release_id), body, content_type="application/json")

    def load(self, release_id: str) -> ReleaseManifest:
        data = self.s3.get_json(self.bucket, self.manifest_key(release_id))
        if data is None:
            where = releases_prefix(self.prefix, self.app)
            raise UsageError(f"no release {release_id!r} in s3://{self.bucket}/{where}")
        return ReleaseManifest.from_dict(data)

    def register(self, manifest: ReleaseManifest) -> None:
        """Point (target, version) at this release and put it first in the target's history."""
        pointer = {"release_id": manifest.release_id, "key": self.manifest_key(manifest.release_id)}
        self.s3.put_json(self.bucket, self._index_key(manifest.target, manifest.version), pointer)
        self._write_history(manifest.target, ReleaseRef(manifest.release_id, manifest.version))

    def finish(self, manifest: ReleaseManifest, result: RolloutResult) -> None:
        outcome = "detached" if result.detached else ("succeeded" if result.succeeded else "failed")
        self._write_history(manifest.target, ReleaseRef(manifest.release_id, manifest.version, outcome))

    def find(self, target: str, version: str) -> ReleaseManifest | None:
        pointer = self.s3.get_json(self.bucket, self._index_key(target, version))
        if not pointer:
            return None
        data = self.s3.get_json(self.bucket, str(pointer["key"]))
        return ReleaseManifest.from_dict(data) if data else None

    def history(self, target: str) -> list[ReleaseRef]:
        data = self.s3.get_json(self.bucket, self._index_key(target, "latest")) or {}
        return [ReleaseRef(**entry) for entry in data.get("releases", [])]

    def _write_history(self, target: str, ref: ReleaseRef) -> None:
        refs = [r for r in self.history(target) if r.release_id != ref.release_id]
        refs = [ref, *refs][:HISTORY]
        self.s3.put_json(self.bucket, self._index_key(target, "latest"), {"releases": [asdict(r) for r in refs]})


class RecordWriter:
    """A Reporter keeping the release manifest's `deployments` and its groups' `outcome` current in S3.

    A group's outcome is written with the Checkpoint that follows its GroupFinished (or at
    ReleaseFinished, for groups that never started). A failed write does not stop the rollout (the
    deployments run anyway), but it is never silent: a transient failure is tried again
    (RETRY_PAUSES_S), each write that still fails is one warning line (`say`) and kept in `errors`,
    the next write writes the whole manifest again, and `state()` says at the end whether the record
    holds the release's final state (the wiring puts it in the result: the JSON, the exit code 4).
    """

    def __init__(
        self,
        store: ReleaseStore,
        manifest: ReleaseManifest,
        *,
        say: Callable[[str], None] = lambda line: None,
        sleep: Callable[[float], None] = time.sleep,
        pauses: tuple[float, ...] = RETRY_PAUSES_S,
    ) -> None:
        self.store = store
        self.manifest = manifest
        self.errors: list[str] = []
        self.say = say
        self.sleep = sleep
        self.pauses = pauses
        self.stale: set[str] = set()  # "manifest" / "history" while their last write failed
        self._unsaved = False  # outcomes changed since the last save

    def publish(self, event: Event) -> None:
        if isinstance(event, GroupFinished):
            self.manifest = with_outcome(self.manifest, event.result)
            self._unsaved = True
        elif isinstance(event, Checkpoint):
            deployments = dict(self.manifest.deployments)
            for name, ref in event.deployments.items():
                deployments[name] = {
                    "deployment_id": ref.deployment_id,
                    "status": ref.status,
                    "rollback_deployment_id": ref.rollback_deployment_id,
                }
            self.manifest = replace(self.manifest, deployments=deployments)
            self._save()
        elif isinstance(event, ReleaseFinished):
            for result in event.result.groups:  # a failed follow-on deployment fails a group after its GroupFinished
                updated = with_outcome(self.manifest, result)
                self._unsaved = self._unsaved or updated != self.manifest
                self.manifest = updated
            if self._unsaved or "manifest" in self.stale:
                self._save()
            self._write("history", lambda: self.store.finish(self.manifest, event.result))

    def state(self) -> RecordState:
        stale = tuple(sorted(self.stale))
        return RecordState(written=not stale, errors=tuple(self.errors), stale=stale)

    def _save(self) -> None:
        if self._write("manifest", lambda: self.store.save(self.manifest)):
            self._unsaved = False

    def _write(self, what: str, write: Callable[[], None]) -> bool:
        pauses = iter(self.pauses)
        while True:
            try:
                write()
            except DeployToolError as exc:
                pause = next(pauses, None) if isinstance(exc, AwsError) and exc.transient else None
                if pause is not None:
                    self.sleep(pause)
                    continue
                self.errors.append(str(exc))
                self.stale.add(what)
                self.say(f"warning: release record: the {what} write failed: {exc}")
                return False
            self.stale.discard(what)
            return True
