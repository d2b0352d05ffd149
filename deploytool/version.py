"""Release versions: `YYYY.MM.DD-<shortsha>` from git (the commit's own UTC date, so building the
same commit twice gives the same version), or given with --version.

A version ends up in S3 keys, EC2 tags and SQL parameters, so it must match VERSION_PATTERN.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from deploytool.errors import VersionError

VERSION_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$"
_VERSION_RE = re.compile(VERSION_PATTERN)


@dataclass(frozen=True)
class SourceVersion:
    version: str
    commit: str | None  # full sha, None outside git
    dirty: bool


def validate_version(version: str, *, what: str = "version") -> str:
    if not _VERSION_RE.fullmatch(version) or ".." in version:
        raise VersionError(
            f"{what} {version!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (it becomes part of S3 keys and EC2 tags)"
        )
    return version


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False, timeout=30)
    except FileNotFoundError:
        raise VersionError("git is not installed: pass --version to name the release") from None
    except subprocess.TimeoutExpired:
        raise VersionError(f"git {args[0]} in {repo} did not answer within 30 s") from None
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "git failed"
        raise VersionError(f"{repo} is not in a git work tree ({reason}); pass --version to name the release")
    return done.stdout


def source_version(repo: Path, *, explicit: str | None = None, allow_dirty: bool = False) -> SourceVersion:
    """The version to release from the work tree at `repo`.

    A dirty work tree (changes or untracked files that git does not ignore) is refused unless
    allow_dirty, and then '-dirty' is appended so the version cannot be mistaken for the commit's.
    """
    if explicit is not None:
        validate_version(explicit)
    try:
        head = _git(repo, "rev-parse", "HEAD").strip()
    except VersionError:
        if explicit is None:
            raise
        return SourceVersion(explicit, None, False)
    dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=normal").strip())
    if dirty and not allow_dirty:
        raise VersionError(
            f"the work tree at {repo} has uncommitted changes: commit them, or pass --allow-dirty "
            "(the version then ends in -dirty)"
        )
    if explicit is not None:
        version = explicit
    else:
        stamp = int(_git(repo, "show", "-s", "--format=%ct", "HEAD").strip())
        day = datetime.fromtimestamp(stamp, UTC).strftime("%Y.%m.%d")
        version = f"{day}-{head[:7]}"
    if dirty and not version.endswith("-dirty"):
        version += "-dirty"
    return SourceVersion(validate_version(version), head, dirty)
