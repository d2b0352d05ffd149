"""SandboxSession: start the sandbox, hand out its parts, and stop EVERYTHING it started.

Contract: entering the session (1) stops what an earlier, killed run may have left (its moto server
by pidfile, its workers by their pidfiles, hook process groups it recorded) and clears the
sandbox root's own subdirectories (OWN_DIRS, each only when it carries deploytool's marker file,
see deploytool.owned: one without it is refused before anything is stopped or deleted, and they are
made anew with the marker), (2) starts a moto server on a free loopback port, builds an AwsSession
pointing at it, creates the artifacts bucket, and starts the fake instance metadata service
(deploytool.sandbox.imds), (3) provisions the fleet (one ASG per group, instance dirs with env files that
name each instance's IMDS endpoint) and builds the `local` backend. Leaving it (normally, on an
error, on Ctrl-C, on SIGTERM/SIGHUP, or at interpreter exit) stops running deployments and their
scripts, then every interruption watcher and worker through `{install_dir}/run/watcher.pid` and
`run/worker.pid` of every instance (SIGTERM; a worker gets SIGQUIT after a grace; never by name), then the
fake IMDS and the moto server. `detach()` leaves everything running
for `fab hooks` (sandbox-up); `attach(fleet)` gives the rollout tasks the `local` backend of such a
running sandbox; `stop_sandbox(root)` stops it (sandbox-down).

Layout of the root (the target's `root`, default .sandbox): instances/<group>/<instance-id>/,
state/ (service-side records), run/ (moto.pid, imds.pid, sandbox.json, pids.txt: moto, imds, hooks, workers and
watchers, PidRecord), logs/ (moto.log, imds.log), and for the sandbox run work/ (its git work tree), dist/
(its bundles), load/ (the ids of the tasks it submitted).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from deploytool.aws.local import local_session
from deploytool.aws.s3 import S3Gateway
from deploytool.aws.session import AwsSession
from deploytool.aws.sqs import SqsGateway
from deploytool.aws.versions import require_botocore
from deploytool.config import App, Fleet, LocalTarget
from deploytool.errors import UsageError
from deploytool.owned import check_owned, fresh_owned
from deploytool.sandbox.appspec import FileExistsBehavior
from deploytool.sandbox.backend import LocalBackend
from deploytool.sandbox.clock import SYSTEM_CLOCK, Clock
from deploytool.sandbox.fleet import Broker, SandboxFleet, sandbox_broker
from deploytool.sandbox.imds import IMDS_MARKER, ImdsServer
from deploytool.sandbox.instance import Instance
from deploytool.sandbox.motoserver import MotoServer, recorded, stop_recorded
from deploytool.sandbox.procs import (
    PidRecord,
    group_members,
    pid_alive,
    read_pidfile,
    runs_script,
    signal_group,
    stop_worker,
    wait_gone,
)
from deploytool.sandbox.runner import DEFAULT_TIMING, Timing
from deploytool.sandbox.state import SandboxState, write_json_atomic

Log = Callable[[str], None]
OWN_DIRS = ("instances", "state", "run", "logs", "work", "load", "dist")


def local_target(fleet: Fleet, name: str | None) -> tuple[str, LocalTarget]:
    chosen, target = fleet.target(name)
    if not isinstance(target, LocalTarget):
        raise UsageError(f"target {chosen!r} uses backend {target.backend!r}; the sandbox needs a 'local' target")
    return chosen, target


def sandbox_root(fleet: Fleet, target: LocalTarget) -> Path:
    return (fleet.root / target.root).resolve()


WATCHER_STOP_S = 5.0
WATCHER_ARGV = ("celery_hooks.py", "watch")  # how an instance's interruption watcher runs (ApplicationStart)


def stop_workers(instances: Sequence[Instance], app: App, *, grace_s: float, clock: Clock, log: Log) -> int:
    """Stop every interruption watcher, then every worker, whose pidfile names a live process, and every worker
    still finishing after a hand-off (the workers in parallel). Returns how many workers."""
    watchers = [p for i in instances if (p := read_pidfile(i.watcher_pidfile(app))) and runs_script(p, *WATCHER_ARGV)]
    for watcher in watchers:  # SIGTERM ends a watch at once (one in the middle of a drain cold-stops its worker first)
        os.kill(watcher, signal.SIGTERM)
    for watcher in wait_gone(watchers, WATCHER_STOP_S, clock):
        os.kill(watcher, signal.SIGKILL)
    pids = [(i, pid) for i in instances if (pid := read_pidfile(i.worker_pidfile(app))) and pid_alive(pid)]
    pids += [(i, pid) for i in instances for pid in i.draining_workers(app) if (i, pid) not in pids]
    if not pids:
        return 0
    log(f"stopping {len(pids)} worker(s): SIGTERM, SIGQUIT after {grace_s:g} s")
    with ThreadPoolExecutor(max_workers=min(16, len(pids))) as pool:
        list(pool.map(lambda ip: stop_worker(ip[1], grace_s=grace_s, clock=clock, log=log), pids))
    return len(pids)


def find_instance(root: Path, target: str, instance_id: str) -> Instance:
    """A running sandbox's instance by id, or a UsageError naming the ones there are."""
    if read_sandbox_info(root) is None or recorded(root / "run" / "moto.pid") is None:
        raise UsageError(f"no sandbox is running for target {target!r}: run `fab sandbox-up` first")
    instances = _instances_on_disk(root)
    for instance in instances:
        if instance.instance_id == instance_id:
            return instance
    known = ", ".join(i.instance_id for i in instances) or "none"
    raise UsageError(f"--instance {instance_id}: no such instance in the sandbox of target {target!r}; it has: {known}")


