"""`deploytool init`: the starting files of a repository that deploys a Celery app with deploytool.

Contract: `init_repository(repo, answers)` writes three new files into `repo`: deploy.toml (the fleet file,
one group per queue), fabfile.py (the two-line import of deploytool's tasks) and .deployignore (in the app
source directory, which is what the bundle reads it from). It checks all three first and writes none when any
exists (UsageError, exit 2). The queues come from the app itself: `app_queues` imports it in a child Python
(this one, with the app's source directory and the repository on sys.path, so a broken or slow app cannot
break or hang this process) and reads `task_routes`, `task_queues` and `task_default_queue`. When that import
fails the fleet gets one group on Celery's default queue and `Scaffold.note` says why, in one line.
The fleet file it writes passes `fab check` as it is; its bucket, ASG names and role ARN are placeholders to
edit.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from deploytool.errors import UsageError

FABFILE = '''"""deploytool's tasks for `fab` (`fab --list`)."""

from deploytool.tasks import ns  # noqa: F401
'''
DEPLOYIGNORE = """# Left out of the bundle (gitignore syntax); .git, __pycache__, *.pyc, .env*, *.pem always are.
.venv/
venv/
.sandbox/
dist/
build/
*.egg-info/
.pytest_cache/
.mypy_cache/
.ruff_cache/
node_modules/
"""
CELERY_APP = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")
APP_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
QUEUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
ASG_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,60}$")
DEFAULT_QUEUE = "celery"  # Celery's task_default_queue
IMPORT_TIMEOUT_S = 60
_MARK = "deploytool-init-queues:"
# Run in the child Python: import the app and print its queues as one JSON line after the marker.
_READ_QUEUES = f"""
import importlib, json, sys
module, _, attr = sys.argv[1].partition(":")
conf = getattr(importlib.import_module(module), attr).conf
found = []
def add(queue):
    name = getattr(queue, "name", queue)
    if isinstance(name, str) and name not in found:
        found.append(name)
routes = conf.task_routes or ()
for table in (routes if isinstance(routes, (list, tuple)) else [routes]):
    for route in (table.values() if isinstance(table, dict) else ()):
        add(route.get("queue") if isinstance(route, dict) else route)
for queue in conf.task_queues or ():
    add(queue)
add(conf.task_default_queue)
print({_MARK!r} + json.dumps(found))
"""


@dataclass(frozen=True)
class Answers:
    """What `init` was told (None: derive it)."""

    celery_app: str
    name: str | None = None
    bucket: str | None = None
    asg_prefix: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class Scaffold:
    """What `init_repository` wrote, and how it chose the queues."""

    written: tuple[Path, ...]
    queues: tuple[str, ...]
    note: str


def _check(option: str, value: str | None, pattern: re.Pattern[str], allowed: str) -> str | None:
    if value is not None and not pattern.match(value):
        raise UsageError(f"{option} {value!r} is not allowed; allowed: {allowed}")
    return value


def app_source(repo: Path, celery_app: str) -> str:
    """The directory (relative to repo) holding the app's top-level package: ".", "src", or a directory one level
    down (the first in name order); "." when none does."""
    top = celery_app.split(":")[0].split(".")[0]
    candidates = [repo, repo / "src", *sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith("."))]
    for directory in candidates:
        if (directory / top / "__init__.py").is_file() or (directory / f"{top}.py").is_file():
            return directory.relative_to(repo).as_posix() or "."
    return "."


def app_queues(repo: Path, source: str, celery_app: str) -> tuple[list[str] | None, str]:
    """The app's queues in order (routes, then task_queues, then the default queue) and a one-line note; None
    when the app could not be imported or read."""
    path = os.pathsep.join([str((repo / source).resolve()), str(repo.resolve()), os.environ.get("PYTHONPATH", "")])
    try:
        done = subprocess.run(
            [sys.executable, "-c", _READ_QUEUES, celery_app],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=IMPORT_TIMEOUT_S,
            env={**os.environ, "PYTHONPATH": path},
        )
    except subprocess.TimeoutExpired:
        return None, f"importing {celery_app} took over {IMPORT_TIMEOUT_S} s"
    lines = [line for line in done.stdout.splitlines() if line.startswith(_MARK)]
    if done.returncode != 0 or not lines:
        errors = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return None, f"could not import {celery_app}: {errors[-1] if errors else f'exit {done.returncode}'}"
    return [str(q) for q in json.loads(lines[-1][len(_MARK) :])], f"queues from {celery_app}'s task routes"


def _name(answers: Answers, repo: Path) -> str:
    for guess in (answers.celery_app.split(".")[0].split(":")[0], repo.resolve().name):
        name = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", guess.lower())).strip("-")[:63].strip("-")
        if APP_NAME.match(name):
            return name
    return "app"


def fleet_text(answers: Answers, name: str, source: str, queues: list[str], note: str) -> str:
    """The deploy.toml `init` writes (TOML strings written as JSON strings, which TOML reads the same)."""
    bucket = answers.bucket or f"{name}-deploy-artifacts"
    prefix = answers.asg_prefix if answers.asg_prefix is not None else f"{name}-"
    q = json.dumps
    lines = [
        "# The fleet file of this repository, written by `deploytool init`: check it with `fab check`.",
        '# Reference: deploytool\'s README, "Fleet file". Edit the bucket, the ASG names and the role ARN.',
        f"# Groups: {note}.",
        "",
        "[app]",
        f"name = {q(name)}",
        f"source = {q(source)}",
        f"celery_app = {q(answers.celery_app)}",
        "",
        "[artifacts]",
        f"bucket = {q(bucket)}",
        "",
        "[aws]",
        'region = "us-east-1"',
    ]
    for queue in queues:
        lines += ["", "[[groups]]", f"name = {q(queue)}", f"asg = {q(prefix + queue)}", f"queues = [{q(queue)}]"]
    lines += [
        "",
        "[targets.sandbox]",
        'backend = "local"',
        "",
        "[targets.production]",
        'backend = "codedeploy"',
        'service_role_arn = "arn:aws:iam::123456789012:role/CodeDeployServiceRole"',
    ]
    return "\n".join(lines) + "\n"


def init_repository(repo: Path, answers: Answers) -> Scaffold:
    """Write deploy.toml, fabfile.py and <source>/.deployignore into repo; refuse (nothing written) if any exists."""
    _check("--celery-app", answers.celery_app, CELERY_APP, "package.module:app (Python names)")
    _check("--name", answers.name, APP_NAME, "lowercase letters, digits, '-' (at most 63)")
    _check("--bucket", answers.bucket, BUCKET, "an S3 bucket name (3-63 lowercase letters, digits, '.' and '-')")
    _check("--asg-prefix", answers.asg_prefix, ASG_PREFIX, "letters, digits, '_', '.', '-' (at most 61)")
    source = answers.source if answers.source is not None else app_source(repo, answers.celery_app)
    if not (repo / source).is_dir() or Path(source).is_absolute() or ".." in Path(source).parts:
        raise UsageError(f"--source {source!r} is not allowed; allowed: a directory inside {repo}")
    files = {repo / "deploy.toml": "", repo / "fabfile.py": FABFILE, repo / source / ".deployignore": DEPLOYIGNORE}
    existing = [str(path.relative_to(repo)) for path in files if path.exists() or path.is_symlink()]
    if existing:
        raise UsageError(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''} in {repo}: "
            "init writes only new files, and wrote none (move them away, or edit them)"
        )
    found, note = app_queues(repo, source, answers.celery_app)
    queues = [queue for queue in found or () if QUEUE.match(queue)]
    if not queues:
        note = (
            f"{note}; one group on Celery's default queue {DEFAULT_QUEUE!r}"
            if found is None
            else (f"{answers.celery_app} names no usable queue; one group on Celery's default queue {DEFAULT_QUEUE!r}")
        )
        queues = [DEFAULT_QUEUE]
    name = answers.name or _name(answers, repo)
    files[repo / "deploy.toml"] = fleet_text(answers, name, source, queues, note)
    for path, text in files.items():
        with path.open("x", encoding="utf-8") as out:
            out.write(text)
    return Scaffold(tuple(files), tuple(queues), note)
