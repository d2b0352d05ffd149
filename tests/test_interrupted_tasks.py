"""Tasks a drain's cold shutdown interrupted reach the deploy's output: the hook prints one marker line per task
(`deploytool: interrupted task NAME[ID]: FATE`), the sandbox backend reads them from the instance's event logs into
the deployment's warnings, and the progress lines and --json-out show them (as warnings: the deployment succeeds).
The real-Celery drain that prints them is tests/test_hooks_brokers.py (a task longer than the drain budget)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from deploytool.aws.s3 import S3Gateway
from deploytool.aws.session import AwsSession
from deploytool.rollout.events import Fanout
from deploytool.rollout.orchestrator import Orchestrator
from deploytool.rollout.plan import RolloutOptions, rollout_plan
from deploytool.rollout.progress import PlainLines
from deploytool.rollout.summary import ResultWriters
from deploytool_instance.base import Clock, Log
from deploytool_instance.interrupted import report_interrupted
from tests.builders import make_fleet, sandbox_target
from tests.sandbox_helpers import FIXTURE_APP, appspec, aws, make_backend, sh, upload, write_bundle

__all__ = ["aws"]
LONG = "acme_workers.tasks.transcode_video"


@pytest.mark.parametrize(
    ("acks_late", "fate"),
    [
        (True, "not acknowledged (acks_late): re-queued by the broker, it runs again"),
        (False, "acknowledged when received (acks_late = false): it does not run again unless the task sets acks_late"),
    ],
)
def test_the_drain_prints_a_marker_line_per_interrupted_task(tmp_path: Path, acks_late: bool, fate: str) -> None:
    interrupted = tmp_path / "interrupted.json"  # what the worker launcher writes on SIGQUIT
    tasks = [{"name": LONG, "id": "t-1"}, {"name": LONG, "id": "t-2"}]
    interrupted.write_text(json.dumps({"pid": 4242, "tasks": tasks}))
    settings = SimpleNamespace(layout=SimpleNamespace(interrupted_file=interrupted), group={"acks_late": acks_late})
    out = io.StringIO()
    log = Log("drain", Clock(), out=out)
    assert report_interrupted(settings, 4242, log) == [f"{LONG}[t-1]", f"{LONG}[t-2]"]
    lines = out.getvalue().splitlines()
    assert lines[1:] == [
        f"deploytool: interrupted task {LONG}[t-1]: {fate}",
        f"deploytool: interrupted task {LONG}[t-2]: {fate}",
    ]
    assert "2 task(s) cut off by the cold shutdown" in lines[0]


def marking_bundle(tmp_path: Path, version: str) -> Path:
    """A bundle whose ApplicationStop prints what the drain prints after a cold shutdown (with other output around)."""
    stop = f"""
echo "deploytool drain +0.001s find worker: pid 4242"
echo "deploytool: interrupted task {LONG}[t-$DEPLOYTOOL_INSTANCE_ID]: not acknowledged (acks_late): re-queued"
echo "deploytool drain +2.002s drained: pid 4242: cold in 2.001s"
"""
    return write_bundle(
        tmp_path / f"{version}.tgz",
        {
            "hooks/stop.sh": sh(stop),
            "hooks/start.sh": sh("true"),
            "appspec.yml": appspec({"ApplicationStop": "hooks/stop.sh", "ApplicationStart": "hooks/start.sh"}),
        },
    )


@pytest.mark.slow
def test_a_sandbox_deploy_shows_the_interrupted_tasks_in_its_lines_and_json(tmp_path: Path, aws: AwsSession) -> None:
    fleet = make_fleet(
        [{"name": "video", "strategy": "AllAtOnce"}],
        root=tmp_path,
        app=FIXTURE_APP,
        targets=sandbox_target({"video": 2}),
    )
    backend = make_backend(fleet, aws, tmp_path / "sb")
    s3 = S3Gateway(aws)
    group = fleet.group("video")
    ids = [i.instance_id for i in backend.fleet.instances(group)]

    def release(version: str, out: io.StringIO, json_out: Path) -> None:
        plan = rollout_plan(
            release_id=f"20250101T000000Z-{version}",
            version=version,
            target="sandbox",
            groups=[group],
            revision=upload(s3, marking_bundle(tmp_path, version), version),
            options=RolloutOptions(poll_min_s=0.1, poll_max_s=0.2),
        )
        reporter = Fanout([PlainLines(Console(file=out, width=300)), ResultWriters(json_out=json_out)])
        assert Orchestrator(backend, plan, reporter=reporter).run().succeeded  # a warning, not a failure

    first, second = io.StringIO(), io.StringIO()
    release("v1", first, tmp_path / "v1.json")
    assert "interrupted" not in first.getvalue()  # no ApplicationStop on the first install
    release("v2", second, tmp_path / "v2.json")  # v1's ApplicationStop drains
    expected = [
        f"{iid}: interrupted task {LONG}[t-{iid}] in ApplicationStop: not acknowledged (acks_late): re-queued"
        for iid in ids
    ]
    [result] = json.loads((tmp_path / "v2.json").read_text())["groups"]
    assert sorted(result["warnings"]) == expected and result["outcome"] == "succeeded"
    lines = [line.split("] ", 1)[1] for line in second.getvalue().splitlines()]
    assert sorted(line for line in lines if line.startswith("warning: ")) == [f"warning: video: {w}" for w in expected]
