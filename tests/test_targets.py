"""deploytool.targets: a target's kind is resolved in one place, so every command of a target talks to one place.

`fab reconcile` and the rollout tasks (`fab deploy`, `status`, `rollback`, `restart`, `reconcile --fix`) get
the session of a codedeploy target from the same resolver: $DEPLOYTOOL_AWS_ENDPOINT_URL (an S3/AWS-compatible
endpoint, a moto server here) is honoured by all of them, not by reconcile alone."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from deploytool import targets
from deploytool.config import load_fleet
from deploytool.errors import UsageError
from tests.fab_repo import copy_repo, fab
from tests.moto_server import moto_endpoint

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("repo"))


def test_what_each_kind_decides(repo: Path) -> None:
    fleet = load_fleet(repo / "deploy.toml")
    local, production = targets.target(fleet, "sandbox"), targets.target(fleet, "production")
    assert (local.kind, local.detachable, local.engine, local.athena_output) == ("local", False, "duckdb", None)
    assert local.mirror_root == fleet.root / ".sandbox" / "reconcile-mirror"
    assert (production.kind, production.detachable, production.engine) == ("codedeploy", True, "athena")
    assert production.athena_output == "s3://acme-deploy-artifacts/deploytool/athena-results/"
    assert targets.settings_for(fleet, "sandbox").engine == "duckdb"
    assert targets.settings_for(fleet, "production", engine="duckdb").mirror_root == production.mirror_root
    with pytest.raises(UsageError, match="is a local sandbox: it needs no setup"):
        targets.codedeploy(fleet, "sandbox")


@pytest.mark.slow
def test_status_of_a_codedeploy_target_reads_the_release_history_where_reconcile_does(repo: Path) -> None:
    with moto_endpoint() as endpoint:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket="acme-deploy-artifacts")
        done = fab(repo, "status", "--target", "production", env={**CREDS, "DEPLOYTOOL_AWS_ENDPOINT_URL": endpoint})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith("no releases on target 'production' yet"), done.stderr
