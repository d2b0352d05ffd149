"""Each group's outcome in the release manifest (`groups[].outcome`), as the rollout writes it to moto S3:
reconcile's "expected version" is chosen from it (athena/reconcile.sql)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from deploytool.model import Revision, new_manifest
from deploytool.rollout.orchestrator import Orchestrator
from deploytool.rollout.partial import LastGood
from deploytool.rollout.plan import rollout_plan
from deploytool.rollout.record import RecordWriter, ReleaseStore
from tests import test_record
from tests.fakes import FakeBackend, FakeClock, Script
from tests.test_orchestrator import REVISION, group
from tests.test_record import BUCKET, NOW, manifest

store = test_record.store  # the same moto bucket and ReleaseStore


def outcomes(store: ReleaseStore, release_id: str) -> dict[str, str]:
    body = store.s3.get_json(BUCKET, store.manifest_key(release_id))
    assert body is not None
    return {g["group"]: g["outcome"] for g in body["groups"]}


def run(store: ReleaseStore, scripts: dict[str, Script], waves: dict[str, int]) -> str:
    groups = [group(name, wave) for name, wave in waves.items()]
    m = manifest(list(waves))
    store.save(m)
    store.register(m)
    assert outcomes(store, m.release_id) == dict.fromkeys(waves, "pending")
    plan = rollout_plan(release_id=m.release_id, version="v2", target="prod", groups=groups, revision=REVISION)
    clock = FakeClock()
    Orchestrator(FakeBackend(clock, scripts), plan, reporter=RecordWriter(store, m), clock=clock).run()
    return m.release_id


def test_each_group_s_outcome_is_written_as_it_ends(store: ReleaseStore) -> None:
    release_id = run(
        store,
        {
            "email": Script(duration=30),
            "video": Script(duration=60, fail=1),  # fails; its automatic rollback succeeds
            "pdf": Script(duration=60, fail=1, fail_status="Succeeded"),  # the backend says Succeeded, one failed
            "reports": Script(duration=30),  # next wave: never starts after a failure
        },
        {"email": 0, "video": 0, "pdf": 0, "reports": 1},
    )
    assert outcomes(store, release_id) == {
        "email": "succeeded",
        "video": "rolled_back",
        "pdf": "failed",
        "reports": "not_started",
    }
    assert store.history("prod")[0].outcome == "failed"


def test_a_failed_deployment_without_rollback_is_failed(store: ReleaseStore) -> None:
    release_id = run(store, {"email": Script(duration=30, fail=2, rollback_s=None)}, {"email": 0})
    assert outcomes(store, release_id) == {"email": "failed"}


def test_last_good_is_the_newest_earlier_release_that_succeeded_for_the_group(store: ReleaseStore) -> None:
    """deploytool.rollout.partial.LastGood: per group, over the target's history newest first, releases older than
    the current one, not of its revision, whose outcome for that group is succeeded (a manifest from before
    outcomes: its recorded deployment status)."""

    def release(version: str, minutes: int, outcomes: dict[str, str | None], key: str | None = None) -> Any:
        revision = Revision(BUCKET, key or f"deploytool/acme-workers/{version}/x.tgz", '"e"', version, "x")
        m = new_manifest(
            app="acme-workers",
            target="prod",
            revision=revision,
            groups=[group(g) for g in outcomes],
            commit=None,
            created_by="t",
            now=NOW + timedelta(minutes=minutes),
        )
        groups = tuple(
            {**g, "outcome": outcomes[g["group"]]}
            if outcomes[g["group"]]
            else {k: v for k, v in g.items() if k != "outcome"}
            for g in m.groups
        )
        deployments = {g: {"deployment_id": "d-1", "status": "Succeeded"} for g, o in outcomes.items() if o is None}
        m = replace(m, groups=groups, deployments=deployments)
        store.save(m)
        store.register(m)
        return m

    release("v1", 0, {"email": "succeeded", "video": None})  # video: a manifest from before outcomes
    release("v2", 1, {"email": "succeeded", "video": "failed"})
    release("v3", 2, {"email": "rolled_back", "video": "succeeded"}, key="deploytool/acme-workers/v4/x.tgz")
    current = release("v4", 3, {"email": "pending", "video": "pending"})
    release("v5", 4, {"email": "succeeded", "video": "succeeded"})  # newer than the current one: never
    last_good = LastGood(store, current)
    assert last_good(group("email")).version == "v2"  # type: ignore[union-attr]
    assert last_good(group("video")).version == "v1"  # type: ignore[union-attr]  # v3 is the current revision
    assert last_good(group("reports")) is None and last_good.errors == []
