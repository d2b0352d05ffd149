#!/usr/bin/env python3
"""Set up and run deploytool's two entry points with nothing but Python 3.11+ and pip.

    python3 dev.py sandbox [fab options]    # set up, then run the whole sandbox deploy
    python3 dev.py test [pytest options]    # set up, then ruff, mypy and the whole suite (2 processes)
    python3 dev.py test --fast [options]    # the same checks, then the tests that start no real process

Set-up makes .venv/ and installs the tested versions into it: requirements/dev.lock (pinned by
pip-compile from pyproject.toml's dev extra), then deploytool itself, editable and without
dependencies. It is skipped when neither pyproject.toml nor the lock has changed since the last install.

The floors are tested too: after the whole suite, `test` (not `test --fast`: the quick tier stays under two
minutes) runs the CodeDeploy and S3 tests (FLOOR_TESTS) again in a second venv, .venv-floor/, that holds the
LOWEST boto3 and botocore pyproject.toml allows: exactly its `boto3>=X` / `botocore>=X` floors, read from it (so
the floor and this run cannot drift apart), with deploytool's other dependencies, moto and pytest at the lock's
versions (the lock minus boto3, botocore and s3transfer, as constraints) and deploytool itself editable without
dependencies.
Set-up of .venv-floor is skipped, like .venv's, while what it was made from has not changed.
`sandbox` then becomes `fab sandbox` (exec), so Ctrl-C reaches fab's own cleanup; `test` waits for each
check, leaving Ctrl-C to it.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import tomllib
import venv
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".deploytool-installed"
INSTANCE_CODE = ("scripts/deploytool_instance", "scripts/celery_hooks.py", "scripts/celery_worker.py")


def run(*cmd: str | Path, env: Mapping[str, str] | None = None) -> int:
    """Run a command to its end and return its exit code (128 + n when signal n ended it).

    Ctrl-C reaches the command from the terminal; this script ignores it while it waits, so the command
    finishes its own cleanup (subprocess.call would kill it a quarter of a second after the interrupt).
    """
    print("+", " ".join(str(c) for c in cmd), flush=True)
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)  # a handler, not SIG_IGN: not inherited
    try:
        code = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=env).wait()
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


# --- the dependency floors -------------------------------------------------------------------------

FLOOR_VENV = ROOT / ".venv-floor"
FLOOR_BIN = FLOOR_VENV / "bin"
FLOOR_STAMP = FLOOR_VENV / ".deploytool-installed"
FLOORED = ("boto3", "botocore")  # pinned to pyproject.toml's floor (boto3>=X -> boto3==X), never to the lock
UNLOCKED = (*FLOORED, "s3transfer")  # s3transfer goes with boto3: pip picks the one the floor boto3 accepts
# The test tools, as pyproject.toml's extras ask for them: moto with the sandbox's services, pytest and its plugins.
FLOOR_TOOLS = {"sandbox": ("moto",), "dev": ("pytest", "pytest-timeout", "pytest-xdist")}
# The tests that send CodeDeploy's and S3's requests through real botocore clients (parameter validation and
# serialisation happen in botocore, whose service models are what a floor is about): CreateDeployment and the
# rollout on the CodeDeploy simulator, CreateDeploymentGroup (setup), publish and the release records on moto.
FLOOR_TESTS = (
    "tests/test_codedeploy_rollout.py",
    "tests/test_rollout_commands.py",
    "tests/test_setup.py",
    "tests/test_publish.py",
    "tests/test_record.py",
    "tests/test_s3_missing_key_403.py",
    "tests/test_botocore_floor.py",
)


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    if match is None:
        raise SystemExit(f"pyproject.toml: cannot read the requirement {requirement!r}")
    return match[0].lower().replace("_", "-")


def floor_requirements(root: Path) -> list[str]:
    """What .venv-floor installs: deploytool's dependencies with boto3/botocore pinned to their floors, and the
    test tools of FLOOR_TOOLS as the extras ask for them. SystemExit when a floor is not a plain `>=X.Y.Z`."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    wanted: list[str] = []
    floors: dict[str, str] = {}
    for requirement in project["dependencies"]:
        name = requirement_name(requirement)
        if name not in FLOORED:
            wanted.append(requirement)
            continue
        match = re.fullmatch(rf"{name}>=([0-9]+(?:\.[0-9]+)*)", requirement.replace(" ", ""))
        if match is None:
            raise SystemExit(f"pyproject.toml: {requirement!r}: the floor run needs exactly '{name}>=X.Y.Z'")
        floors[name] = match[1]
    missing = [name for name in FLOORED if name not in floors]
    if missing:
        raise SystemExit(f"pyproject.toml: no '>=' floor for {', '.join(missing)} in [project] dependencies")
    extras = project.get("optional-dependencies", {})
    tools = [r for extra, names in FLOOR_TOOLS.items() for r in extras.get(extra, []) if requirement_name(r) in names]
    return [*(f"{name}=={floors[name]}" for name in FLOORED), *wanted, *tools]


