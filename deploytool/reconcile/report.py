"""Stage reconcile/report: the deployed-vs-expected report and its three renderings.

Contract: `build_report` turns reconcile.sql's rows into a `ReconcileReport`: per group the expected
version (from the latest release that deployed it), the instances in its latest snapshot, how many
run the expected version, the drifted instances with the version each runs, and the untagged ones.
Drift = any instance of a group with an expected version that is drifted or untagged (exit code 3).
Renderers return text or rich renderables; they never print: `rich_tables` (a summary, then a table
per group with drift; on a narrow screen cells fold rather than lose an id to "…"), `to_json`,
`markdown` (for CI step summaries, `append_step_summary`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group as RichGroup
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from deploytool.reconcile.query import QueryResult

PROBLEMS = ("drift", "untagged")


@dataclass(frozen=True)
class InstanceState:
    instance_id: str
    status: str  # drift | untagged
    version: str | None
    release: str | None = None
    lifecycle_state: str | None = None
    health: str | None = None
    az: str | None = None
    market: str | None = None
    launch_time: str | None = None


@dataclass(frozen=True)
class GroupReport:
    group: str
    expected_version: str | None
    release_id: str | None
    snapshot_at: str | None
    instances: int
    on_expected: int
    drifted: tuple[InstanceState, ...] = ()
    untagged: tuple[InstanceState, ...] = ()

    @property
    def problems(self) -> tuple[InstanceState, ...]:
        return self.drifted + self.untagged

    @property
    def status(self) -> str:
        if self.snapshot_at is None and self.instances == 0:
            return "no snapshot"
        if self.expected_version is None:
            return "no release"
        if self.problems:
            return "drift"
        if self.instances == 0:
            return "no instances"
        return "ok"


@dataclass(frozen=True)
class ReconcileReport:
    app: str
    target: str
    engine: str
    groups: tuple[GroupReport, ...]
    window: tuple[str, str]
    bytes_scanned: int | None = None
    files_read: int | None = None
    partitions_read: Mapping[str, tuple[str, ...]] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def drift_count(self) -> int:
        return sum(len(g.problems) for g in self.groups if g.expected_version is not None)

    @property
    def has_drift(self) -> bool:
        return self.drift_count > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "target": self.target,
            "engine": self.engine,
            "window": {"dt_from": self.window[0], "dt_to": self.window[1]},
            "drift": self.has_drift,
            "drifted_instances": self.drift_count,
            "bytes_scanned": self.bytes_scanned,
            "files_read": self.files_read,
            "partitions_read": {k: list(v) for k, v in (self.partitions_read or {}).items()} or None,
            "notes": list(self.notes),
            "groups": [
                {
                    "group": g.group,
                    "status": g.status,
                    "expected_version": g.expected_version,
                    "release_id": g.release_id,
                    "snapshot_at": g.snapshot_at,
                    "instances": g.instances,
                    "on_expected": g.on_expected,
                    "drifted": [asdict(i) for i in g.drifted],
                    "untagged": [asdict(i) for i in g.untagged],
                }
                for g in self.groups
            ],
        }


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def build_report(
    result: QueryResult,
    *,
    app: str,
    target: str,
    window: tuple[str, str],
    groups: Sequence[str] | None = None,
    notes: Sequence[str] = (),
) -> ReconcileReport:
    """The report from reconcile.sql's rows; `groups` (fleet order) limits and orders it."""
    rows_by_group: dict[str, list[Mapping[str, Any]]] = {}
    for row in result.rows:
        rows_by_group.setdefault(str(row["group"]), []).append(row)
    names = list(groups) if groups is not None else sorted(rows_by_group)
    reports: list[GroupReport] = []
    for name in names:
        rows = rows_by_group.get(name)
        if not rows:
            reports.append(GroupReport(name, None, None, None, 0, 0))
            continue
        first = rows[0]
        states = {
            status: tuple(
                InstanceState(
                    instance_id=str(r["instance_id"]), status=status, version=r.get("version"),
                    release=r.get("release"), lifecycle_state=r.get("lifecycle_state"), health=r.get("health"),
                    az=r.get("az"), market=r.get("market"), launch_time=r.get("launch_time"),
                )
                for r in rows
                if r.get("status") == status and r.get("instance_id")
            )
            for status in PROBLEMS
        }
        reports.append(
            GroupReport(
                group=name,
                expected_version=first.get("expected_version"),
                release_id=first.get("release_id"),
                snapshot_at=first.get("snapshot_at"),
                instances=_int(first.get("instances")),
                on_expected=_int(first.get("on_expected")),
                drifted=states["drift"],
                untagged=states["untagged"],
            )
        )
    return ReconcileReport(
        app=app, target=target, engine=result.engine, groups=tuple(reports), window=window,
        bytes_scanned=result.bytes_scanned, files_read=result.files_read, partitions_read=result.partitions_read,
        notes=tuple(notes),
    )


