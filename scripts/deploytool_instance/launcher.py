"""`celery_worker.py GROUP`: the Celery worker process itself (exec'd by `start` or the systemd unit).

Runs with the APP's Python, so SIGTERM/SIGQUIT reach Celery's main process: this process becomes the
worker. It reads the bundle's fleet.json like the hooks do, imports the app (fleet app.celery_app) from
<bundle>/app, applies the group's settings to app.conf (queues, concurrency or autoscale, prefetch,
acks_late, task_reject_on_worker_lost=True, max_tasks_per_child, time limits, visibility_timeout merged
into broker_transport_options) and calls app.worker_main. Besides:
- never writes bytecode (sys.dont_write_bytecode, PYTHONDONTWRITEBYTECODE=1 for what it starts);
- writes {install_dir}/run/worker.pid, run/ready.json once Celery is ready, run/first-task.json when the
  first task arrives, run/interrupted.json when SIGQUIT cuts tasks off (for the hooks' log);
- registers deploytool.canary and, without remote control (SQS), consumes a per-instance canary queue and
  drains itself on SIGTERM (brokers.sqs.SettleOnSigterm);
- with restart = "handoff", on any broker: finishes what it holds and exits by itself when ApplicationStop
  asks (SIGUSR2 and run/control/<pid>; finish.HandOff), or takes work again when asked to resume;
- makes Celery's shutdown prompt (PromptShutdown, shutdown_waker); DEPLOYTOOL_PROMPT_SHUTDOWN=0 turns it off;
- counts task outcomes by release and publishes them with a heartbeat to CloudWatch (telemetry.py).
Exit status: 0 after the worker stopped, 2 bad input (usage, no such group, no Celery app there).
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import re
import signal
import sys
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploytool_instance.base import EXIT_BAD_INPUT, EXIT_OK, HookError
from deploytool_instance.brokers import Broker, has_remote_control
from deploytool_instance.brokers.sqs import CANARY_TASK, NO_FANOUT_SCHEMES, SettleOnSigterm, canary_queue
from deploytool_instance.brokers.sqs_visibility import CAP_MARGIN_S, ReleaseOnShutdown, VisibilityHeartbeat
from deploytool_instance.finish import REAP_MARGIN_S, HandOff
from deploytool_instance.layout import Layout, remove_if_pid, write_atomic
from deploytool_instance.settings import Settings, bundle_root, file_error, instance_id, load_settings, running_node
from deploytool_instance.telemetry import INTERVAL_S, Publisher, Tally, count_outcomes, count_signals


class PromptShutdown:
    """Stands in for `time` (and `sleep`) in billiard.pool and celery's prefork/asynpool, in the worker.

    Their shutdown path waits on fixed poll sleeps: each pool child sleeps 1 s before it exits, the pool
    supervisor 0.8 s, the prefork timer thread 0.5 s, the outqueue flush 0.5 s per idle child, so even an
    idle worker takes 1.6-2.5 s to exit after SIGTERM. Once shutdown has begun (celery's
    worker_shutting_down, sent for SIGTERM and SIGQUIT) every such sleep ends within 20 ms; before that
    they sleep as long as asked, in 50 ms steps. The flag lives in anonymous shared memory, so the pool
    children forked earlier see it too. Nothing else changes: no signal, no ordering, no message handling.
    DEPLOYTOOL_PROMPT_SHUTDOWN=0 turns it off.
    """

    STEP_S = 0.05
    STOPPING_S = 0.02

    def __init__(self) -> None:
        self.flag = mmap.mmap(-1, 1)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @property
    def stopping(self) -> bool:
        return self.flag[0] == 1

    def begin(self) -> None:
        self.flag[0] = 1

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            if self.flag[0] == 1:
                time.sleep(min(left, self.STOPPING_S))
                return
            time.sleep(min(left, self.STEP_S))

    def install(self) -> list[str]:
        """Replace `time` (or a `sleep` imported from it) in the modules whose shutdown sleeps matter."""
        import importlib

        patched = []
        for name in ("billiard.pool", "celery.concurrency.prefork", "celery.concurrency.asynpool"):
            module = importlib.import_module(name)
            if isinstance(getattr(module, "time", None), types.ModuleType):
                module.time = self  # type: ignore[attr-defined]
                patched.append(f"{name}.time")
            if getattr(module, "sleep", None) is time.sleep:
                module.sleep = self.sleep  # type: ignore[attr-defined]
                patched.append(f"{name}.sleep")
        return patched


def shutdown_waker(app: Any) -> Callable[[], None]:
    """A function that wakes the worker's event loop, for celery's shutdown signal handler to call.

    Celery's SIGTERM/SIGQUIT handler only sets a flag; Python then resumes the event loop's poll, which
    waits up to a second before the loop sees the flag. A consumer bootstep (celery's public extension
    point) adds a self-pipe to the loop; writing to it ends that wait at once.
    """
    from celery import bootsteps

    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)

    def empty_pipe() -> None:
        with contextlib.suppress(OSError):
            os.read(read_fd, 512)

    class WakeOnShutdown(bootsteps.StartStopStep):  # type: ignore[misc]
        def start(self, consumer: Any) -> None:
            if getattr(consumer, "hub", None) is not None:
                consumer.hub.add_reader(read_fd, empty_pipe)

    app.steps["consumer"].add(WakeOnShutdown)

    def wake() -> None:
        with contextlib.suppress(OSError):
            os.write(write_fd, b"\0")

    return wake


def record_interrupted_on_sigquit(path: Path, pid: int, before: Callable[[], None] | None = None) -> None:
    """Put a step in front of celery's SIGQUIT handler that writes the running tasks to `path`.

    Celery's cold shutdown cancels the running tasks before it announces itself (worker_shutting_down),
    so only a look taken as the signal arrives sees which tasks the cold shutdown hands back to the broker.
    Installed once celery's own handlers are in place (worker_ready); drain logs the file's names and ids.
    `before` runs first (on SQS: ReleaseOnShutdown.begin, so the tasks cut off are released at once).
    """
    previous = signal.getsignal(signal.SIGQUIT)
    if not callable(previous):
        return

    def snapshot(signum: int, frame: Any) -> None:
        from celery.worker import state

        if before is not None:
            before()
        tasks = [{"name": r.name, "id": r.id} for r in list(state.active_requests)]
        with contextlib.suppress(OSError):
            write_atomic(path, json.dumps({"pid": pid, "tasks": tasks}) + "\n")
        previous(signum, frame)

    signal.signal(signal.SIGQUIT, snapshot)


def load_celery_app(spec: str) -> Any:
    """'package.module:attr' or 'package.module' (then its `app` or `celery`)."""
    import importlib

    module_name, _, attribute = spec.partition(":")
    module = importlib.import_module(module_name)
    for name in [attribute] if attribute else ["app", "celery"]:
        if hasattr(module, name):
            return getattr(module, name)
    raise HookError(f"app.celery_app {spec!r}: no Celery app there", EXIT_BAD_INPUT)


def worker_conf(group: Mapping[str, Any], broker: Broker, base_options: Mapping[str, Any]) -> dict[str, Any]:
    """The group's settings as Celery configuration (applied over the app's own)."""
    conf: dict[str, Any] = {
        "broker_url": broker.url,
        "broker_transport_options": {**base_options, **broker.transport_options},
        "task_acks_late": bool(group["acks_late"]),
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": int(group["prefetch_multiplier"]),
        "task_time_limit": group["task_time_limit"],
        "broker_connection_retry_on_startup": True,
    }
    if group.get("task_soft_time_limit") is not None:
        conf["task_soft_time_limit"] = group["task_soft_time_limit"]
    if group.get("max_tasks_per_child") is not None:
        conf["worker_max_tasks_per_child"] = int(group["max_tasks_per_child"])
    return conf


def broker_visibility(group: Mapping[str, Any], sqs: bool) -> int:
    """The visibility timeout the worker gives its broker. With the heartbeat (SQS only) it is the group's
    short one; a group with the heartbeat on another broker (Redis restores an unacknowledged task after its
    own visibility timeout, with no heartbeat) gets task_time_limit + 120 s, the rule without it."""
    visibility = int(group["visibility_timeout"])
    if group.get("visibility_heartbeat") and not sqs:
        return max(visibility, int(group["task_time_limit"]) + 120)
    return visibility


def sqs_visibility(
    group: Mapping[str, Any], layout: Layout, log: Callable[[str], None]
) -> tuple[ReleaseOnShutdown, VisibilityHeartbeat | None]:
    """On SQS: the explicit release at shutdown, and the heartbeat when the group turns it on."""
    heartbeat = None
    if group.get("visibility_heartbeat"):
        heartbeat = VisibilityHeartbeat(
            step_s=float(group.get("visibility_heartbeat_step") or 10),
            visibility_s=int(group["visibility_timeout"]),
            cap_s=float(group["task_time_limit"]) + CAP_MARGIN_S,
            stats_file=layout.visibility_file,
            log=log,
        )
    return ReleaseOnShutdown(log, heartbeat), heartbeat


def worker_argv(group: Mapping[str, Any], node: str, queues: Sequence[str], logfile: Path) -> list[str]:
    argv = ["worker", "--hostname", node, "--queues", ",".join(queues), "--loglevel", "INFO"]
    argv += ["--logfile", str(logfile), "--without-gossip"]
    autoscale = group.get("autoscale")
    if autoscale:
        argv += ["--autoscale", f"{int(autoscale[0])},{int(autoscale[1])}"]
    else:
        argv += ["--concurrency", str(int(group["concurrency"]))]
    return argv


@dataclass
class WorkerSignals:
    """What the launcher hangs on celery's signals in the worker's main process."""

    layout: Layout
    pid: int
    node: str
    version: str
    queues: list[str]
    wake: Callable[[], None]
    prompt: PromptShutdown | None
    settle: SettleOnSigterm | None
    release: ReleaseOnShutdown | None = None
    first_task_seen: bool = False

    def connect(self) -> None:
        from celery import signals

        signals.worker_ready.connect(self.on_ready, weak=False)
        signals.task_received.connect(self.on_received, weak=False)
        signals.worker_shutting_down.connect(self.on_shutting_down, weak=False)

    def on_ready(self, sender: Any = None, **_: Any) -> None:
        """Celery's signal handlers are in place: put ours in front, then tell `start` we are up."""
        record_interrupted_on_sigquit(
            self.layout.interrupted_file, self.pid, self.release.begin if self.release is not None else None
        )
        if self.settle is not None:
            self.settle.install(self.wake)
        ready = {"pid": self.pid, "node": self.node, "version": self.version, "queues": self.queues}
        write_atomic(self.layout.ready_file, json.dumps(ready) + "\n")

    def on_received(self, request: Any = None, **_: Any) -> None:
        """Record the first task taken from the broker (validate's proof on SQS when the canary waits)."""
        if self.first_task_seen or request is None or request.name == CANARY_TASK:
            return
        self.first_task_seen = True
        queue = (getattr(request, "delivery_info", None) or {}).get("routing_key")
        taken = {"pid": self.pid, "name": request.name, "id": request.id, "queue": queue}
        with contextlib.suppress(OSError):
            write_atomic(self.layout.first_task_file, json.dumps(taken) + "\n")

    def on_shutting_down(self, sig: Any = None, how: Any = None, **_: Any) -> None:
        if self.release is not None:
            self.release.begin()
        if self.prompt is not None:
            self.prompt.begin()
        self.wake()


