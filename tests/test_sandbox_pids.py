"""run/pids.txt records every process the sandbox starts, the workers included: the hooks start a
worker (and write its pidfile) in ApplicationStart; the backend adds it to the record, so a worker
replaced by the next release stays findable after its pidfile names the new one."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploytool.aws.s3 import S3Gateway
from deploytool.aws.session import AwsSession
from deploytool.rollout.backend import DeployRequest
from deploytool.sandbox.procs import PidRecord, pid_alive, read_pidfile
from tests.builders import make_fleet, sandbox_target
from tests.sandbox_helpers import FIXTURE_APP, appspec, aws, kill_if_alive, make_backend, sh, upload, write_bundle

__all__ = ["aws"]

pytestmark = pytest.mark.slow  # hooks start real worker processes

PIDFILE = '"$DEPLOYTOOL_INSTANCE_ROOT/opt/fixture/run/worker.pid"'


def worker_bundle(path: Path) -> Path:
    """ApplicationStop stops the worker of its pidfile; ApplicationStart starts one (a sleep, in its own session)."""
    return write_bundle(
        path,
        {
            "hooks/stop.sh": sh(f'[ -f {PIDFILE} ] && kill "$(cat {PIDFILE})"\nrm -f {PIDFILE}\nexit 0'),
            "hooks/start.sh": sh(
                f'mkdir -p "$(dirname {PIDFILE})"\nsetsid sleep 300 </dev/null >/dev/null 2>&1 &\necho $! > {PIDFILE}'
            ),
            "appspec.yml": appspec({"ApplicationStop": "hooks/stop.sh", "ApplicationStart": "hooks/start.sh"}),
        },
    )


def test_every_worker_the_hooks_start_is_in_the_pid_record(tmp_path: Path, aws: AwsSession) -> None:
    fleet = make_fleet(["web"], root=tmp_path, app=FIXTURE_APP, targets=sandbox_target({"web": 1}))
    root = tmp_path / "sb"
    backend = make_backend(fleet, aws, root)
    record = backend.record = PidRecord(root / "run" / "pids.txt")
    (instance,) = backend.fleet.instances(fleet.group("web"))
    pidfile = instance.worker_pidfile(fleet.app)
    workers: list[int] = []
    try:
        for version in ("v1", "v2"):
            revision = upload(S3Gateway(aws), worker_bundle(tmp_path / f"{version}.tgz"), version)
            did = backend.start(DeployRequest(fleet.group("web"), revision, release_id=f"r-{version}"))
            assert backend.wait(did, 60).status == "Succeeded"
            pid = read_pidfile(pidfile)
            assert pid is not None and pid_alive(pid)
            workers.append(pid)
        first, second = workers
        assert first != second and not pid_alive(first)  # v2's ApplicationStop stopped v1's worker
        recorded = [(pid, kind) for pid, kind in record.pids() if kind == "worker"]
        assert recorded == [(first, "worker"), (second, "worker")]  # each once, in start order
        line = next(line for line in record.path.read_text().splitlines() if line.startswith(f"{second} "))
        assert line == f"{second} worker {instance.instance_id} /opt/fixture/run/worker.pid"
    finally:
        backend.shutdown()
        recorded_workers = [pid for pid, kind in record.pids() if kind == "worker"]
        for pid in {*workers, *recorded_workers, read_pidfile(pidfile) or 0} - {0}:
            kill_if_alive(pid)
