"""The sandbox run's parts: the git work tree, the load generator (real Celery send on real Redis),
and the report's task accounting."""

from __future__ import annotations

import dataclasses
import io
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from deploytool.config import load_fleet
from deploytool.rollout.result import GroupResult, RolloutResult
from deploytool.sandbox.fleet import Broker
from deploytool.sandbox.instance import Instance
from deploytool.sandbox.load import SAMPLE_TASKS, CelerySender, LoadGenerator, TaskKind, kinds_for
from deploytool.sandbox.report import TaskTally, lost_explained, read_ledgers, tally, versions, wait_for_drain
from deploytool.sandbox.run import SandboxRunResult, report
from deploytool.sandbox.workrepo import WorkRepo
from deploytool.version import source_version
from tests.conftest import ROOT
from tests.fakes import FakeClock


def test_work_repo_versions_come_from_git_and_v2_is_a_real_change(tmp_path: Path) -> None:
    repo = WorkRepo.create(load_fleet(ROOT / "deploy.toml"), tmp_path / "work")
    v1 = source_version(repo.root)
    assert re.fullmatch(r"\d{4}\.\d{2}\.\d{2}-[0-9a-f]{7}", v1.version) and not v1.dirty
    assert not (repo.source / "acme_workers/__pycache__").exists()
    repo.change_release_note("v2: sandbox rollout")
    v2 = source_version(repo.root)
    assert v2.version != v1.version and v2.commit != v1.commit
    assert "RELEASE_NOTE = 'v2: sandbox rollout'" in (repo.source / "acme_workers/__init__.py").read_text()
    assert repo.fleet().source_dir == repo.source.resolve()
    assert "v1: first release" in repo.git("show", "HEAD~1:sample_app/acme_workers/__init__.py")


class Recorder:
    """A Sender that keeps what it was given (every third send fails, like a broker hiccup)."""

    def __init__(self, fail_every: int = 0) -> None:
        self.sent: list[tuple[str, list[Any], dict[str, Any], str]] = []
        self.fail_every = fail_every
        self.calls = 0

    def send(self, name: str, args: list[Any], kwargs: dict[str, Any], queue: str) -> str:
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            raise ConnectionError("broker went away")
        self.sent.append((name, args, kwargs, queue))
        return str(uuid.uuid4())


def test_load_generator_keeps_submitting_to_every_queue_and_records_ids(tmp_path: Path) -> None:
    sender = Recorder(fail_every=5)
    load = LoadGenerator(
        sender, kinds_for(["email", "video", "reports", "other"]), tmp_path / "submitted.log", rate_per_s=300, seed=7
    )
    load.start()
    while sender.calls < 40:
        pass
    load.stop()
    assert load.errors == sender.calls // 5 and load.last_error == "ConnectionError: broker went away"
    assert {queue for *_, queue in sender.sent} == {"email", "video", "reports"}
    for name, _args, kwargs, queue in sender.sent:
        kind = next(k for k in SAMPLE_TASKS if k.queue == queue)
        assert name == kind.name and kind.min_s <= kwargs["seconds"] <= kind.max_s
    logged = [line.split()[0] for line in (tmp_path / "submitted.log").read_text().splitlines()]
    assert logged == [s.task_id for s in load.submitted] and len(logged) == len(sender.sent)


@pytest.mark.broker
def test_celery_sender_puts_tasks_on_the_real_broker(redis_url: str) -> None:
    import redis

    queue = f"deploytool-test-{uuid.uuid4().hex[:8]}"
    url = redis_url.rsplit("/", 1)[0] + "/13"
    sender = CelerySender(Broker(url))
    client = redis.Redis.from_url(url)
    try:
        load = LoadGenerator(
            sender, [TaskKind(queue, "acme_workers.tasks.send_email", "a{n}@x", 0.1, 0.2)], Path("/dev/null")
        )
        for n in range(3):
            load.submit_one(n)
        assert load.errors == 0, load.last_error
        assert client.llen(queue) == 3
    finally:
        client.delete(queue)
        sender.close()


