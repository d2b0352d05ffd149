#!/usr/bin/env python3
"""deploytool's lifecycle hooks for one Celery worker per instance (ships in the bundle).

Runs with the APP's Python on the instance (stdlib + celery/kombu; deploytool is not installed there):

    celery_hooks.py drain       ApplicationStop: drain the running worker within drain_timeout
    celery_hooks.py start       ApplicationStart: start the group's worker on the new release
    celery_hooks.py validate    ValidateService: prove the new worker runs and takes work

The worker itself is celery_worker.py GROUP beside it (exec'd by `start` and by the systemd unit).

Contracts (deploytool CONTRACTS.md, sections 1 and 2):
- This file lives at <bundle>/deploytool/hooks/celery_hooks.py; <bundle>/deploytool/fleet.json holds
  {"app": {...}, "version": ..., "groups": {<name>: worker settings}}. The group is DEPLOYMENT_GROUP_NAME.
- Instance paths: {install_dir}/releases/<version>/ (the bundle, app under app/), {install_dir}/current,
  {install_dir}/run/worker.pid, {install_dir}/run/VERSION, {install_dir}/log/worker.log and the env file
  app.env_file (CELERY_BROKER_URL, optional CELERY_BROKER_TRANSPORT_OPTIONS as JSON). In the sandbox every
  absolute instance path is prefixed with DEPLOYTOOL_INSTANCE_ROOT; DEPLOYTOOL_PYTHON overrides app.python;
  DEPLOYTOOL_PROCESS_MANAGER=direct runs the worker without systemd; DEPLOYTOOL_INSTANCE_ID names the instance.
- Worker node name: celery@<group>.<instance id or hostname>.
- drain never sends SIGKILL: cancel consumers (brokers with remote control), wait until `inspect active`
  and `inspect reserved` are empty, SIGTERM and wait for exit; SIGQUIT once drain_timeout is spent.
  Without remote control (SQS) SIGTERM is the drain: the worker then stops consuming by itself and lets
  in-flight receives return (celery_worker.SettleOnSigterm). A SIGTERM to the hook itself SIGQUITs the worker.
- Every step logs one line with its timing. Exit status: 0 done, 1 failed, 2 bad input, 143 terminated.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

STARTED = time.monotonic()

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_TERMINATED = 0, 1, 2, 143

INSPECT_POLL_S = 0.25  # how often drain asks the worker for active + reserved tasks
INSPECT_TIMEOUT_S = 0.25  # how long one inspect waits for the worker's reply
CONTROL_TIMEOUT_S = 1.0  # active_queues / cancel_consumer / ping reply timeout
ACTIVE_QUEUES_TRIES = 3  # then drain gives up on remote control and sends SIGTERM
EXIT_POLL_S = 0.05  # how often drain checks whether the worker process is gone
QUIT_GRACE_S = 45.0  # after SIGQUIT (the fleet keeps 60 s of the hook timeout for it)
TERMINATED_GRACE_S = 10.0  # after SIGQUIT when the agent SIGTERMs the hook itself
START_BUDGET_S = 240.0  # ApplicationStart's hook timeout is 300 s
START_DRAIN_BUDGET_S = 120.0  # a worker ApplicationStop did not drain is drained by start within this
VALIDATE_BUDGET_S = 60.0  # ValidateService's hook timeout is 300 s
CANARY_TASK = "deploytool.canary"
WORKER_SCRIPT = "celery_worker.py"  # the launcher beside this file: the worker process itself
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


class HookError(Exception):
    """A failure with one clear line for the deployment log."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class HookTerminated(Exception):
    """The CodeDeploy agent (or the sandbox runner) sent SIGTERM to this hook: its timeout ran out."""


# --- time and log -----------------------------------------------------------------------------------