def register_canary(app: Any, canary_dir: Path, version: str) -> None:
    """deploytool.canary(token): writes run/canary/<token> so ValidateService sees this worker ran it."""

    @app.task(name=CANARY_TASK, ignore_result=True, acks_late=False)  # type: ignore[untyped-decorator]
    def canary(token: str) -> None:
        if re.fullmatch(r"[0-9a-f]{32}", token):
            write_atomic(canary_dir / token, json.dumps({"pid": os.getpid(), "version": version}))


def start_telemetry(
    settings: Settings, app: Any, node: str, settle: SettleOnSigterm | None, log: Callable[[str], None]
) -> Publisher | None:
    """Count task outcomes and publish them with a heartbeat (telemetry.py); None when turned off
    (DEPLOYTOOL_TELEMETRY=0) or the bundle names no region (one from before telemetry)."""
    region = str(settings.records.get("region") or "")
    if os.environ.get("DEPLOYTOOL_TELEMETRY") == "0" or not region:
        return None
    tally = Tally()
    if not count_outcomes(tally, skip=lambda name: name == CANARY_TASK or name.startswith("celery.")):
        log("deploytool: telemetry: this Celery builds its task requests another way: outcomes not counted")
    count_signals(tally)

    def state() -> str:
        return "draining" if settle is not None and settle.requested else "running"

    identity = {
        "App": str(settings.app["name"]),
        "Group": settings.group_name,
        "Release": settings.version,
        "Instance": instance_id(os.environ),
    }
    interval = float(os.environ.get("DEPLOYTOOL_TELEMETRY_INTERVAL_S") or INTERVAL_S)
    publisher = Publisher(
        tally, identity=identity, state=state, region=region, environ=dict(os.environ),
        stats_file=settings.layout.run_dir / "telemetry.json", log=log, interval_s=interval,
    )  # fmt: skip
    publisher.start()
    log(f"deploytool: telemetry to CloudWatch ({publisher.url}) every {interval:g} s as release {settings.version}")
    return publisher


