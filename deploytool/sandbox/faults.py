"""The sandbox's faults: what a spot power-off or the OOM killer does to an instance's worker.

- `hard_kill(pidfile)`: SIGKILL the worker's whole process group (the worker the sandbox started, by its
  pidfile; its hook starts it as a group leader), as a power-off would: no shutdown code runs, nothing is
  acknowledged or released, the broker gets the messages back only by its own rules (SQS: when their
  visibility expires; RabbitMQ: when the connection drops; Redis: after its visibility timeout). Returns
  the worker's pid, or None when no worker runs. Used by the autoscaler's scale-in with the termination
  hook off (`fab sandbox --churn --churn-kill`), bench/interrupt.py and the tests.
- `power_off(instance, app)`: the whole instance: its worker's process group and its interruption watcher
  (`fab sandbox-interrupt --kill`).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from deploytool.config import App
from deploytool.sandbox.clock import SYSTEM_CLOCK, Clock
from deploytool.sandbox.instance import Instance
from deploytool.sandbox.procs import process_group, read_pidfile, runs_script, signal_group, wait_gone


def hard_kill(pidfile: Path, clock: Clock = SYSTEM_CLOCK, wait_s: float = 5.0) -> int | None:
    pid = read_pidfile(pidfile)
    if pid is None:
        return None
    pgid = process_group(pid)
    if pgid is not None and pgid == pid:  # the worker leads its own group: its pool children go with it
        signal_group(pgid, signal.SIGKILL)
    elif pgid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_gone([pid], wait_s, clock)
    return pid


def power_off(instance: Instance, app: App, clock: Clock = SYSTEM_CLOCK) -> int | None:
    """SIGKILL everything the sandbox runs for the instance: the worker's process group (and those of workers
    still finishing after a hand-off), then the watcher."""
    for draining in instance.draining_workers(app):
        if process_group(draining) == draining:
            signal_group(draining, signal.SIGKILL)
    pid = hard_kill(instance.worker_pidfile(app), clock)
    watcher = read_pidfile(instance.watcher_pidfile(app))
    if watcher is not None and runs_script(watcher, "celery_hooks.py", "watch"):
        hard_kill(instance.watcher_pidfile(app), clock)
    return pid
