"""Output read later (CI logs, pipes, files) never cuts an instance id, version or release id: the
reconcile report's tables, the rollout's progress (plain lines, and the progress table), the sandbox's
table of instances, each rendered through the console a task gets (make_console) without a terminal."""

from __future__ import annotations

import io
import sys

import pytest
from rich.console import Console

from deploytool.cli import make_console
from deploytool.reconcile.report import GroupReport, InstanceState, ReconcileReport, rich_tables
from deploytool.rollout.backend import InstanceProgress
from deploytool.rollout.events import (
    GroupFinished,
    GroupStarted,
    PlannedGroup,
    PollFailed,
    ReleaseFinished,
    ReleaseStarted,
)
from deploytool.rollout.progress import LiveTable, PlainLines
from deploytool.rollout.result import GroupResult, RolloutResult
from deploytool.sandbox.report import versions_table
from tests.fakes import FakeClock

VERSION = "2026.11.30-abcdef1-dirty"
OLD = "2026.11.29-1234567"
RELEASE = f"20261130T010203Z-{VERSION}"
IDS = ("i-0123456789abcdef0", "i-0123456789abcdef1", "i-0fedcba9876543210")
GROUP = "transactional-email-notifications"


def drift_report() -> ReconcileReport:
    drifted = tuple(
        InstanceState(
            iid,
            "drift",
            OLD,
            f"20261129T230000Z-{OLD}",
            "InService",
            "Healthy",
            "eu-central-1a",
            "on-demand",
            "2026-11-30T01:02:03.456789+00:00",
        )
        for iid in IDS[:2]
    )
    untagged = (
        InstanceState(
            IDS[2],
            "untagged",
            None,
            None,
            "Pending:Wait",
            "Healthy",
            "eu-central-1b",
            "spot",
            "2026-11-30T01:05:00.000000+00:00",
        ),
    )
    group = GroupReport(GROUP, VERSION, RELEASE, "2026-11-30T01:10:00+00:00", 5, 2, drifted, untagged)
    return ReconcileReport("acme-workers", "production", "athena", (group,), ("2026-11-29", "2026-11-30"))


def printed(console: Console, *renderables: object) -> str:
    with console.capture() as capture:
        for renderable in renderables:
            console.print(renderable)
    return capture.get()


def assert_whole(text: str, *values: str) -> None:
    assert "…" not in text, text
    for value in values:
        assert value in text, f"{value} is cut or split in:\n{text}"


@pytest.fixture
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys, "stdout", io.StringIO())


def test_reconcile_tables_in_ci_show_every_id_version_and_release_whole() -> None:
    text = printed(make_console(ci=True), rich_tables(drift_report()))
    assert_whole(
        text,
        *IDS,
        VERSION,
        OLD,
        RELEASE,
        f"20261129T230000Z-{OLD}",
        GROUP,
        "2026-11-30T01:02:03.456789+00:00",
        "eu-central-1a",
        "Pending:Wait",
    )
    assert "drift: 3 instance(s) not on the expected version" in text


@pytest.mark.usefixtures("no_terminal")
def test_reconcile_tables_piped_show_every_id_whole() -> None:
    assert_whole(printed(make_console(), rich_tables(drift_report())), *IDS, VERSION, RELEASE)


def test_reconcile_tables_on_a_narrow_terminal_fold_ids_rather_than_cut_them() -> None:
    text = printed(Console(file=io.StringIO(), width=80), rich_tables(drift_report()))
    assert "…" not in text, text


def release_events() -> list[object]:
    failures = tuple(
        InstanceProgress(iid, "Failed", "ValidateService", f"script deploytool/hooks/validate exited with 1 on {iid}")
        for iid in IDS
    )
    result = GroupResult(
        GROUP,
        0,
        "OneAtATime",
        "failed",
        "d-0123456789",
        "Failed",
        2,
        3,
        0,
        5,
        "d-9876543210",
        "Succeeded",
        "3 of 5 instances failed",
        failures,
        95.0,
    )
    return [
        ReleaseStarted(RELEASE, VERSION, "production", "deploy", (PlannedGroup(GROUP, 0, "OneAtATime", "asg"),), 0.0),
        GroupStarted(GROUP, 0, "d-0123456789", False, 1.0),
        GroupFinished(result, 96.0),
        ReleaseFinished(RolloutResult(RELEASE, VERSION, "production", "deploy", (result,), 96.0), 96.0),
    ]


@pytest.mark.usefixtures("no_terminal")
def test_plain_progress_lines_are_never_wrapped_or_cut() -> None:
    console = make_console()
    lines = PlainLines(console)
    with console.capture() as capture:
        for event in release_events():
            lines.publish(event)  # type: ignore[arg-type]
    text = capture.get()
    assert f"[    0s] release {RELEASE}: deploy {VERSION} to production, 1 groups\n" in text
    for iid in IDS:
        line = f"[ 1m36s]   {iid} failed in ValidateService: script deploytool/hooks/validate exited with 1 on {iid}\n"
        assert line in text, text
    assert f"[ 1m36s] release {RELEASE} FAILED: 1 failed\n" in text


def test_the_progress_table_in_ci_shows_the_release_line_and_groups_whole() -> None:
    table = LiveTable(Console(file=io.StringIO()), clock=FakeClock(100.0), auto_refresh=False)
    error = f"ThrottlingException: Rate exceeded (BatchGetDeployments d-0123456789, {GROUP})"
    for event in [*release_events()[:-1], PollFailed(error, 99.0)]:  # still running: the line shows the note
        table.board.apply(event)  # type: ignore[arg-type]
    text = printed(make_console(ci=True), table.render())
    assert_whole(
        text,
        GROUP,
        f"release {RELEASE} ({VERSION} -> production): 1m40s, 1/1 groups done  [polling failed, retrying: {error}]\n",
    )


def test_the_sandbox_table_of_instances_in_ci_shows_every_id_whole() -> None:
    per_group = {GROUP: {VERSION: list(IDS[:2]), OLD: [IDS[2]]}, "reports": {VERSION: ["i-1", "i-2"]}}
    assert_whole(printed(make_console(ci=True), versions_table(per_group, VERSION)), *IDS, VERSION, OLD, GROUP)
