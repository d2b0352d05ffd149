"""No setting can delete a user's files (issue 9): `fab check` refuses sandbox roots outside the fleet's directory
or at it, and the sandbox (and every other place the tool deletes a directory tree) deletes only directories that
carry deploytool's marker file, refusing with one line otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploytool.aws.s3 import ObjectInfo
from deploytool.errors import UsageError
from deploytool.model import inventory_partition
from deploytool.owned import MARKER, fresh_owned, make_owned, remove_owned
from deploytool.reconcile.mirror import mirror_tables
from deploytool.sandbox.motoserver import stop_recorded
from deploytool.sandbox.session import OWN_DIRS, SandboxSession
from deploytool.sandbox.workrepo import WorkRepo
from tests.builders import make_fleet, sandbox_target
from tests.conftest import ROOT
from tests.sandbox_helpers import FIXTURE_APP

FAB = str(Path(sys.executable).with_name("fab"))
FLEET = """\
[app]
name = "acme"
source = "app"
celery_app = "acme.app:app"

[artifacts]
bucket = "acme-artifacts"

[[groups]]
name = "email"
asg = "asg-email"
queues = ["email"]

[targets.sandbox]
backend = "local"
"""


def fab(fleet_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOYTOOL_", "AWS_"))}
    return subprocess.run(
        [FAB, *args, "--fleet", str(fleet_dir / "deploy.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
    )


def sandbox_up(repo: Path, *roots: Path) -> subprocess.CompletedProcess[str]:
    """`fab sandbox-up`, which must be refused; should a regression start a sandbox anyway, its moto server is
    stopped (by the pidfile under each root it could have used: sandbox-down would refuse the same root)."""
    try:
        return fab(repo, "sandbox-up")
    finally:
        for root in roots:
            if stop_recorded(root / "run" / "moto.pid"):
                pytest.fail(f"sandbox-up started a moto server under {root}")


def fleet_dir(tmp_path: Path, root: str | None = None) -> Path:
    """A clone-like directory: deploy.toml, the app, and a user's own logs/, state/ and work/."""
    repo = tmp_path / "repo"
    (repo / "app").mkdir(parents=True)
    (repo / "deploy.toml").write_text(FLEET + (f"root = {json.dumps(root)}\n" if root is not None else ""))
    for name in ("logs", "state", "work"):
        (repo / name).mkdir()
        (repo / name / "mine.txt").write_text("the user's own file\n")
    return repo


@pytest.mark.parametrize("root", [".", "..", "/", "~", "/tmp/x", "a/../..", "link-outside"])
@pytest.mark.slow
def test_fab_check_refuses_a_root_that_could_delete_the_users_files(tmp_path: Path, root: str) -> None:
    repo = fleet_dir(tmp_path, root)
    (repo / "link-outside").symlink_to(tmp_path)
    # sandbox-up too where a regression could only hurt this test's own directory (never "/" or "~")
    for task in ("check", "sandbox-up") if root in (".", "..", "link-outside") else ("check",):
        done = fab(repo, task) if task == "check" else sandbox_up(repo, repo, tmp_path)
        assert done.returncode == 2, done.stdout + done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert lines[0].startswith(f"error: {repo / 'deploy.toml'}: targets.sandbox.root: got {root!r}")
    assert sorted(p.name for p in (repo / "logs").iterdir()) == ["mine.txt"]  # nothing was deleted


@pytest.mark.slow
def test_fab_sandbox_up_refuses_a_root_whose_directories_it_did_not_create(tmp_path: Path) -> None:
    repo = fleet_dir(tmp_path, "sb")
    (repo / "sb" / "logs").mkdir(parents=True)
    (repo / "sb" / "logs" / "notes.txt").write_text("keep me\n")
    done = sandbox_up(repo, repo / "sb")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (
        f"error: refusing to delete {repo / 'sb' / 'logs'}: it was not created by deploytool "
        f"(no {MARKER} file); move it away or choose another targets.sandbox.root\n"
    )
    assert (repo / "sb" / "logs" / "notes.txt").read_text() == "keep me\n"
    assert sorted(p.name for p in (repo / "sb").iterdir()) == ["logs"]  # nothing made, nothing started


def test_a_session_checks_every_directory_before_deleting_any(tmp_path: Path) -> None:
    fleet = make_fleet(["email"], root=tmp_path, app=FIXTURE_APP, targets=sandbox_target({"email": 1}))
    sb = tmp_path / "sb"
    make_owned(sb / "instances", "an earlier sandbox")
    (sb / "instances" / "kept.txt").write_text("")
    (sb / "work").mkdir()
    (sb / "work" / "draft.py").write_text("print('mine')\n")
    with pytest.raises(UsageError) as refused, SandboxSession(fleet, handle_signals=False):
        pass
    assert str(refused.value) == (
        f"refusing to delete {sb / 'work'}: it was not created by deploytool (no {MARKER} "
        "file); move it away or choose another targets.sandbox.root"
    )
    assert (sb / "work" / "draft.py").exists() and (sb / "instances" / "kept.txt").exists()
    assert sorted(p.name for p in sb.iterdir()) == ["instances", "work"]


