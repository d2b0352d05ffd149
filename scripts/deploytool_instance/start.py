"""ApplicationStart: start the group's worker on the new release and flip {install_dir}/current to it.

Contract: the release must be installed (releases/<version>/app and the launcher present) and the
environment file must name a broker. Everything start does fits in ApplicationStart's timeout (fleet.json
"hooks", as the appspec says; StartBudget): a worker ApplicationStop did not drain is drained here first
(warm within min(drain_timeout, 120 s), then SIGQUIT and its grace); if it will not exit no second worker
is started. Then run/node-name is written, stale markers and bytecode left in the release removed,
`current` flipped atomically, and the launcher started (with PYTHONDONTWRITEBYTECODE=1): directly as a
daemon (DEPLOYTOOL_PROCESS_MANAGER=direct, the sandbox) or through the group's systemd unit. Success once
the launcher's ready marker (celery's worker_ready) names the running pid; run/VERSION is then written. A
worker that dies, or is not ready when the budget is spent (the hook timeout less a margin to report it),
fails the hook with the tail of its log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from deploytool_instance.base import EXIT_OK, Clock, HookError, Log
from deploytool_instance.brokers import Broker
from deploytool_instance.drain import QUIT_GRACE_S, drain_running
from deploytool_instance.handoff import (
    draining_workers,
    hand_off,
    make_live,
    prune_live,
    reap_overdue,
    refusal,
    resume_latest,
)
from deploytool_instance.layout import point_symlink, read_json, write_atomic
from deploytool_instance.processes import (
    WORKER_SCRIPT,
    find_worker,
    process_alive,
    process_cmdline,
    systemd_main_pid,
)
from deploytool_instance.settings import Settings, instance_id, node_name, read_env_file, running_node
from deploytool_instance.systemd import install_release_unit, install_unit, unit_source

START_DRAIN_BUDGET_S = 120.0  # a worker ApplicationStop did not drain is drained by start within this
START_READY_MIN_S = 60.0  # at least this much (or a third of the budget) is left for the new worker's start-up
HOOK_ENV_VARS = (
    "LIFECYCLE_EVENT",
    "DEPLOYMENT_ID",
    "APPLICATION_NAME",
    "DEPLOYMENT_GROUP_ID",
    "BUNDLE_BUCKET",
    "BUNDLE_KEY",
    "BUNDLE_VERSION",
    "BUNDLE_ETAG",
)


@dataclass(frozen=True)
class StartBudget:
    """How ApplicationStart spends its timeout: `total_s` in all (the timeout less the report margin), of
    which a worker ApplicationStop left running gets `drain_s` to drain warm and `quit_grace_s` after its
    SIGQUIT; the new worker's start-up gets the rest, never less than `ready_min_s`."""

    total_s: float
    drain_s: float
    quit_grace_s: float
    ready_min_s: float

    @classmethod
    def of(cls, total_s: float, drain_timeout_s: float) -> StartBudget:
        ready_min = min(START_READY_MIN_S, total_s / 3)
        quit_grace = min(QUIT_GRACE_S, total_s / 6)
        drain = max(0.0, min(drain_timeout_s, START_DRAIN_BUDGET_S, total_s - quit_grace - ready_min))
        return cls(total_s, drain, quit_grace, ready_min)


def worker_environment(settings: Settings, env: Mapping[str, str], root: Path | None = None) -> dict[str, str]:
    app_dir = str((root or settings.release_dir) / "app")
    merged = {k: v for k, v in settings.environ.items() if k not in HOOK_ENV_VARS and k != "DEPLOYMENT_GROUP_NAME"}
    merged.update(env)
    merged["PYTHONPATH"] = app_dir
    merged["PYTHONUNBUFFERED"] = "1"
    merged["PYTHONDONTWRITEBYTECODE"] = "1"  # see remove_bytecode
    return merged


def remove_bytecode(release: Path) -> tuple[int, list[str]]:
    """Remove the __pycache__ directories a worker wrote into this release (bundles never carry any):
    how many, and the ones that could not be removed (with why).

    A version redeployed with other content is installed over the same releases/<version>, and the bundle
    fixes every mtime, so a .pyc of the earlier content whose source has the same size would still be
    imported. Workers no longer write bytecode (PYTHONDONTWRITEBYTECODE); this clears what older ones left.
    """
    removed, failed = 0, []
    for cache in sorted(release.rglob("__pycache__")):
        if cache.is_dir() and not cache.is_symlink():
            try:
                shutil.rmtree(cache)
                removed += 1
            except OSError as exc:
                failed.append(f"{cache} ({exc.strerror or exc})")
    return removed, failed


