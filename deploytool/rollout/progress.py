"""Progress renderers: the orchestrator's events as a rich live table, or as plain lines.

Contract: each renderer is a Reporter (`publish(event)`) writing only to the rich Console it is given
(tests pass Console(file=StringIO())). `Board` folds events into one row per group; `LiveTable` shows
it (wave, group, strategy, instances succeeded/failed/total, the workers still finishing after a hand-off once
the backend reports one (the sandbox), current lifecycle event, status, elapsed)
with a release line (elapsed, groups done); `PlainLines` writes one line per change, for CI and
non-TTY output. Both show each warning a deployment reports (tasks a cold shutdown interrupted) once.
Neither ever raises into the orchestrator for a display problem it can avoid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from deploytool.rollout.clock import Clock, SystemClock
from deploytool.rollout.events import (
    Event,
    FollowOnFinished,
    GateChecked,
    GroupFinished,
    GroupProgressed,
    GroupStarted,
    GroupWaiting,
    PollFailed,
    ReleaseFinished,
    ReleaseStarted,
    WaveFinished,
    WaveStarted,
)

STYLE = {
    "succeeded": "green",
    "already-deployed": "green",
    "failed": "bold red",
    "stopped": "yellow",
    "not-started": "dim",
    "detached": "cyan",
    "rolling back": "yellow",
}


@dataclass
class Row:
    group: str
    wave: int
    strategy: str
    status: str = "waiting"
    deployment_id: str = ""
    succeeded: int = 0
    failed: int = 0
    total: int = 0
    event: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    done: bool = False
    draining: int | None = None  # workers finishing after a hand-off, when the backend sees them


class Board:
    """The release as the events tell it: one row per group, in plan order."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self.release_id = ""
        self.version = ""
        self.target = ""
        self.mode = "deploy"
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.note = ""
        self.warnings: list[str] = []  # "group: warning", in the order they came
        self.gate: list[str] = []  # the health gate's verdicts and their evidence (deploytool.rollout.gate)

    def _warn(self, group: str, warnings: tuple[str, ...]) -> None:
        for warning in warnings:
            if f"{group}: {warning}" not in self.warnings:
                self.warnings.append(f"{group}: {warning}")

    def apply(self, event: Event) -> None:
        if isinstance(event, ReleaseStarted):
            self.release_id, self.version, self.target = event.release_id, event.version, event.target
            self.mode = event.mode
            self.started_at = event.at
            self.rows = {g.name: Row(g.name, g.wave, g.strategy) for g in event.groups}
        elif isinstance(event, GroupStarted):
            row = self.rows[event.group]
            row.status, row.deployment_id, row.started_at = "Created", event.deployment_id, event.at
        elif isinstance(event, GroupProgressed):
            row = self.rows[event.group]
            snap = event.snapshot
            self._warn(event.group, snap.warnings)
            if event.rollback:
                row.status = "rolling back"
                row.event = snap.current_event or ""
            else:
                row.status = snap.status
                row.succeeded, row.failed, row.total = snap.succeeded, snap.failed, snap.total
                row.event = snap.current_event or ""
            if snap.draining is not None:
                row.draining = snap.draining
        elif isinstance(event, GroupFinished):
            r = event.result
            row = self.rows[r.group]
            self._warn(r.group, r.warnings)
            row.status, row.done, row.finished_at = r.outcome, True, event.at
            if r.total:
                row.succeeded, row.failed, row.total = r.succeeded, r.failed, r.total
            row.event = r.instance_failures[0].lifecycle_event or "" if r.instance_failures else ""
        elif isinstance(event, GroupWaiting):
            row = self.rows[event.group]
            if not row.done:
                row.status = f"waiting for {event.what} {event.deployment_id}"
        elif isinstance(event, PollFailed):
            self.note = f"polling failed, retrying: {event.error}"
        elif isinstance(event, GateChecked):
            self.gate = [gate_headline(event), *(f"  {line}" for line in event.evidence)]
        elif isinstance(event, ReleaseFinished):
            self.finished_at = event.at

    def elapsed(self, row: Row, now: float) -> str:
        if row.started_at is None:
            return ""
        return _duration((row.finished_at if row.finished_at is not None else now) - row.started_at)

    def release_line(self, now: float) -> str:
        done = sum(1 for r in self.rows.values() if r.done)
        end = self.finished_at if self.finished_at is not None else now
        elapsed = _duration(end - self.started_at) if self.started_at is not None else "0s"
        what = (
            f"{self.version} -> {self.target}"
            if self.mode != "restart"
            else what_release_does(self.mode, self.version, self.target)
        )
        line = f"release {self.release_id} ({what}): {elapsed}, "
        line += f"{done}/{len(self.rows)} groups done"
        return f"{line}  [{self.note}]" if self.note and self.finished_at is None else line


def what_release_does(mode: str, version: str, target: str) -> str:
    """`deploy V to T`, or `rolling restart on T` (a restart has no version of its own)."""
    return f"rolling restart on {target}" if mode == "restart" else f"{mode} {version} to {target}"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def gate_headline(event: GateChecked) -> str:
    early = f", halted early at {event.took_s:.0f} s" if event.early else ""
    return f"health gate after wave {event.after_wave} ({event.bake_s:g} s bake{early}): {event.decision}"