def test_tally_counts_completed_lost_and_duplicated(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("t1 send_email v1: first release 100\nt2 send_email v1: first release 100\n")
    (tmp_path / "b.log").write_text(
        "t2 send_email v2: sandbox rollout 200\nt3 build_report v2: sandbox rollout 200\n"
        "t3 build_report v2: sandbox rollout 201\nt3 build_report v2: sandbox rollout 202\n"
    )
    runs, releases = read_ledgers([tmp_path / "a.log", tmp_path / "b.log", tmp_path / "missing.log"])
    result = tally(["t1", "t2", "t3", "t4"], runs, releases)
    assert (result.submitted, result.completed, result.lost, result.duplicated) == (4, 3, 1, 3)
    assert result.by_release == {"v1: first release": 2, "v2: sandbox rollout": 4}


def test_wait_for_drain_stops_when_every_task_ran_or_at_the_timeout(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.log"

    def tasks_run(now: float) -> None:
        if now >= 2:
            ledger.write_text("t1 x v 1\nt2 x v 1\n")

    clock = FakeClock(on_sleep=tasks_run)
    assert wait_for_drain(["t1", "t2"], [ledger], timeout_s=30, clock=clock).lost == 0
    assert clock.now() == 2.0
    assert wait_for_drain(["t1", "t9"], [ledger], timeout_s=30, clock=clock).lost == 1
    assert clock.now() >= 32.0


def test_versions_reads_each_instances_running_version(tmp_path: Path) -> None:
    app = load_fleet(ROOT / "deploy.toml").app
    a, b, c = (Instance("email", f"i-{n}", tmp_path / f"i-{n}") for n in "abc")
    for instance, version in ((a, "2026.01.01-aaaaaaa"), (b, "2026.01.02-bbbbbbb")):
        run = instance.install_dir(app) / "run"
        run.mkdir(parents=True)
        (run / "VERSION").write_text(version + "\n")
    assert versions({"email": [a, b, c]}, app) == {
        "email": {"2026.01.01-aaaaaaa": ["i-a"], "2026.01.02-bbbbbbb": ["i-b"], "none": ["i-c"]}
    }


def test_wait_for_drain_stops_early_when_the_rest_is_held_in_flight(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.log"
    ledger.write_text("t1 x v 1\n")
    clock = FakeClock()
    result = wait_for_drain(["t1", "t2"], [ledger], timeout_s=90, clock=clock, depth=lambda: (0, 1), settle_s=5)
    assert (result.lost, result.waiting, result.in_flight) == (1, 0, 1)
    assert 5 <= clock.now() < 6
    assert lost_explained(result).startswith("1 of the 1 lost tasks are held in flight by the broker")


def test_sqs_gateway_reports_waiting_and_in_flight_messages() -> None:
    from moto import mock_aws

    from deploytool.aws.local import local_session
    from deploytool.aws.sqs import SqsGateway

    with mock_aws():
        session = local_session(region="us-east-1", endpoint_url=None)
        client = session.client("sqs")
        url = client.create_queue(QueueName="email")["QueueUrl"]
        for n in range(3):
            client.send_message(QueueUrl=url, MessageBody=str(n))
        client.receive_message(QueueUrl=url, MaxNumberOfMessages=1)
        depths = SqsGateway(session).depths(["email", "missing"])
    assert {name: (d.visible, d.in_flight) for name, d in depths.items()} == {"email": (2, 1)}


def run_result(tmp_path: Path, tasks: TaskTally) -> SandboxRunResult:
    """A finished sandbox run: v2 rolled out and running on both instances of one group, no drift."""
    v1, v2 = "2026.11.30-aaaaaaa", "2026.11.30-bbbbbbb"
    rollouts = tuple(
        RolloutResult(
            f"20261130T01020{n}Z-{v}",
            v,
            "sandbox",
            "deploy",
            (GroupResult("email", 1, "OneAtATime", "succeeded", total=2, succeeded=2),),
            5.0,
        )
        for n, v in enumerate((v1, v2))
    )
    return SandboxRunResult(
        root=tmp_path,
        versions=(v1, v2),
        rollouts=(rollouts[0], rollouts[1]),
        instances={"email": {v2: ["i-0123456789abcdef0", "i-0123456789abcdef1"]}},
        tasks=tasks,
        load_errors=0,
        last_load_error="",
        elapsed_s=31.0,
    )


def report_text(result: SandboxRunResult) -> str:
    console = Console(file=io.StringIO(), width=200)
    with console.capture() as capture:
        for renderable in report(result):
            console.print(renderable)
    return capture.get()


def test_the_verdict_fails_a_run_in_which_tasks_ran_twice(tmp_path: Path) -> None:
    clean = run_result(tmp_path, TaskTally(120, 120, 0, 0, {"v2: sandbox rollout": 120}))
    assert clean.ok
    assert "sandbox run ok: 2026.11.30-aaaaaaa -> 2026.11.30-bbbbbbb in 31s" in report_text(clean)

    twice = run_result(tmp_path, TaskTally(120, 120, 0, 3, {"v2: sandbox rollout": 123}))
    assert not twice.ok
    assert clean.problems == []
    text = report_text(twice)
    assert "sandbox run NOT OK: 2026.11.30-aaaaaaa -> 2026.11.30-bbbbbbb in 31s: " in text
    assert "3 duplicate run(s): tasks ran more than once" in text
    assert "lost" not in text.split("NOT OK")[1]  # it says what is wrong, and only that


def test_the_verdict_names_every_problem(tmp_path: Path) -> None:
    result = run_result(tmp_path, TaskTally(10, 8, 2, 1, {}))
    result = dataclasses.replace(result, instances={"email": {"2026.11.30-aaaaaaa": ["i-1"]}}, drift="1 drifted")
    assert result.problems == [
        "not every instance runs 2026.11.30-bbbbbbb (email)",
        "the reconcile found drift",
        "2 task(s) lost",
        "1 duplicate run(s): tasks ran more than once",
    ]


def test_the_report_names_each_interrupted_instance_and_the_tasks_it_handed_back(tmp_path: Path) -> None:
    record = {
        "kind": "spot",
        "detail": "spot interruption: terminate at 2026-11-30T01:05:00Z",
        "policy": "drain",
        "outcome": "cold",
        "drained_s": 98.4,
        "interrupted": ["acme_workers.tasks.transcode_video[abc]"],
    }
    result = dataclasses.replace(
        run_result(tmp_path, TaskTally(10, 10, 0, 0, {})), interruptions=(("i-0123456789abcdef1", record),)
    )
    assert result.ok  # an interruption the watcher handled loses nothing: the verdict stands on the tasks
    assert (
        "interrupted: i-0123456789abcdef1: spot interruption: terminate at 2026-11-30T01:05:00Z; drain: cold in 98.4s, "
        "1 task(s) handed back to the broker: acme_workers.tasks.transcode_video[abc]"
    ) in report_text(result)


def test_the_report_counts_the_tasks_finished_on_the_old_release_after_a_hand_off(tmp_path: Path) -> None:
    handoffs = (
        {"pid": 1, "state": "finished", "held": ["acme_workers.tasks.transcode_video[a]", "b[c]"]},
        {"pid": 2, "state": "finished", "held": []},
        {"pid": 3, "state": "reaped", "held": ["acme_workers.tasks.transcode_video[d]"]},
        {"pid": 4, "state": "finishing", "held": ["e[f]"]},
    )
    result = dataclasses.replace(run_result(tmp_path, TaskTally(10, 10, 0, 0, {})), handoffs=handoffs)
    assert (
        "hand-off: 4 worker(s) handed off; 2 task(s) finished on the old release after it; 1 still finishing; "
        "1 reaped (cold shutdown; 1 task(s) back to the broker)"
    ) in report_text(result)
    assert "hand-off" not in report_text(run_result(tmp_path, TaskTally(10, 10, 0, 0, {})))