@pytest.mark.slow
def test_a_session_clears_and_marks_its_own_directories(tmp_path: Path) -> None:
    fleet = make_fleet(
        [{"name": "email", "strategy": "AllAtOnce"}],
        root=tmp_path,
        app=FIXTURE_APP,
        targets=sandbox_target({"email": 1}),
    )
    sb = tmp_path / "sb"
    make_owned(sb / "logs", "an earlier sandbox")
    (sb / "logs" / "old.log").write_text("from the last run\n")
    with SandboxSession(fleet, worker_stop_grace_s=1, handle_signals=False) as sandbox:
        assert sandbox.root == sb
        for name in OWN_DIRS:
            marker = json.loads((sb / name / MARKER).read_text())
            assert marker == {"created_by": "deploytool", "what": f"sandbox {name}/ of target sandbox"}
        assert not (sb / "logs" / "old.log").exists()
        assert (sb / "logs" / "moto.log").exists()


def test_the_work_tree_is_only_replaced_when_the_tool_made_it(tmp_path: Path) -> None:
    from deploytool.config import load_fleet

    repo = fleet_dir(tmp_path)
    (repo / "app" / "tasks.py").write_text('RELEASE_NOTE = "v1"\n')
    fleet = load_fleet(repo / "deploy.toml")
    with pytest.raises(UsageError) as refused:
        WorkRepo.create(fleet, repo / "work")
    assert str(refused.value) == (
        f"refusing to delete {repo / 'work'}: it was not created by deploytool (no {MARKER} file); move it away"
    )
    assert (repo / "work" / "mine.txt").exists()
    made = WorkRepo.create(fleet, tmp_path / "work")
    again = WorkRepo.create(fleet, tmp_path / "work")  # its own: replaced
    assert made.root == again.root and (again.source / "tasks.py").exists() and (again.root / MARKER).exists()


def test_the_owned_directory_rules(tmp_path: Path) -> None:
    remove_owned(tmp_path / "missing")  # nothing there: fine
    made = fresh_owned(tmp_path / "a" / "b", "a test")
    (made / "f").write_text("")
    assert fresh_owned(made, "a test") == made and list(made.iterdir()) == [made / MARKER]
    remove_owned(made)
    assert not made.exists()
    (tmp_path / "file").write_text("")
    (tmp_path / "link").symlink_to(made.parent)
    make_owned(made, "a test")
    (tmp_path / "bare").mkdir()
    for path in (tmp_path / "file", tmp_path / "link", tmp_path / "bare"):
        with pytest.raises(UsageError, match=r"^refusing to delete .*: it was not created by deploytool"):
            remove_owned(path)
        with pytest.raises(UsageError, match=r"^refusing to use .*: it was not created by deploytool"):
            make_owned(path, "a test")
    assert (tmp_path / "file").exists() and (made / MARKER).exists() and (tmp_path / "bare").is_dir()
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / MARKER).symlink_to(made / MARKER)  # a marker must be a real file in the directory itself
    with pytest.raises(UsageError):
        remove_owned(fake)


class Bucket:
    """The two S3 reads the mirror makes, over a dict of key -> body."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def list_keys(self, bucket: str, prefix: str):  # type: ignore[no-untyped-def]
        for key, body in sorted(self.objects.items()):
            if key.startswith(prefix):
                yield ObjectInfo(key, etag=str(hash(body)), size=len(body), metadata={})

    def get_bytes(self, bucket: str, key: str) -> bytes | None:
        return self.objects.get(key)


def test_the_mirror_removes_only_files_it_downloaded(tmp_path: Path) -> None:
    day = inventory_partition("p", "acme", "2024-05-01")
    bucket = Bucket({f"{day}a.json.gz": b"a", f"{day}b.json.gz": b"b"})
    mirror_tables(bucket, "b", prefix="p", app="acme", root=tmp_path, days=["2024-05-01"])
    (tmp_path / day / "notes.txt").write_text("the user's own\n")
    del bucket.objects[f"{day}b.json.gz"]
    result = mirror_tables(bucket, "b", prefix="p", app="acme", root=tmp_path, days=["2024-05-01"])
    assert result.removed == 1
    assert sorted(p.name for p in (tmp_path / day).iterdir()) == ["a.json.gz", "notes.txt"]