def launch_direct(settings: Settings, env: Mapping[str, str], root: Path) -> int:
    """Start the launcher of the release at `root` as a daemon: new session, output to the worker log, pidfile
    written."""
    layout = settings.layout
    layout.logfile.parent.mkdir(parents=True, exist_ok=True)
    script = root / "deploytool" / "hooks" / WORKER_SCRIPT
    argv = [settings.python, "-u", str(script), settings.group_name]
    return spawn_daemon(argv, root / "app", worker_environment(settings, env, root), layout.logfile, layout.pidfile)


def spawn_daemon(argv: list[str], cwd: Path, env: Mapping[str, str], logfile: Path, pidfile: Path) -> int:
    """Start `argv` as a daemon: its own session, output appended to `logfile`, its pid written to `pidfile`."""
    with open(logfile, "ab") as out:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    write_atomic(pidfile, f"{process.pid}\n")
    return process.pid


WATCHER_STOP_S = 5.0  # an earlier watcher gets this long to exit after SIGTERM, then SIGKILL


def is_watcher(pid: int) -> bool:
    argv = process_cmdline(pid)
    return "watch" in argv[-1:] and any(os.path.basename(a) == "celery_hooks.py" for a in argv)


def launch_watcher_direct(settings: Settings, env: Mapping[str, str], clock: Clock) -> tuple[int, int | None]:
    """Replace the interruption watcher (celery_hooks.py watch) with one from this release, as a daemon in its
    own session; returns (new pid, the pid it replaced)."""
    layout = settings.layout
    old = None
    with contextlib.suppress(OSError, ValueError):
        old = int(layout.watcher_pidfile.read_text().split()[0])
    if old is not None and process_alive(old) and is_watcher(old):
        os.kill(old, signal.SIGTERM)
        until = clock.now() + WATCHER_STOP_S
        while process_alive(old) and clock.now() < until:
            clock.sleep(0.05)
        if process_alive(old):
            os.kill(old, signal.SIGKILL)
    script = settings.release_dir / "deploytool" / "hooks" / "celery_hooks.py"
    environment = worker_environment(settings, env)
    environment["DEPLOYMENT_GROUP_NAME"] = settings.group_name
    layout.watcher_log.parent.mkdir(parents=True, exist_ok=True)
    argv = [settings.python, "-u", str(script), "watch"]
    return spawn_daemon(argv, settings.release_dir, environment, layout.watcher_log, layout.watcher_pidfile), old


def start_watcher(settings: Settings, env: Mapping[str, str], deadline: float, clock: Clock, log: Log) -> None:
    """The interruption watcher beside the worker. Failing to start it is a warning, not a failed deploy: the
    worker runs; only a spot notice would then go unanswered."""
    step = clock.now()
    try:
        if settings.process_manager == "direct":
            pid, old = launch_watcher_direct(settings, env, clock)
            replaced = f" (replaced pid {old})" if old else ""
            log.step("watcher", f"pid {pid}: celery_hooks.py watch{replaced}", clock.now() - step)
        elif unit_source(settings, "-watch").is_file():
            install_unit(settings, deadline, clock, watcher=True)
            log.step("watcher", f"installed, enabled and restarted {settings.watcher_unit_name}", clock.now() - step)
        else:
            log.step("watcher", "WARNING: the bundle has no watcher unit: spot notices are not watched")
    except (HookError, OSError) as exc:
        log.step("watcher", f"WARNING: the interruption watcher did not start: {exc}", clock.now() - step)


def log_tail(path: Path, offset: int, lines: int = 15) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return "(no worker log)"
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(tail) if tail else "(worker log is empty)"


def wait_until_ready(
    settings: Settings, pid_of: Callable[[], int], offset: int, clock: Clock, until: float, log: Log
) -> int:
    """Wait for the launcher's ready marker (written on celery's worker_ready); the worker's pid."""
    layout = settings.layout
    started = clock.now()
    while True:
        pid = pid_of()
        ready = read_json(layout.ready_file)
        if pid > 0 and ready and ready.get("pid") == pid and process_alive(pid):
            return pid
        if settings.process_manager == "direct" and pid > 0 and not process_alive(pid):
            raise HookError(
                f"worker pid {pid} exited during start-up; {layout.logfile}: {log_tail(layout.logfile, offset)}"
            )
        if clock.now() >= until:
            raise HookError(
                f"worker not ready within {clock.now() - started:.0f}s (ApplicationStart had spent "
                f"{log.elapsed():.0f}s of its {settings.hook_budget('ApplicationStart'):.0f}s budget); "
                f"{layout.logfile}: {log_tail(layout.logfile, offset)}"
            )
        clock.sleep(0.1)


