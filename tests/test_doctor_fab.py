"""`fab doctor` as a user runs it (a subprocess in a copy of the repository): the option checks, and the task
wired to a codedeploy target's session (here a moto server through DEPLOYTOOL_AWS_ENDPOINT_URL; moto's
CodeDeploy is partial, the simulator-backed checks are in test_doctor.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fab_repo import copy_repo, fab
from tests.moto_server import moto_endpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("repo"))


def test_a_local_target_and_a_bad_database_are_refused_in_one_line(repo: Path) -> None:
    default = fab(repo, "doctor")
    assert default.returncode == 2 and default.stdout == ""
    assert default.stderr == (
        "error: the default target 'sandbox' is a local sandbox: `fab doctor` checks a codedeploy target's AWS "
        "set-up; give --target production\n"
    )
    bad = fab(repo, "doctor", "--target", "production", "--database", "Releases-DB")
    assert bad.returncode == 2
    assert bad.stderr == (
        "error: --database 'Releases-DB' is not allowed; allowed: lowercase letters, digits and _ (at most 255)\n"
    )


def test_json_on_an_empty_account_fails_with_one_line_on_stderr(repo: Path) -> None:
    with moto_endpoint() as url:
        env = {
            "DEPLOYTOOL_AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        done = fab(repo, "doctor", "--target", "production", "--json", env=env)
    assert done.returncode == 1, done.stderr
    document = json.loads(done.stdout)
    statuses = {c["name"]: c["status"] for c in document["checks"]}
    assert document["ok"] is False
    assert statuses["credentials"] == "ok" and statuses["botocore"] == "ok"
    assert statuses["bucket"] == "fail" and statuses["athena"] == "fail"
    assert statuses["asg:acme-email-workers"] == "fail"
    failed = [name for name, status in statuses.items() if status == "fail"]
    assert done.stderr == (
        f"error: doctor: {len(failed)} of {len(statuses)} check(s) failed on target production: {', '.join(failed)}\n"
    )
