"""Reconcile on DuckDB over real files: a moto fleet (ASGs, instances, tags, release manifests in S3),
a snapshot written to S3, mirrored, and athena/reconcile.sql transpiled by sqlglot and run on DuckDB."""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from deploytool.config import Fleet
from deploytool.errors import DriftFound
from deploytool.model import inventory_key
from deploytool.reconcile.command import run_reconcile
from deploytool.reconcile.inventory import InventoryRow, encode_rows
from deploytool.reconcile.pipeline import reconcile
from deploytool.reconcile.query import DuckDbEngine
from deploytool.reconcile.sql import load_query, to_duckdb
from deploytool.rollout.tags import FinishedDeployment, tag_deployments
from deploytool.targets import settings_for
from tests.builders import make_fleet
from tests.fakes import FakeBackend
from tests.reconcile_support import APP, BUCKET, PREFIX, TARGETS, MotoFleet, fake_backend, fix_runner, mocked_aws


@pytest.fixture
def moto_fleet(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoFleet]:
    with mocked_aws(monkeypatch) as session:
        yield MotoFleet(session)


def _deploy(mf: MotoFleet, backend: FakeBackend, fleet: Fleet, release_id: str, version: str) -> None:
    """What a release does to the fleet: a deployment per group, then tags on the succeeded instances."""
    mf.write_release(release_id, version, fleet.groups)
    from deploytool.model import Revision
    from deploytool.rollout.backend import DeployRequest

    finished = []
    for group in fleet.groups:
        revision = Revision(BUCKET, f"{PREFIX}/{APP}/{version}/x.tgz", '"e"', version, "0" * 64)
        deployment_id = backend.start(DeployRequest(group=group, revision=revision, release_id=release_id))
        finished.append(FinishedDeployment(group.name, deployment_id, version, release_id, mf.clock.wall()))
    tag_deployments(mf.ec2, backend, finished)


def _race_fleet(mf: MotoFleet, tmp_path: Path) -> tuple[Fleet, dict[str, str]]:
    """v1 everywhere; then v2 where one email instance fails and one is launched mid-deploy."""
    fleet = make_fleet(["email", "reports"], root=tmp_path, targets=TARGETS, asg="acme-{}-workers")
    email, reports = fleet.groups
    email_ids = mf.create_group(email, 3)
    mf.create_group(reports, 2)
    _deploy(mf, fake_backend(mf), fleet, "20240506T080000Z-2024.05.06-aaaaaaa", "2024.05.06-aaaaaaa")
    mf.clock.advance(1800)
    # v2: the ASG scales out while the deployment runs (the new instance is not part of it), and one
    # of the original instances fails its ApplicationStart.
    backend = fake_backend(mf, failing=[email_ids[1]])
    mf.write_release("20240506T083000Z-2024.05.06-bbbbbbb", "2024.05.06-bbbbbbb", fleet.groups)
    from deploytool.model import Revision
    from deploytool.rollout.backend import DeployRequest

    finished = []
    for group in fleet.groups:
        revision = Revision(BUCKET, f"{PREFIX}/{APP}/v2/x.tgz", '"e"', "2024.05.06-bbbbbbb", "0" * 64)
        deployment_id = backend.start(
            DeployRequest(
                group=group,
                revision=revision,
                release_id="20240506T083000Z-2024.05.06-bbbbbbb",
                target_instances=tuple(mf.instance_ids(group)),
            )
        )
        finished.append(
            FinishedDeployment(
                group.name, deployment_id, "2024.05.06-bbbbbbb", "20240506T083000Z-2024.05.06-bbbbbbb", mf.clock.wall()
            )
        )
    (launched,) = mf.scale(email, 4)
    tag_deployments(mf.ec2, backend, finished)
    mf.clock.advance(300)
    return fleet, {"failed": email_ids[1], "launched": launched}


