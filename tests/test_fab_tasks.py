"""The fab tasks as a user runs them: a subprocess in a copy of the repository with its own git."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.fab_repo import copy_repo, fab
from tests.gitrepo import git
from tests.moto_server import moto_endpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This repository's files (as git sees them) in a fresh git repo with one commit."""
    return copy_repo(tmp_path_factory.mktemp("repo"))


def test_check_prints_the_fleet(repo: Path) -> None:
    done = fab(repo, "check")
    assert done.returncode == 0, done.stderr
    assert "acme-workers: 3 groups (deploy.toml)" in done.stdout
    assert "ok (3 groups, targets: sandbox, production)" in done.stdout


def test_check_says_what_app_user_needs_on_each_instance(repo: Path) -> None:
    text = (
        (repo / "deploy.toml")
        .read_text()
        .replace(
            'celery_app = "acme_workers.celery_app:app"\n',
            'celery_app = "acme_workers.celery_app:app"\nuser = "acme"\n',
            1,
        )
    )
    (repo / "user.toml").write_text(text)
    try:
        done = fab(repo, "check", "--fleet", "user.toml")
    finally:
        (repo / "user.toml").unlink()  # the module's other tests build from a clean tree
    assert done.returncode == 0, done.stderr
    note = " ".join(done.stdout.split())  # rich wraps long lines
    assert "note: app.user = 'acme': the CodeDeploy agent runs every hook as `su acme -c SCRIPT`" in note
    assert "a login shell that runs commands (/bin/bash or /bin/sh; nologin or false fail every hook)" in note
    assert "one made before by root needs `chown acme: /opt/acme-workers` once" in note
    assert "note:" not in fab(repo, "check").stdout