def to_json(report: ReconcileReport) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=False)


def _cost(report: ReconcileReport) -> str:
    parts = [f"engine {report.engine}", f"dt {report.window[0]}..{report.window[1]}"]
    if report.bytes_scanned is not None:
        parts.append(f"Athena scanned {report.bytes_scanned:,} bytes")
    if report.partitions_read is not None:
        read = ", ".join(f"{t} {len(days)}" for t, days in report.partitions_read.items()) or "none"
        parts.append(f"partitions read: {read}")
    return "; ".join(parts)


_STYLE = {"ok": "green", "drift": "bold red", "no release": "yellow", "no instances": "yellow",
          "no snapshot": "yellow"}


def rich_tables(report: ReconcileReport) -> RenderableType:
    summary = Table(title=f"{report.app} on {report.target}: deployed vs expected")
    for column in ("group", "expected", "release", "instances", "on expected", "drifted", "untagged", "status"):
        summary.add_column(column, justify="right" if column in ("instances", "on expected", "drifted",
                                                                   "untagged") else "left", overflow="fold")
    for g in report.groups:
        summary.add_row(
            g.group, g.expected_version or "-", g.release_id or "-", str(g.instances), str(g.on_expected),
            str(len(g.drifted)), str(len(g.untagged)), Text(g.status, style=_STYLE.get(g.status, "")),
        )
    parts: list[RenderableType] = [summary]
    for g in report.groups:
        if not g.problems:
            continue
        detail = Table(title=f"{g.group}: {len(g.problems)} of {g.instances} not on {g.expected_version}")
        for column in ("instance", "runs", "release", "lifecycle", "health", "az", "market", "launched"):
            detail.add_column(column, overflow="fold")
        for i in g.problems:
            detail.add_row(
                i.instance_id, Text(i.version or "untagged", style="red"), i.release or "-",
                i.lifecycle_state or "-", i.health or "-", i.az or "-", i.market or "-", i.launch_time or "-",
            )
        parts.append(detail)
    parts.extend(Text(note, style="yellow") for note in report.notes)
    parts.append(Text(_cost(report), style="dim"))
    verdict = (
        Text(f"drift: {report.drift_count} instance(s) not on the expected version", style="bold red")
        if report.has_drift
        else Text("every instance runs its expected version", style="green")
    )
    parts.append(verdict)
    return RichGroup(*parts)


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def markdown(report: ReconcileReport) -> str:
    lines = [
        f"### Reconcile: {_cell(report.app)} on {_cell(report.target)}",
        "",
        "| group | expected | instances | on expected | drifted | untagged | status |",
        "|---|---|--:|--:|--:|--:|---|",
    ]
    for g in report.groups:
        lines.append(
            f"| {_cell(g.group)} | {_cell(g.expected_version or '-')} | {g.instances} | {g.on_expected} | "
            f"{len(g.drifted)} | {len(g.untagged)} | {g.status} |"
        )
    for g in report.groups:
        if g.problems:
            lines += ["", f"**{_cell(g.group)}** not on `{_cell(g.expected_version or '-')}`:", ""]
            lines += [
                f"- `{_cell(i.instance_id)}` runs `{_cell(i.version or 'untagged')}` "
                f"({_cell(i.lifecycle_state or '?')}, {_cell(i.health or '?')})"
                for i in g.problems
            ]
    lines += ["", *[f"> {_cell(n)}" for n in report.notes], f"_{_cost(report)}_", ""]
    return "\n".join(lines)


def append_step_summary(report: ReconcileReport, env: Mapping[str, str]) -> Path | None:
    """Append the markdown to $GITHUB_STEP_SUMMARY when it is set; returns the file written."""
    target = env.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    path = Path(target)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(markdown(report) + "\n")
    return path