def test_scale_out_race_and_failed_instance_are_drift_with_their_versions(
    moto_fleet: MotoFleet, tmp_path: Path
) -> None:
    fleet, odd = _race_fleet(moto_fleet, tmp_path)
    settings = settings_for(fleet, "sandbox", mirror=str(tmp_path / "mirror"))
    run = reconcile(fleet, settings, moto_fleet.services())
    report = run.report

    assert run.result.engine == "duckdb"
    assert run.snapshot_keys == (f"{PREFIX}/{APP}/inventory/dt=2024-05-06/20240506T093500.000000Z-0.json.gz",)
    by_group = {g.group: g for g in report.groups}
    email, reports = by_group["email"], by_group["reports"]
    assert (email.expected_version, email.instances, email.on_expected) == ("2024.05.06-bbbbbbb", 4, 2)
    assert [(i.instance_id, i.version) for i in email.drifted] == [(odd["failed"], "2024.05.06-aaaaaaa")]
    assert [(i.instance_id, i.version) for i in email.untagged] == [(odd["launched"], None)]
    assert email.status == "drift"
    assert (reports.instances, reports.on_expected, reports.status) == (2, 2, "ok")
    assert report.drift_count == 2 and report.has_drift
    # Only the snapshot's day was read; releases are read whole.
    assert report.partitions_read is not None
    assert report.partitions_read["inventory"] == ("2024-05-06",)


def test_fab_reconcile_exits_3_and_fix_converges(moto_fleet: MotoFleet, tmp_path: Path) -> None:
    fleet, odd = _race_fleet(moto_fleet, tmp_path)
    settings = settings_for(fleet, "sandbox", mirror=str(tmp_path / "mirror"))
    summary = tmp_path / "summary.md"
    out = StringIO()
    console = Console(file=out, width=160, force_terminal=False)
    with pytest.raises(DriftFound) as caught:
        run_reconcile(
            fleet, settings, moto_fleet.services(), console, as_json=True, env={"GITHUB_STEP_SUMMARY": str(summary)}
        )
    assert caught.value.exit_code == 3
    data = json.loads(out.getvalue())
    email = next(g for g in data["groups"] if g["group"] == "email")
    assert [d["version"] for d in email["drifted"]] == ["2024.05.06-aaaaaaa"]
    assert [d["instance_id"] for d in email["untagged"]] == [odd["launched"]]
    text = summary.read_text()
    assert "| email | 2024.05.06-bbbbbbb | 4 | 2 | 1 | 1 | drift |" in text
    assert f"`{odd['failed']}` runs `2024.05.06-aaaaaaa`" in text

    # --fix: redeploy v2 to exactly the two drifted instances, then reconcile again: exit 0.
    backend = fake_backend(moto_fleet)
    moto_fleet.clock.advance(600)
    out = StringIO()
    report = run_reconcile(
        fleet,
        settings,
        moto_fleet.services(),
        Console(file=out, width=160),
        fix=True,
        runner=fix_runner(backend),
        backend=backend,
        env={},
    )
    (request,) = backend.starts
    assert request.group.name == "email"
    assert request.target_instances == tuple(sorted([odd["failed"], odd["launched"]]))
    assert request.revision is not None and request.revision.version == "2024.05.06-bbbbbbb"
    assert not report.has_drift
    assert {g.group: (g.instances, g.on_expected) for g in report.groups} == {"email": (4, 4), "reports": (2, 2)}
    assert "every instance runs its expected version" in out.getvalue()


def _write_rows(mf: MotoFleet, rows: list[InventoryRow], when_iso: str) -> None:
    from datetime import datetime

    when = datetime.fromisoformat(when_iso.replace("Z", "+00:00"))
    mf.s3.put_bytes(BUCKET, inventory_key(PREFIX, APP, when, 0), encode_rows(rows))