class Clock:
    """Monotonic time and sleep; tests pass a simulated one."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class Log:
    """One line per step: `deploytool drain +1.234s step: detail (0.012s)` on stdout (the agent's log)."""

    def __init__(self, command: str, clock: Clock, started: float | None = None, out: Any = None) -> None:
        self.command = command
        self.clock = clock
        self.started = clock.now() if started is None else started
        self.out = out if out is not None else sys.stdout
        self.lines: list[str] = []

    def elapsed(self) -> float:
        return self.clock.now() - self.started

    def step(self, name: str, detail: str = "", took: float | None = None) -> None:
        text = f"deploytool {self.command} +{self.elapsed():.3f}s {name}"
        if detail:
            text += f": {detail}"
        if took is not None:
            text += f" ({took:.3f}s)"
        self.lines.append(text)
        print(text, file=self.out, flush=True)


# --- settings and instance layout -------------------------------------------------------------------


def bundle_root_of(script: str | Path) -> Path:
    """<bundle>/deploytool/hooks/celery_hooks.py -> <bundle> (the archive or the release dir)."""
    return Path(script).resolve().parent.parent.parent


@dataclass(frozen=True)
class Layout:
    """Where things are on this instance (every absolute path prefixed by DEPLOYTOOL_INSTANCE_ROOT)."""

    root: str
    install_dir: Path

    @classmethod
    def of(cls, app: Mapping[str, Any], environ: Mapping[str, str]) -> Layout:
        root = environ.get("DEPLOYTOOL_INSTANCE_ROOT", "").rstrip("/")
        install = app.get("install_dir") or f"/opt/{app['name']}"
        return cls(root=root, install_dir=Path(root + install))

    def on_instance(self, absolute: str) -> Path:
        return Path(self.root + absolute)

    @property
    def releases(self) -> Path:
        return self.install_dir / "releases"

    @property
    def current(self) -> Path:
        return self.install_dir / "current"

    @property
    def run_dir(self) -> Path:
        return self.install_dir / "run"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "worker.pid"

    @property
    def version_file(self) -> Path:
        return self.run_dir / "VERSION"

    @property
    def node_file(self) -> Path:
        return self.run_dir / "node-name"

    @property
    def ready_file(self) -> Path:
        return self.run_dir / "ready.json"

    @property
    def interrupted_file(self) -> Path:
        return self.run_dir / "interrupted.json"

    @property
    def first_task_file(self) -> Path:
        return self.run_dir / "first-task.json"

    @property
    def canary_dir(self) -> Path:
        return self.run_dir / "canary"

    @property
    def logfile(self) -> Path:
        return self.install_dir / "log" / "worker.log"


@dataclass(frozen=True)
class Settings:
    """This bundle's fleet.json, narrowed to one group, on this instance."""

    bundle_root: Path
    app: Mapping[str, Any]
    version: str
    group: Mapping[str, Any]
    layout: Layout
    environ: Mapping[str, str]

    @property
    def group_name(self) -> str:
        return str(self.group["name"])

    @property
    def queues(self) -> list[str]:
        return [str(q) for q in self.group["queues"]]

    @property
    def drain_timeout(self) -> float:
        return float(self.group["drain_timeout"])

    @property
    def release_dir(self) -> Path:
        return self.layout.releases / self.version

    @property
    def env_file(self) -> Path:
        return self.layout.on_instance(self.app.get("env_file") or f"/etc/{self.app['name']}/worker.env")

    @property
    def python(self) -> str:
        chosen = self.environ.get("DEPLOYTOOL_PYTHON") or self.app.get("python")
        return str(chosen or sys.executable)

    @property
    def process_manager(self) -> str:
        return "direct" if self.environ.get("DEPLOYTOOL_PROCESS_MANAGER") == "direct" else "systemd"

    @property
    def unit_name(self) -> str:
        return f"{self.app['name']}-{self.group_name}.service"


def load_settings(bundle_root: Path, environ: Mapping[str, str], group_name: str | None = None) -> Settings:
    """Read <bundle>/deploytool/fleet.json and pick the group (DEPLOYMENT_GROUP_NAME unless given)."""
    fleet_file = bundle_root / "deploytool" / "fleet.json"
    try:
        fleet = json.loads(fleet_file.read_text())
    except FileNotFoundError:
        raise HookError(f"{fleet_file}: not found; is this hook inside a deploytool bundle?", EXIT_BAD_INPUT) from None
    except (OSError, ValueError) as exc:
        raise HookError(f"{fleet_file}: cannot read fleet settings: {exc}", EXIT_BAD_INPUT) from exc
    name = group_name or environ.get("DEPLOYMENT_GROUP_NAME", "")
    groups = fleet.get("groups") or {}
    if not name:
        raise HookError(
            f"DEPLOYMENT_GROUP_NAME is not set; allowed: one of the bundle's groups ({', '.join(groups)})",
            EXIT_BAD_INPUT,
        )
    if name not in groups:
        raise HookError(
            f"{fleet_file}: no group named {name!r} (DEPLOYMENT_GROUP_NAME); allowed: {', '.join(groups)}",
            EXIT_BAD_INPUT,
        )
    app = fleet["app"]
    return Settings(
        bundle_root=bundle_root,
        app=app,
        version=str(fleet["version"]),
        group=groups[name],
        layout=Layout.of(app, environ),
        environ=environ,
    )


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile reads them (comments, blank lines, quotes, `export`)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise HookError(f"{path}: environment file not found; it must set CELERY_BROKER_URL") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise HookError(f"{path}:{number}: expected KEY=VALUE, got {raw!r}", EXIT_BAD_INPUT)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


@dataclass(frozen=True)
class Broker:
    url: str
    transport_options: Mapping[str, Any]

    @classmethod
    def from_env(cls, env: Mapping[str, str], visibility_timeout: int | None, where: str) -> Broker:
        url = env.get("CELERY_BROKER_URL", "")
        if not url:
            raise HookError(f"{where}: CELERY_BROKER_URL is not set", EXIT_BAD_INPUT)
        raw = env.get("CELERY_BROKER_TRANSPORT_OPTIONS") or "{}"
        try:
            options = json.loads(raw)
        except ValueError:
            options = None
        if not isinstance(options, dict):
            raise HookError(f"{where}: CELERY_BROKER_TRANSPORT_OPTIONS must be a JSON object, got {raw!r}")
        if visibility_timeout is not None:
            options["visibility_timeout"] = visibility_timeout
        return cls(url=url, transport_options=options)


def instance_id(environ: Mapping[str, str], metadata_timeout: float = 1.0) -> str:
    """DEPLOYTOOL_INSTANCE_ID, else the EC2 instance id from IMDSv2, else the hostname."""
    given = environ.get("DEPLOYTOOL_INSTANCE_ID")
    if given:
        return given
    try:
        token_request = urllib.request.Request(
            "http://169.254.169.254/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        )
        with urllib.request.urlopen(token_request, timeout=metadata_timeout) as response:
            token = response.read().decode()
        id_request = urllib.request.Request(
            "http://169.254.169.254/latest/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": token}
        )
        with urllib.request.urlopen(id_request, timeout=metadata_timeout) as response:
            return str(response.read().decode().strip())
    except OSError:
        return socket.gethostname()


def node_name(group: str, instance: str) -> str:
    return f"celery@{group}.{instance}"


def canary_queue(node: str) -> str:
    """The per-instance queue ValidateService sends its canary through where there is no remote control."""
    base = "deploytool-canary-" + re.sub(r"[^A-Za-z0-9_-]", "-", node.split("@", 1)[-1])
    if len(base) <= 80:
        return base
    return base[:71] + "-" + hashlib.sha256(base.encode()).hexdigest()[:8]


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def point_symlink(link: Path, target: str) -> None:
    """Flip `link` to `target` atomically (a temporary symlink renamed over it)."""
    temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    temporary.symlink_to(target)
    os.replace(temporary, link)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_if_pid(path: Path, pid: int) -> None:
    """Remove a pidfile / marker only if it still names `pid` (a newer worker may own it)."""
    with contextlib.suppress(OSError, ValueError):
        text = path.read_text().strip()
        owner = int(text) if text.isdigit() else int((json.loads(text) or {}).get("pid", 0))
        if owner == pid:
            path.unlink()


# --- processes --------------------------------------------------------------------------------------


def process_state(pid: int) -> str | None:
    """The /proc state letter of `pid`, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def process_alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for a parent that never reaps it)."""
    return process_state(pid) not in (None, "Z", "X", "x")


def process_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def process_cwd(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def launcher_script(cmdline: Sequence[str]) -> str | None:
    """The launcher's path in a worker's command line (`python [-u] .../celery_worker.py GROUP`)."""
    for part in cmdline[1:]:
        if os.path.basename(part) == WORKER_SCRIPT:
            return part
    return None


def is_our_worker(pid: int, layout: Layout) -> bool:
    script = launcher_script(process_cmdline(pid))
    if script is None:
        return False
    releases = str(layout.releases.resolve())
    return os.path.realpath(script).startswith(releases + os.sep)


def run_command(argv: Sequence[str], privileged: bool = False, timeout: float = 60.0) -> str:
    """Run a command (with `sudo -n` when privileged and not root); its stdout, or a HookError."""
    full = list(argv)
    if privileged and os.geteuid() != 0:
        full = ["sudo", "-n", *full]
    try:
        done = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HookError(f"{shlex.join(full)}: {exc}") from exc
    if done.returncode != 0:
        raise HookError(f"{shlex.join(full)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


class WorkerProcess(Protocol):
    """The running worker as drain sees it: its pid, whether it is gone, and the two signals drain sends."""

    pid: int

    def exited(self) -> bool: ...

    def warm_shutdown(self) -> None: ...

    def cold_shutdown(self) -> None: ...


@dataclass
class DirectWorker:
    """A worker this hook started itself (DEPLOYTOOL_PROCESS_MANAGER=direct)."""

    pid: int

    def exited(self) -> bool:
        return not process_alive(self.pid)

    def _send(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def warm_shutdown(self) -> None:
        self._send(signal.SIGTERM)

    def cold_shutdown(self) -> None:
        self._send(signal.SIGQUIT)


@dataclass
class SystemdWorker(DirectWorker):
    """A worker run by systemd: stopping goes through systemctl so Restart=on-failure does not revive it."""

    unit: str = ""
    stopping: bool = field(default=False)

    def _stop_unit(self) -> None:
        if not self.stopping:
            # systemd sends KillSignal=SIGTERM to the main process only (KillMode=mixed) and, since the
            # stop was asked for, does not restart the worker whatever its exit status.
            run_command(["systemctl", "stop", "--no-block", self.unit], privileged=True)
            self.stopping = True

    def warm_shutdown(self) -> None:
        self._stop_unit()

    def cold_shutdown(self) -> None:
        self._stop_unit()
        self._send(signal.SIGQUIT)


def systemd_main_pid(unit: str) -> int:
    try:
        out = run_command(["systemctl", "show", "--property", "MainPID", "--value", unit], timeout=15.0)
    except HookError:
        return 0
    text = out.strip()
    return int(text) if text.isdigit() else 0


def find_worker(settings: Settings) -> tuple[WorkerProcess | None, str]:
    """The running worker of this app on this instance, or None and why not."""
    layout = settings.layout
    if settings.process_manager == "systemd":
        pid = systemd_main_pid(settings.unit_name)
        if pid <= 0 or not process_alive(pid):
            return None, f"unit {settings.unit_name} has no running main process"
        return SystemdWorker(pid=pid, unit=settings.unit_name), f"unit {settings.unit_name}"
    try:
        text = layout.pidfile.read_text().strip()
    except FileNotFoundError:
        return None, f"no pidfile at {layout.pidfile}"
    if not text.isdigit():
        return None, f"pidfile {layout.pidfile} holds {text!r}, not a pid"
    pid = int(text)
    if not process_alive(pid):
        return None, f"pid {pid} from {layout.pidfile} is not running (stale pidfile)"
    if not is_our_worker(pid, layout):
        return None, f"pid {pid} from {layout.pidfile} is not a worker of {layout.releases} (reused pid)"
    return DirectWorker(pid=pid), f"pidfile {layout.pidfile}"


def running_node(settings: Settings) -> str:
    """The node name the running worker was started with (start writes it), else the computed one."""
    with contextlib.suppress(OSError):
        written = settings.layout.node_file.read_text().strip()
        if written:
            return written
    return node_name(settings.group_name, instance_id(settings.environ))


# --- the broker's remote control --------------------------------------------------------------------


def celery_client(broker: Broker) -> Any:
    """A bare Celery app for remote control and sending the canary (the user's app is not imported)."""
    from celery import Celery

    client = Celery("deploytool-hooks", set_as_current=False)
    client.conf.update(
        broker_url=broker.url,
        broker_transport_options=dict(broker.transport_options),
        broker_connection_timeout=3.0,
        broker_connection_retry=False,
        broker_connection_max_retries=1,
        task_create_missing_queues=True,
    )
    return client


def has_remote_control(client: Any) -> bool:
    """Whether the broker can broadcast (celery's own test: the transport supports fanout exchanges)."""
    return bool(client.connection_for_write().supports_exchange_type("fanout"))


class Control(Protocol):
    def active_queues(self) -> list[str] | None: ...

    def cancel_consumer(self, queue: str) -> bool: ...

    def busy(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


class RemoteControl:
    """Celery remote control aimed at one node, over one broker connection.

    Broker errors do not escape: a method answers None/False and `error` says what went wrong.
    """

    def __init__(self, client: Any, node: str) -> None:
        self.client = client
        self.node = node
        self.connection = client.connection_for_write()
        self.error = ""

    def _call(self, request: Callable[[], Any]) -> Any:
        try:
            return request()
        except Exception as exc:  # kombu/amqp/redis/botocore errors all mean "no answer"
            self.error = f"{type(exc).__name__}: {exc}"
            return None

    def _inspect(self, timeout: float) -> Any:
        return self.client.control.inspect(
            destination=[self.node], timeout=timeout, limit=1, connection=self.connection
        )

    def _reply(self, replies: Any) -> Any:
        return replies.get(self.node) if replies else None

    def active_queues(self) -> list[str] | None:
        reply = self._reply(self._call(lambda: self._inspect(CONTROL_TIMEOUT_S).active_queues()))
        return None if reply is None else [str(q["name"]) for q in reply]

    def cancel_consumer(self, queue: str) -> bool:
        replies = self._call(
            lambda: self.client.control.cancel_consumer(
                queue, destination=[self.node], reply=True, timeout=CONTROL_TIMEOUT_S, connection=self.connection
            )
        )
        return any(self.node in reply for reply in replies or [])

    def busy(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        inspect = self._inspect(INSPECT_TIMEOUT_S)
        active = self._reply(self._call(inspect.active))
        reserved = self._reply(self._call(inspect.reserved)) if active is not None else None
        if active is None or reserved is None:
            return None
        return list(active), list(reserved)

    def ping(self) -> bool:
        replies = self._call(
            lambda: self.client.control.ping(
                destination=[self.node], timeout=CONTROL_TIMEOUT_S, connection=self.connection
            )
        )
        return any(self.node in reply for reply in replies or [])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.release()


NO_FANOUT_SCHEMES = ("sqs",)  # answered without loading the transport (SQS's imports boto3: 0.4 s)


def drain_control(broker: Broker, node: str) -> RemoteControl | None:
    """Remote control of `node` for drain, or None when the broker has none (then SIGTERM is the drain)."""
    if broker.url.partition("://")[0] in NO_FANOUT_SCHEMES:
        return None
    client = celery_client(broker)
    return RemoteControl(client, node) if has_remote_control(client) else None


def task_labels(requests: Iterable[Mapping[str, Any]]) -> list[str]:
    return [f"{r.get('name') or r.get('type') or '?'}[{r.get('id', '?')}]" for r in requests]


def summarize(labels: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(labels[:limit])
    return shown + (f", ... ({len(labels) - limit} more)" if len(labels) > limit else "")


# --- drain (ApplicationStop) ------------------------------------------------------------------------


@dataclass
class DrainResult:
    outcome: str  # "drained", "cold" (SIGQUIT once the budget was spent), "stuck" (still alive after SIGQUIT)
    seconds: float
    interrupted: list[str] = field(default_factory=list)


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
) -> DrainResult:
    """The drain. `deadline` is when drain_timeout is spent (monotonic); SIGKILL is never sent."""
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
        log.step("SIGTERM", f"pid {worker.pid} still running when drain_timeout was spent", clock.now() - step)
    interrupted = task_labels(last_active)
    step = clock.now()
    worker.cold_shutdown()
    exited = wait_for_exit(worker, clock.now() + quit_grace, clock)
    detail = f"pid {worker.pid} {'exited' if exited else f'STILL RUNNING after {quit_grace:.0f} s'} after cold shutdown"
    log.step("SIGQUIT", f"drain_timeout spent; {detail}", clock.now() - step)
    return DrainResult("cold" if exited else "stuck", clock.now() - started, interrupted)


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
    if worker is None:
        log.step("find worker", f"no worker running ({where}); nothing to drain", clock.now() - step)
        return EXIT_OK
    node = running_node(settings)
    log.step(
        "find worker",
        f"pid {worker.pid} ({node}) via {where}; budget {settings.drain_timeout:.0f}s",
        clock.now() - step,
    )
    result = drain_running(settings, worker, node, deadline, clock, log)
    return EXIT_OK if result.outcome != "stuck" else EXIT_FAILED


def drain_running(
    settings: Settings, worker: WorkerProcess, node: str, deadline: float, clock: Clock, log: Log
) -> DrainResult:
    """Drain a found worker; on the hook's own SIGTERM, SIGQUIT the worker and exit non-zero."""
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
        result = drain_worker(worker, control, node, deadline, clock, log)
    except HookTerminated:
        cold_shutdown_on_termination(settings, worker, clock, log)
        raise
    finally:
        if control is not None:
            control.close()
    reported = report_interrupted(settings, worker.pid, log)
    if result.outcome == "cold" and result.interrupted and not reported:
        log.step("interrupted", f"{len(result.interrupted)} task(s) cut off by the cold shutdown: "
                 f"{summarize(result.interrupted)}")
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


INTERRUPTED_MARK = "deploytool: interrupted task"  # the sandbox runner reads these lines into the deploy's output


def interrupted_fate(acks_late: bool) -> str:
    """What becomes of a task a cold shutdown cut off, given the group's acks_late (the worker also sets
    task_reject_on_worker_lost=True)."""
    if acks_late:
        return "not acknowledged (acks_late): re-queued by the broker, it runs again"
    return "acknowledged when received (acks_late = false): it does not run again unless the task sets acks_late"


def mark_interrupted(settings: Settings, labels: Sequence[str], log: Log) -> None:
    """One line per interrupted task, `deploytool: interrupted task NAME[ID]: FATE`, on the hook's output: the
    sandbox's lifecycle runner turns them into warnings of the deployment; on CodeDeploy they stay in the
    agent's scripts.log."""
    fate = interrupted_fate(bool(settings.group.get("acks_late", True)))
    for label in labels:
        print(f"{INTERRUPTED_MARK} {label}: {fate}", file=log.out, flush=True)


def report_interrupted(settings: Settings, pid: int, log: Log) -> list[str]:
    """Log the tasks the worker says a cold shutdown cut off (the launcher writes them), then forget them."""
    data = read_json(settings.layout.interrupted_file)
    if not data or data.get("pid") != pid:
        return []
    labels = [f"{t.get('name')}[{t.get('id')}]" for t in data.get("tasks", [])]
    if labels:
        log.step("interrupted", f"{len(labels)} task(s) cut off by the cold shutdown: {summarize(labels)}")
        mark_interrupted(settings, labels, log)
    with contextlib.suppress(OSError):
        settings.layout.interrupted_file.unlink()
    return labels


def _raise_terminated(signum: int, frame: Any) -> None:
    raise HookTerminated()


# --- start (ApplicationStart) -----------------------------------------------------------------------


def worker_environment(settings: Settings, env: Mapping[str, str]) -> dict[str, str]:
    app_dir = str(settings.release_dir / "app")
    merged = {k: v for k, v in settings.environ.items() if k not in HOOK_ENV_VARS and k != "DEPLOYMENT_GROUP_NAME"}
    merged.update(env)
    merged["PYTHONPATH"] = app_dir
    merged["PYTHONUNBUFFERED"] = "1"
    return merged


def launch_direct(settings: Settings, env: Mapping[str, str]) -> int:
    """Start the launcher as a daemon: new session, output to the worker log, pidfile written."""
    layout = settings.layout
    layout.logfile.parent.mkdir(parents=True, exist_ok=True)
    script = settings.release_dir / "deploytool" / "hooks" / WORKER_SCRIPT
    with open(layout.logfile, "ab") as logfile:
        process = subprocess.Popen(
            [settings.python, "-u", str(script), settings.group_name],
            cwd=settings.release_dir / "app",
            env=worker_environment(settings, env),
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    write_atomic(layout.pidfile, f"{process.pid}\n")
    return process.pid


def install_unit(settings: Settings) -> None:
    source = settings.bundle_root / "deploytool" / "hooks" / "systemd" / f"{settings.group_name}.service"
    if not source.is_file():
        raise HookError(f"{source}: the group's systemd unit is missing from the bundle")
    target = settings.layout.on_instance(f"/etc/systemd/system/{settings.unit_name}")
    run_command(["install", "-D", "-m", "0644", str(source), str(target)], privileged=True)
    run_command(["systemctl", "daemon-reload"], privileged=True)
    run_command(["systemctl", "enable", settings.unit_name], privileged=True)
    run_command(["systemctl", "restart", settings.unit_name], privileged=True)


def log_tail(path: Path, offset: int, lines: int = 15) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return "(no worker log)"
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(tail) if tail else "(worker log is empty)"


def wait_until_ready(settings: Settings, pid_of: Callable[[], int], offset: int, clock: Clock, until: float) -> int:
    """Wait for the launcher's ready marker (written on celery's worker_ready); the worker's pid."""
    layout = settings.layout
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
                f"worker not ready within {START_BUDGET_S:.0f}s; {layout.logfile}: {log_tail(layout.logfile, offset)}"
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

    worker, _ = find_worker(settings)
    if worker is not None:
        node = running_node(settings)
        budget = min(settings.drain_timeout, START_DRAIN_BUDGET_S)
        log.step("still running", f"pid {worker.pid} ({node}) was not drained by ApplicationStop; draining it now")
        result = drain_running(settings, worker, node, clock.now() + budget, clock, log)
        if result.outcome == "stuck":
            raise HookError(f"the old worker pid {worker.pid} did not exit; not starting a second one")

    step = clock.now()
    node = node_name(settings.group_name, instance_id(settings.environ))
    for directory in (layout.run_dir, layout.logfile.parent):
        directory.mkdir(parents=True, exist_ok=True)
    write_atomic(layout.node_file, node + "\n")
    for stale in (layout.ready_file, layout.interrupted_file, layout.first_task_file):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    point_symlink(layout.current, f"releases/{settings.version}")
    log.step("current", f"{layout.current} -> releases/{settings.version}; node {node}", clock.now() - step)

    step = clock.now()
    offset = layout.logfile.stat().st_size if layout.logfile.exists() else 0
    if settings.process_manager == "direct":
        pid = launch_direct(settings, env)
        log.step(
            "launch",
            f"pid {pid}: {settings.python} {WORKER_SCRIPT} {settings.group_name}",
            clock.now() - step,
        )

        def pid_of() -> int:
            return pid

    else:
        install_unit(settings)
        log.step("systemd", f"installed, enabled and restarted {settings.unit_name}", clock.now() - step)

        def pid_of() -> int:
            return systemd_main_pid(settings.unit_name)

    step = clock.now()
    pid = wait_until_ready(settings, pid_of, offset, clock, clock.now() + START_BUDGET_S)
    write_atomic(layout.version_file, settings.version + "\n")
    log.step(
        "ready",
        f"pid {pid} {node} consuming {', '.join(settings.queues)}; VERSION={settings.version}",
        clock.now() - step,
    )
    return EXIT_OK


# --- validate (ValidateService) ---------------------------------------------------------------------


def validate(settings: Settings, clock: Clock, log: Log) -> int:
    layout = settings.layout
    until = log.started + VALIDATE_BUDGET_S
    step = clock.now()
    worker, where = find_worker(settings)
    if worker is None:
        raise HookError(f"worker is not running: {where}")
    expected_dir = os.path.realpath(settings.release_dir / "app")
    cwd = process_cwd(worker.pid)
    if cwd != expected_dir:
        raise HookError(f"worker pid {worker.pid} runs in {cwd}, not in the new release {expected_dir}")
    script = launcher_script(process_cmdline(worker.pid)) or "?"
    expected_script = os.path.realpath(settings.release_dir / "deploytool" / "hooks" / WORKER_SCRIPT)
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


# --- entry point ------------------------------------------------------------------------------------

COMMANDS: dict[str, Callable[[Settings, Clock, Log], int]] = {"drain": drain, "start": start, "validate": validate}
USAGE = "usage: celery_hooks.py drain|start|validate"


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1 or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        return EXIT_BAD_INPUT
    clock = Clock()
    log = Log(argv[0], clock, started=STARTED)
    signal.signal(signal.SIGTERM, _raise_terminated)  # the agent's timeout; drain answers it with SIGQUIT
    try:
        settings = load_settings(bundle_root_of(__file__), os.environ)
        return COMMANDS[argv[0]](settings, clock, log)
    except HookError as exc:
        log.step("error", str(exc))
        return exc.code
    except HookTerminated:
        log.step("error", f"{argv[0]} was terminated by SIGTERM (hook timeout?)")
        return EXIT_TERMINATED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
