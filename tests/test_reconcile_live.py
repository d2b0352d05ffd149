"""`fab reconcile --live`'s comparison (deploytool.reconcile.live): what the tags say against what the workers'
heartbeats say runs, per instance; and how the report shows it (drift, JSON, markdown)."""

from __future__ import annotations

from datetime import UTC, datetime

from deploytool.aws.cloudwatch import Heartbeat
from deploytool.reconcile.inventory import InventoryRow, Snapshot
from deploytool.reconcile.live import live_check
from deploytool.reconcile.query import QueryResult
from deploytool.reconcile.report import build_report, markdown

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


def row(instance: str, group: str, version: str | None, state: str = "InService") -> InventoryRow:
    return InventoryRow("2026-12-02T08:00:00Z", "acme", instance, f"asg-{group}", group, lifecycle_state=state,
                        version=version)  # fmt: skip


def beat(instance: str, group: str, release: str, state: str = "running") -> Heartbeat:
    return Heartbeat(group, release, instance, state, NOW)


def test_each_instance_is_judged_by_what_its_workers_say() -> None:
    snapshot = Snapshot("acme", NOW, (
        row("i-ok", "video", "v2"),
        row("i-old", "video", "v2"),  # tagged v2, its worker still runs v1
        row("i-quiet", "email", "v2"),  # InService, nothing heard
        row("i-handoff", "video", "v2"),  # v2 runs, a v1 worker still finishing beside it
        row("i-launching", "email", None, "Standby"),  # not in service, not heard: left out
        row("i-standby", "email", None, "Standby"),  # not in service but heard
    ))  # fmt: skip
    beats = [
        beat("i-ok", "video", "v2"),
        beat("i-old", "video", "v1"),
        beat("i-handoff", "video", "v2"),
        beat("i-handoff", "video", "v1", "draining"),
        beat("i-standby", "email", "v2"),
        beat("i-gone", "video", "v1"),  # terminated since: not in the snapshot
    ]
    live = live_check(snapshot, beats, window_s=120)
    found = {i.instance_id: (i.finding, i.running, i.draining) for i in live.instances}
    assert found == {
        "i-ok": ("ok", ("v2",), ()),
        "i-old": ("other release", ("v1",), ()),
        "i-quiet": ("silent", (), ()),
        "i-handoff": ("ok", ("v2",), ("v1",)),
        "i-standby": ("ok", ("v2",), ()),
    }
    assert [i.instance_id for i in live.problems] == ["i-quiet", "i-old"]  # by group, then instance
    assert live.unknown == ("i-gone",)
    only_email = live_check(snapshot, beats, groups=["email"], window_s=120)
    assert {i.instance_id for i in only_email.instances} == {"i-quiet", "i-standby"} and only_email.unknown == ()

    empty = QueryResult(engine="duckdb", columns=(), rows=(), sql="", parameters=())
    report = build_report(empty, app="acme", target="production", window=("2026-12-02", "2026-12-02"),
                          groups=["video", "email"], live=live)  # fmt: skip
    assert report.has_drift and report.live_count == 2 and report.drift_count == 0
    assert report.verdict == "drift: 2 instance(s) whose workers do not run their tagged version (--live)"
    data = report.to_dict()
    assert data["status"] == "drift" and data["live"]["problems"] == 2
    assert "- `i-old` (video): tagged `v2`, workers heard: v1 (other release)" in markdown(report)
    assert "- `i-quiet` (email): tagged `v2`, workers heard: none (silent)" in markdown(report)
    calm_live = live_check(Snapshot("acme", NOW, (row("i-ok", "video", "v2"),)), beats[:1], window_s=120)
    calm = build_report(empty, app="acme", target="production", window=("2026-12-02", "2026-12-02"),
                        groups=["video"], live=calm_live)  # fmt: skip
    assert not calm.has_drift and calm.live_count == 0