def _instances_on_disk(root: Path) -> list[Instance]:
    return [Instance(d.parent.name, d.name, d) for d in sorted((root / "instances").glob("*/i-*")) if d.is_dir()]


def _stop_recorded_hooks(root: Path, log: Log) -> None:
    """Process groups of hook scripts an earlier run recorded and left running (it was killed)."""
    for pid, kind in PidRecord(root / "run" / "pids.txt").pids():
        if kind != "hook" or not group_members(pid):
            continue
        try:  # the pid may have been reused: only a process working inside this sandbox is ours
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd.startswith(str(root / "instances")):
            log(f"stopping the hook process group {pid} left by an earlier run")
            signal_group(pid, signal.SIGKILL)


def stop_sandbox(
    root: Path, app: App, *, grace_s: float = 10.0, clock: Clock = SYSTEM_CLOCK, log: Log = lambda _: None
) -> None:
    """Stop what a sandbox under `root` left running: hooks, workers (by pidfile), its moto server."""
    _stop_recorded_hooks(root, log)
    stop_workers(_instances_on_disk(root), app, grace_s=grace_s, clock=clock, log=log)
    stop_recorded(root / "run" / "imds.pid", clock, marker=IMDS_MARKER)
    if stop_recorded(root / "run" / "moto.pid", clock):
        log("stopped the moto server")


