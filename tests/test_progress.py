"""Renderers and result writers fed by a real orchestrator run on the in-memory backend."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from deploytool.errors import UsageError
from deploytool.rollout.events import Fanout
from deploytool.rollout.orchestrator import Orchestrator
from deploytool.rollout.plan import rollout_plan
from deploytool.rollout.progress import LiveTable, PlainLines
from deploytool.rollout.result import RolloutResult
from deploytool.rollout.summary import ResultWriters, check_json_out, markdown, write_json
from tests.conftest import file_size_limit
from tests.fakes import FakeBackend, FakeClock, Script
from tests.test_orchestrator import REVISION, group


def run_release(reporter: object, clock: FakeClock) -> RolloutResult:
    backend = FakeBackend(
        clock, {"email": Script(duration=90, instances=3, fail=1, rollback_s=40), "video": Script(duration=100)}
    )
    plan = rollout_plan(
        release_id="20250101T000000Z-v2",
        version="v2",
        target="prod",
        revision=REVISION,
        groups=[group("email", 0, "AllAtOnce"), group("video", 0, "HalfAtATime"), group("reports", 1)],
    )
    return Orchestrator(backend, plan, reporter=reporter, clock=clock).run()  # type: ignore[arg-type]


def test_plain_lines_one_per_change() -> None:
    out = io.StringIO()
    run_release(PlainLines(Console(file=out, width=300)), FakeClock())
    lines = out.getvalue().splitlines()
    assert lines[0] == "[    0s] release 20250101T000000Z-v2: deploy v2 to prod, 3 groups"
    assert "[    0s] wave 0 started: email, video" in lines
    assert "[    0s] email: started d-FAKE00001" in lines
    failed = next(line for line in lines if "email: failed" in line)
    assert "(2/3 instances ok), rollback d-FAKE00003 Succeeded: 1 instance(s) failed" in failed
    assert any("i-email-0 failed in ValidateService: script exited with 1" in line for line in lines)
    assert any(line.endswith("video: succeeded (2/2 instances ok)") for line in lines)
    assert lines[-1].endswith("release 20250101T000000Z-v2 FAILED: 1 failed, 1 succeeded, 1 not-started")
    assert len(lines) == len(set(lines))  # no repeated line: only changes are printed


def test_live_table_shows_a_row_per_group_and_the_release_line() -> None:
    out = io.StringIO()
    clock = FakeClock()
    console = Console(file=out, width=160, force_terminal=True, color_system=None)
    table = LiveTable(console, clock=clock, auto_refresh=False)
    run_release(table, clock)
    final = Console(file=io.StringIO(), width=160)
    with final.capture() as capture:
        final.print(table.render())
    text = capture.get()
    for expected in (
        "email",
        "AllAtOnce",
        "2/1/3",
        "failed",
        "video",
        "HalfAtATime",
        "succeeded",
        "reports",
        "not-started",
        "3/3 groups done",
    ):
        assert expected in text
    assert "email" in out.getvalue()  # it did draw on the console it was given


def test_json_result_is_written_atomically(tmp_path: Path) -> None:
    result = run_release(Fanout([]), FakeClock())
    target = tmp_path / "result.json"
    target.write_text('{"old": true}\n')
    with target.open() as reader:  # opened before the write: it reads the old file, whole
        write_json(target, result)
        assert reader.read() == '{"old": true}\n'
    data = json.loads(target.read_text())
    assert data["succeeded"] is False
    assert {g["group"]: g["outcome"] for g in data["groups"]} == {
        "email": "failed",
        "video": "succeeded",
        "reports": "not-started",
    }
    assert data["groups"][0]["instance_failures"][0]["instance_id"] == "i-email-0"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temp file left behind
    with pytest.raises(OSError, match="File too large"), file_size_limit(100):  # the disk fills up mid-write
        write_json(target, result)
    assert json.loads(target.read_text()) == data  # the last complete result, not half of the new one
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_json_out_in_a_missing_directory_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        check_json_out(tmp_path / "nope" / "r.json")


def test_step_summary_appended_when_github_sets_it(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    writers = ResultWriters.from_env(str(tmp_path / "r.json"), {"GITHUB_STEP_SUMMARY": str(summary)})
    result = run_release(writers, FakeClock())
    text = summary.read_text()
    assert text.startswith("# earlier step\n### deploytool deploy `v2` to `prod`: failed")
    assert "| 0 | email | AllAtOnce | ❌ failed | 2/1/3 |" in text
    assert "- email `i-email-0` in ValidateService: script exited with 1" in text
    assert (tmp_path / "r.json").exists()
    assert markdown(result) in text


def test_no_step_summary_without_the_variable(tmp_path: Path) -> None:
    writers = ResultWriters.from_env(None, {})
    assert writers.step_summary is None and writers.json_out is None


def test_live_table_shows_the_workers_finishing_after_a_hand_off_once_there_are_any() -> None:
    from deploytool.rollout.backend import DeploymentSnapshot
    from deploytool.rollout.events import GroupProgressed, GroupStarted, PlannedGroup, ReleaseStarted

    table = LiveTable(Console(file=io.StringIO(), width=160), clock=FakeClock(), auto_refresh=False)
    groups = (PlannedGroup("video", 0, "HalfAtATime", "asg-video"), PlannedGroup("email", 0, "AllAtOnce", "asg-e"))
    table.board.apply(ReleaseStarted("r-1", "v2", "sandbox", "deploy", groups, 0.0))

    def shown() -> str:
        console = Console(file=io.StringIO(), width=160)
        with console.capture() as capture:
            console.print(table.render())
        return capture.get()

    assert "finishing" not in shown()  # no column until a hand-off happened (CodeDeploy never reports one)
    for name in ("video", "email"):
        table.board.apply(GroupStarted(name, 0, f"d-{name}", False, 1.0))
    table.board.apply(GroupProgressed("email", DeploymentSnapshot("d-email", "email", "InProgress"), False, 2.0))
    snap = DeploymentSnapshot("d-video", "video", "InProgress", in_progress=1, succeeded=1, draining=1)
    table.board.apply(GroupProgressed("video", snap, False, 2.0))
    text = shown()
    header = next(line for line in text.splitlines() if "finishing" in line)
    video = next(line for line in text.splitlines() if "video" in line)
    email = next(line for line in text.splitlines() if "email" in line)
    at = header.index("finishing") + len("finishing") - 1
    assert video[at] == "1" and email[at] == "0", text
