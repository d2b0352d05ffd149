"""Directories deploytool owns: it deletes a directory tree only when it created it.

Contract: `make_owned(path, what)` creates a directory (and its parents) and writes the marker file
MARKER into it (a line of JSON: who created it and for what); an existing directory is used only when
it already carries the marker. `remove_owned(path)` deletes a directory tree only when it carries
the marker; a path that does not exist is fine. Anything else (a directory without the marker, a
file, a symlink) is refused with one line, a UsageError, and left as it is. `fresh_owned` is the two
in a row, `check_owned` the refusal alone (to check several directories before deleting any).
Every place the tool deletes a directory tree goes through here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from deploytool.errors import DeployToolError, UsageError

MARKER = ".deploytool-owned"


def is_owned(path: Path) -> bool:
    """A real directory (not a symlink) holding a regular MARKER file."""
    marker = path / MARKER
    return path.is_dir() and not path.is_symlink() and marker.is_file() and not marker.is_symlink()


def check_owned(path: Path, *, hint: str = "move it away") -> None:
    """Refuse (UsageError) unless `path` does not exist or is a directory deploytool created."""
    if not os.path.lexists(path) or is_owned(path):
        return
    raise UsageError(f"refusing to delete {path}: it was not created by deploytool (no {MARKER} file); {hint}")


def remove_owned(path: Path, *, hint: str = "move it away") -> None:
    """Delete the directory tree at `path` if deploytool created it; nothing if it does not exist."""
    check_owned(path, hint=hint)
    if not os.path.lexists(path):
        return
    try:
        shutil.rmtree(path)
    except OSError as exc:
        raise DeployToolError(f"cannot delete {path}: {exc.strerror or exc}") from exc


def make_owned(path: Path, what: str, *, hint: str = "move it away") -> Path:
    """Create `path` with the marker (or use it when it already carries one); returns `path`."""
    if os.path.lexists(path):
        if is_owned(path):
            return path
        raise UsageError(f"refusing to use {path}: it was not created by deploytool (no {MARKER} file); {hint}")
    path.mkdir(parents=True)
    (path / MARKER).write_text(json.dumps({"created_by": "deploytool", "what": what}) + "\n")
    return path


def fresh_owned(path: Path, what: str, *, hint: str = "move it away") -> Path:
    """An empty directory of deploytool's own at `path` (what was there, if deploytool's, is deleted)."""
    remove_owned(path, hint=hint)
    return make_owned(path, what, hint=hint)
