"""ValidateService: prove the new worker runs from the new release and takes work from its group's queues.

Contract, within 60 s of the hook's start (less when the hook's timeout is shorter): the worker's cwd
is releases/<version>/app and its launcher is that release's celery_worker.py; run/VERSION is the
bundle's version and the ready marker names the pid.
With remote control the node answers `inspect ping` and consumes exactly the group's queues. Without
(SQS) a deploytool.canary task through the instance's own queue runs on this version, or the worker
took a task from its group's queues since it started. Any failure is one HookError line (exit 1); with
restart = "handoff" the worker handed off then takes work again and the new one is drained (undo_handoff).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Any

from deploytool_instance.base import EXIT_OK, Clock, HookError, Log
from deploytool_instance.brokers import Broker, celery_client, has_remote_control
from deploytool_instance.brokers.remote import RemoteControl
from deploytool_instance.brokers.sqs import CANARY_TASK, canary_queue
from deploytool_instance.drain import QUIT_GRACE_S, drain_worker
from deploytool_instance.handoff import resume_latest
from deploytool_instance.layout import read_json
from deploytool_instance.processes import WORKER_SCRIPT, find_worker, launcher_script, process_cmdline, process_cwd
from deploytool_instance.settings import Settings, read_env_file, running_node

VALIDATE_BUDGET_S = 60.0  # at most; within ValidateService's timeout (300 s) less the report margin


def validate(settings: Settings, clock: Clock, log: Log) -> int:
    try:
        return check(settings, clock, log)
    except HookError:
        if settings.restart == "handoff":
            undo_handoff(settings, clock, log)
        raise


def undo_handoff(settings: Settings, clock: Clock, log: Log) -> None:
    """The new worker failed: the worker handed off takes work again (never an instance with no consumer), and the
    new one, if it still runs, drains within what is left of the hook's budget."""
    failed, _ = find_worker(settings)
    failed_node = running_node(settings)
    if resume_latest(settings, clock, log) is None:
        log.step("resume", "no worker handed off is still running: nothing to resume")
        return
    if failed is not None and not failed.exited():
        deadline = log.started + settings.hook_budget("ValidateService") - QUIT_GRACE_S
        drain_worker(failed, None, failed_node, max(clock.now() + 1.0, deadline), clock, log)


def release_root(settings: Settings) -> str:
    """Where the new worker must run from: releases/<version>, or with restart = "handoff" its own copy
    (live/<version>.<stamp>, what `current` points to)."""
    if settings.restart == "handoff":
        root = os.path.realpath(settings.layout.current)
        live = os.path.realpath(settings.layout.live)
        if os.path.dirname(root) == live and os.path.basename(root).startswith(settings.version + "."):
            return root
        raise HookError(f"{settings.layout.current} points to {root}, not to a copy of {settings.version} in {live}")
    return os.path.realpath(settings.release_dir)


def check(settings: Settings, clock: Clock, log: Log) -> int:
    layout = settings.layout
    until = log.started + min(VALIDATE_BUDGET_S, settings.hook_budget("ValidateService"))
    step = clock.now()
    worker, where = find_worker(settings)
    if worker is None:
        raise HookError(f"worker is not running: {where}")
    root = release_root(settings)
    expected_dir = os.path.join(root, "app")
    cwd = process_cwd(worker.pid)
    if cwd != expected_dir:
        raise HookError(f"worker pid {worker.pid} runs in {cwd}, not in the new release {expected_dir}")
    script = launcher_script(process_cmdline(worker.pid)) or "?"
    expected_script = os.path.join(root, "deploytool", "hooks", WORKER_SCRIPT)
    if os.path.realpath(script) != expected_script:
        raise HookError(f"worker pid {worker.pid} runs {script}, not the new release's {expected_script}")
    log.step("process", f"pid {worker.pid} runs from {expected_dir} ({where})", clock.now() - step)

    step = clock.now()
    running = layout.version_file.read_text().strip() if layout.version_file.exists() else ""
    if running != settings.version:
        raise HookError(f"{layout.version_file} says {running or 'nothing'}, expected {settings.version}")
    ready = read_json(layout.ready_file)
    if not ready or ready.get("pid") != worker.pid:
        raise HookError(f"worker pid {worker.pid} never reported ready ({layout.ready_file}); see {layout.logfile}")
    node = str(ready.get("node"))
    log.step("version", f"{settings.version}; {node} ready", clock.now() - step)

    env = read_env_file(settings.env_file)
    client = celery_client(Broker.from_env(env, None, str(settings.env_file)))
    if has_remote_control(client):
        check_remote(settings, client, node, until, clock, log)
    else:
        check_takes_work(settings, client, node, worker.pid, until, clock, log)
    log.step("ok", f"{node} runs {settings.version} and takes work from {', '.join(settings.queues)}")
    return EXIT_OK


