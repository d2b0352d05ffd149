"""The lifecycle hooks against real brokers (Redis, RabbitMQ, SQS on a moto server) with real Celery
workers of the sample app, deployed by the sandbox's LifecycleRunner (tests/hooktools.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.broker_fixtures import BrokerSpec, queue_counts
from tests.hooktools import (
    PYTHON,
    Instance,
    Load,
    ProcessReaper,
    app_context,
    delete_broker_queues,
    fake_systemctl_on_path,
    group_settings,
    iter_runs,
    make_instances,
    process_alive,
    render_bundle,
    uid,
    wait_for,
    wait_gone,
)

pytestmark = pytest.mark.slow


def forget_queues(broker: BrokerSpec, tag: str, queues: list[str]) -> None:
    """Delete what the test leaves on a shared broker, at teardown."""
    broker.cleanups.append(lambda: delete_broker_queues(broker.url, queues))
    if broker.name == "redis":
        broker.cleanups.append(lambda: delete_broker_queues(broker.url, ["_kombu.binding_deadlines"]))


BROKERS = [
    # One xdist worker runs the Redis tests in turn: each clears kombu's keys of the shared database at teardown.
    pytest.param("redis", marks=[pytest.mark.broker, pytest.mark.xdist_group("redis-db12")], id="redis"),
    pytest.param("rabbitmq", marks=pytest.mark.broker, id="rabbitmq"),
    pytest.param("sqs", id="sqs"),
]


@dataclass
class Fleet:
    instances: list[Instance]
    load: Load
    v1: Path
    v2: Path
    queues: list[str]


def make_fleet(
    broker: BrokerSpec, tmp_path: Path, reaper: ProcessReaper, count: int, queue_names: list[str], **settings: Any
) -> Fleet:
    tag = uid()
    queues = [f"{name}-{tag}" for name in queue_names]
    forget_queues(broker, tag, queues)
    app = app_context()
    group = group_settings("reports", queues, **settings)
    v1 = render_bundle(tmp_path / "bundle-v1", app, [group], "v1", release_note="v1")
    v2 = render_bundle(tmp_path / "bundle-v2", app, [group], "v2", release_note="v2")
    ledger = tmp_path / "ledger.txt"
    instances = make_instances(tmp_path, "reports", count, app, reaper, tag)
    for instance in instances:
        instance.write_env(broker.url, broker.options, ledger)
        for run in instance.deploy(v1):
            run.check()
    load = Load(broker.url, broker.options, ledger)
    broker.cleanups.insert(0, load.close)
    return Fleet(instances, load, v1, v2, queues)


def worker_log_has(instance: Instance, text: str) -> bool:
    return instance.worker_log.exists() and text in instance.worker_log.read_text(errors="replace")


def pool_children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_rolling_deploy_under_load_loses_and_duplicates_nothing(
    broker: BrokerSpec, tmp_path: Path, reaper: ProcessReaper
) -> None:
    fleet = make_fleet(broker, tmp_path, reaper, 2, ["reports", "video"], concurrency=4, drain_timeout=20)
    fleet.load.send_many(200, fleet.queues, 0.2, 2.0)
    assert wait_for(lambda: len(fleet.load.runs()) >= 8, 30), "the v1 workers did not start on the load"

    done_when_deployed = []
    for instance in fleet.instances:
        for run in instance.deploy(fleet.v2):
            run.check()
        done_when_deployed.append(len(fleet.load.runs()))

    completed, lost, duplicates = fleet.load.wait_done(120)
    assert (completed, lost, duplicates) == (200, 0, 0)
    assert done_when_deployed[-1] < 200, "the deploy finished after the load: it did not roll through it"
    ran_on = [release for releases in fleet.load.releases().values() for release in releases]
    assert "v1" in ran_on and "v2" in ran_on
    stops = [run for run in iter_runs(fleet.instances) if run.event == "ApplicationStop"]
    assert len(stops) == 2
    for stop in stops:
        assert "SIGQUIT" not in stop.output, stop.output
        assert "drained in" in stop.output
        if broker.remote_control:
            for queue in fleet.queues:
                assert f"cancel_consumer: {queue}: confirmed" in stop.output, stop.output
            assert "wait idle: no active or reserved tasks" in stop.output
        else:
            assert "no remote control (SQS): SIGTERM is the drain" in stop.output


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_task_longer_than_the_drain_budget_is_rerun_at_once_on_the_new_worker(
    broker: BrokerSpec, tmp_path: Path, reaper: ProcessReaper
) -> None:
    fleet = make_fleet(broker, tmp_path, reaper, 1, ["video"], concurrency=2, drain_timeout=2, visibility_timeout=600)
    instance = fleet.instances[0]
    long = fleet.load.send("transcode_video", fleet.queues[0], 5.0)
    assert wait_for(lambda: worker_log_has(instance, f"[{long.task_id}] received"), 30)
    old_pid = instance.worker_pid()
    assert old_pid is not None
    stop_started = time.monotonic()

    runs = instance.deploy(fleet.v2)
    for run in runs:
        run.check()
    stop = runs[0]
    assert "SIGQUIT: drain_timeout spent" in stop.output, stop.output
    assert f"acme_workers.tasks.transcode_video[{long.task_id}]" in stop.output  # named as interrupted
    marker = f"deploytool: interrupted task acme_workers.tasks.transcode_video[{long.task_id}]: not acknowledged"
    assert marker in stop.output  # the line the sandbox runner turns into a warning of the deploy
    assert not process_alive(old_pid)

    assert fleet.load.wait_done(30, [long.task_id]) == (1, 0, 0)
    assert fleet.load.releases()[long.task_id] == ["v2"]
    # Re-run right after the new worker started: far sooner than the 600 s visibility timeout.
    assert time.monotonic() - stop_started < 30


@pytest.mark.broker
@pytest.mark.parametrize("broker", BROKERS[:1], indirect=True)
def test_agent_timeout_on_the_drain_escalates_to_sigquit_and_leaves_no_worker(
    broker: BrokerSpec, tmp_path: Path, reaper: ProcessReaper
) -> None:
    fleet = make_fleet(broker, tmp_path, reaper, 1, ["video"], concurrency=2, drain_timeout=30)
    instance = fleet.instances[0]
    long = fleet.load.send("transcode_video", fleet.queues[0], 6.0)
    assert wait_for(lambda: worker_log_has(instance, f"[{long.task_id}] received"), 30)
    worker = instance.worker_pid()
    assert worker is not None
    children = pool_children(worker)
    assert children

    stop = instance.deploy(fleet.v2, stop_timeout=1.5)[0]  # the runner SIGTERMs the hook after 1.5 s, as the agent
    assert stop.returncode is None and "failed to complete in 1.5 seconds" in stop.message, stop.output
    assert "error: drain was terminated by SIGTERM" in stop.output  # the hook's last line before exit 143
    assert "ignored SIGTERM" not in stop.output  # it exited on its own: no SIGKILL from the runner
    assert f"SIGTERM from the agent: sent SIGQUIT to pid {worker}; it exited" in stop.output
    assert f"transcode_video[{long.task_id}]" in stop.output
    assert not process_alive(worker)
    assert all(wait_gone(child, 5.0) for child in children)  # the pool went with it: nothing orphaned

    for run in instance.deploy(fleet.v2):  # the next attempt finds nothing to drain and starts v2
        run.check()
    assert fleet.load.wait_done(30, [long.task_id]) == (1, 0, 0)
    assert fleet.load.releases()[long.task_id] == ["v2"]


@pytest.mark.broker
@pytest.mark.parametrize("broker", BROKERS[:1], indirect=True)
def test_validate_says_exactly_what_is_wrong(broker: BrokerSpec, tmp_path: Path, reaper: ProcessReaper) -> None:
    fleet = make_fleet(broker, tmp_path, reaper, 1, ["reports", "video"], drain_timeout=5)
    instance = fleet.instances[0]
    assert instance.previous is not None
    releases = instance.install_dir / "releases"

    archive = instance.archive(fleet.v2, "d-OLDRELEAS")
    instance.install(archive)  # v2 installed, but the v1 worker still runs
    run = instance.validate(archive, "d-OLDRELEAS")
    assert run.returncode == 1
    assert f"runs in {releases}/v1/app, not in the new release {releases}/v2/app" in run.output

    node = f"celery@reports.{instance.instance_id}"
    client = fleet.load.client
    replies = client.control.cancel_consumer(fleet.queues[1], destination=[node], reply=True, timeout=5)
    assert replies
    run = instance.validate(instance.previous, "d-WRONGQUEU")
    assert run.returncode == 1
    assert (
        f"{node} consumes [{fleet.queues[0]}] but group reports expects [{', '.join(sorted(fleet.queues))}] "
        f"(missing: {fleet.queues[1]}; unexpected: none)"
    ) in run.output

    # ApplicationStart finds the v1 worker still running (ApplicationStop skipped): it drains it first.
    run = instance.start(archive, "d-OLDRELEAS").check()
    assert "was not drained by ApplicationStop; draining it now" in run.output
    assert "drained: pid" in run.output
    assert "ok: celery@reports" in instance.validate(archive, "d-OLDRELEAS").check().output

    instance.previous = archive
    instance.stop().check()  # type: ignore[union-attr]
    run = instance.validate(archive, "d-NOTRUNNIN")
    assert run.returncode == 1
    assert "worker is not running: no pidfile at" in run.output


@pytest.mark.broker
@pytest.mark.parametrize("broker", BROKERS[:1], indirect=True)
def test_systemd_units_execstart_is_the_worker_itself(
    broker: BrokerSpec, tmp_path: Path, reaper: ProcessReaper
) -> None:
    """Run the unit's ExecStart as systemd would (EnvironmentFile, WorkingDirectory, no shell) and stop it
    with its KillSignal: the process systemd starts is the Celery worker, and SIGTERM stops it cleanly."""
    tag = uid()
    queue = f"email-{tag}"
    forget_queues(broker, tag, [queue])
    install_dir = tmp_path / "opt" / "acme"
    env_file = tmp_path / "etc" / "worker.env"
    app = app_context(install_dir=str(install_dir), python=PYTHON, env_file=str(env_file))
    bundle = render_bundle(tmp_path / "bundle", app, [group_settings("email", [queue])], "v1")
    shutil.copytree(bundle, install_dir / "releases" / "v1")
    (install_dir / "current").symlink_to("releases/v1")
    node = f"celery@email.i-{tag}"
    (install_dir / "run").mkdir()
    (install_dir / "run" / "node-name").write_text(node + "\n")
    env_file.parent.mkdir()
    env_file.write_text(f"CELERY_BROKER_URL={broker.url}\nACME_LEDGER={tmp_path / 'ledger'}\n")

    unit = (bundle / "deploytool" / "hooks" / "systemd" / "email.service").read_text()
    lines = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env.update(line.split("=", 1) for line in Path(lines["EnvironmentFile"]).read_text().splitlines())
    env.update([lines["Environment"].split("=", 1)])
    process = subprocess.Popen(
        lines["ExecStart"].split(),
        cwd=lines["WorkingDirectory"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    reaper.add_group(process.pid)
    reaper.add_child(process)  # type: ignore[arg-type]

    load = Load(broker.url, None, tmp_path / "ledger")
    try:
        assert wait_for(lambda: bool(load.client.control.ping(destination=[node], timeout=0.5)), 60)
        assert (install_dir / "run" / "worker.pid").read_text().strip() == str(process.pid)
        assert os.readlink(f"/proc/{process.pid}/cwd") == str((install_dir / "releases" / "v1" / "app").resolve())
        getattr(signal, lines["KillSignal"])
        os.kill(process.pid, getattr(signal, lines["KillSignal"]))
        assert process.wait(int(lines["TimeoutStopSec"])) == 0
    finally:
        load.close()


@pytest.mark.broker
@pytest.mark.parametrize("broker", BROKERS[:1], indirect=True)
def test_production_path_installs_the_unit_and_drains_through_systemctl(
    broker: BrokerSpec, tmp_path: Path, reaper: ProcessReaper
) -> None:
    """Without DEPLOYTOOL_PROCESS_MANAGER=direct the hooks install the group's unit, restart it, find the
    worker by the unit's MainPID and stop it through systemctl (tests/fake_systemctl.py plays systemd)."""
    tag = uid()
    queue = f"reports-{tag}"
    forget_queues(broker, tag, [queue])
    app = app_context(python=PYTHON)
    group = group_settings("reports", [queue], drain_timeout=20)
    v1 = render_bundle(tmp_path / "bundle-v1", app, [group], "v1", release_note="v1")
    v2 = render_bundle(tmp_path / "bundle-v2", app, [group], "v2", release_note="v2")
    ledger = tmp_path / "ledger.txt"
    instance = make_instances(tmp_path, "reports", 1, app, reaper, tag)[0]
    instance.process_manager = "systemd"
    instance.path_prefix = fake_systemctl_on_path(tmp_path / "bin")
    instance.write_env(broker.url, None, ledger)
    for run in instance.deploy(v1):
        run.check()
    installed = instance.root / "etc" / "systemd" / "system" / "acme-workers-reports.service"
    assert installed.read_text() == (v1 / "deploytool" / "hooks" / "systemd" / "reports.service").read_text()

    load = Load(broker.url, None, ledger)
    broker.cleanups.insert(0, load.close)
    sent = [load.send("build_report", queue, 1.0).task_id for _ in range(3)]
    assert wait_for(lambda: any(worker_log_has(instance, f"[{task}] received") for task in sent), 30)
    runs = instance.deploy(v2)
    for run in runs:
        run.check()
    stop = runs[0].output
    assert "via unit acme-workers-reports.service" in stop
    assert f"cancel_consumer: {queue}: confirmed" in stop
    assert "SIGTERM: pid" in stop and "SIGQUIT" not in stop
    calls = (instance.root / "run" / "fake-systemd" / "calls.log").read_text().splitlines()
    assert "stop --no-block acme-workers-reports.service" in calls
    assert calls.count("restart acme-workers-reports.service") == 2
    assert "validate +" in runs[-1].output and "ok: celery@reports" in runs[-1].output
    assert load.wait_done(30, sent) == (3, 0, 0)