def start(settings: Settings, clock: Clock, log: Log) -> int:
    layout = settings.layout
    step = clock.now()
    release = settings.release_dir
    script = release / "deploytool" / "hooks" / WORKER_SCRIPT
    if not (release / "app").is_dir() or not script.is_file():
        raise HookError(f"{release}: the new release is not installed (no app/ or {script.name}); check appspec files")
    env = read_env_file(settings.env_file)
    Broker.from_env(env, None, str(settings.env_file))
    log.step("release", f"{settings.version} at {release}; group {settings.group_name}", clock.now() - step)

    budget = StartBudget.of(settings.hook_budget("ApplicationStart"), settings.drain_timeout)
    handoff = settings.restart == "handoff"
    worker, _ = find_worker(settings)
    if worker is not None:
        node = running_node(settings)
        why = refusal(settings, worker, draining_workers(settings)) if handoff else None
        if handoff and why is None and hand_off(settings, worker, node, clock, log):
            worker = None
        elif handoff:
            log.step("hand-off", f"not this time{f': {why}' if why else ''}; draining instead")
    if worker is not None:
        log.step(
            "still running",
            f"pid {worker.pid} ({node}) was not drained by ApplicationStop; draining it now within "
            f"{budget.drain_s:.0f}s (+{budget.quit_grace_s:.0f}s after SIGQUIT)",
        )
        latest = log.started + budget.total_s - budget.quit_grace_s - budget.ready_min_s
        deadline = min(clock.now() + budget.drain_s, latest)
        result = drain_running(settings, worker, node, deadline, clock, log, quit_grace=budget.quit_grace_s)
        if result.outcome == "stuck":
            raise HookError(f"the old worker pid {worker.pid} did not exit; not starting a second one")

    step = clock.now()
    for directory in (layout.run_dir, layout.logfile.parent):
        directory.mkdir(parents=True, exist_ok=True)
    root, node = release, node_name(settings.group_name, instance_id(settings.environ))
    if handoff:
        reap_overdue(settings, log)
        root = make_live(settings, format(time.time_ns() // 1_000_000, "x"))
        node = f"{node}.{root.name}"  # the release in the name: the finishing worker and this one are both online
        log.step("copy", f"{release} -> {root} (no Install cleans it up under a worker still finishing)")
    write_atomic(layout.node_file, node + "\n")
    for stale in (layout.ready_file, layout.interrupted_file, layout.first_task_file):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    removed, failed = remove_bytecode(release)
    if removed:
        log.step("bytecode", f"removed {removed} __pycache__ directories an earlier worker wrote into {release}")
    if failed:
        log.step("bytecode", f"WARNING: could not remove {', '.join(failed)}: stale bytecode may be imported")
    relative = os.path.relpath(root, layout.install_dir)
    point_symlink(layout.current, relative)
    log.step("current", f"{layout.current} -> {relative}; node {node}", clock.now() - step)

    try:
        pid = launch_and_wait(settings, env, root, budget, clock, log)
    except HookError:
        if handoff:  # never leave the instance with no consumer: the worker handed off takes work again
            resume_latest(settings, clock, log)
        raise
    write_atomic(layout.version_file, settings.version + "\n")
    log.step(
        "ready",
        f"pid {pid} {node} consuming {', '.join(settings.queues)}; VERSION={settings.version}",
        clock.now() - step,
    )
    start_watcher(settings, env, log.started + budget.total_s, clock, log)
    if handoff:
        prune_live(settings, root, log)
    return EXIT_OK


def launch_and_wait(
    settings: Settings, env: Mapping[str, str], root: Path, budget: StartBudget, clock: Clock, log: Log
) -> int:
    """Start the worker of the release at `root` (directly or through systemd) and wait until it is ready."""
    layout = settings.layout
    step = clock.now()
    offset = layout.logfile.stat().st_size if layout.logfile.exists() else 0
    if settings.process_manager == "direct":
        pid = launch_direct(settings, env, root)
        log.step(
            "launch",
            f"pid {pid}: {settings.python} {WORKER_SCRIPT} {settings.group_name}",
            clock.now() - step,
        )

        def pid_of() -> int:
            return pid

    elif settings.restart == "handoff":
        unit = install_release_unit(settings, root.name, log.started + budget.total_s, clock)
        write_atomic(layout.unit_file, unit + "\n")
        log.step(
            "systemd", f"installed {settings.release_unit_template}, enabled and started {unit}", clock.now() - step
        )

        def pid_of() -> int:
            return systemd_main_pid(unit)

    else:
        install_unit(settings, log.started + budget.total_s, clock)
        with contextlib.suppress(FileNotFoundError):
            layout.unit_file.unlink()
        log.step("systemd", f"installed, enabled and restarted {settings.unit_name}", clock.now() - step)

        def pid_of() -> int:
            return systemd_main_pid(settings.unit_name)

    return wait_until_ready(settings, pid_of, offset, clock, log.started + budget.total_s, log)