def test_build_prints_path_size_count_and_sha(repo: Path, tmp_path: Path) -> None:
    table = fab(repo, "build")  # the human table: one "label  value" line each
    assert table.returncode == 0, table.stderr
    assert [line.split()[0] for line in table.stdout.splitlines()] == ["bundle", "size", "files", "sha256", "version"]
    done = fab(repo, "build", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    sha = git(repo, "rev-parse", "HEAD")
    path = Path(out["bundle"])
    assert path.parent == repo / "dist" and path.name.endswith(f"-{sha[:7]}.tgz")
    data = path.read_bytes()
    assert out["sha256"] == hashlib.sha256(data).hexdigest() and out["size"] == len(data)
    assert out["files"] > 10 and out["commit"] == sha
    assert out["version"] == path.name[len("acme-workers-") : -4]
    assert out["sha256"] in table.stdout  # the table shows the same bundle (same commit, same bytes)
    again = json.loads(fab(repo, "build", "--out", str(tmp_path), "--json").stdout)
    assert again["sha256"] == out["sha256"]  # reproducible: same commit, same bytes
    assert Path(again["bundle"]).parent == tmp_path
    assert git(repo, "status", "--porcelain") == ""  # dist/ is ignored: building leaves the tree clean


@pytest.fixture
def dirty(repo: Path) -> Iterator[Path]:
    (repo / "sample_app" / "scratch.py").write_text("x = 1\n")
    try:
        yield repo
    finally:
        (repo / "sample_app" / "scratch.py").unlink()


def test_a_dirty_tree_is_refused_unless_allowed(dirty: Path) -> None:
    refused = fab(dirty, "build")
    assert refused.returncode == 2
    assert refused.stderr == (
        f"error: the work tree at {dirty} has uncommitted changes: commit them, or pass --allow-dirty "
        "(the version then ends in -dirty)\n"
    )
    allowed = fab(dirty, "build", "--allow-dirty", "--json")
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["version"].endswith("-dirty")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["check", "--fleet", "bad.toml"],
            "error: bad.toml: groups[0].strategy: unknown strategy 'AllAtOnec' (did you mean 'AllAtOnce'?); allowed: "
            "AllAtOnce, HalfAtATime, OneAtATime, {min_healthy_hosts = N} (N >= 0) or {min_healthy_percent = P} "
            "(0 <= P < 100)",
        ),
        (
            ["build", "--fleet", "bad.toml"],
            "error: bad.toml: groups[0].strategy: unknown strategy 'AllAtOnec' (did you mean 'AllAtOnce'?); allowed: "
            "AllAtOnce, HalfAtATime, OneAtATime, {min_healthy_hosts = N} (N >= 0) or {min_healthy_percent = P} "
            "(0 <= P < 100)",
        ),
        (
            ["check", "--fleet", "missing.toml"],
            "error: missing.toml: fleet file not found (pass --fleet PATH or create deploy.toml)",
        ),
        (
            ["check", "--fleet", "broken.toml"],
            "error: broken.toml: malformed TOML: Expected '=' after a key in a key/value pair (at line 1, column 5)",
        ),
        (
            ["build", "--version", "1.0 beta"],
            "error: --version '1.0 beta' is not allowed: use 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (it becomes part of S3 keys and EC2 tags)",
        ),
        (
            ["publish", "--target", "sandbox"],
            "error: target 'sandbox' is the local sandbox: its S3 is the sandbox's moto server, which `fab sandbox` "
            "starts; pass --endpoint-url to publish to another S3-compatible endpoint",
        ),
        (
            ["publish", "--target", "staging"],
            "error: --target 'staging': no such target in REPO/deploy.toml; allowed: sandbox, production",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, repo: Path, args: list[str], message: str) -> None:
    text = (repo / "deploy.toml").read_text().replace('strategy = "AllAtOnce"', 'strategy = "AllAtOnec"')
    (tmp_path / "bad.toml").write_text(text)
    (tmp_path / "broken.toml").write_text("app name = 1\n")
    args = [str(tmp_path / a) if a.endswith(".toml") else a for a in args]
    done = fab(repo, *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    for name in ("bad.toml", "missing.toml", "broken.toml"):
        message = message.replace(name, str(tmp_path / name))
    assert done.stderr == message.replace("REPO", str(repo)) + "\n"


def test_debug_shows_the_traceback(repo: Path) -> None:
    done = fab(repo, "check", "--fleet", "nope.toml", "--debug")
    assert done.returncode == 2
    assert "Traceback (most recent call last)" in done.stderr
    last = done.stderr.rstrip().splitlines()[-1]
    assert last == "error: nope.toml: fleet file not found (pass --fleet PATH or create deploy.toml)"


def test_publish_to_an_s3_endpoint(repo: Path) -> None:
    with moto_endpoint() as endpoint:
        creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "DEPLOYTOOL_USER": "tester"}
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket="acme-deploy-artifacts")
        first = fab(repo, "publish", "--endpoint-url", endpoint, "--json", env=creds)
        assert first.returncode == 0, first.stderr
        out = json.loads(first.stdout)
        assert out["bundle"].startswith("s3://acme-deploy-artifacts/deploytool/acme-workers/")
        assert out["bundle"].endswith(f"/{out['sha256']}.tgz") and out["uploaded"] is True
        assert out["manifest"].startswith("s3://acme-deploy-artifacts/deploytool/acme-workers/releases/dt=")
        record = s3.get_object(Bucket="acme-deploy-artifacts", Key=out["manifest"].split("/", 3)[3])["Body"].read()
        assert json.loads(record)["created_by"] == "tester"
        assert json.loads(record)["release_id"] == out["release_id"]
        second = fab(repo, "publish", "--endpoint-url", endpoint, "--json", env=creds)
        assert second.returncode == 0, second.stderr
        again = json.loads(second.stdout)
        assert (again["bundle"], again["uploaded"]) == (out["bundle"], False)  # already in S3: nothing uploaded
        assert (again["etag"], again["sha256"]) == (out["etag"], out["sha256"])