@pytest.mark.parametrize("broker", BROKERS[2:], indirect=True)
def test_sqs_drain_under_steady_load_strands_no_received_message(
    broker: BrokerSpec, tmp_path: Path, reaper: ProcessReaper
) -> None:
    """SQS long polls (here 5 s) are in flight when SIGTERM comes: the worker stops consuming and lets
    them return before its warm shutdown, so no message is left invisible until the visibility timeout.
    The new worker is busy from its first second: validate proves it takes work even though the canary
    waits behind the load."""
    broker.options = dict(broker.options or {}, wait_time_seconds=5)
    fleet = make_fleet(broker, tmp_path, reaper, 1, ["reports"], concurrency=4, drain_timeout=20)
    instance = fleet.instances[0]
    stop = threading.Event()

    def produce() -> None:
        while not stop.wait(0.1):
            fleet.load.send("build_report", fleet.queues[0], 0.05)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        time.sleep(2.0)
        runs = instance.deploy(fleet.v2)
        time.sleep(1.0)
    finally:
        stop.set()
        producer.join()
    for run in runs:
        run.check()
    assert fleet.load.wait_done(20) == (len(fleet.load.submitted), 0, 0)
    assert "ok: celery@reports" in runs[-1].output
    assert "SIGTERM: stopped consuming from" in instance.worker_log.read_text()


