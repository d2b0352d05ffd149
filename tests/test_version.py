"""Release versions from git: YYYY.MM.DD-<shortsha> of the commit, dirty trees refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploytool.errors import VersionError
from deploytool.version import source_version, validate_version
from tests.gitrepo import init_repo


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "app.py").write_text("print('hi')\n")
    (tmp_path / ".gitignore").write_text("dist/\n")
    return tmp_path, init_repo(tmp_path)


def test_version_is_the_commit_date_and_short_sha(repo: tuple[Path, str]) -> None:
    path, sha = repo
    got = source_version(path)
    assert got.version == f"2024.03.05-{sha[:7]}"
    assert got.commit == sha
    assert got.dirty is False
    assert source_version(path) == got  # the same commit gives the same version


def test_ignored_files_do_not_make_the_tree_dirty(repo: tuple[Path, str]) -> None:
    path, _ = repo
    (path / "dist").mkdir()
    (path / "dist" / "bundle.tgz").write_bytes(b"x")
    assert source_version(path).dirty is False


@pytest.mark.parametrize("change", ["modify", "untracked"])
def test_dirty_tree_is_refused(repo: tuple[Path, str], change: str) -> None:
    path, _ = repo
    if change == "modify":
        (path / "app.py").write_text("print('changed')\n")
    else:
        (path / "new.py").write_text("")
    with pytest.raises(VersionError) as caught:
        source_version(path)
    assert str(caught.value) == (
        f"the work tree at {path} has uncommitted changes: commit them, or pass --allow-dirty "
        "(the version then ends in -dirty)"
    )
    assert caught.value.exit_code == 2


def test_allow_dirty_appends_dirty(repo: tuple[Path, str]) -> None:
    path, sha = repo
    (path / "app.py").write_text("print('changed')\n")
    got = source_version(path, allow_dirty=True)
    assert got.version == f"2024.03.05-{sha[:7]}-dirty"
    assert got.dirty is True
    assert source_version(path, explicit="1.2.3", allow_dirty=True).version == "1.2.3-dirty"


def test_explicit_version_wins_and_keeps_the_commit(repo: tuple[Path, str]) -> None:
    path, sha = repo
    got = source_version(path, explicit="2024.10.01-hotfix")
    assert (got.version, got.commit) == ("2024.10.01-hotfix", sha)


def test_explicit_version_outside_git(tmp_path: Path) -> None:
    assert source_version(tmp_path, explicit="v1").commit is None
    with pytest.raises(VersionError, match=r"is not in a git work tree .*pass --version to name the release"):
        source_version(tmp_path)


@pytest.mark.parametrize("bad", ["", "-rc1", "1.0 beta", "1/2", "../etc", "a..b", "v1;rm", "ü1", "x" * 65, "1.0\n"])
def test_bad_explicit_versions(repo: tuple[Path, str], bad: str) -> None:
    with pytest.raises(VersionError) as caught:
        source_version(repo[0], explicit=bad)
    assert str(caught.value) == (
        f"version {bad!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', starting with a "
        "letter or digit (it becomes part of S3 keys and EC2 tags)"
    )


@pytest.mark.parametrize("good", ["1", "2024.03.05-abc1234", "v1.2.3_rc-1", "x" * 64])
def test_good_versions(good: str) -> None:
    assert validate_version(good) == good