class SandboxSession:
    def __init__(
        self,
        fleet: Fleet,
        *,
        target: str | None = None,
        root: Path | None = None,
        groups: Sequence[str] | None = None,
        timing: Timing = DEFAULT_TIMING,
        clock: Clock = SYSTEM_CLOCK,
        worker_stop_grace_s: float = 10.0,
        file_exists_behavior: FileExistsBehavior = "DISALLOW",
        log: Log = lambda _: None,
        handle_signals: bool = True,
    ) -> None:
        self.config = fleet
        self.target_name, self.target = local_target(fleet, target)
        self.root = root or sandbox_root(fleet, self.target)
        self.groups = fleet.select_groups(groups)
        self.timing = timing
        self.clock = clock
        self.worker_stop_grace_s = worker_stop_grace_s
        self.file_exists_behavior: FileExistsBehavior = file_exists_behavior
        self.log = log
        self.handle_signals = handle_signals
        self.record = PidRecord(self.root / "run" / "pids.txt")
        self.moto: MotoServer | None = None
        self.imds: ImdsServer | None = None
        self._aws: AwsSession | None = None
        self._backend: LocalBackend | None = None
        self._fleet: SandboxFleet | None = None
        self._closed = False
        self._detached = False
        self._old_handlers: dict[int, Any] = {}

    # --- the parts ---------------------------------------------------------------------------

    @property
    def backend(self) -> LocalBackend:
        if self._backend is None:
            raise RuntimeError("the sandbox session is not started")
        return self._backend

    @property
    def fleet(self) -> SandboxFleet:
        if self._fleet is None:
            raise RuntimeError("the sandbox session is not started")
        return self._fleet

    @property
    def aws(self) -> AwsSession:
        """The AwsSession on the sandbox's moto server (every gateway the tool uses can be built on it)."""
        if self._aws is None:
            raise RuntimeError("the sandbox session is not started")
        return self._aws

    @property
    def s3(self) -> S3Gateway:
        return self.backend.s3

    @property
    def work_dir(self) -> Path:
        return self.root / "work"

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> SandboxSession:
        self._check_own_dirs()  # a refusal stops nothing and deletes nothing
        require_botocore()  # nor does a botocore older than the floor
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        self._install_signal_handlers()
        atexit.register(self.close)
        self._check_own_dirs()
        stop_sandbox(self.root, self.config.app, grace_s=self.worker_stop_grace_s, clock=self.clock, log=self.log)
        for name in OWN_DIRS:
            fresh_owned(self.root / name, f"sandbox {name}/ of target {self.target_name}", hint=self._hint)
        self.log("starting the moto server (S3, EC2, Auto Scaling, SQS)")
        self.moto = MotoServer(
            log_path=self.root / "logs" / "moto.log",
            pidfile=self.root / "run" / "moto.pid",
            clock=self.clock,
            record=self.record,
        ).start()
        self.imds = imds = ImdsServer(
            root=self.root / "instances",
            log_path=self.root / "logs" / "imds.log",
            pidfile=self.root / "run" / "imds.pid",
            clock=self.clock,
            record=self.record,
        ).start()
        region = self.config.aws.region
        self._aws = local_session(region=region, endpoint_url=self.moto.url)
        s3 = S3Gateway.for_artifacts(self._aws, self.config.artifacts)
        s3.create_bucket(self.config.artifacts.bucket, region)
        sizes = {g.name: self.target.instance_count(g.name) for g in self.groups}
        self._fleet = SandboxFleet(
            self.config,
            root=self.root / "instances",
            aws=self._aws,
            broker=sandbox_broker(self.target, region=region, moto_port=self.moto.port),
            sizes=sizes,
            imds_url=imds.url,
        )
        self.log(f"provisioning {sum(sizes.values())} instances in {len(sizes)} Auto Scaling groups")
        self._fleet.provision()
        state = SandboxState(self.root / "state", self.config.app.name)
        self._backend = LocalBackend(
            self._fleet,
            state,
            s3=s3,
            app=self.config.app,
            timing=self.timing,
            clock=self.clock,
            record=self.record,
            file_exists_behavior=self.file_exists_behavior,
            worker_stop_grace_s=self.worker_stop_grace_s,
        )
        write_json_atomic(
            self.root / "run" / "sandbox.json",
            {
                "endpoint": self.moto.url,
                "imds": imds.url,
                "region": region,
                "target": self.target_name,
                "broker": self._fleet.broker.url,
                "broker_transport_options": dict(self._fleet.broker.transport_options),
                "groups": {g.name: g.asg for g in self.groups},
                "sizes": sizes,
            },
        )

    @property
    def _hint(self) -> str:
        return f"move it away or choose another targets.{self.target_name}.root"

    def _check_own_dirs(self) -> None:
        for name in OWN_DIRS:  # all of them before anything is stopped or deleted
            check_owned(self.root / name, hint=self._hint)

    def queue_depth(self, queues: Sequence[str]) -> Callable[[], tuple[int, int]] | None:
        """(waiting, in flight) summed over the queues, when the broker is the sandbox's SQS."""
        if self._aws is None or self.target.broker != "sqs":
            return None
        gateway = SqsGateway(self._aws)

        def depth() -> tuple[int, int]:
            found = gateway.depths(queues).values()
            return sum(d.visible for d in found), sum(d.in_flight for d in found)

        return depth

    def detach(self) -> None:
        """Leave the moto server and the workers running (sandbox-up); stop_sandbox() ends them."""
        self._detached = True
        self._restore_signal_handlers()

    def close(self) -> None:
        if self._closed or self._detached:
            return
        self._closed = True
        shield = self._shield_signals()
        try:
            if self._backend is not None:
                self._backend.shutdown()
            stop_workers(
                _instances_on_disk(self.root),
                self.config.app,
                grace_s=self.worker_stop_grace_s,
                clock=self.clock,
                log=self.log,
            )
            if self.imds is not None:
                self.imds.stop()
            if self.moto is not None:
                self.moto.stop()
                self.log("stopped the moto server")
        finally:
            if shield:
                self._restore_signal_handlers()
            atexit.unregister(self.close)

    # --- signals: Ctrl-C, SIGTERM and SIGHUP all end in close() ------------------------------------

    def _install_signal_handlers(self) -> None:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, _interrupt)

    def _shield_signals(self) -> bool:
        """While stopping, a second Ctrl-C must not leave processes behind: say so and go on."""
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return False
        log = self.log

        def still_stopping(signum: int, frame: FrameType | None) -> None:
            log("still stopping the sandbox's processes; please wait")

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._old_handlers.setdefault(sig, signal.getsignal(sig))
            signal.signal(sig, still_stopping)
        return True

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers.clear()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def read_sandbox_info(root: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((root / "run" / "sandbox.json").read_text()))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Attached:
    aws: AwsSession  # on the running sandbox's moto server: for the release store, tags, reconcile
    backend: LocalBackend


