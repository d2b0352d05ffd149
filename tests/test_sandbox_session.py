"""The sandbox session: a real moto server, provisioning through the production gateways, and
teardown of everything it started (also on Ctrl-C, checked by pid)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from deploytool.aws.autoscaling import AutoScalingGateway
from deploytool.aws.ec2 import Ec2Gateway
from deploytool.errors import UsageError
from deploytool.rollout.backend import DeployRequest
from deploytool.sandbox.motoserver import MotoServer
from deploytool.sandbox.procs import PidRecord, pid_alive, read_pidfile, wait_gone
from deploytool.sandbox.session import SandboxSession
from tests.builders import make_fleet, sandbox_target
from tests.conftest import ROOT
from tests.sandbox_driver import WORKER
from tests.sandbox_helpers import FIXTURE_APP, kill_if_alive, sh, upload, write_bundle


@pytest.mark.slow
def test_moto_server_starts_on_a_free_port_and_stops(tmp_path: Path) -> None:
    server = MotoServer(log_path=tmp_path / "moto.log", pidfile=tmp_path / "moto.pid").start()
    recorded_pid = int((tmp_path / "moto.pid").read_text().split()[0])
    try:
        assert server.url.startswith("http://127.0.0.1:") and pid_alive(recorded_pid)
    finally:
        server.stop()
    assert not wait_gone([recorded_pid], 5) and not (tmp_path / "moto.pid").exists()


@pytest.mark.slow
def test_session_provisions_the_fleet_and_stops_everything_it_started(tmp_path: Path) -> None:
    fleet = make_fleet(
        ["email", {"name": "video", "strategy": "AllAtOnce"}],
        root=tmp_path,
        app=FIXTURE_APP,
        targets=sandbox_target({"email": 2, "video": 3}),
    )
    bundle = write_bundle(
        tmp_path / "v1.tgz",
        {
            "hooks/start.sh": sh(WORKER),
            "appspec.yml": "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: hooks/start.sh\n",
        },
    )
    workers: list[int] = []
    with SandboxSession(fleet, worker_stop_grace_s=1) as sandbox:
        assert sandbox.aws.endpoint_url == sandbox.moto.url  # type: ignore[union-attr]
        buckets = sandbox.aws.client("s3").list_buckets()["Buckets"]  # on the moto server, not AWS
        assert [b["Name"] for b in buckets] == [fleet.artifacts.bucket]
        asgs = AutoScalingGateway(sandbox.aws).describe_groups(["asg-email", "asg-video"])
        assert {name: len(info.instances) for name, info in asgs.items()} == {"asg-email": 2, "asg-video": 3}
        video_ids = [i.instance_id for i in asgs["asg-video"].instances]
        tags = Ec2Gateway(sandbox.aws).describe_instances(video_ids)[0].tags
        assert tags["deploytool:group"] == "video"
        env_file = sandbox.root / "instances/video" / video_ids[0] / "etc/fixture-app/worker.env"
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        assert env["CELERY_BROKER_URL"] == f"sqs://sandbox:sandbox@127.0.0.1:{sandbox.moto.port}"  # type: ignore[union-attr]
        assert json.loads(env["CELERY_BROKER_TRANSPORT_OPTIONS"])["is_secure"] is False
        assert env["ACME_LEDGER"] == str(sandbox.root / "instances/video" / video_ids[0] / "ledger.log")

        revision = upload(sandbox.s3, bundle, "v1")
        snap = sandbox.backend.wait(sandbox.backend.start(DeployRequest(fleet.group("video"), revision, "r1")), 60)
        assert snap.all_succeeded, snap.error
        for iid in video_ids:
            pid = read_pidfile(sandbox.root / "instances/video" / iid / "opt/fixture/run/worker.pid")
            assert pid is not None and pid_alive(pid)
            workers.append(pid)
        moto_pid = sandbox.moto.process.pid  # type: ignore[union-attr]
    try:
        assert not pid_alive(moto_pid)
        assert [p for p in workers if pid_alive(p)] == []  # they ignore SIGTERM: SIGQUIT stopped them
    finally:
        for pid in workers:
            kill_if_alive(pid)


@pytest.mark.slow
def test_ctrl_c_in_the_middle_leaves_no_process_behind(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.sandbox_driver", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    recorded: list[int] = []
    try:
        assert process.stdout is not None
        lines: list[str] = []
        for line in process.stdout:
            lines.append(line)
            if line.strip() == "READY":
                break
        else:
            pytest.fail("the driver ended before READY:\n" + "".join(lines))
        root = tmp_path / "sb"
        recorded = [pid for pid, _kind in PidRecord(root / "run/pids.txt").pids()]
        recorded += [p for f in root.glob("instances/*/*/opt/fixture/run/worker.pid") if (p := read_pidfile(f))]
        alive = [pid for pid in recorded if pid_alive(pid)]
        assert len(alive) >= 5, f"expected moto, 2 workers and 2 hanging hooks, got {alive}"
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 130, out
        assert "interrupted" in out
        assert [pid for pid in recorded if pid_alive(pid)] == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in recorded:
            kill_if_alive(pid)


@pytest.mark.slow
def test_a_detached_sandbox_can_be_attached_to_deployed_and_stopped(tmp_path: Path) -> None:
    from deploytool.sandbox.session import attach, stop_sandbox

    fleet = make_fleet(
        [{"name": "email", "strategy": "AllAtOnce"}],
        root=tmp_path,
        app=FIXTURE_APP,
        targets=sandbox_target({"email": 2}),
    )
    with pytest.raises(UsageError) as none_running:
        attach(fleet)
    assert str(none_running.value) == "no sandbox is running for target 'sandbox': run `fab sandbox-up` first"
    session = SandboxSession(fleet, worker_stop_grace_s=1, handle_signals=False)
    with session:
        session.detach()
    moto_pid = session.moto.process.pid  # type: ignore[union-attr]
    workers: list[int] = []
    try:
        assert pid_alive(moto_pid)  # detached: still running after the session closed
        attached = attach(fleet, worker_stop_grace_s=1)
        backend = attached.backend
        assert attached.aws.endpoint_url == session.moto.url  # type: ignore[union-attr]
        bundle = write_bundle(
            tmp_path / "v1.tgz",
            {
                "hooks/start.sh": sh(WORKER),
                "appspec.yml": "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: hooks/start.sh\n",
            },
        )
        revision = upload(backend.s3, bundle, "v1")
        snap = backend.wait(backend.start(DeployRequest(fleet.group("email"), revision, "r1")), 60)
        assert snap.all_succeeded, snap.error
        workers = [p for f in session.root.glob("instances/*/*/opt/fixture/run/worker.pid") if (p := read_pidfile(f))]
        assert len(workers) == 2
        assert attach(fleet).backend.group_state(fleet.group("email")).last_successful_version == "v1"  # on disk
        stop_sandbox(session.root, fleet.app, grace_s=1)
        assert wait_gone([moto_pid, *workers], 5) == []
    finally:
        for pid in (moto_pid, *workers):
            kill_if_alive(pid)