def test_untrusted_values_never_change_the_sql(moto_fleet: MotoFleet, tmp_path: Path) -> None:
    nasty_group = "it's'; DROP TABLE inventory; --"
    nasty_version = "v'2\"; DELETE FROM releases; --"
    root = tmp_path / "mirror"
    fleet = make_fleet(["email"], root=tmp_path, targets=TARGETS, asg="acme-{}-workers")
    release_id = "20240506T080000Z-bad"
    manifest = moto_fleet.write_release(release_id, nasty_version, fleet.groups)
    manifest["groups"][0]["group"] = nasty_group
    from deploytool.model import manifest_key as release_key

    moto_fleet.s3.put_bytes(BUCKET, release_key(PREFIX, APP, release_id), (json.dumps(manifest) + "\n").encode())
    stamp = "2024-05-06T09:00:00.000000Z"
    _write_rows(
        moto_fleet,
        [
            InventoryRow(stamp, APP, "i-0000000000000000a", "asg", nasty_group, version=nasty_version),
            InventoryRow(stamp, APP, "i-0000000000000000b", "asg", nasty_group, version="v1'"),
        ],
        stamp,
    )
    from deploytool.reconcile.mirror import mirror_tables

    mirror_tables(moto_fleet.s3, BUCKET, prefix=PREFIX, app=APP, root=root, days=["2024-05-06"])
    query = load_query("reconcile")
    plain = {
        "app": APP,
        "target": "sandbox",
        "releases_from": "",
        "release": "",
        "dt_from": "2024-05-06",
        "dt_to": "2024-05-06",
    }
    with DuckDbEngine(root, PREFIX) as duck:
        benign = duck.run(query, plain)
        hostile = duck.run(query, {**plain, "release": "x' OR '1'='1"})
        exact = duck.run(query, {**plain, "release": release_id})
    assert benign.sql == hostile.sql == exact.sql == to_duckdb(query.text)
    assert "DROP" not in benign.sql and "?" in benign.sql
    # The values round-trip as data: the group and the versions come back exactly.
    rows = [r for r in benign.rows if r["status"] in ("drift", "untagged")]
    assert [(r["group"], r["expected_version"], r["version"]) for r in rows] == [(nasty_group, nasty_version, "v1'")]
    assert benign.rows[0]["on_expected"] == 1
    # A quoted release id is a value that matches nothing, not SQL that matches everything.
    assert {r["status"] for r in hostile.rows} == {"no-release"}
    assert hostile.parameters[3] == "x' OR '1'='1"
    assert [r["expected_version"] for r in exact.rows] == [nasty_version]


def test_partitions_outside_the_window_are_not_read(moto_fleet: MotoFleet, tmp_path: Path) -> None:
    fleet = make_fleet(["email"], root=tmp_path, targets=TARGETS, asg="acme-{}-workers")
    moto_fleet.write_release("20240501T000000Z-v1", "v1", fleet.groups)
    for day, version in (("01", "v0"), ("02", "v1"), ("03", "v1")):
        stamp = f"2024-05-{day}T12:00:00.000000Z"
        _write_rows(
            moto_fleet, [InventoryRow(stamp, APP, "i-1", "acme-email-workers", "email", version=version)], stamp
        )
    root = tmp_path / "mirror"
    from deploytool.reconcile.mirror import mirror_tables

    mirrored = mirror_tables(
        moto_fleet.s3, BUCKET, prefix=PREFIX, app=APP, root=root, days=["2024-05-01", "2024-05-02", "2024-05-03"]
    )
    assert (mirrored.downloaded, mirrored.kept) == (4, 0)
    again = mirror_tables(moto_fleet.s3, BUCKET, prefix=PREFIX, app=APP, root=root, days=["2024-05-03"])
    assert (again.downloaded, again.kept) == (0, 2)
    values = {"app": APP, "target": "sandbox", "releases_from": "", "release": ""}
    with DuckDbEngine(root, PREFIX) as duck:
        latest = duck.run(
            load_query("reconcile"), {**values, "dt_from": "2024-05-03", "dt_to": "2024-05-03"}, measure=True
        )
        old = duck.run(
            load_query("reconcile"), {**values, "dt_from": "2024-05-01", "dt_to": "2024-05-01"}, measure=True
        )
        timeline = duck.run(
            load_query("rollout_timeline"), {"app": APP, "dt_from": "2024-05-01", "dt_to": "2024-05-03"}, measure=True
        )
    assert latest.partitions_read == {"inventory": ("2024-05-03",), "releases": ("2024-05-01",)}
    assert [r["status"] for r in latest.rows] == ["ok"]
    assert old.partitions_read is not None and old.partitions_read["inventory"] == ("2024-05-01",)
    assert [(r["status"], r["version"]) for r in old.rows] == [("drift", "v0")]
    # "time" is a timestamp without time zone (Grafana's Athena plugin reads no other), its value the UTC time
    assert [(r["time"], r["version"], r["instances"]) for r in timeline.rows] == [
        ("2024-05-01T12:00:00", "v0", 1),
        ("2024-05-02T12:00:00", "v1", 1),
        ("2024-05-03T12:00:00", "v1", 1),
    ]
    assert timeline.partitions_read == {"inventory": ("2024-05-01", "2024-05-02", "2024-05-03")}


