#!/usr/bin/env python3
"""Set up and run deploytool's two entry points with nothing but Python 3.11+ and pip.

    python3 dev.py sandbox [fab options]    # set up, then run the whole sandbox deploy
    python3 dev.py test [pytest options]    # set up, then ruff, mypy and the whole suite (2 processes)
    python3 dev.py test --fast [options]    # the same checks, then the tests that start no real process

Set-up makes .venv/ and installs the tested versions into it: requirements/dev.lock (pinned by
pip-compile from pyproject.toml's dev extra), then deploytool itself, editable and without
dependencies. It is skipped when neither pyproject.toml nor the lock has changed since the last install.
`sandbox` then becomes `fab sandbox` (exec), so Ctrl-C reaches fab's own cleanup; `test` waits for each
check, leaving Ctrl-C to it.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".deploytool-installed"
INSTANCE_CODE = ("scripts/deploytool_instance", "scripts/celery_hooks.py", "scripts/celery_worker.py")


def run(*cmd: str | Path) -> int:
    """Run a command to its end and return its exit code (128 + n when signal n ended it).

    Ctrl-C reaches the command from the terminal; this script ignores it while it waits, so the command
    finishes its own cleanup (subprocess.call would kill it a quarter of a second after the interrupt).
    """
    print("+", " ".join(str(c) for c in cmd), flush=True)
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)  # a handler, not SIG_IGN: not inherited
    try:
        code = subprocess.Popen([str(c) for c in cmd], cwd=ROOT).wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    return 128 - code if code < 0 else code


def hand_over(*cmd: str | Path) -> NoReturn:
    """Become the command (exec): the terminal, Ctrl-C and the exit code are the command's own."""
    print("+", " ".join(str(c) for c in cmd), flush=True)
    os.chdir(ROOT)
    os.execv(str(cmd[0]), [str(c) for c in cmd])


def setup() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"deploytool needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    wanted = install_stamp(ROOT)
    if STAMP.exists() and STAMP.read_text() == wanted and (BIN / "fab").exists():
        return
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip: list[str | Path] = [BIN / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if (
        run(*pip, "--upgrade", "pip") != 0
        or run(*pip, "-r", LOCK) != 0
        or run(*pip, "--no-deps", "-e", f"{ROOT}[dev]") != 0
    ):
        sys.exit("set-up failed: see pip's output above")
    STAMP.write_text(wanted)


LOCK = ROOT / "requirements" / "dev.lock"
FAST = ["-m", "not slow"]  # the fast tier: no moto server, Celery worker, sandbox, fab subprocess or broker
PARALLEL = ["-n", "2", "--dist", "loadgroup"]  # the full suite: pytest-xdist; xdist_group marks share a process


def install_stamp(root: Path) -> str:
    """What an installed .venv was made from: the sha256 of pyproject.toml and of the lock, together."""
    digest = hashlib.sha256()
    for path in (root / "pyproject.toml", root / LOCK.relative_to(ROOT)):
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def test(args: list[str]) -> int:
    tier = [*FAST, *PARALLEL] if "--fast" in args else PARALLEL
    args = [arg for arg in args if arg != "--fast"]
    checks: list[list[str | Path]] = [
        [BIN / "ruff", "check", "."],
        [BIN / "ruff", "format", "--check", "."],
        [BIN / "mypy"],
        # The instance-side code (scripts/): Python 3.9 (vermin; mypy 2 targets 3.10 at the lowest), the fence.
        [BIN / "vermin", "-t=3.9-", "--no-tips", "--violations", "-q", *INSTANCE_CODE],
        [BIN / "mypy", "--python-version", "3.10", "--strict", *INSTANCE_CODE],
        # The layers, the AWS gateways and the instance fence: pyproject.toml [tool.importlinter].
        ["env", f"PYTHONPATH={ROOT / 'scripts'}", BIN / "lint-imports"],
    ]
    for check in checks:
        if run(*check) != 0:
            return 1
    code = run(BIN / "python", "-m", "pytest", *tier, *args)
    if code == 5:
        print("error: pytest collected no tests", file=sys.stderr)
        return 1
    return code


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("sandbox", "test", "setup"):
        print(__doc__)
        return 2
    setup()
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ["VIRTUAL_ENV"] = str(VENV)
    if argv[0] == "setup":
        return 0
    if argv[0] == "test":
        return test(argv[1:])
    hand_over(BIN / "fab", "sandbox", *argv[1:])


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # during set-up; the stamp is written only after a complete install
        print("interrupted", file=sys.stderr)
        sys.exit(130)
