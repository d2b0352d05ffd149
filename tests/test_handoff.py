"""restart = "handoff" with real Celery workers of the sample app on real brokers (SQS on moto, Redis, RabbitMQ),
deployed by the sandbox's lifecycle runner: a release does not wait for a long task, the task finishes on the
release it started on, the old worker exits by itself, and an instance is never left without a consumer."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.broker_fixtures import BrokerSpec
from tests.hooktools import (
    PYTHON,
    Load,
    ProcessReaper,
    app_context,
    fake_systemctl_on_path,
    group_settings,
    make_instances,
    process_alive,
    render_bundle,
    uid,
    wait_for,
)
from tests.test_hooks_brokers import BROKERS, forget_queues, make_fleet, worker_log_has

pytestmark = pytest.mark.slow

HANDOFF = {"restart": "handoff", "concurrency": 2, "task_time_limit": 120, "visibility_timeout": 600}


def draining_records(instance_dir: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted((instance_dir / "run" / "draining").glob("*.json"))]


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_a_release_does_not_wait_for_a_long_task_which_finishes_on_its_own_release(
    broker: BrokerSpec, tmp_path: Path, reaper: ProcessReaper
) -> None:
    fleet = make_fleet(broker, tmp_path, reaper, 1, ["video"], **HANDOFF)
    instance = fleet.instances[0]
    long = fleet.load.send("transcode_video", fleet.queues[0], 15.0)
    assert wait_for(lambda: worker_log_has(instance, f"[{long.task_id}] received"), 30)
    old = instance.worker_pid()
    assert old is not None

    runs = instance.deploy(fleet.v2)
    for run in runs:
        run.check()
    stop, start = runs[0], runs[1]
    assert stop.event == "ApplicationStop" and stop.seconds < 8, stop.output  # it did not wait for the task
    assert f"hand-off: pid {old}" in stop.output and "takes no new task and exits by itself" in stop.output
    assert long.task_id in stop.output, stop.output  # the task it finishes, named
    new = instance.worker_pid()
    assert new is not None and new != old and process_alive(old)  # both online during the overlap
    node = (instance.install_dir / "run" / "node-name").read_text().strip()
    assert node.startswith(f"celery@reports.{instance.instance_id}.v2."), node  # the release in the node name
    assert "copy" in start.output and "/live/v2." in start.output
    assert [r["pid"] for r in draining_records(instance.install_dir)] == [old]

    # New work goes to the new release only; the long task ends on the old one, which then exits by itself.
    shorts = [fleet.load.send("build_report", fleet.queues[0], 0.2) for _ in range(6)]
    assert fleet.load.wait_done(60, [s.task_id for s in shorts]) == (6, 0, 0)
    assert {fleet.load.releases()[s.task_id][0] for s in shorts} == {"v2"}
    assert fleet.load.wait_done(60, [long.task_id]) == (1, 0, 0)
    assert fleet.load.releases()[long.task_id] == ["v1"]  # finished where it started, never killed
    assert wait_for(lambda: not process_alive(old), 30)
    state = json.loads((instance.install_dir / "run" / "handoff" / f"{old}.json").read_text())
    assert state["state"] == "finished" and any(long.task_id in t for t in state["held"]), state
    assert process_alive(new)

    # Copies are kept while a worker runs from them and pruned by a later start once none does.
    def copies() -> set[str]:
        return {p.name for p in (instance.install_dir / "live").iterdir() if not p.name.startswith(".")}

    earlier = copies()
    assert len(earlier) == 2  # v1's (its worker just finished) and v2's
    runs = instance.deploy(fleet.v1)
    for run in runs:
        run.check()
    assert f"hand-off: pid {new}" in runs[0].output and "after its 0 running: none" in runs[0].output
    assert "did not confirm" not in runs[0].output  # an idle worker answers and is gone at once
    assert wait_for(lambda: not process_alive(new), 30)
    for run in instance.deploy(fleet.v2):
        run.check()
    left = copies()
    assert not earlier & left, (earlier, left)  # both earlier copies went once their workers had
    assert len(left) <= 2 and any(name.startswith("v2.") for name in left), left


@pytest.mark.parametrize("broker", BROKERS[2:], indirect=True)
def test_a_failed_new_worker_hands_the_work_back_and_the_cap_makes_the_next_hand_off_a_drain(
    broker: BrokerSpec, tmp_path: Path, reaper: ProcessReaper
) -> None:
    fleet = make_fleet(broker, tmp_path, reaper, 1, ["video"], **HANDOFF)
    instance = fleet.instances[0]
    broken = render_bundle(
        tmp_path / "bundle-v3",
        {**app_context(), "celery_app": "acme_workers.no_such_module:app"},
        [group_settings("reports", fleet.queues, **HANDOFF)],
        "v3",
    )
    long = fleet.load.send("transcode_video", fleet.queues[0], 20.0)
    assert wait_for(lambda: worker_log_has(instance, f"[{long.task_id}] received"), 30)
    old = instance.worker_pid()
    assert old is not None

    runs = instance.deploy(broken)
    assert [r.event for r in runs][-1] == "ApplicationStart" and runs[-1].returncode != 0, runs[-1].output
    assert f"resume: pid {old}" in runs[-1].output and "takes work again" in runs[-1].output, runs[-1].output
    assert instance.worker_pid() == old and draining_records(instance.install_dir) == []
    after = fleet.load.send("build_report", fleet.queues[0], 0.2)
    assert fleet.load.wait_done(60, [after.task_id]) == (1, 0, 0)
    assert fleet.load.releases()[after.task_id] == ["v1"]  # the instance kept a consumer

    # v2 hands v1 off (the long task still runs); a v3 right behind finds one worker finishing already
    # (handoff_max_draining = 1): it drains v2's worker instead, and says why.
    for run in instance.deploy(fleet.v2):
        run.check()
    assert process_alive(old)
    runs = instance.deploy(fleet.v1)
    for run in runs:
        run.check()
    assert "1 worker(s) already finishing here" in runs[0].output and "draining instead" in runs[0].output
    assert fleet.load.wait_done(60, [long.task_id]) == (1, 0, 0)
    assert fleet.load.releases()[long.task_id] == ["v1"]


@pytest.mark.parametrize("broker", BROKERS[2:], indirect=True)
def test_with_systemd_each_release_copy_runs_in_a_unit_of_its_own(
    broker: BrokerSpec, tmp_path: Path, reaper: ProcessReaper
) -> None:
    """The production path (tests/fake_systemctl.py plays systemd): the template unit <app>-<group>@.service, one
    instance per release copy; the hand-off signals the old unit's main process, gives it a runtime Restart=no and
    disables it, so only the current release starts on a reboot."""
    tag = uid()
    queue = f"video-{tag}"
    forget_queues(broker, tag, [queue])
    app = app_context(python=PYTHON)
    group = group_settings("video", [queue], **HANDOFF)
    v1 = render_bundle(tmp_path / "bundle-v1", app, [group], "v1", release_note="v1")
    v2 = render_bundle(tmp_path / "bundle-v2", app, [group], "v2", release_note="v2")
    unit_text = (v1 / "deploytool" / "hooks" / "systemd" / "video@.service").read_text()
    assert "ExecStart=" in unit_text and "/live/%i/deploytool/hooks/celery_worker.py video" in unit_text
    assert "TimeoutStopSec=225" in unit_text and "FinalKillSignal=SIGQUIT" in unit_text  # 120 + 60 + 45
    ledger = tmp_path / "ledger.txt"
    instance = make_instances(tmp_path, "video", 1, app, reaper, tag)[0]
    instance.process_manager = "systemd"
    instance.path_prefix = fake_systemctl_on_path(tmp_path / "bin")
    instance.write_env(broker.url, broker.options, ledger)
    for run in instance.deploy(v1):
        run.check()
    first_unit = (instance.install_dir / "run" / "worker.unit").read_text().strip()
    assert first_unit.startswith("acme-workers-video@v1.") and first_unit.endswith(".service")
    load = Load(broker.url, broker.options, ledger)
    broker.cleanups.insert(0, load.close)
    long = load.send("transcode_video", queue, 12.0)
    assert wait_for(lambda: worker_log_has(instance, f"[{long.task_id}] received"), 30)

    runs = instance.deploy(v2)
    for run in runs:
        run.check()
    assert runs[0].seconds < 8 and f"via unit {first_unit}" in runs[0].output, runs[0].output
    second_unit = (instance.install_dir / "run" / "worker.unit").read_text().strip()
    assert second_unit.startswith("acme-workers-video@v2.") and second_unit != first_unit
    calls = (instance.root / "run" / "fake-systemd" / "calls.log").read_text().splitlines()
    assert f"kill --kill-who=main --signal=SIGUSR2 {first_unit}" in calls
    assert f"disable {first_unit}" in calls and f"enable {second_unit}" in calls and f"start {second_unit}" in calls
    drop_in = instance.root / "run" / "systemd" / "system" / f"{first_unit}.d" / "50-deploytool-handoff.conf"
    assert drop_in.read_text() == "[Service]\nRestart=no\n"
    assert load.wait_done(60, [long.task_id]) == (1, 0, 0)
    assert load.releases()[long.task_id] == ["v1"]
    assert "validate +" in runs[-1].output and f"ok: celery@video.{instance.instance_id}.v2." in runs[-1].output


@pytest.mark.parametrize("broker", BROKERS[2:], indirect=True)
def test_an_overdue_worker_is_reaped_and_too_little_memory_means_a_drain(
    broker: BrokerSpec, tmp_path: Path, reaper: ProcessReaper
) -> None:
    fleet = make_fleet(broker, tmp_path, reaper, 1, ["video"], **HANDOFF)
    instance = fleet.instances[0]
    long = fleet.load.send("transcode_video", fleet.queues[0], 25.0)
    assert wait_for(lambda: worker_log_has(instance, f"[{long.task_id}] received"), 30)
    old = instance.worker_pid()
    for run in instance.deploy(fleet.v2):
        run.check()
    # The worker finishing is past its time (as one stuck in its shutdown would be): the next hook reaps it.
    record_file = instance.install_dir / "run" / "draining" / f"{old}.json"
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({**record, "reap_at": time.time() - 100}))
    runs = instance.deploy(fleet.v1)
    for run in runs:
        run.check()
    assert f"reap: pid {old}" in runs[0].output and "cold shutdown" in runs[0].output, runs[0].output
    assert not process_alive(old)
    # Handed back at once (not held for the 600 s visibility timeout): it runs again, once, to the end, on a worker
    # that was taking work then (v2's, until this deployment handed it off in turn, or the new v1 one).
    assert fleet.load.wait_done(90, [long.task_id]) == (1, 0, 0)
    assert fleet.load.runs()[long.task_id] == 1 and fleet.load.releases()[long.task_id] in (["v1"], ["v2"])

    hungry = render_bundle(
        tmp_path / "bundle-v4",
        app_context(),
        [group_settings("reports", fleet.queues, **HANDOFF, handoff_min_free_mb=1048576)],
        "v4",
    )
    for run in instance.deploy(hungry):
        run.check()
    runs = instance.deploy(fleet.v2)  # the hungry release's ApplicationStop decides
    for run in runs:
        run.check()
    assert "MB available; a second worker needs about" in runs[0].output, runs[0].output
    assert "draining instead" in runs[0].output and "drained in" in runs[0].output


@pytest.mark.parametrize("broker", BROKERS[2:], indirect=True)
def test_a_scale_in_drains_every_worker_the_finishing_one_included(
    broker: BrokerSpec, tmp_path: Path, reaper: ProcessReaper
) -> None:
    from deploytool.sandbox.imds import ImdsServer, post_notice

    fleet = make_fleet(broker, tmp_path, reaper, 1, ["video"], **HANDOFF, on_terminated="ignore")
    instance = fleet.instances[0]
    server = ImdsServer(root=tmp_path / "imds", log_path=tmp_path / "imds.log", pidfile=tmp_path / "imds.pid").start()
    try:
        (tmp_path / "imds" / "video" / instance.instance_id).mkdir(parents=True)
        instance.write_env(
            broker.url, broker.options, tmp_path / "ledger.txt",
            {"DEPLOYTOOL_IMDS_ENDPOINT": server.endpoint(instance.instance_id)},
        )  # fmt: skip
        long = fleet.load.send("transcode_video", fleet.queues[0], 10.0)
        assert wait_for(lambda: worker_log_has(instance, f"[{long.task_id}] received"), 30)
        old = instance.worker_pid()
        for run in instance.deploy(fleet.v2):
            run.check()
        new = instance.worker_pid()
        assert old is not None and new is not None and process_alive(old)
        post_notice(tmp_path / "imds" / "video" / instance.instance_id, "terminate")
        stop = instance.stop()
        assert stop is not None and stop.returncode == 0, stop
        assert "Auto Scaling is taking this instance out: draining every worker, no hand-off" in stop.output
        assert "1 handed-off worker(s) still running" in stop.output and "every one finished" in stop.output
        assert not process_alive(old) and not process_alive(new)
        assert fleet.load.wait_done(5, [long.task_id]) == (1, 0, 0)
        assert fleet.load.releases()[long.task_id] == ["v1"]
    finally:
        server.stop()


@pytest.mark.parametrize("broker", BROKERS[:1], indirect=True)
def test_a_new_worker_failing_validation_gives_the_work_back_to_the_one_handed_off(
    broker: BrokerSpec, tmp_path: Path, reaper: ProcessReaper
) -> None:
    fleet = make_fleet(broker, tmp_path, reaper, 1, ["video"], **HANDOFF)
    instance = fleet.instances[0]
    long = fleet.load.send("transcode_video", fleet.queues[0], 20.0)
    assert wait_for(lambda: worker_log_has(instance, f"[{long.task_id}] received"), 30)
    old = instance.worker_pid()
    assert old is not None
    archive = instance.archive(fleet.v2, "d-HANDOFF01")
    assert "takes no new task and exits by itself" in instance.stop().check().output  # type: ignore[union-attr]
    instance.install(archive)
    instance.start(archive, "d-HANDOFF01").check()
    new = instance.worker_pid()
    assert new is not None and new != old
    node = (instance.install_dir / "run" / "node-name").read_text().strip()
    # The new worker stops consuming (as a broken release might): ValidateService fails.
    assert fleet.load.client.control.cancel_consumer(fleet.queues[0], destination=[node], reply=True, timeout=5)
    run = instance.validate(archive, "d-HANDOFF01")
    assert run.returncode == 1 and "consumes [] but group reports expects" in run.output, run.output
    assert f"resume: pid {old}" in run.output and "takes work again" in run.output, run.output
    assert wait_for(lambda: not process_alive(new), 30)  # the failed one is drained
    assert instance.worker_pid() == old and process_alive(old)
    after = fleet.load.send("build_report", fleet.queues[0], 0.2)
    assert fleet.load.wait_done(60, [after.task_id, long.task_id]) == (2, 0, 0)
    assert fleet.load.releases()[after.task_id] == ["v1"] and fleet.load.releases()[long.task_id] == ["v1"]