def test_releases_outside_the_release_window_are_not_read(moto_fleet: MotoFleet, tmp_path: Path) -> None:
    """reconcile.sql reads the releases of the last 30 days (dt >= releases_from), not every day since the
    projection's start; --release of an older release widens the window to that release's day."""
    from dataclasses import replace

    fleet = make_fleet(["email"], root=tmp_path, targets=TARGETS, asg="acme-{}-workers")
    moto_fleet.create_group(fleet.groups[0], 2)
    moto_fleet.write_release("20240115T000000Z-v0", "v0", fleet.groups)  # succeeded, months ago
    moto_fleet.write_release("20240301T000000Z-v05", "v05", fleet.groups)
    _deploy(moto_fleet, fake_backend(moto_fleet), fleet, "20240501T000000Z-v1", "v1")
    settings = settings_for(fleet, "sandbox", mirror=str(tmp_path / "mirror"))

    run = reconcile(fleet, settings, moto_fleet.services())
    assert run.result.partitions_read is not None
    assert run.result.partitions_read["releases"] == ("2024-05-01",)
    assert run.result.parameters[2] == "2024-04-07"  # releases_from: 30 days ending on the snapshot's day
    assert settings.release_days == 30
    (email,) = run.report.groups
    assert (email.expected_version, email.on_expected, email.problems) == ("v1", 2, ())
    assert run.notes == ()

    older = reconcile(fleet, replace(settings, release="20240301T000000Z-v05"), moto_fleet.services())
    assert older.result.partitions_read is not None
    assert older.result.partitions_read["releases"] == ("2024-03-01", "2024-05-01")
    assert older.report.groups[0].expected_version == "v05"


def test_a_group_without_a_good_release_in_the_window_reads_every_day(moto_fleet: MotoFleet, tmp_path: Path) -> None:
    """email's last good release is older than the window (the newest failed): the query runs again over every
    day, so email is still checked against v0, and a note says the releases of every day were read."""
    fleet = make_fleet(["email"], root=tmp_path, targets=TARGETS, asg="acme-{}-workers")
    moto_fleet.create_group(fleet.groups[0], 2)
    _deploy(moto_fleet, fake_backend(moto_fleet), fleet, "20240115T000000Z-v0", "v0")
    moto_fleet.write_release("20240501T000000Z-v1", "v1", fleet.groups, outcomes={"email": "failed"})
    run = reconcile(fleet, settings_for(fleet, "sandbox", mirror=str(tmp_path / "mirror")), moto_fleet.services())
    assert run.result.parameters[2] == ""
    assert run.result.partitions_read is not None
    assert run.result.partitions_read["releases"] == ("2024-01-15", "2024-05-01")
    (email,) = run.report.groups
    assert (email.expected_version, email.latest_outcome, email.on_expected) == ("v0", "failed", 2)
    assert run.notes == ("no release succeeded for email since 2024-04-07: read the releases of every day",)


def test_pretty_printed_manifest_is_mirrored_as_one_line(moto_fleet: MotoFleet, tmp_path: Path) -> None:
    fleet = make_fleet(["email"], root=tmp_path, targets=TARGETS, asg="acme-{}-workers")
    moto_fleet.write_release("20240501T000000Z-v1", "v1", fleet.groups, pretty=True)
    root = tmp_path / "mirror"
    from deploytool.reconcile.mirror import mirror_tables

    mirror_tables(moto_fleet.s3, BUCKET, prefix=PREFIX, app=APP, root=root, days=[])
    (local,) = (root / PREFIX / APP / "releases").rglob("*.json")
    lines = local.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["version"] == "v1"


def test_rich_report_and_bad_options(moto_fleet: MotoFleet, tmp_path: Path) -> None:
    from deploytool.errors import UsageError
    from deploytool.reconcile.report import rich_tables

    fleet, odd = _race_fleet(moto_fleet, tmp_path)
    settings = settings_for(fleet, "sandbox", mirror=str(tmp_path / "mirror"))
    assert (settings.engine, settings_for(fleet, "production").engine) == ("duckdb", "athena")
    report = reconcile(fleet, settings, moto_fleet.services()).report
    out = StringIO()
    Console(file=out, width=200, force_terminal=False).print(rich_tables(report))
    text = out.getvalue()
    assert "email: 2 of 4 not on 2024.05.06-bbbbbbb" in text
    assert odd["failed"] in text and odd["launched"] in text and "untagged" in text
    assert "drift: 2 instance(s) not on the expected version" in text
    with pytest.raises(UsageError, match="--engine 'presto'"):
        settings_for(fleet, "sandbox", engine="presto")
    with pytest.raises(UsageError, match="no group named 'nope'"):
        settings_for(fleet, "sandbox", groups=["nope"])
