"""Each group's outcome in the release manifest (`groups[].outcome`), as the rollout writes it to moto S3:
reconcile's "expected version" is chosen from it (athena/reconcile.sql)."""

from __future__ import annotations

from deploytool.rollout.orchestrator import Orchestrator
from deploytool.rollout.plan import rollout_plan
from deploytool.rollout.record import RecordWriter, ReleaseStore
from tests import test_record
from tests.fakes import FakeBackend, FakeClock, Script
from tests.test_orchestrator import REVISION, group
from tests.test_record import BUCKET, manifest

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
