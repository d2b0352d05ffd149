"""A real release through the sandbox backend: the sample app in a git work tree, bundles built and
published by deploytool.bundle / deploytool.publish, v1 then v2 on every group with its strategy.
The hook scripts are small fixtures (tests/fixtures/sandbox_scripts) so this runs without Celery;
the end-to-end `fab sandbox` test runs the real ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploytool.aws.session import AwsSession
from deploytool.bundle import build_bundle
from deploytool.publish import publish
from deploytool.rollout.backend import DeployRequest
from deploytool.sandbox.workrepo import WorkRepo
from deploytool.version import source_version
from tests.conftest import ROOT
from tests.sandbox_helpers import BUCKET, FIXTURE_TEMPLATES, aws, make_backend

__all__ = ["aws"]


@pytest.mark.slow
def test_v1_then_v2_of_the_sample_app_through_bundle_publish_and_the_local_backend(
    tmp_path: Path, aws: AwsSession
) -> None:
    from deploytool.config import load_fleet

    text = (ROOT / "deploy.toml").read_text().replace('bucket = "acme-deploy-artifacts"', f'bucket = "{BUCKET}"')
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet/deploy.toml").write_text(text)
    (tmp_path / "fleet/sample_app").symlink_to(ROOT / "sample_app")
    repo = WorkRepo.create(load_fleet(tmp_path / "fleet/deploy.toml"), tmp_path / "work")
    fleet = repo.fleet()
    backend = make_backend(fleet, aws, tmp_path / "sb")

    def release(note: str | None) -> str:
        if note:
            repo.change_release_note(note)
        bundle = build_bundle(fleet, source_version(repo.root), tmp_path / "dist", templates=FIXTURE_TEMPLATES)
        published = publish(bundle, fleet, aws, target="sandbox", created_by="test")
        ids = [backend.start(DeployRequest(g, published.revision(), published.release_id)) for g in fleet.groups]
        for did in ids:
            snap = backend.wait(did, 120)
            assert snap.all_succeeded, (snap.group, snap.error, backend.instance_results(did))
        return bundle.version

    v1 = release(None)
    v2 = release("v2: sandbox rollout")
    for group in fleet.groups:
        for instance in backend.fleet.instances(group):
            assert instance.running_version(fleet.app) == v2
            install = instance.install_dir(fleet.app)
            assert (install / "current").resolve() == (install / "releases" / v2).resolve()
            assert "v2: sandbox rollout" in (install / "current/app/acme_workers/__init__.py").read_text()
            assert not (install / "releases" / v1 / "app").exists()  # the agent removes the previous install
            journal = (instance.root / "journal").read_text().splitlines()
            assert [line.split()[:2] for line in journal] == [["start", v1], ["stop", v1], ["start", v2]]