class LiveTable:
    """A rich Live table that redraws on every event (and on its own to keep elapsed times moving)."""

    def __init__(self, console: Console, *, clock: Clock | None = None, auto_refresh: bool = True) -> None:
        self.console = console
        self.clock = clock or SystemClock()
        self.board = Board()
        self._live = Live(console=console, auto_refresh=auto_refresh, refresh_per_second=2, get_renderable=self.render)

    def render(self) -> Any:
        now = self.clock.now()
        table = Table(expand=False)
        finishing = any(row.draining for row in self.board.rows.values())  # only once a hand-off happened
        columns: tuple[str, ...] = ("wave", "group", "strategy", "ok/failed/total", "event", "status", "elapsed")
        if finishing:
            columns = (*columns[:4], "finishing", *columns[4:])
        for name in columns:
            right = name in ("wave", "ok/failed/total", "finishing", "elapsed")
            table.add_column(name, justify="right" if right else "left", overflow="fold")
        for row in self.board.rows.values():
            counts = f"{row.succeeded}/{row.failed}/{row.total}" if row.total else ""
            cells: list[Any] = [str(row.wave), row.group, row.strategy, counts]
            if finishing:
                cells.append(str(row.draining or 0))
            status = Text(row.status, style=STYLE.get(row.status, ""))
            table.add_row(*cells, row.event, status, self.board.elapsed(row, now))
        warnings = [Text(f"warning: {w}", style="yellow") for w in self.board.warnings]
        gate = [Text(line, style="bold red" if "halt" in line else "") for line in self.board.gate]
        return Group(table, Text(self.board.release_line(now)), *gate, *warnings)

    def publish(self, event: Event) -> None:
        self.board.apply(event)
        if isinstance(event, ReleaseStarted):
            self._live.start()
        self._live.refresh()
        if isinstance(event, ReleaseFinished):
            self._live.stop()

    def pause(self) -> None:
        """Stop redrawing (while a question is asked on the console)."""
        self._live.stop()

    def resume(self) -> None:
        if self.board.finished_at is None:
            self._live.start()


class PlainLines:
    """One line per change, stamped with the release's elapsed time (CI logs, no TTY)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.board = Board()
        self._last: dict[str, str] = {}
        self._warned = 0

    def _say(self, at: float, text: str) -> None:
        t0 = self.board.started_at if self.board.started_at is not None else at
        self.console.print(f"[{_duration(at - t0):>6}] {text}", markup=False, highlight=False)

    def publish(self, event: Event) -> None:
        self.board.apply(event)
        self._publish(event)
        for warning in self.board.warnings[self._warned :]:
            self._say(event.at, f"warning: {warning}")
        self._warned = len(self.board.warnings)

    def _publish(self, event: Event) -> None:
        if isinstance(event, ReleaseStarted):
            what = what_release_does(event.mode, event.version, event.target)
            self._say(event.at, f"release {event.release_id}: {what}, {len(event.groups)} groups")
        elif isinstance(event, WaveStarted):
            self._say(event.at, f"wave {event.wave} started: {', '.join(event.groups)}")
        elif isinstance(event, GroupStarted):
            how = "following" if event.attached else "started"
            self._say(event.at, f"{event.group}: {how} {event.deployment_id}")
        elif isinstance(event, GroupProgressed):
            self._progress(event)
        elif isinstance(event, GroupFinished):
            r = event.result
            detail = f" ({r.succeeded}/{r.total} instances ok)" if r.total else ""
            extra = f": {r.error}" if r.error else ""
            rollback = f", rollback {r.rollback_deployment_id} {r.rollback_status}" if r.rollback_deployment_id else ""
            self._say(event.at, f"{r.group}: {r.outcome}{detail}{rollback}{extra}")
            for failure in r.instance_failures:
                self._say(event.at, f"  {failure.instance_id} failed in {failure.lifecycle_event}: {failure.message}")
        elif isinstance(event, GroupWaiting):
            self._say(event.at, f"{event.group}: waiting for {event.what} {event.deployment_id} on group {event.group}")
        elif isinstance(event, FollowOnFinished):
            s = event.snapshot
            self._say(event.at, f"{event.group}: {s.creator} {s.deployment_id} {s.status} ({s.succeeded}/{s.total} ok)")
        elif isinstance(event, WaveFinished):
            self._say(event.at, f"wave {event.wave} {'succeeded' if event.succeeded else 'failed'}")
        elif isinstance(event, GateChecked):
            self._say(event.at, gate_headline(event))
            for line in event.evidence:
                self._say(event.at, f"  {line}")
        elif isinstance(event, PollFailed):
            self._say(event.at, f"polling failed, retrying: {event.error}")
        elif isinstance(event, ReleaseFinished):
            res = event.result
            verdict = "detached" if res.detached else ("succeeded" if res.succeeded else "FAILED")
            counts = ", ".join(f"{n} {k}" for k, n in res.counts().items())
            self._say(event.at, f"release {res.release_id} {verdict}: {counts}")

    def _progress(self, event: GroupProgressed) -> None:
        snap = event.snapshot
        kind = "rollback " if event.rollback else ""
        line = f"{kind}{snap.status} {snap.succeeded}/{snap.failed}/{snap.total} ok/failed/total"
        if snap.current_event and not snap.done:
            line += f", {snap.current_event}"
        if self._last.get(event.group) != line:
            self._last[event.group] = line
            self._say(event.at, f"{event.group}: {line}")
