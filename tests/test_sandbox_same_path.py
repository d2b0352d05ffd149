"""`fab sandbox` releases through `fab deploy`'s own path: the same release record and the same tags.

One real sandbox (moto server, fleet provisioned, the sample app in the sandbox's git work tree). v1 is
released the way `fab sandbox` releases (deploytool.sandbox.run: the `connect` the fab task gives it,
deploytool.deploy_flow.sandbox_releases, on the session itself); v2 the way `fab deploy` does on that
sandbox (the services deploytool.targets.connect attaches, deploy_and_reconcile). Both must leave the
same release record in S3 (manifest fields, each group's outcome, deployments, the release index and the
target's history) and the same tags on every instance, apart from what names the release itself.
The hook scripts are the small fixtures (no Celery), so this runs in seconds."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from deploytool import targets
from deploytool.aws.ec2 import Ec2Gateway
from deploytool.aws.s3 import S3Gateway
from deploytool.config import Fleet
from deploytool.deploy_flow import deploy_and_reconcile, sandbox_releases
from deploytool.model import TAG_RELEASE, TAG_VERSION, ReleaseManifest
from deploytool.rollout.plan import RolloutOptions
from deploytool.rollout.record import ReleaseStore
from deploytool.rollout.wiring import Output
from deploytool.sandbox.session import SandboxSession
from deploytool.sandbox.workrepo import WorkRepo
from tests.sandbox_helpers import FIXTURE_TEMPLATES, sandbox_up

pytestmark = pytest.mark.slow

QUICK = RolloutOptions(poll_min_s=0.2, poll_max_s=0.5)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxSession]:
    with sandbox_up(tmp_path) as session:
        yield session


def record(fleet: Fleet, session: SandboxSession, version: str) -> dict[str, Any]:
    """What a release left in S3 and on the instances, with the values that name the release masked."""
    store = ReleaseStore(
        S3Gateway(session.aws), bucket=fleet.artifacts.bucket, prefix=fleet.artifacts.prefix, app=fleet.app.name
    )
    manifest = store.find("sandbox", version)
    assert manifest is not None, f"no release index entry for {version}"
    history = {ref.version: ref.outcome for ref in store.history("sandbox")}
    ids = [i.instance_id for g in fleet.groups for i in session.fleet.instances(g)]
    tags = {(i.tags.get(TAG_VERSION), i.tags.get(TAG_RELEASE)) for i in Ec2Gateway(session.aws).describe_instances(ids)}
    return {
        "manifest": masked(manifest),
        "history": history[version],
        "tags": tags == {(version, manifest.release_id)},
        "stored": store.load(manifest.release_id) == manifest,
        "instances": len(ids),
    }


def masked(manifest: ReleaseManifest) -> Mapping[str, Any]:
    named = {"release_id", "version", "bundle_uri", "key", "etag", "sha256", "commit", "created_at", "built_at"}
    data = {k: ("<release>" if k in named else v) for k, v in manifest.to_dict().items()}
    data["groups"] = [{**g, "expected_version": g["expected_version"] == manifest.version} for g in data["groups"]]
    data["deployments"] = {
        name: {**d, "deployment_id": bool(d["deployment_id"])} for name, d in data["deployments"].items()
    }
    return data


def test_fab_sandbox_writes_the_release_record_and_tags_fab_deploy_writes(
    sandbox: SandboxSession, tmp_path: Path
) -> None:
    out = StringIO()
    console = Console(file=out, width=200)
    repo = WorkRepo.create(sandbox.config, sandbox.work_dir)  # v1 committed, as `fab sandbox` starts
    fleet = repo.fleet()

    # `fab sandbox`: the releases its fab task's `connect` gives deploytool.sandbox.run, on the session itself
    releases = sandbox_releases(console, ci=True, templates=FIXTURE_TEMPLATES)(sandbox)
    first = releases.release(fleet, fleet.groups, QUICK, out_dir=tmp_path / "dist")
    assert first.succeeded, out.getvalue()
    by_sandbox = record(fleet, sandbox, first.version)

    # `fab deploy --no-reconcile` to the same sandbox: the services its fab task attaches
    repo.change_release_note("v2: deployed by fab deploy")
    services = targets.connect(sandbox.config, "sandbox").services(sandbox.config, console, ci=True)
    done = deploy_and_reconcile(
        fleet,
        "sandbox",
        fleet.groups,
        QUICK,
        services,
        Output(ci=True),
        version=None,
        allow_dirty=False,
        reconcile=False,
        templates=FIXTURE_TEMPLATES,
        out_dir=tmp_path / "dist",
        env={},
    )
    assert done.result is not None and done.result.succeeded, out.getvalue()
    by_fab_deploy = record(fleet, sandbox, done.result.version)

    assert first.version != done.result.version
    assert by_sandbox == by_fab_deploy
    assert by_sandbox["tags"] and by_sandbox["stored"] and by_sandbox["history"] == "succeeded"
    assert [g["outcome"] for g in by_sandbox["manifest"]["groups"]] == ["succeeded", "succeeded"]
    assert {d["status"] for d in by_sandbox["manifest"]["deployments"].values()} == {"Succeeded"}
    assert by_sandbox["instances"] == 4
    assert out.getvalue().count("tags: 4 instance(s) tagged in 2 CreateTags call(s)") == 2, out.getvalue()
