"""A stand-in for `systemctl` on a sandbox instance, for tests of the hooks' systemd path.

It runs the units installed under $DEPLOYTOOL_INSTANCE_ROOT/etc/systemd/system the way systemd does for
Type=simple: EnvironmentFile and Environment, WorkingDirectory, ExecStart exec'd without a shell in a new
session, MainPID tracked, KillSignal sent to the main process on stop; instances of template units
(name@instance.service from name@.service, %i replaced); `kill --signal=SIG` to the main process. Absolute
paths in a unit are looked up under the instance root when they exist there (the sandbox's path mapping).
It passes the sandbox variables (DEPLOYTOOL_INSTANCE_ROOT, DEPLOYTOOL_INSTANCE_ID) on to the service, and
appends every call to <root>/run/fake-systemd/calls.log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = os.environ["DEPLOYTOOL_INSTANCE_ROOT"]
STATE = Path(ROOT) / "run" / "fake-systemd"


def mapped(path: str) -> str:
    candidate = ROOT + path
    return candidate if path.startswith("/") and os.path.lexists(candidate) else path


def unit(name: str) -> dict[str, str]:
    path = Path(f"{ROOT}/etc/systemd/system/{name}")
    prefix, at, rest = name.partition("@")
    instance = rest.rsplit(".", 1)[0] if at else ""
    if at and not path.exists():  # an instance of a template unit: <prefix>@.service with %i
        path = Path(f"{ROOT}/etc/systemd/system/{prefix}@.service")
    text = path.read_text().replace("%i", instance)
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    values: dict[str, str] = {}
    for key, value in pairs:
        values[key] = f"{values[key]}\n{value}" if key == "Environment" and key in values else value
    return values


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def main_pid(name: str) -> int:
    try:
        pid = int(json.loads((STATE / f"{name}.json").read_text())["MainPID"])
    except (OSError, ValueError, KeyError):
        return 0
    return pid if alive(pid) else 0


def start(name: str) -> None:
    config = unit(name)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for key in ("DEPLOYTOOL_INSTANCE_ROOT", "DEPLOYTOOL_INSTANCE_ID"):
        env[key] = os.environ[key]
    for line in Path(mapped(config["EnvironmentFile"])).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip().strip("'\"")
    for assignment in config.get("Environment", "").splitlines():
        key, value = assignment.split("=", 1)
        env[key] = value
    argv = [mapped(part) for part in config["ExecStart"].split()]
    with open(STATE / f"{name}.journal", "ab") as journal:
        process = subprocess.Popen(
            argv,
            cwd=mapped(config["WorkingDirectory"]),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=journal,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (STATE / f"{name}.json").write_text(json.dumps({"MainPID": process.pid}))


def stop(name: str, block: bool) -> None:
    pid = main_pid(name)
    if not pid:
        return
    config = unit(name)
    os.kill(pid, getattr(signal, config.get("KillSignal", "SIGTERM")))
    if block:
        until = time.monotonic() + float(config.get("TimeoutStopSec", "90"))
        while alive(pid) and time.monotonic() < until:
            time.sleep(0.05)


def main(argv: list[str]) -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "calls.log", "a") as log:
        log.write(" ".join(argv) + "\n")
    if argv[:1] == ["show"]:
        print(main_pid(argv[-1]))
    elif argv[:1] in (["daemon-reload"], ["enable"], ["disable"]):
        pass
    elif argv[:1] == ["start"]:
        if not main_pid(argv[-1]):
            start(argv[-1])
    elif argv[:1] == ["kill"]:
        signame = next(a.split("=", 1)[1] for a in argv if a.startswith("--signal="))
        pid = main_pid(argv[-1])
        if pid:
            os.kill(pid, getattr(signal, signame))
    elif argv[:1] == ["restart"]:
        stop(argv[-1], block=True)
        start(argv[-1])
    elif argv[:1] == ["stop"]:
        stop(argv[-1], block="--no-block" not in argv)
    else:
        print(f"fake systemctl: unsupported: {argv}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
