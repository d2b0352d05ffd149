"""ApplicationStop: drain this instance's worker within its group's drain_timeout.

With restart = "handoff" (handoff.py) the worker is handed off instead: it stops taking tasks and exits by
itself once its running ones end, and the hook returns in seconds; it drains as below when a hand-off is not
safe (handoff_max_draining reached, too little memory: it says why), when the worker does not confirm, and when
Auto Scaling is taking the instance out (then the workers already finishing are waited for too).

Contract: never SIGKILL. With remote control: cancel the worker's consumers, wait until `inspect active`
and `inspect reserved` are empty, SIGTERM (warm shutdown) and wait for the exit; SIGQUIT (cold shutdown)
once drain_timeout is spent. Without remote control (SQS) SIGTERM is the drain: the worker stops
consuming by itself and lets in-flight receives return (brokers.sqs.SettleOnSigterm). A SIGTERM to the
hook itself (the agent's timeout) SIGQUITs the worker and ends the hook with 143. No worker running is
success; a worker still alive after SIGQUIT is a failure (exit 1). Every step logs one line with its timing.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from deploytool_instance.base import EXIT_FAILED, EXIT_OK, Clock, HookError, HookTerminated, Log, summarize
from deploytool_instance.brokers import Broker, drain_control
from deploytool_instance.brokers.remote import Control, RemoteControl
from deploytool_instance.handoff import draining_workers, finish_all, hand_off, reap_overdue, refusal, terminating
from deploytool_instance.interrupted import mark_interrupted, report_interrupted
from deploytool_instance.layout import remove_if_pid
from deploytool_instance.processes import WorkerProcess, find_worker
from deploytool_instance.settings import Settings, read_env_file, running_node

INSPECT_POLL_S = 0.25  # how often drain asks the worker for active + reserved tasks
ACTIVE_QUEUES_TRIES = 3  # then drain gives up on remote control and sends SIGTERM
EXIT_POLL_S = 0.05  # how often drain checks whether the worker process is gone
QUIT_GRACE_S = 45.0  # after SIGQUIT (the fleet keeps 60 s of the hook timeout for it)
TERMINATED_GRACE_S = 10.0  # after SIGQUIT when the agent SIGTERMs the hook itself


def task_labels(requests: Iterable[Mapping[str, Any]]) -> list[str]:
    return [f"{r.get('name') or r.get('type') or '?'}[{r.get('id', '?')}]" for r in requests]


@dataclass
class DrainResult:
    outcome: str  # "drained", "cold" (SIGQUIT once the budget was spent), "stuck" (still alive after SIGQUIT)
    seconds: float
    interrupted: list[str] = field(default_factory=list)
    quit_at: float | None = None  # when SIGQUIT was sent (the clock's time), if it was


def wait_for_exit(worker: WorkerProcess, until: float, clock: Clock) -> bool:
    while True:
        if worker.exited():
            return True
        if clock.now() >= until:
            return False
        clock.sleep(min(EXIT_POLL_S, max(0.0, until - clock.now())))


def drain_worker(
    worker: WorkerProcess,
    control: Control | None,
    node: str,
    deadline: float,
    clock: Clock,
    log: Log,
    quit_grace: float = QUIT_GRACE_S,
    budget: str = "drain_timeout",
) -> DrainResult:
    """The drain. `deadline` is when the budget (drain_timeout; the watcher's: the time a notice leaves) is spent
    (monotonic); SIGKILL is never sent."""
    started = clock.now()
    last_active: list[dict[str, Any]] = []
    idle = False
    if control is not None:
        step = clock.now()
        queues: list[str] | None = None
        for _ in range(ACTIVE_QUEUES_TRIES):
            if queues is not None or clock.now() >= deadline or worker.exited():
                break
            queues = control.active_queues()
        if queues is None:
            log.step("active_queues", f"{node} did not answer; going straight to SIGTERM", clock.now() - step)
        else:
            log.step("active_queues", f"{node} consumes {', '.join(queues) or 'nothing'}", clock.now() - step)
            for queue in queues:
                step = clock.now()
                confirmed = control.cancel_consumer(queue)
                log.step("cancel_consumer", f"{queue}: {'confirmed' if confirmed else 'no reply'}", clock.now() - step)
            step = clock.now()
            shown: tuple[int, int] | None = None
            while clock.now() < deadline:
                if worker.exited():
                    log.step("wait idle", "worker exited on its own", clock.now() - step)
                    return DrainResult("drained", clock.now() - started)
                poll_started = clock.now()
                busy = control.busy()
                if busy is not None:
                    active, reserved = busy
                    if not active and not reserved:
                        idle = True
                        log.step("wait idle", "no active or reserved tasks", clock.now() - step)
                        break
                    last_active = active
                    if shown != (len(active), len(reserved)):
                        shown = (len(active), len(reserved))
                        labels = summarize(task_labels(active + reserved))
                        log.step("waiting", f"{len(active)} active, {len(reserved)} reserved: {labels}")
                clock.sleep(min(INSPECT_POLL_S - (clock.now() - poll_started), deadline - clock.now()))
    if control is None or idle or clock.now() < deadline:
        step = clock.now()
        worker.warm_shutdown()
        how = "warm shutdown" if control is not None else "it stopped consuming, finished its tasks and shut down"
        if wait_for_exit(worker, deadline, clock):
            log.step("SIGTERM", f"pid {worker.pid} exited after {how}", clock.now() - step)
            return DrainResult("drained", clock.now() - started)
        log.step("SIGTERM", f"pid {worker.pid} still running when {budget} was spent", clock.now() - step)
    interrupted = task_labels(last_active)
    step = clock.now()
    worker.cold_shutdown()
    exited = wait_for_exit(worker, clock.now() + quit_grace, clock)
    detail = f"pid {worker.pid} {'exited' if exited else f'STILL RUNNING after {quit_grace:.0f} s'} after cold shutdown"
    log.step("SIGQUIT", f"{budget} spent; {detail}", clock.now() - step)
    return DrainResult("cold" if exited else "stuck", clock.now() - started, interrupted, quit_at=step)


def drain(settings: Settings, clock: Clock, log: Log) -> int:
    deadline = log.started + settings.drain_timeout
    step = clock.now()
    try:
        worker, where = find_worker(settings)
    except HookTerminated:
        worker, where = find_worker(settings)
        if worker is not None:
            cold_shutdown_on_termination(settings, worker, clock, log)
        raise
    handoff = settings.restart == "handoff"
    if handoff:
        reap_overdue(settings, log)
    leaving = handoff and terminating(settings)
    if worker is None:
        log.step("find worker", f"no worker running ({where}); nothing to drain", clock.now() - step)
        if leaving:
            finish_all(settings, deadline, clock, log)
        return EXIT_OK
    node = running_node(settings)
    log.step(
        "find worker",
        f"pid {worker.pid} ({node}) via {where}; budget {settings.drain_timeout:.0f}s",
        clock.now() - step,
    )
    if handoff and not leaving:
        why = refusal(settings, worker, draining_workers(settings))
        if why is None and hand_off(settings, worker, node, clock, log):
            return EXIT_OK
        log.step("hand-off", f"not this time{f': {why}' if why else ''}; draining instead")
    elif leaving:
        log.step("terminating", "Auto Scaling is taking this instance out: draining every worker, no hand-off")
    # The grace after SIGQUIT ends within the hook's own budget (its appspec timeout less the report margin).
    quit_grace = max(1.0, min(QUIT_GRACE_S, log.started + settings.hook_budget("ApplicationStop") - deadline))
    result = drain_running(settings, worker, node, deadline, clock, log, quit_grace)
    if leaving:
        finish_all(settings, deadline, clock, log)
    return EXIT_OK if result.outcome != "stuck" else EXIT_FAILED


def drain_running(
    settings: Settings,
    worker: WorkerProcess,
    node: str,
    deadline: float,
    clock: Clock,
    log: Log,
    quit_grace: float = QUIT_GRACE_S,
    budget: str = "drain_timeout",
) -> DrainResult:
    """Drain a found worker; on the hook's own SIGTERM, SIGQUIT the worker and exit non-zero. One drain at a time
    per instance (run/drain.lock): a second one (the interruption watcher on Terminated and a scale-in's
    ApplicationStop, both at once) only waits for the worker to exit, so the worker gets no second SIGTERM, which
    would cut its own settling short."""
    with drain_lock(settings) as ours:
        if not ours:
            step = clock.now()
            log.step("drain", f"another drain of pid {worker.pid} is under way (the watcher or a hook): waiting for it")
            exited = wait_for_exit(worker, deadline + quit_grace, clock)
            log.step("drained" if exited else "FAILED", f"pid {worker.pid} {'exited' if exited else 'still running'}")
            return DrainResult("drained" if exited else "stuck", clock.now() - step)
        return _drain_locked(settings, worker, node, deadline, clock, log, quit_grace, budget)


@contextlib.contextmanager
def drain_lock(settings: Settings) -> Iterator[bool]:
    """True when this process holds the instance's drain lock (an flock, released when the process ends)."""
    path = settings.layout.run_dir / "drain.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _drain_locked(
    settings: Settings,
    worker: WorkerProcess,
    node: str,
    deadline: float,
    clock: Clock,
    log: Log,
    quit_grace: float,
    budget: str,
) -> DrainResult:
    control: RemoteControl | None = None
    try:
        try:
            step = clock.now()
            env = read_env_file(settings.env_file)
            control = drain_control(Broker.from_env(env, None, str(settings.env_file)), node)
            if control is not None:
                log.step("connect", f"remote control over {control.connection.as_uri()}", clock.now() - step)
            else:
                log.step("connect", "no remote control (SQS): SIGTERM is the drain", clock.now() - step)
        except HookError as exc:
            log.step("connect", f"{exc}; going straight to SIGTERM", clock.now() - step)
        result = drain_worker(worker, control, node, deadline, clock, log, quit_grace, budget)
    except HookTerminated:
        cold_shutdown_on_termination(settings, worker, clock, log)
        raise
    finally:
        if control is not None:
            control.close()
    reported = report_interrupted(settings, worker.pid, log)
    if reported:
        result.interrupted = reported
    elif result.outcome == "cold" and result.interrupted:
        log.step(
            "interrupted",
            f"{len(result.interrupted)} task(s) cut off by the cold shutdown: {summarize(result.interrupted)}",
        )
        mark_interrupted(settings, result.interrupted, log)
    if worker.exited():
        for owned in (settings.layout.pidfile, settings.layout.ready_file, settings.layout.first_task_file):
            remove_if_pid(owned, worker.pid)
    log.step(
        "drained" if result.outcome != "stuck" else "FAILED",
        f"pid {worker.pid}: {result.outcome} in {result.seconds:.3f}s",
    )
    return result


def cold_shutdown_on_termination(settings: Settings, worker: WorkerProcess, clock: Clock, log: Log) -> None:
    """The agent's SIGTERM (hook timeout): hand the worker's tasks back at once rather than orphan it."""
    step = clock.now()
    worker.cold_shutdown()
    exited = wait_for_exit(worker, clock.now() + TERMINATED_GRACE_S, clock)
    log.step(
        "hook terminated",
        f"SIGTERM from the agent: sent SIGQUIT to pid {worker.pid}; "
        + ("it exited" if exited else "it is STILL RUNNING"),
        clock.now() - step,
    )
    report_interrupted(settings, worker.pid, log)
