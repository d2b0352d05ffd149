"""The task contract: the task names (and required arguments) a release's app registers, read from its source,
and `fab deploy` refusing a release that drops or requires more of a task the last good release registers (real
bundle, moto S3, the CodeDeploy simulator, as tests/test_rollout_commands.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploytool.contract import changes, registered_tasks
from deploytool.errors import UsageError
from deploytool.rollout.plan import RolloutOptions
from tests.rollout_helpers import World, sample_world

SOURCE = """
from celery import Celery, shared_task
app = Celery("x")

@app.task(bind=True, name="media.transcode")
def transcode(self, video_id, preset, seconds=2.0):
    pass

@app.task
def plain(a, b=1, *rest, **options):
    pass

@shared_task(ignore_result=True)
async def notify(user):
    pass

def helper(x):
    pass

@other.decorator
def not_a_task(y):
    pass
"""


def test_registered_tasks_are_read_from_the_source_without_importing_it() -> None:
    found = registered_tasks(
        [("media/jobs.py", SOURCE), ("media/__init__.py", "@app.task\ndef ping():\n    pass\n"), ("bad.py", "def (")]
    )
    assert found == {
        "media.ping": [],  # a package's __init__ is the package
        "media.jobs.notify": ["user"],
        "media.jobs.plain": ["a"],
        "media.transcode": ["video_id", "preset"],  # its name=, and bind=True drops self
    }


def test_changes_names_each_dropped_task_and_each_that_requires_more() -> None:
    old = {"a.send_email": ["to"], "a.build_report": ["report_id"], "a.same": ["x", "y"]}
    new = {"a.send_mail": ["to"], "a.build_report": ["report_id", "owner"], "a.same": ["renamed"], "a.extra": []}
    assert changes(old, new) == [
        "a.build_report: now requires 2 argument(s), was 1 (new: owner)",
        "a.send_email: no longer registered",
    ]
    assert changes(old, {**old, "a.added": ["z"]}) == []  # a new task, or fewer required arguments: compatible


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with sample_world(tmp_path) as built:
        yield built


def test_a_release_that_drops_a_task_is_refused_until_it_is_allowed(world: World) -> None:
    world.deploy("v1")
    tasks = world.tmp / "sample_app" / "acme_workers" / "tasks.py"
    tasks.write_text(tasks.read_text().replace('name="acme_workers.tasks.send_email"', 'name="acme.send_mail"'))
    store = world.services.store
    created = world.env.sim.calls["CreateDeployment"]

    with pytest.raises(UsageError) as caught:
        world.deploy("v2")
    assert str(caught.value) == (
        "v2 drops or changes task(s) that v1, the last release that succeeded on target 'production', registers: "
        "acme_workers.tasks.send_email: no longer registered; messages already queued for them would fail on the "
        "new workers: keep the old name beside the new one until they are drained, or deploy anyway with "
        "--allow-task-changes"
    )
    assert world.env.sim.calls["CreateDeployment"] == created  # nothing rolled out
    assert store.find("production", "v2") is None  # nor published

    result = world.deploy("v2", options=RolloutOptions(allow_task_changes=True))
    assert result is not None and result.succeeded
    manifest = store.find("production", "v2")
    assert manifest is not None and "acme.send_mail" in manifest.extra["tasks"]
    assert manifest.extra["tasks"]["acme_workers.tasks.transcode_video"] == ["video_id"]