def attach(
    fleet: Fleet, target: str | None = None, *, timing: Timing = DEFAULT_TIMING, worker_stop_grace_s: float = 10.0
) -> Attached:
    """The AWS session and `local` backend of a sandbox that `fab sandbox-up` left running, for the
    rollout tasks (fab deploy / restart / rollback / status / reconcile --fix on a local target).

    Deployments run in the calling process (its threads run the hooks), so they cannot outlive it:
    the rollout tasks never detach from them (deploytool.targets). The group records (last
    successful revision, finished deployments) are on disk, so they carry over from one task to the next.
    """
    name, local = local_target(fleet, target)
    root = sandbox_root(fleet, local)
    info = read_sandbox_info(root)
    if info is None or recorded(root / "run" / "moto.pid") is None:
        raise UsageError(f"no sandbox is running for target {name!r}: run `fab sandbox-up` first")
    aws = local_session(region=str(info["region"]), endpoint_url=str(info["endpoint"]))
    sandbox_fleet = SandboxFleet(
        fleet,
        root=root / "instances",
        aws=aws,
        broker=Broker(str(info["broker"]), dict(info.get("broker_transport_options") or {})),
        sizes={str(k): int(v) for k, v in dict(info.get("sizes") or {}).items()},
        imds_url=str(info["imds"]) if info.get("imds") else None,
    )
    backend = LocalBackend(
        sandbox_fleet,
        SandboxState(root / "state", fleet.app.name),
        s3=S3Gateway.for_artifacts(aws, fleet.artifacts),
        app=fleet.app,
        timing=timing,
        record=PidRecord(root / "run" / "pids.txt"),
        worker_stop_grace_s=worker_stop_grace_s,
    )
    return Attached(aws, backend)