def sqs_in_flight(broker: BrokerSpec, queue: str) -> int:
    """SQS's count of the queue's messages received and neither deleted nor made visible again."""
    return queue_counts(broker, queue)[1]


@pytest.mark.parametrize("broker", BROKERS[2:], indirect=True)
def test_sqs_drain_leaves_no_received_task_unacknowledged(
    broker: BrokerSpec, tmp_path: Path, reaper: ProcessReaper
) -> None:
    """SIGTERM comes while the worker holds one running and three prefetched tasks (concurrency 1,
    prefetch 4). Celery's warm shutdown would drop the prefetched ones from its pool and kombu would
    "restore" them at close (on SQS: hidden again for wait_time_seconds), and a task written to a pool
    process but not yet accepted can run twice. The drain waits until every task it holds has
    finished and been deleted from the queue, so each runs once and nothing is left in flight."""
    fleet = make_fleet(broker, tmp_path, reaper, 1, ["reports"], concurrency=1, prefetch_multiplier=4, drain_timeout=30)
    instance = fleet.instances[0]
    for _ in range(6):
        fleet.load.send("build_report", fleet.queues[0], 1.0)
    assert wait_for(lambda: worker_log_has(instance, "build_report") and len(fleet.load.runs()) >= 1, 20)
    for run in instance.deploy(fleet.v2):
        run.check()
    assert fleet.load.wait_done(30) == (6, 0, 0)
    assert "Restoring" not in instance.worker_log.read_text()
    assert sqs_in_flight(broker, fleet.queues[0]) == 0
    ran_on = fleet.load.releases()
    assert sorted(r for releases in ran_on.values() for r in releases).count("v1") >= 4, ran_on
