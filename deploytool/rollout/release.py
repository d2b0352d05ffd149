"""Which release a rollout task runs: a new one, one to resume, or an earlier one to roll back to.

Contract:
- `prepare_deploy` builds the bundle (deploytool.bundle), then looks for the release of that version
  on that target (release index): when it exists with the same bundle sha256 it is RESUMED (its
  deployments become the plan's prior; nothing is uploaded or rewritten but the group list); otherwise its
  task contract is checked against the last release of another version that succeeded on the target
  (`check_task_contract`, deploytool.contract: a dropped task, or one that requires more, is refused unless
  allowed) and the bundle is published (deploytool.publish: one HEAD, upload if missing, a new release manifest).
  `dry_run` builds but neither publishes nor writes.
- `prepare_rollback` finds the release to go back to (--to VERSION, or the newest earlier version on
  that target that succeeded) and makes a NEW release of its revision, so the index then points the
  version at the rollback and a later `fab deploy` of it is not skipped as already done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from deploytool.aws.session import AwsSession
from deploytool.bundle import build_release
from deploytool.config import Fleet, Group
from deploytool.contract import changes
from deploytool.errors import UsageError
from deploytool.model import ReleaseManifest, Revision, new_manifest
from deploytool.publish import creator, publish
from deploytool.render import Templates
from deploytool.rollout.record import ReleaseStore


@dataclass(frozen=True)
class Prepared:
    manifest: ReleaseManifest
    revision: Revision
    resumed: bool
    uploaded: bool = False


def prepare_deploy(
    fleet: Fleet,
    target_name: str,
    groups: Sequence[Group],
    *,
    aws: AwsSession,
    store: ReleaseStore,
    version: str | None,
    allow_dirty: bool,
    dry_run: bool = False,
    templates: Templates | None = None,
    out_dir: Path | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    allow_task_changes: bool = False,
) -> Prepared:
    bundle = build_release(fleet, version=version, allow_dirty=allow_dirty, templates=templates, out_dir=out_dir)
    prior = store.find(target_name, bundle.version)
    if prior is not None and prior.sha256 == bundle.sha256:
        manifest = prior.with_groups(groups)
        if manifest != prior and not dry_run:
            store.save(manifest)
        return Prepared(manifest, manifest.revision, resumed=True)
    check_task_contract(store, target_name, bundle.version, bundle.tasks, allow=allow_task_changes)
    if dry_run:
        revision = Revision(fleet.artifacts.bucket, "(not published: dry run)", "", bundle.version, bundle.sha256)
        manifest = new_manifest(
            app=fleet.app.name,
            target=target_name,
            revision=revision,
            groups=groups,
            commit=bundle.commit,
            created_by=creator(),
            now=now(),
        )
        return Prepared(manifest, revision, resumed=False)
    published = publish(bundle, fleet, aws, target=target_name, created_by=creator(), groups=groups, now=now)
    manifest = published.manifest
    store.register(manifest)
    return Prepared(manifest, published.revision(), resumed=False, uploaded=published.uploaded)


def last_succeeded(store: ReleaseStore, target_name: str, other_than: str) -> ReleaseManifest | None:
    """The newest release of another version that succeeded on the target, if any."""
    for ref in store.history(target_name):
        if ref.version != other_than and ref.outcome == "succeeded":
            return store.find(target_name, ref.version)
    return None


def check_task_contract(
    store: ReleaseStore, target_name: str, version: str, tasks: Mapping[str, list[str]], *, allow: bool
) -> None:
    """Refuse (UsageError, exit 2) a release that drops or requires more of a task the last good one registers."""
    previous = last_succeeded(store, target_name, version)
    old = previous.extra.get("tasks") if previous is not None else None
    if previous is None or not isinstance(old, dict):  # nothing to compare with (or released before contracts)
        return
    found = changes(old, tasks)
    if found and not allow:
        raise UsageError(
            f"{version} drops or changes task(s) that {previous.version}, the last release that succeeded on target "
            f"{target_name!r}, registers: {'; '.join(found)}; messages already queued for them would fail on the "
            "new workers: keep the old name beside the new one until they are drained, or deploy anyway with "
            "--allow-task-changes"
        )


def rollback_source(store: ReleaseStore, target_name: str, to_version: str | None) -> ReleaseManifest:
    if to_version:
        found = store.find(target_name, to_version)
        if found is None:
            raise UsageError(f"no release of version {to_version!r} on target {target_name!r} to roll back to")
        return found
    history = store.history(target_name)
    if not history:
        raise UsageError(f"no releases on target {target_name!r} yet: nothing to roll back to")
    current = history[0].version
    for ref in history[1:]:
        if ref.version != current and ref.outcome == "succeeded":
            found = store.find(target_name, ref.version)
            if found is not None:
                return found
    raise UsageError(f"no earlier successful release than {current} on target {target_name!r}; use --to VERSION")


def prepare_rollback(
    fleet: Fleet,
    target_name: str,
    groups: Sequence[Group],
    *,
    store: ReleaseStore,
    to_version: str | None,
    dry_run: bool = False,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Prepared:
    source = rollback_source(store, target_name, to_version)
    manifest = new_manifest(
        app=fleet.app.name,
        target=target_name,
        revision=source.revision,
        groups=groups,
        commit=source.commit,
        created_by=creator(),
        now=now(),
        extra={"mode": "rollback"},  # `fab status` tells it from a deploy (deploytool.rollout.status)
    )
    if not dry_run:
        store.save(manifest)
        store.register(manifest)
    return Prepared(manifest, source.revision, resumed=False)
