"""Run the fab tasks as a user does: `fab` as a subprocess in a copy of this repository with its own git."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.builders import FIXTURE_SCRIPTS
from tests.gitrepo import init_repo

ROOT = Path(__file__).resolve().parent.parent
FAB = str(Path(sys.executable).with_name("fab"))


def copy_repo(copy: Path) -> Path:
    """This repository's files (as git sees them) in a fresh git repo with one commit, at `copy`."""
    listed = (
        subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    if not (copy / "scripts" / "application_stop.sh.j2").exists():  # before the real hooks land
        shutil.copytree(FIXTURE_SCRIPTS, copy / "scripts", dirs_exist_ok=True)
    init_repo(copy)
    return copy


def fab(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return _run([FAB, *args], repo, env)


def deploytool(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The `deploytool` command (no fabfile needed), as `python -m deploytool` of the code under test."""
    return _run([sys.executable, "-m", "deploytool", *args], repo, env)


def _run(cmd: list[str], repo: Path, env: dict[str, str] | None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOYTOOL_", "AWS_"))}
    environ.update({"COLUMNS": "200", **(env or {})})
    return subprocess.run(cmd, cwd=repo, capture_output=True, text=True, env=environ, timeout=120)