def run_worker(group_name: str) -> int:
    """Import the app, apply the group's settings, and become the worker (pid = this process)."""
    settings = load_settings(bundle_root(), os.environ, group_name)
    layout = settings.layout
    app_dir = str((settings.bundle_root / "app").resolve())
    os.chdir(app_dir)
    sys.path.insert(0, app_dir)
    os.environ["PYTHONPATH"] = app_dir
    # No bytecode next to the release's sources: a version redeployed with other content (mtimes are fixed
    # in the bundle) would otherwise import the earlier content's .pyc. Pool children inherit the flag.
    sys.dont_write_bytecode = True
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    pid = os.getpid()
    try:
        layout.run_dir.mkdir(parents=True, exist_ok=True)
        layout.logfile.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(layout.pidfile, f"{pid}\n")
    except OSError as exc:
        raise file_error(exc, settings) from None
    node = running_node(settings)
    sqs = os.environ.get("CELERY_BROKER_URL", "").partition("://")[0] in NO_FANOUT_SCHEMES
    broker = Broker.from_env(os.environ, broker_visibility(settings.group, sqs), "worker environment")
    app = load_celery_app(str(settings.app["celery_app"]))
    app.conf.update(worker_conf(settings.group, broker, app.conf.broker_transport_options or {}))
    register_canary(app, layout.canary_dir, settings.version)
    queues = list(settings.queues)
    settle: SettleOnSigterm | None = None
    release: ReleaseOnShutdown | None = None

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    handoff = settings.restart == "handoff"
    remote = has_remote_control(app)

    def hand_off(ignored: str) -> HandOff:
        finishing = HandOff(
            log, ignored, layout=layout, pid=pid, version=settings.version, node=node,
            reap_after_s=settings.task_time_limit + REAP_MARGIN_S, sigterm=not remote,
        )  # fmt: skip
        finishing.arm()
        return finishing

    if not remote:
        queues.append(canary_queue(node))
        settle = hand_off(canary_queue(node)) if handoff else SettleOnSigterm(log, canary_queue(node))
        app.steps["consumer"].add(settle.bootstep())
        release, heartbeat = sqs_visibility(settings.group, layout, log)
        app.steps["consumer"].add(release.bootstep())
        if heartbeat is not None:
            app.steps["consumer"].add(heartbeat.bootstep())
    else:
        if settings.group.get("visibility_heartbeat"):
            log("deploytool: visibility_heartbeat is for SQS; here visibility_timeout = task_time_limit + 120 s")
        if handoff:
            settle = hand_off("")
            app.steps["consumer"].add(settle.bootstep())
    prompt = PromptShutdown() if os.environ.get("DEPLOYTOOL_PROMPT_SHUTDOWN", "1") != "0" else None
    if prompt is not None:
        prompt.install()
    WorkerSignals(layout, pid, node, settings.version, queues, shutdown_waker(app), prompt, settle, release).connect()
    publisher = start_telemetry(settings, app, node, settle, log)
    try:
        app.worker_main(worker_argv(settings.group, node, queues, layout.logfile))
    finally:
        if publisher is not None:
            publisher.stop()
        for owned in (layout.ready_file, layout.first_task_file, layout.pidfile):
            remove_if_pid(owned, pid)
    return EXIT_OK


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: celery_worker.py GROUP", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return run_worker(argv[0])
    except HookError as exc:
        print(f"deploytool worker: error: {exc}", file=sys.stderr, flush=True)
        return exc.code
