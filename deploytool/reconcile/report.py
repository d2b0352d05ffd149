"""Stage reconcile/report: the deployed-vs-expected report and its three renderings.

Contract: `build_report` turns reconcile.sql's rows into a `ReconcileReport`: per group the expected
version (from the newest release that succeeded for the group, or the release given), the instances
in its latest snapshot, how many run the expected version, the drifted instances with the version
each runs, and the untagged ones; and a `remark` saying what else the release record knows (the
group's newest release failed, was rolled back or is still running; no release succeeded for it); and the
interruptions the instances' watchers recorded in the window (spot notices, rebalance, Terminated: the instance,
what the watcher did, the tasks it handed back), which say where instances went but are not drift.
Drift = any instance of a group with an expected version that is drifted or untagged (exit code 3).
`verdict` says only what was checked: "nothing to check" when no group has an expected version or
instances (exit 0: no release has succeeded there yet, so no instance can be said to drift).
Renderers return text or rich renderables; they never print: `rich_tables` (a summary, then a table
per group with drift; on a narrow screen cells fold rather than lose an id to "…"), `to_json`,
`markdown` (for CI step summaries, `append_step_summary`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Group as RichGroup
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from deploytool.reconcile.interruptions import Interruption
from deploytool.reconcile.live import LiveReport
from deploytool.reconcile.query import QueryResult

PROBLEMS = ("drift", "untagged")
_OUTCOME_TEXT = {
    "succeeded": "succeeded",
    "failed": "failed",
    "rolled_back": "failed (rolled back)",
    "stopped": "was stopped",
    "not_started": "never started for this group",
    "pending": "has not finished (running, detached or interrupted)",
}


def outcome_text(outcome: str | None) -> str:
    """How a release's outcome for a group reads in a sentence ("... failed (rolled back)")."""
    return _OUTCOME_TEXT.get(outcome or "", "has no recorded outcome")


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
    expected_outcome: str | None = None  # the expected release's outcome for this group
    latest_release_id: str | None = None  # the group's newest release, whatever its outcome
    latest_outcome: str | None = None
    remark: str | None = None  # what the release record says beyond the expected version

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
    release: str = ""  # the release given (--release), or "" for each group's last good release
    interruptions: tuple[Interruption, ...] = ()
    live: LiveReport | None = None  # --live: what the workers' heartbeats say runs

    @property
    def live_count(self) -> int:
        """Instances whose workers do not run their tagged version (--live), counted apart from tag drift."""
        return len(self.live.problems) if self.live is not None else 0

    @property
    def drift_count(self) -> int:
        return sum(len(g.problems) for g in self.groups if g.expected_version is not None)

    @property
    def has_drift(self) -> bool:
        return self.drift_count > 0 or self.live_count > 0

    @property
    def checked(self) -> tuple[GroupReport, ...]:
        """The groups whose instances were compared with an expected version."""
        return tuple(g for g in self.groups if g.expected_version is not None and g.instances > 0)

    @property
    def status(self) -> str:
        """drift | ok | nothing-to-check"""
        return "drift" if self.has_drift else ("ok" if self.checked else "nothing-to-check")

    @property
    def verdict(self) -> str:
        """One line saying what was checked and found, and nothing more."""
        if self.has_drift:
            said = [f"{self.drift_count} instance(s) not on the expected version"] if self.drift_count else []
            if self.live_count:
                said.append(f"{self.live_count} instance(s) whose workers do not run their tagged version (--live)")
            return "drift: " + "; ".join(said)
        unexpected = [g.group for g in self.groups if g.expected_version is None]
        if len(unexpected) == len(self.groups):
            if self.release:
                return f"nothing to check: release {self.release} deploys none of these groups"
            return f"nothing to check: no release has succeeded on target {self.target} yet"
        if not self.checked:
            return "nothing to check: no instances in " + ", ".join(
                g.group for g in self.groups if g.expected_version is not None
            )
        checked = self.checked
        if len(checked) == len(self.groups):
            return "every instance runs its expected version"
        why = f"not in release {self.release}" if self.release else "no release has succeeded for it"
        skipped = [
            f"{g.group} ({why})" if g.expected_version is None else f"{g.group} (no instances)"
            for g in self.groups
            if g not in checked
        ]
        return (
            f"every instance runs its expected version in {', '.join(g.group for g in checked)}; "
            f"not checked: {', '.join(skipped)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "target": self.target,
            "engine": self.engine,
            "window": {"dt_from": self.window[0], "dt_to": self.window[1]},
            "status": self.status,
            "verdict": self.verdict,
            "release": self.release or None,
            "drift": self.has_drift,
            "drifted_instances": self.drift_count,
            "bytes_scanned": self.bytes_scanned,
            "files_read": self.files_read,
            "partitions_read": {k: list(v) for k, v in (self.partitions_read or {}).items()} or None,
            "notes": list(self.notes),
            "interruptions": [i.to_dict() for i in self.interruptions],
            "live": self.live.to_dict() if self.live is not None else None,
            "groups": [
                {
                    "group": g.group,
                    "status": g.status,
                    "expected_version": g.expected_version,
                    "release_id": g.release_id,
                    "expected_outcome": g.expected_outcome,
                    "latest_release_id": g.latest_release_id,
                    "latest_outcome": g.latest_outcome,
                    "remark": g.remark,
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


def _remark(group: GroupReport, target: str, release: str) -> str | None:
    """What the release record says about the group beyond its expected version, or None."""
    latest, outcome = group.latest_release_id, outcome_text(group.latest_outcome)
    if release:
        if group.release_id is not None and group.expected_outcome != "succeeded":
            return f"release {group.release_id} {outcome_text(group.expected_outcome)} for this group"
        return None
    if group.release_id is None:
        if latest is None:
            return f"no release has deployed this group on target {target}"
        return f"no release has succeeded for this group on target {target} yet; latest release {latest} {outcome}"
    if latest is not None and latest != group.release_id:
        return f"latest release {latest} {outcome}; expected = last good release {group.release_id}"
    return None


def build_report(
    result: QueryResult,
    *,
    app: str,
    target: str,
    window: tuple[str, str],
    groups: Sequence[str] | None = None,
    notes: Sequence[str] = (),
    release: str = "",
    interruptions: Sequence[Interruption] = (),
    live: LiveReport | None = None,
) -> ReconcileReport:
    """The report from reconcile.sql's rows; `groups` (fleet order) limits and orders it; `release` is
    the release given (--release), "" when each group's last good release is expected."""
    rows_by_group: dict[str, list[Mapping[str, Any]]] = {}
    for row in result.rows:
        rows_by_group.setdefault(str(row["group"]), []).append(row)
    names = list(groups) if groups is not None else sorted(rows_by_group)
    reports: list[GroupReport] = []
    for name in names:
        rows = rows_by_group.get(name)
        if not rows:
            empty = GroupReport(name, None, None, None, 0, 0)
            reports.append(replace(empty, remark=_remark(empty, target, release)))
            continue
        first = rows[0]
        states = {
            status: tuple(
                InstanceState(
                    instance_id=str(r["instance_id"]),
                    status=status,
                    version=r.get("version"),
                    release=r.get("release"),
                    lifecycle_state=r.get("lifecycle_state"),
                    health=r.get("health"),
                    az=r.get("az"),
                    market=r.get("market"),
                    launch_time=r.get("launch_time"),
                )
                for r in rows
                if r.get("status") == status and r.get("instance_id")
            )
            for status in PROBLEMS
        }
        report = GroupReport(
            group=name,
            expected_version=first.get("expected_version"),
            release_id=first.get("release_id"),
            snapshot_at=first.get("snapshot_at"),
            instances=_int(first.get("instances")),
            on_expected=_int(first.get("on_expected")),
            drifted=states["drift"],
            untagged=states["untagged"],
            expected_outcome=first.get("expected_outcome"),
            latest_release_id=first.get("latest_release_id"),
            latest_outcome=first.get("latest_outcome"),
        )
        reports.append(replace(report, remark=_remark(report, target, release)))
    return ReconcileReport(
        app=app,
        target=target,
        engine=result.engine,
        groups=tuple(reports),
        window=window,
        bytes_scanned=result.bytes_scanned,
        files_read=result.files_read,
        partitions_read=result.partitions_read,
        notes=tuple(notes),
        release=release,
        interruptions=tuple(interruptions),
        live=live,
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


_VERDICT_STYLE = {"drift": "bold red", "ok": "green", "nothing-to-check": "yellow"}
_STYLE = {"ok": "green", "drift": "bold red", "no release": "yellow", "no instances": "yellow", "no snapshot": "yellow"}


def rich_tables(report: ReconcileReport) -> RenderableType:
    summary = Table(title=f"{report.app} on {report.target}: deployed vs expected")
    for column in ("group", "expected", "release", "instances", "on expected", "drifted", "untagged", "status"):
        summary.add_column(
            column,
            justify="right" if column in ("instances", "on expected", "drifted", "untagged") else "left",
            overflow="fold",
        )
    for g in report.groups:
        summary.add_row(
            g.group,
            g.expected_version or "-",
            g.release_id or "-",
            str(g.instances),
            str(g.on_expected),
            str(len(g.drifted)),
            str(len(g.untagged)),
            Text(g.status, style=_STYLE.get(g.status, "")),
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
                i.instance_id,
                Text(i.version or "untagged", style="red"),
                i.release or "-",
                i.lifecycle_state or "-",
                i.health or "-",
                i.az or "-",
                i.market or "-",
                i.launch_time or "-",
            )
        parts.append(detail)
    if report.interruptions:
        parts.append(interruptions_table(report.interruptions))
    if report.live is not None:
        parts.append(live_table(report.live))
    parts.extend(Text(f"{g.group}: {g.remark}", style="yellow") for g in report.groups if g.remark)
    parts.extend(Text(note, style="yellow") for note in report.notes)
    parts.append(Text(_cost(report), style="dim"))
    parts.append(Text(report.verdict, style=_VERDICT_STYLE[report.status]))
    return RichGroup(*parts)


def utc_time(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if moment else "?"


def released_text(record: Interruption, most: int = 3) -> str:
    names = list(record.released[:most]) + ([f"+{len(record.released) - most}"] if len(record.released) > most else [])
    return f"{len(record.released)}" + (f" ({', '.join(names)})" if names else "")


def outcome_of(record: Interruption) -> str:
    if record.finished:
        return record.outcome
    return "draining: no final record (gone before its drain ended, or still draining)"


def interruptions_table(records: Sequence[Interruption]) -> Table:
    table = Table(title=f"Interrupted instances: {len(records)}")
    for column in ("instance", "group", "version", "notice", "noticed", "outcome", "drain", "tasks handed back"):
        table.add_column(column, overflow="fold", justify="right" if column == "drain" else "left")
    for r in records:
        table.add_row(
            Text(r.instance_id),
            Text(r.group),
            Text(r.version),
            r.kind if r.policy == "drain" else f"{r.kind} ({r.policy})",
            utc_time(r.noticed_at),
            Text(outcome_of(r), style="" if r.finished else "yellow"),
            f"{r.drained_s:.0f} s",
            Text(released_text(r)),  # task labels hold brackets: never rich markup
        )
    return table


_FINDING_STYLE = {"ok": "green", "other release": "bold red", "silent": "bold red", "not in service": "yellow"}


def live_table(live: LiveReport) -> Table:
    table = Table(title=f"Live: workers heard in the last {live.window_s // 60} min ({len(live.problems)} problem(s))")
    for column in ("instance", "group", "tagged", "runs", "finishing", "finding"):
        table.add_column(column, overflow="fold")
    for i in live.instances:
        table.add_row(
            Text(i.instance_id),
            Text(i.group),
            Text(i.tagged or "untagged"),
            Text(", ".join(i.running) or "nothing heard"),
            Text(", ".join(i.draining) or "-"),
            Text(i.finding, style=_FINDING_STYLE.get(i.finding, "")),
        )
    if live.unknown:
        table.caption = f"heard from {len(live.unknown)} instance(s) not in the snapshot: {', '.join(live.unknown)}"
    return table


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
    if report.interruptions:
        lines += ["", f"**Interrupted instances: {len(report.interruptions)}**", ""]
        lines += [
            f"- `{_cell(r.instance_id)}` ({_cell(r.group)}, `{_cell(r.version)}`): {_cell(r.kind)} notice at "
            f"{utc_time(r.noticed_at)}, {_cell(outcome_of(r))} after {r.drained_s:.0f} s; tasks handed back: "
            f"{_cell(released_text(r))}"
            for r in report.interruptions
        ]
    if report.live is not None and report.live.problems:
        lines += [
            "",
            f"**Live: {len(report.live.problems)} instance(s) whose workers do not run their tagged version**",
            "",
        ]
        lines += [
            f"- `{_cell(i.instance_id)}` ({_cell(i.group)}): tagged `{_cell(i.tagged or 'untagged')}`, workers heard: "
            f"{_cell(', '.join(i.running) or 'none')} ({i.finding})"
            for i in report.live.problems
        ]
    remarks = [f"> {_cell(g.group)}: {_cell(g.remark)}" for g in report.groups if g.remark]
    lines += [
        "",
        *remarks,
        *[f"> {_cell(n)}" for n in report.notes],
        f"**{_cell(report.verdict)}**",
        "",
        f"_{_cost(report)}_",
        "",
    ]
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
