"""Deploy rendered bundles to instance directories of this machine through the sandbox's LifecycleRunner.

- `render_bundle` lays out a bundle directory with the renderer `fab build` uses (app/, appspec.yml,
  deploytool/hooks/ rendered from scripts/ with the deploytool_instance package, one systemd unit per
  group, deploytool/fleet.json).
- `Instance` is one sandbox instance (DEPLOYTOOL_INSTANCE_ROOT) deployed to by
  deploytool.sandbox.runner.LifecycleRunner, the runner `fab sandbox` uses: `deploy(bundle)` runs every
  lifecycle event in the agent's order (ApplicationStop from the last installed revision, DownloadBundle of
  the bundle as a tar, Install by the appspec, ApplicationStart, ValidateService); `stop`, `start`,
  `validate` and `run_hook` run single events through the same runner. Each event that ran a script is a
  HookRun: its exit code (from the runner's message; None when the runner stopped it on its timeout) and
  what the event's log got.
- `Load` submits sample-app tasks and reads the ledger (ACME_LEDGER) to count completions and duplicates.
- `ProcessReaper` stops every worker a test's hooks started (by pid / process group), also on failure.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from deploytool import render
from deploytool.bundle import FLEET_JSON, fleet_json
from deploytool.config import App, Group
from deploytool.render import Templates, render_templates
from deploytool.rollout.backend import LIFECYCLE_EVENTS
from deploytool.sandbox.instance import Instance as SandboxInstance
from deploytool.sandbox.motoserver import MotoServer
from deploytool.sandbox.runner import DEFAULT_TIMING, DeploymentSpec, LifecycleRunner, Timing
from tests.builders import make_fleet

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
SAMPLE_APP = ROOT / "sample_app"
PYTHON = sys.executable
START_TIMEOUT_S = 300
VALIDATE_TIMEOUT_S = 300


# --- bundle -----------------------------------------------------------------------------------------


def app_context(install_dir: str = "/opt/acme-workers", **extra: Any) -> dict[str, Any]:
    """The template/fleet.json `app` dict, resolved the way deploytool's App model resolves it."""
    app = App(name="acme-workers", celery_app="acme_workers.celery_app:app", install_dir=install_dir, **extra)
    return {
        "name": app.name,
        "celery_app": app.celery_app,
        "install_dir": app.install_path,
        "python": app.python_path,
        "env_file": app.env_path,
        "user": app.user,
    }


def group_settings(name: str, queues: Sequence[str], **overrides: Any) -> dict[str, Any]:
    """Group.worker_settings() of a validated group (the dict the bundle ships)."""
    values: dict[str, Any] = {"task_time_limit": 60, "visibility_timeout": 600, "drain_timeout": 10}
    values.update(overrides)
    return Group(name=name, asg=f"asg-{name}", queues=list(queues), **values).worker_settings()


def template_context(app: Mapping[str, Any], groups: Sequence[Mapping[str, Any]], version: str) -> dict[str, Any]:
    """What the templates see, from deploytool.render itself."""
    return render.template_context(
        make_fleet([fleet_table(g) for g in groups], app=fleet_table(app)), version, "0" * 40
    )


def _environment() -> jinja2.Environment:
    return jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


def render_file(template: Path, context: Mapping[str, Any]) -> str:
    return _environment().from_string(template.read_text()).render(**context)


def fleet_table(table: Mapping[str, Any]) -> dict[str, Any]:
    """A template dict as a fleet-file table (None: not set)."""
    return {k: v for k, v in table.items() if v is not None}