def floor_constraints(root: Path) -> str:
    """The lock without the unlocked packages: every other dependency at its tested version."""
    lines = (root / LOCK.relative_to(ROOT)).read_text().splitlines()
    kept = [line for line in lines if "==" not in line or requirement_name(line) not in UNLOCKED]
    return "\n".join(kept) + "\n"


def floor_setup() -> dict[str, str]:
    """Make (or keep) .venv-floor; returns the environment to run its tests in."""
    requirements = floor_requirements(ROOT)
    constraints = floor_constraints(ROOT)
    wanted = hashlib.sha256("\n".join([*requirements, constraints]).encode()).hexdigest()
    if not (FLOOR_STAMP.exists() and FLOOR_STAMP.read_text() == wanted and (FLOOR_BIN / "pytest").exists()):
        if not (FLOOR_BIN / "python").exists():
            print(f"creating {FLOOR_VENV}", flush=True)
            venv.EnvBuilder(with_pip=True).create(FLOOR_VENV)
        FLOOR_STAMP.unlink(missing_ok=True)
        (FLOOR_VENV / "constraints.txt").write_text(constraints)
        pip: list[str | Path] = [FLOOR_BIN / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        if (
            run(*pip, "-c", FLOOR_VENV / "constraints.txt", *requirements) != 0
            or run(*pip, "--no-deps", "-e", ROOT) != 0
        ):
            sys.exit("set-up of .venv-floor failed: see pip's output above")
        FLOOR_STAMP.write_text(wanted)
    env = dict(os.environ)
    env["PATH"] = f"{FLOOR_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(FLOOR_VENV)
    return env


def floor_test(tier: list[str]) -> int:
    """The CodeDeploy and S3 tests on the lowest boto3/botocore pyproject.toml allows."""
    env = floor_setup()
    pins = {name: version for name, _, version in (r.partition("==") for r in floor_requirements(ROOT)[:2])}
    # the venv must hold exactly the floors, whatever pip or a constraint decided: else the run proves nothing
    ask = "import importlib.metadata as m, sys; print(*(m.version(n) for n in sys.argv[1:]))"
    done = subprocess.run([FLOOR_BIN / "python", "-c", ask, *pins], env=env, capture_output=True, text=True)
    found = dict(zip(pins, done.stdout.split(), strict=False))
    print("floor run on", ", ".join(f"{name} {version}" for name, version in found.items()), flush=True)
    if found != pins:
        print(f"error: .venv-floor holds {found or done.stderr.strip()}, not the floors {pins}", file=sys.stderr)
        return 1
    code = run(FLOOR_BIN / "python", "-m", "pytest", *tier, *FLOOR_TESTS, env=env)
    if code == 5:
        print("error: the floor run collected no tests", file=sys.stderr)
        return 1
    return code


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
    if code != 0 or tier is not PARALLEL:
        return code  # the fast tier ends here; the floor run goes with the whole suite (and CI)
    return floor_test(tier)


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
