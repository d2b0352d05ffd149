"""The sandbox run's git work tree: the app as a developer has it, so versions come from git.

Contract: `WorkRepo.create(fleet, work_dir)` empties `work_dir` (only when deploytool made it:
its marker file, deploytool.owned; the marker is committed with the rest), copies the fleet file and
the app source (without __pycache__ and *.pyc) into it at the same relative place, runs `git init`
there and commits it; `change_release_note(text)` rewrites the app's `RELEASE_NOTE = "..."` line (the sample app's
visible change) and commits it. `fleet()` loads the fleet file from the work tree, so a bundle built
from it takes its source from the work tree and its version (YYYY.MM.DD-<sha>) from its git HEAD.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deploytool.config import Fleet, load_fleet
from deploytool.owned import fresh_owned
from deploytool.sandbox.errors import SandboxError

_NOTE = re.compile(r'^RELEASE_NOTE\s*=\s*(["\']).*?\1\s*$', re.MULTILINE)
_GIT_IDENTITY = (
    "-c",
    "user.name=deploytool sandbox",
    "-c",
    "user.email=sandbox@deploytool.invalid",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "init.defaultBranch=main",
)


@dataclass(frozen=True)
class WorkRepo:
    root: Path
    fleet_file: Path
    source: Path

    @classmethod
    def create(cls, fleet: Fleet, work_dir: Path) -> WorkRepo:
        try:
            relative = Path(os.path.normpath(fleet.root / fleet.app.source)).relative_to(fleet.root)
        except ValueError:
            raise SandboxError(
                f"app.source {fleet.app.source!r} is outside the fleet file's directory; the sandbox run copies "
                "both into one git work tree"
            ) from None
        fresh_owned(work_dir, "the sandbox run's git work tree")
        shutil.copy2(fleet.path, work_dir / fleet.path.name)
        shutil.copytree(fleet.source_dir, work_dir / relative, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        repo = cls(work_dir, work_dir / fleet.path.name, work_dir / relative)
        repo.git("init", "-q")
        repo.commit("v1: the app as it is in the repository")
        return repo

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", *_GIT_IDENTITY, *args], cwd=self.root, capture_output=True, text=True, check=False, timeout=60
        )
        if done.returncode != 0:
            raise SandboxError(f"git {' '.join(args)} in {self.root} failed: {done.stderr.strip()}")
        return done.stdout

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def change_release_note(self, note: str) -> str:
        """Rewrite RELEASE_NOTE in the app's package and commit: the change v2 ships."""
        for path in sorted(self.source.rglob("*.py")):
            text = path.read_text()
            if _NOTE.search(text):
                path.write_text(_NOTE.sub(lambda _m: f"RELEASE_NOTE = {note!r}", text, count=1))
                return self.commit(f"{note}")
        raise SandboxError(f'no RELEASE_NOTE = "..." line in the app source under {self.source}')

    def fleet(self) -> Fleet:
        return load_fleet(self.fleet_file)