def render_bundle(
    dest: Path,
    app: Mapping[str, Any],
    groups: Sequence[Mapping[str, Any]],
    version: str,
    release_note: str | None = None,
) -> Path:
    """Write a bundle directory for `version` with the renderer `fab build` uses (deploytool.render);
    the sample app says `release_note` when given."""
    fleet = make_fleet([fleet_table(g) for g in groups], app=fleet_table(app))
    commit = "0" * 40
    shutil.copytree(SAMPLE_APP, dest / "app", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if release_note is not None:
        init = dest / "app" / "acme_workers" / "__init__.py"
        text = re.sub(r"^RELEASE_NOTE = .*$", f"RELEASE_NOTE = {release_note!r}", init.read_text(), flags=re.M)
        init.write_text(text)
    for rendered in render_templates(fleet, version, commit, Templates.default()):
        target = dest / rendered.arcname
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(rendered.data)
        target.chmod(0o755 if rendered.executable else 0o644)
    (dest / FLEET_JSON).write_bytes(fleet_json(fleet, version, commit))
    return dest


# --- processes --------------------------------------------------------------------------------------


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_gone(pid: int, timeout: float) -> bool:
    until = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() >= until:
            return False
        time.sleep(0.05)
    return True


class ProcessReaper:
    """Remembers the workers (session leaders) and servers a test started, and stops them at teardown."""

    def __init__(self) -> None:
        self.groups: set[int] = set()
        self.children: list[subprocess.Popen[bytes]] = []

    def add_group(self, pid: int) -> None:
        self.groups.add(pid)

    def add_child(self, process: subprocess.Popen[bytes]) -> None:
        self.children.append(process)

    def stop_all(self) -> None:
        for pid in self.groups:
            if process_alive(pid):
                os.kill(pid, signal.SIGQUIT)
        for pid in self.groups:
            wait_gone(pid, 5.0)
            try:
                os.killpg(pid, signal.SIGKILL)  # leftovers of the worker's session (pool children)
            except (ProcessLookupError, PermissionError):
                pass
        for process in self.children:
            stop_process(process)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM a child this test started, SIGKILL it if it does not go, and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


SQS_TRANSPORT_OPTIONS = {"region": "us-east-1", "is_secure": False, "wait_time_seconds": 1, "polling_interval": 0.1}


@contextlib.contextmanager
def moto_sqs_server(tmp: Path | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """The sandbox's moto server on a free loopback port: (broker URL, transport options) for kombu's SQS."""
    where = tmp or Path(tempfile.mkdtemp(prefix="moto-"))
    server = MotoServer(log_path=where / "moto.log", pidfile=where / "moto.pid").start()
    try:
        yield f"sqs://k:s@127.0.0.1:{server.port}", dict(SQS_TRANSPORT_OPTIONS)
    finally:
        server.stop()


# --- instances, driven by the sandbox's lifecycle runner -------------------------------------------


@dataclass
class HookRun:
    """One lifecycle event's script as the runner ran it: `output` is what the event's log got this time."""

    event: str
    returncode: int | None  # None: the runner stopped the script (timeout), see `message`
    output: str
    seconds: float
    started_at: float = 0.0  # wall clock (time.time()), to line up with the worker's log
    message: str = ""

    def check(self) -> HookRun:
        assert self.returncode == 0, f"{self.event} failed ({self.returncode}: {self.message}):\n{self.output}"
        return self


class HookTestRunner(LifecycleRunner):
    """The sandbox's LifecycleRunner; only the hook environment can differ, through its public hook_env:
    `path_prefix` goes in front of PATH (a stand-in systemctl) and `process_manager="systemd"` leaves out
    DEPLOYTOOL_PROCESS_MANAGER=direct, so the hooks take the production path."""

    def __init__(self, instance: SandboxInstance, *, path_prefix: str, process_manager: str, timing: Timing) -> None:
        super().__init__(instance, python=PYTHON, timing=timing)
        self.path_prefix = path_prefix
        self.process_manager = process_manager

    def hook_env(self, event: str, spec: DeploymentSpec) -> dict[str, str]:
        env = super().hook_env(event, spec)
        env["PATH"] = self.path_prefix + env["PATH"]
        # No metadata service unless the instance's env file names one (tests/test_interruptions.py): the watcher
        # ApplicationStart starts then says "not on EC2" and exits, whatever network this machine is on.
        env["DEPLOYTOOL_IMDS_ENDPOINT"] = "http://127.0.0.1:1"
        env["DEPLOYTOOL_S3_ENDPOINT"] = "http://127.0.0.1:1"  # nor S3: a watcher's record never leaves the machine
        env.setdefault("DEPLOYTOOL_CLOUDWATCH_ENDPOINT", "http://127.0.0.1:1")  # nor the workers' telemetry
        if self.process_manager != "direct":
            del env["DEPLOYTOOL_PROCESS_MANAGER"]
        return env


SCRIPT_EVENTS = ("ApplicationStop", "ApplicationStart", "ValidateService")  # the events the bundle has scripts for
EXIT_CODE = re.compile(r"failed with exit code (-?\d+)$")


@dataclass
class Instance:
    """One sandbox instance: a directory standing for the root file system of an EC2 instance, deployed to by
    deploytool.sandbox.runner.LifecycleRunner (the agent's events, records, archives and logs)."""

    root: Path
    instance_id: str
    group: str
    app: Mapping[str, Any]
    reaper: ProcessReaper
    runs: list[HookRun] = field(default_factory=list)
    process_manager: str = "direct"
    path_prefix: str = ""

    @property
    def install_dir(self) -> Path:
        return Path(str(self.root) + str(self.app["install_dir"]))

    @property
    def env_file(self) -> Path:
        return Path(str(self.root) + str(self.app["env_file"]))

    @property
    def pidfile(self) -> Path:
        return self.install_dir / "run" / "worker.pid"

    @property
    def worker_log(self) -> Path:
        return self.install_dir / "log" / "worker.log"

    @property
    def group_id(self) -> str:
        return f"dg-{self.group}"

    @property
    def sandbox(self) -> SandboxInstance:
        return SandboxInstance(self.group, self.instance_id, self.root)

    def runner(self, timing: Timing = DEFAULT_TIMING) -> HookTestRunner:
        return HookTestRunner(
            self.sandbox, path_prefix=self.path_prefix, process_manager=self.process_manager, timing=timing
        )

    @property
    def previous(self) -> Path | None:
        """The archive of the revision last installed here (the agent's last-successful-install record)."""
        root = self.runner().last_installed(self.group_id)
        return root / "deployment-archive" if root is not None else None

    @previous.setter
    def previous(self, archive: Path) -> None:
        record = self.sandbox.instructions_dir / f"{self.group_id}_last_successful_install"
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(self.sandbox.shown(archive.parent) + "\n")

    def worker_pid(self) -> int | None:
        """The pid in the pidfile if it is a live worker launched by the hooks (not any reused pid)."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if not any(part.endswith(b"/celery_worker.py") for part in cmdline) or not process_alive(pid):
            return None
        return pid

    def watcher_pid(self) -> int | None:
        """The interruption watcher ApplicationStart started (celery_hooks.py watch), if it runs."""
        try:
            pid = int((self.install_dir / "run" / "watcher.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if b"watch" in cmdline and process_alive(pid) else None

    def write_env(
        self,
        broker_url: str,
        transport_options: Mapping[str, Any] | None,
        ledger: Path,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        lines = [f"CELERY_BROKER_URL={broker_url}", f"ACME_LEDGER={ledger}"]
        lines += [f"{key}={value}" for key, value in (extra or {}).items()]
        if transport_options:
            lines.append(f"CELERY_BROKER_TRANSPORT_OPTIONS='{json.dumps(dict(transport_options))}'")
        self.env_file.parent.mkdir(parents=True, exist_ok=True)
        self.env_file.write_text("# written by tests/hooktools.py\n" + "\n".join(lines) + "\n")

    def spec(self, deployment_id: str, bundle: Path | None = None) -> DeploymentSpec:
        return DeploymentSpec(deployment_id, str(self.app["name"]), self.group, self.group_id, bundle_file=bundle)

    def archive(self, bundle: Path, deployment_id: str) -> Path:
        """A bundle directory placed where the agent unpacks a deployment's bundle, as DownloadBundle would."""
        target = self.sandbox.deployment_root / self.group_id / deployment_id / "deployment-archive"
        if target != bundle:
            shutil.copytree(bundle, target, symlinks=True)
        return target

    def run(
        self, deployment_id: str, events: Sequence[str], *, bundle: Path | None = None, timing: Timing = DEFAULT_TIMING
    ) -> list[HookRun]:
        """Run `events` of one deployment through the lifecycle runner; a HookRun per event that ran scripts."""
        logs = self.sandbox.logs_dir(deployment_id)
        offsets = {event: _size(logs / f"{event}.log") for event in events}
        started_at = time.time()
        result = self.runner(timing).run(self.spec(deployment_id, bundle), events=events)
        runs: list[HookRun] = []
        for event in result.events:
            if event.event not in SCRIPT_EVENTS or event.status == "Skipped":
                continue
            output = _read_from(logs / f"{event.event}.log", offsets[event.event])
            if event.status == "Succeeded":
                code: int | None = 0
            else:
                found = EXIT_CODE.search(event.message)
                code = int(found.group(1)) if found else None
            runs.append(HookRun(event.event, code, output, event.duration_s, started_at, event.message))
        self.runs += runs
        pid = self.worker_pid()
        if pid is not None:
            self.reaper.add_group(pid)
        watcher = self.watcher_pid()
        if watcher is not None:
            self.reaper.add_group(watcher)
        return runs

    def run_hook(self, bundle: Path, event: str, timeout: float, deployment_id: str) -> HookRun:
        """One event's scripts from `bundle` (an archive of an earlier deployment, or a bundle directory,
        then placed as deployment `deployment_id`), within `timeout` seconds."""
        if bundle.parent.parent.parent == self.sandbox.deployment_root:
            deployment_id = bundle.parent.name  # the runner finds an archive by its deployment id
        else:
            self.archive(bundle, deployment_id)
        runs = self.run(deployment_id, (event,), timing=Timing(event_limit_s=timeout, kill_grace_s=60.0))
        assert len(runs) == 1, f"{event}: the runner ran no script"
        return runs[0]

    def stop(self, timeout: float | None = None, deployment_id: str = "d-TESTSTOP0") -> HookRun | None:
        """ApplicationStop from the last installed revision (none on the first deployment)."""
        timing = Timing(event_limit_s=timeout, kill_grace_s=60.0) if timeout is not None else DEFAULT_TIMING
        runs = self.run(deployment_id, ("ApplicationStop",), timing=timing)
        return runs[0] if runs else None

    def install(self, archive: Path) -> None:
        """Copy a bundle into releases/<version> without the agent (a half-done deployment for a test)."""
        version = json.loads((archive / "deploytool" / "fleet.json").read_text())["version"]
        destination = self.install_dir / "releases" / version
        shutil.copytree(archive, destination, symlinks=True, dirs_exist_ok=True)

    def start(self, archive: Path, deployment_id: str) -> HookRun:
        return self.run_hook(archive, "ApplicationStart", START_TIMEOUT_S, deployment_id)

    def validate(self, archive: Path, deployment_id: str) -> HookRun:
        return self.run_hook(archive, "ValidateService", VALIDATE_TIMEOUT_S, deployment_id)

    def deploy(self, bundle: Path, stop_timeout: float | None = None) -> list[HookRun]:
        """One in-place deployment of a bundle directory through the runner: every lifecycle event in the
        agent's order, stopping at the first failing one. `stop_timeout` cuts ApplicationStop short (the
        runner SIGTERMs the hook as the agent does when the script's timeout runs out)."""
        deployment_id = "d-" + uuid.uuid4().hex[:9].upper()
        tarball = bundle_tar(bundle)
        events: tuple[str, ...] = LIFECYCLE_EVENTS
        runs: list[HookRun] = []
        if stop_timeout is not None:
            runs = self.run(deployment_id, ("ApplicationStop",), timing=Timing(stop_timeout, kill_grace_s=60.0))
            if any(run.returncode != 0 for run in runs):
                return runs
            events = tuple(event for event in LIFECYCLE_EVENTS if event != "ApplicationStop")
        return runs + self.run(deployment_id, events, bundle=tarball)


def bundle_tar(bundle: Path) -> Path:
    """The bundle directory as the tar file the runner's DownloadBundle unpacks (made once, beside it)."""
    tarball = bundle.with_name(bundle.name + ".tar")
    if not tarball.exists():
        with tarfile.open(tarball, "w") as tar:
            for path in sorted(bundle.iterdir()):
                tar.add(path, arcname=path.name)
    return tarball


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def make_instances(
    base: Path, group: str, count: int, app: Mapping[str, Any], reaper: ProcessReaper, tag: str
) -> list[Instance]:
    return [
        Instance(root=base / f"{group}-{n}", instance_id=f"i-{tag}{n:02d}", group=group, app=app, reaper=reaper)
        for n in range(count)
    ]


# --- load and ledger --------------------------------------------------------------------------------


@dataclass
class Submitted:
    task_id: str
    name: str
    queue: str
    seconds: float


class Load:
    """Sends sample-app tasks through a plain Celery client and reads what the workers recorded."""

    def __init__(self, broker_url: str, transport_options: Mapping[str, Any] | None, ledger: Path) -> None:
        from celery import Celery

        self.client = Celery("hooktools-load", set_as_current=False)
        self.client.conf.update(
            broker_url=broker_url,
            broker_transport_options=dict(transport_options or {}),
            task_create_missing_queues=True,
        )
        self.ledger = ledger
        self.submitted: list[Submitted] = []

    def send(self, name: str, queue: str, seconds: float) -> Submitted:
        task = f"acme_workers.tasks.{name}"
        first = 0 if name == "send_email" else len(self.submitted)
        args: list[Any] = [f"user{first}@example.com" if name == "send_email" else first, seconds]
        result = self.client.send_task(task, args=args, queue=queue, ignore_result=True)
        item = Submitted(result.id, name, queue, seconds)
        self.submitted.append(item)
        return item

    def send_many(self, count: int, queues: Sequence[str], low: float, high: float, seed: int = 7) -> None:
        """`count` build_report tasks round-robin over `queues` (repeat a queue to weigh it), durations in
        [low, high] skewed to short ones (low + (high - low) * u**3: mean about a quarter of the way)."""
        rng = random.Random(seed)
        with self.client.producer_or_acquire() as producer:
            for n in range(count):
                seconds = round(low + (high - low) * rng.random() ** 3, 3)
                queue = queues[n % len(queues)]
                result = self.client.send_task(
                    "acme_workers.tasks.build_report",
                    args=[n, seconds],
                    queue=queue,
                    ignore_result=True,
                    producer=producer,
                )
                self.submitted.append(Submitted(result.id, "build_report", queue, seconds))

    def ledger_lines(self) -> list[list[str]]:
        try:
            text = self.ledger.read_text()
        except FileNotFoundError:
            return []
        return [line.split() for line in text.splitlines() if line.strip()]

    def runs(self) -> collections.Counter[str]:
        return collections.Counter(parts[0] for parts in self.ledger_lines())

    def releases(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = collections.defaultdict(list)
        for parts in self.ledger_lines():
            found[parts[0]].append(parts[2])
        return found

    def wait_done(self, timeout: float, ids: Iterable[str] | None = None) -> tuple[int, int, int]:
        """(completed, lost, duplicates) once every task ran or the timeout passed."""
        wanted = set(ids) if ids is not None else {s.task_id for s in self.submitted}
        until = time.monotonic() + timeout
        while True:
            runs = self.runs()
            done = {task_id for task_id in wanted if runs[task_id] > 0}
            if len(done) == len(wanted) or time.monotonic() >= until:
                duplicates = sum(runs[task_id] - 1 for task_id in done)
                return len(done), len(wanted) - len(done), duplicates
            time.sleep(0.2)

    def close(self) -> None:
        self.client.close()


def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    until = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= until:
            return False
        time.sleep(interval)
    return True


def log_lines(run: HookRun, step: str) -> list[str]:
    return [line for line in run.output.splitlines() if f" {step}" in line]


def uid() -> str:
    return uuid.uuid4().hex[:8]


def iter_runs(instances: Iterable[Instance]) -> Iterator[HookRun]:
    for instance in instances:
        yield from instance.runs


def fake_systemctl_on_path(bin_dir: Path) -> str:
    """A directory holding `systemctl` = tests/fake_systemctl.py; the PATH prefix that puts it first."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "systemctl"
    wrapper.write_text(f'#!/bin/sh\nexec "{PYTHON}" "{ROOT / "tests" / "fake_systemctl.py"}" "$@"\n')
    wrapper.chmod(0o755)
    return f"{bin_dir}{os.pathsep}"


def delete_broker_queues(broker_url: str, queues: Sequence[str]) -> None:
    """Remove what a run left for `queues` on a shared Redis or RabbitMQ (SQS runs use their own moto)."""
    if broker_url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(broker_url)
        try:
            for queue in queues:
                for key in client.scan_iter(match=f"*{queue}*"):
                    client.delete(key)
        finally:
            client.close()
    elif broker_url.startswith(("amqp://", "amqps://", "pyamqp://")):
        from kombu import Connection

        with Connection(broker_url) as connection:
            channel = connection.channel()
            for queue in queues:
                channel.queue_delete(queue)
                channel.exchange_delete(queue)