def check_remote(settings: Settings, client: Any, node: str, until: float, clock: Clock, log: Log) -> None:
    control = RemoteControl(client, node)
    try:
        step = clock.now()
        while not control.ping():
            if clock.now() >= until:
                why = f"; last error: {control.error}" if control.error else ""
                raise HookError(f"{node} does not answer `inspect ping` (waited {clock.now() - step:.1f}s){why}")
        log.step("ping", f"{node} answered", clock.now() - step)
        step = clock.now()
        queues = control.active_queues()
        if queues is None:
            raise HookError(f"{node} answered ping but not `inspect active_queues` {control.error}".rstrip())
        expected = settings.queues
        if sorted(queues) != sorted(expected):
            missing = sorted(set(expected) - set(queues))
            extra = sorted(set(queues) - set(expected))
            raise HookError(
                f"{node} consumes [{', '.join(sorted(queues))}] but group {settings.group_name} expects "
                f"[{', '.join(sorted(expected))}] (missing: {', '.join(missing) or 'none'}; "
                f"unexpected: {', '.join(extra) or 'none'})"
            )
        log.step("active_queues", f"{', '.join(sorted(queues))} as configured", clock.now() - step)
    finally:
        control.close()


def check_takes_work(
    settings: Settings, client: Any, node: str, pid: int, until: float, clock: Clock, log: Log
) -> None:
    """No remote control (SQS): prove the new worker takes work from the broker.

    A canary task goes through this instance's own queue; the proof is that it ran, or, when the
    worker is busy, that it took a task from its group's queues since it started (the launcher records
    the first one). Under constant load kombu's SQS polling serves the busy queue first and the canary
    can wait minutes behind it, which is no fault of the new release.
    """
    step = clock.now()
    queue = canary_queue(node)
    token = uuid.uuid4().hex
    marker = settings.layout.canary_dir / token
    client.send_task(CANARY_TASK, args=[token], queue=queue, ignore_result=True)
    while True:
        ran = read_json(marker)
        if ran is not None:
            with contextlib.suppress(OSError):
                marker.unlink()
            if ran.get("version") != settings.version:
                raise HookError(f"canary on {queue} ran on version {ran.get('version')}, expected {settings.version}")
            log.step("canary", f"{CANARY_TASK} through {queue} ran on pid {ran.get('pid')}", clock.now() - step)
            return
        first = read_json(settings.layout.first_task_file)
        if first is not None and first.get("pid") == pid:
            detail = f"took {first.get('name')}[{first.get('id')}] from {first.get('queue')}"
            log.step("takes work", f"{node} {detail} (the canary through {queue} waits behind the load)")
            return
        if clock.now() >= until:
            raise HookError(
                f"{node} neither ran the canary sent to queue {queue} nor took a task from "
                f"{', '.join(settings.queues)} within {clock.now() - step:.1f}s; see {settings.layout.logfile}"
            )
        clock.sleep(0.1)
