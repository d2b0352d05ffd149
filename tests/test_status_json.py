"""`fab status --json` on the CodeDeploy simulator: one JSON object, the same reading as the table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from deploytool.rollout import commands
from deploytool.rollout.lease import STALE_S, LeaseStore, acquire
from deploytool.rollout.plan import RolloutOptions
from deploytool.rollout.wiring import LeaseOptions, Output
from tests.rollout_helpers import World, sample_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with sample_world(tmp_path) as w:
        w.services.now = lambda: w.moment[0] + timedelta(seconds=w.env.clock.now())
        w.services.lease = LeaseOptions("deploy")
        yield w


def status_json(world: World, capsys: pytest.CaptureFixture[str], release: str | None = None) -> Any:
    capsys.readouterr()
    world.out.truncate(0)
    world.out.seek(0)
    commands.status(world.fleet, "production", world.services, release, as_json=True)
    out = capsys.readouterr().out
    assert out.endswith("\n") and out.count("\n") == 1, out  # one line: one object
    assert world.out.getvalue() == ""  # no table, no lease line
    return json.loads(out)


def test_status_json_after_a_deploy(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    result = world.deploy("v1")
    assert result is not None and result.succeeded
    data = status_json(world, capsys)
    assert data["target"] == "production" and data["lease"] is None
    release = data["release"]
    assert {k: release[k] for k in ("release_id", "version", "mode", "target")} == {
        "release_id": result.release_id,
        "version": "v1",
        "mode": "deploy",
        "target": "production",
    }
    assert release["created"].startswith("2025-05-01T12:05")
    sim = world.env.sim.deployments
    groups = {g["group"]: g for g in release["groups"]}
    assert groups.keys() == {g.group for g in result.groups}
    for g in result.groups:
        entry = groups[g.group]
        assert entry["deployment_id"] == g.deployment_id and g.deployment_id in sim
        assert (entry["status"], entry["outcome"], entry["abandoned_reason"]) == ("Succeeded", "succeeded", None)
        assert entry["failed"] == 0 and entry["succeeded"] == entry["total"] > 0
        assert entry["rollback_deployment_id"] is None and entry["rollback_status"] is None
    assert (groups["video"]["succeeded"], groups["video"]["total"]) == (2, 2)
    # the table is made from the same reading
    commands.status(world.fleet, "production", world.services, None)
    text = world.out.getvalue()
    assert "release lease of target 'production': free" in text
    for entry in release["groups"]:
        assert entry["deployment_id"] in text and f"{entry['succeeded']}/0/{entry['total']}" in text


def test_status_json_of_a_rollback_under_a_stale_lease(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    first = world.deploy("v1")
    world.deploy("v2")
    world.moment[0] += timedelta(minutes=5)
    back = commands.rollback(
        world.fleet,
        "production",
        world.fleet.groups,
        RolloutOptions(),
        world.services,
        Output(ci=True),
        to_version=None,
    )
    assert back is not None and back.succeeded and first is not None
    store = world.services.store
    acquire(
        LeaseStore(store.s3, bucket=store.bucket, prefix=store.prefix, app=store.app),
        target="production",
        release_id="20250501T115000Z-other",
        command="deploy",
        now=world.services.now,
        clock=world.env.clock,
        say=lambda line: None,
        holder="ci@runner-7",
        pid=4242,
    )
    world.env.clock.advance(STALE_S + 5)
    data = status_json(world, capsys)
    assert (data["release"]["release_id"], data["release"]["mode"]) == (back.release_id, "rollback")
    assert data["release"]["version"] == "v1"
    lease = data["lease"]
    assert {k: lease[k] for k in ("holder", "pid", "command", "release_id", "stale")} == {
        "holder": "ci@runner-7",
        "pid": 4242,
        "command": "deploy",
        "release_id": "20250501T115000Z-other",
        "stale": True,
    }
    assert lease["renewed_s_ago"] == 125 and lease["since"] and lease["renewed"]
    older = status_json(world, capsys, first.release_id)  # --release: an earlier one
    assert (older["release"]["release_id"], older["release"]["mode"]) == (first.release_id, "deploy")
