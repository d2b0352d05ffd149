"""Interruptions: the sandbox's fake IMDS (IMDSv2 token flow, the notices it serves), the instance's IMDS client,
and the interruption watcher ApplicationStart starts beside the worker, answering a spot notice with real Celery
workers on a moto SQS server (tests/hooktools.py)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

from deploytool.aws.s3 import ObjectInfo
from deploytool.model import day_of
from deploytool.reconcile.interruptions import read_interruptions
from deploytool.sandbox.imds import ImdsServer, post_notice
from tests.broker_fixtures import BrokerSpec, queue_counts
from tests.builders import APP, BUCKET
from tests.hooktools import PYTHON, ProcessReaper, app_context, group_settings, render_bundle, wait_for
from tests.test_hooks_brokers import BROKERS, make_fleet, worker_log_has

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


class S3Reader:
    """list_keys/get_bytes over a plain boto3 client (what reconcile's S3 gateway offers)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def list_keys(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield ObjectInfo(key=item["Key"], etag=item["ETag"].strip('"'), size=item["Size"], metadata={})

    def get_bytes(self, bucket: str, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())


@pytest.fixture
def imds(tmp_path: Path) -> Iterator[tuple[ImdsServer, Path]]:
    root = tmp_path / "imds-root"
    (root / "video" / "i-0abc").mkdir(parents=True)
    server = ImdsServer(root=root, log_path=tmp_path / "imds.log", pidfile=tmp_path / "imds.pid").start()
    try:
        yield server, root
    finally:
        server.stop()


def call(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_the_fake_imds_speaks_imdsv2_and_serves_what_was_posted(imds: tuple[ImdsServer, Path]) -> None:
    server, root = imds
    base = server.endpoint("i-0abc")
    meta = f"{base}/latest/meta-data"
    assert call(f"{meta}/instance-id")[0] == 401  # IMDSv2: no token, no answer
    assert call(f"{base}/latest/api/token", "PUT")[0] == 400  # a TTL is required
    ttl = {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    assert call(f"{base}/latest/api/token", "PUT", {**ttl, "X-Forwarded-For": "10.0.0.1"})[0] == 403
    code, token = call(f"{base}/latest/api/token", "PUT", ttl)
    assert code == 200 and token
    auth = {"X-aws-ec2-metadata-token": token}
    assert call(f"{meta}/instance-id", headers=auth) == (200, "i-0abc")
    assert call(f"{meta}/spot/instance-action", headers=auth)[0] == 404
    assert call(f"{meta}/autoscaling/target-lifecycle-state", headers=auth) == (200, "InService")
    assert call(f"{server.endpoint('i-nope')}/latest/api/token", "PUT", ttl)[0] == 404

    before = time.time()
    post_notice(root / "video" / "i-0abc", "spot", seconds=120)
    code, body = call(f"{meta}/spot/instance-action", headers=auth)
    assert code == 200 and json.loads(body)["action"] == "terminate"
    when = time.mktime(time.strptime(json.loads(body)["time"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert before + 118 <= when <= time.time() + 121
    post_notice(root / "video" / "i-0abc", "terminate")
    assert call(f"{meta}/autoscaling/target-lifecycle-state", headers=auth) == (200, "Terminated")
    with pytest.raises(ValueError, match="allowed: spot, rebalance, terminate"):
        post_notice(root / "video" / "i-0abc", "reboot")


def test_the_instance_client_reads_the_notices_spot_first(imds: tuple[ImdsServer, Path]) -> None:
    import sys

    sys.path.insert(0, str(SCRIPTS))
    from deploytool_instance.imds import Imds

    server, root = imds
    client = Imds(server.endpoint("i-0abc"))
    assert client.reachable() and client.poll() is None
    post_notice(root / "video" / "i-0abc", "rebalance")
    notice = client.poll()
    assert notice is not None and notice.kind == "rebalance" and notice.deadline is None
    post_notice(root / "video" / "i-0abc", "spot", seconds=100)
    notice = client.poll()
    assert notice is not None and notice.kind == "spot"
    assert notice.deadline is not None and 95 <= notice.deadline - time.time() <= 101
    assert not Imds("http://127.0.0.1:1").reachable(tries=1)


def test_without_a_metadata_service_the_watcher_says_so_and_exits(tmp_path: Path) -> None:
    bundle = render_bundle(tmp_path / "bundle", app_context(), [group_settings("video", ["video"])], "v1")
    env = {**os.environ, "DEPLOYMENT_GROUP_NAME": "video", "DEPLOYTOOL_IMDS_ENDPOINT": "http://127.0.0.1:1"}
    env["DEPLOYTOOL_INSTANCE_ROOT"] = str(tmp_path / "root")
    done = subprocess.run(
        [PYTHON, str(bundle / "deploytool" / "hooks" / "celery_hooks.py"), "watch"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no instance metadata service at http://127.0.0.1:1: not on EC2; nothing to watch" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("broker", BROKERS[2:], indirect=True)
def test_a_spot_notice_lets_a_short_task_finish_and_releases_the_long_one_before_the_deadline(
    broker: BrokerSpec, tmp_path: Path, reaper: ProcessReaper, imds: tuple[ImdsServer, Path]
) -> None:
    """One instance, concurrency 2 (its group ignores rebalance recommendations, which the watcher shows
    first), holding an 8 s task and a 300 s one when a spot notice says the instance goes in 40 s. The watcher
    drains it: the worker takes nothing new, the 8 s task ends on it, and 20 s before the deadline the cold
    shutdown hands the long one back: visible in the queue at once, not held until the visibility timeout
    (600 s)."""
    server, root = imds
    fleet = make_fleet(
        broker, tmp_path, reaper, 1, ["video"], concurrency=2, task_time_limit=400, visibility_timeout=600,
        on_rebalance="ignore",
    )  # fmt: skip
    instance = fleet.instances[0]
    (root / "video" / instance.instance_id).mkdir(parents=True)
    # The endpoints go in the env file, as the sandbox writes them; the next start picks them up. The watcher
    # records the notice in the fleet's bucket, here on the moto server the SQS broker runs on.
    s3_endpoint = f"http://127.0.0.1:{urlsplit(broker.url).port}"
    s3 = boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    s3.create_bucket(Bucket=BUCKET)
    instance.write_env(
        broker.url, broker.options, tmp_path / "ledger.txt",
        {"DEPLOYTOOL_IMDS_ENDPOINT": server.endpoint(instance.instance_id), "DEPLOYTOOL_S3_ENDPOINT": s3_endpoint},
    )  # fmt: skip
    for run in instance.deploy(fleet.v2):
        run.check()
    watcher = instance.watcher_pid()
    assert watcher is not None
    watch_log = instance.install_dir / "log" / "watcher.log"
    assert wait_for(lambda: "watching" in watch_log.read_text(), 20), watch_log.read_text()

    # The group ignores rebalance recommendations: the watcher records it and goes on watching.
    post_notice(root / "video" / instance.instance_id, "rebalance")
    record_file = instance.install_dir / "run" / "interruption.json"
    assert wait_for(record_file.exists, 20), watch_log.read_text()
    assert json.loads(record_file.read_text())["outcome"] == "ignored"
    assert instance.watcher_pid() == watcher and instance.worker_pid() is not None
    record_file.unlink()

    short = fleet.load.send("transcode_video", fleet.queues[0], 8.0)
    long = fleet.load.send("transcode_video", fleet.queues[0], 300.0)
    assert wait_for(lambda: worker_log_has(instance, f"[{long.task_id}] received"), 30)
    assert wait_for(lambda: worker_log_has(instance, f"[{short.task_id}] received"), 30)
    noticed = time.time()
    post_notice(root / "video" / instance.instance_id, "spot", seconds=40)

    assert wait_for(record_file.exists, 60), watch_log.read_text()
    record: dict[str, Any] = json.loads(record_file.read_text())
    assert record["kind"] == "spot" and record["policy"] == "drain" and record["outcome"] == "cold", record
    assert any(long.task_id in label for label in record["interrupted"]), record
    assert time.time() < noticed + 40  # all of it before the instance would be stopped
    assert record["cold_shutdown_at"] <= record["deadline_at"] - 15  # handed back 20 s before (5 s of slack)
    assert instance.worker_pid() is None
    assert wait_for(lambda: instance.watcher_pid() is None, 10)  # the watcher's work is done: it exits
    assert fleet.load.runs()[short.task_id] == 1  # finished on the instance within the notice
    assert fleet.load.runs()[long.task_id] == 0
    assert queue_counts(broker, fleet.queues[0]) == (1, 0)  # released: waiting for another worker, not held
    text = watch_log.read_text()
    assert "notice: spot interruption: terminate at" in text and "SIGQUIT" in text, text

    # Off the instance: the record reconcile lists, signed with the instance profile's credentials (IMDS).
    found = read_interruptions(
        S3Reader(s3), BUCKET, prefix="deploytool", app=APP["name"], days=[day_of(datetime.now(UTC))]
    )
    assert [(r.instance_id, r.group, r.kind, r.outcome) for r in found.records] == [
        (instance.instance_id, "reports", "rebalance", "ignored"),
        (instance.instance_id, "reports", "spot", "cold"),
    ], found
    assert any(long.task_id in label for label in found.records[1].released)
    # the ignored notice once; the spot notice when its drain began and when it ended
    assert text.count("record: recorded at s3://") == 3, text


@pytest.mark.slow
@pytest.mark.parametrize("broker", BROKERS[2:], indirect=True)
def test_a_second_drain_waits_for_the_first_instead_of_signalling_the_worker_again(
    broker: BrokerSpec, tmp_path: Path, reaper: ProcessReaper
) -> None:
    """The watcher on a Terminated notice and a scale-in's ApplicationStop drain the same worker at once: the one
    that finds the instance's drain lock taken only waits for the worker to exit."""
    import fcntl
    import os
    import signal
    import threading

    fleet = make_fleet(broker, tmp_path, reaper, 1, ["video"], concurrency=2, task_time_limit=60)
    instance = fleet.instances[0]
    worker = instance.worker_pid()
    assert worker is not None
    lock_path = instance.install_dir / "run" / "drain.lock"
    with open(lock_path, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the other drain (here: this test) holds it
        runs: list[Any] = []
        stop = threading.Thread(target=lambda: runs.append(instance.stop()))
        stop.start()
        log = instance.root / "logs"
        assert wait_for(lambda: any("another drain" in p.read_text() for p in log.rglob("ApplicationStop.log")), 30)
        os.kill(worker, signal.SIGTERM)  # what the other drain does
        stop.join(60)
    [run] = runs
    assert run.returncode == 0, run.output
    assert f"another drain of pid {worker} is under way" in run.output and f"pid {worker} exited" in run.output
    assert "SIGTERM: pid" not in run.output and "SIGQUIT" not in run.output  # it signalled nothing itself
