"""Bad command-line input, as a user types it into the real `fab`: one line on stderr naming the option, exit 2,
no traceback, and checked before anything needs a running sandbox or AWS (no sandbox runs in these tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fab_repo import copy_repo, deploytool, fab

pytestmark = pytest.mark.slow

NO_SANDBOX = "no sandbox is running"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="module")
def a_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("files") / "notadir"
    path.write_text("a file\n")
    return path


def one_line(done: object, *needles: str) -> str:
    """The single stderr line of a refused run (exit 2, no traceback), which must contain every needle."""
    stderr = done.stderr  # type: ignore[attr-defined]
    assert done.returncode == 2, (done.returncode, stderr)  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and stderr.count("\n") == 1, stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert NO_SANDBOX not in lines[0]
    return lines[0]


# invoke's own parse errors: before any task runs -------------------------------------------------

PARSE_ERRORS = pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["deploy", "--max-parallel", "x"], ["--max-parallel 'x'", "allowed: a whole number", "fab --help deploy"]),
        (["restart", "-m", "1.5"], ["--max-parallel '1.5'", "whole number"]),
        (["reconcile", "--days", "two"], ["--days 'two'", "whole number", "fab --help reconcile"]),
        (["reconcile", "--days=9" + "9" * 5000], ["--days '999", "whole number"]),
        (["deploy", "--nope"], ["unknown option '--nope'", "fab --help deploy"]),
        (["deploy", "--dry-runn"], ["unknown option '--dry-runn'", "did you mean '--dry-run'?"]),
        (["nope"], ["unknown task 'nope'", "fab --list"]),
        (["deplyo"], ["unknown task 'deplyo'", "did you mean 'deploy'?"]),
        (["deploy", "--target"], ["--target needs a value", "fab --help deploy"]),
        (["hooks", "--nope", "--event", "ApplicationStart"], ["unknown option '--nope'", "fab --help hooks"]),
        (["--nope"], ["unknown option '--nope'"]),
    ],
)


@PARSE_ERRORS
def test_parse_errors_are_one_line_and_exit_2(repo: Path, args: list[str], needles: list[str]) -> None:
    one_line(fab(repo, *args), *needles)


@PARSE_ERRORS
def test_the_deploytool_command_answers_parse_errors_the_same_way(
    repo: Path, args: list[str], needles: list[str]
) -> None:
    one_line(deploytool(repo, *args), *(needle.replace("fab ", "deploytool ") for needle in needles))


# the output directory ----------------------------------------------------------------------------


@pytest.mark.parametrize("out", ["/proc/deploytool-out", "{file}/sub", "{file}"])
def test_an_output_directory_that_cannot_be_created(repo: Path, a_file: Path, out: str) -> None:
    out = out.format(file=a_file)
    line = one_line(fab(repo, "build", "--out", out), f"--out '{out}'", "allowed:")
    assert "unexpected" not in line
    assert not (repo / "dist").exists()  # nothing built


# every option, checked before the sandbox check ---------------------------------------------------

GROUPS_TASKS = ["deploy", "rollback", "restart", "reconcile", "sandbox"]


@pytest.mark.parametrize("task", GROUPS_TASKS)
@pytest.mark.parametrize("value", ["", " , ", ","])
def test_an_empty_or_blank_groups_is_an_error_not_every_group(repo: Path, task: str, value: str) -> None:
    one_line(fab(repo, task, "--groups", value), f"--groups {value!r}")
    assert not (repo / ".sandbox").exists()  # `fab sandbox --groups ""` used to run the whole fleet


@pytest.mark.parametrize("task", GROUPS_TASKS)
def test_an_unknown_group_is_named_with_did_you_mean(repo: Path, task: str) -> None:
    one_line(
        fab(repo, task, "--groups", "video,emial"),
        "--groups 'video,emial'",
        "no group named 'emial'",
        "did you mean 'email'?",
        "allowed: email, reports, video",
    )


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["deploy", "--version", "1.0 beta"], ["--version '1.0 beta' is not allowed"]),
        (["deploy", "--json-out", "no-such-dir/result.json"], ["--json-out no-such-dir/result.json", "does not exist"]),
        (["deploy", "--json-out", "."], ["--json-out .", "is a directory"]),
        (["restart", "--json-out", "/proc/result.json"], ["--json-out /proc/result.json", "cannot write"]),
        (["deploy", "--reconcile-engine", "sqlite"], ["--reconcile-engine 'sqlite'", "athena, duckdb"]),
        (["deploy", "--dry-run", "--reconcile-engine", "sqlite"], ["--reconcile-engine 'sqlite'"]),
        (["deploy", "--on-failure", "stop_all"], ["did you mean 'stop-all'?"]),
        (["deploy", "--max-wait", "-5"], ["--max-wait must be 0 seconds or more, got -5"]),
        (["deploy", "--bake", "-1"], ["--bake '-1' is not allowed", "from 0 to 3600"]),
        (["deploy", "--bake", "soon"], ["--bake 'soon'", "whole number"]),
        (["deploy", "--bake", "99999"], ["--bake '99999' is not allowed", "from 0 to 3600"]),
        (["restart", "--wait", "--max-wait", "soon"], ["--max-wait 'soon'", "whole number"]),
        (["deploy", "--target", "prodution"], ["--target 'prodution'", "did you mean 'production'?"]),
        (["rollback", "--to", "../v1"], ["--to '../v1' is not allowed"]),
        (["rollback", "--dry-run", "--to", ""], ["--to '' is empty"]),
        (["status", "--release", "latest"], ["--release 'latest' is not a release id"]),
        (["status", "--release", "20241399T000000Z-v1"], ["--release '20241399T000000Z-v1'"]),
        (["reconcile", "--release", "bad id"], ["--release 'bad id' is not a release id"]),
        (["deploy", "--wait", "--break-lease"], ["--wait and --break-lease: choose one"]),
        (["rollback", "--break-lease", "--wait"], ["--wait and --break-lease: choose one"]),
        (["restart", "--dry-run", "--wait"], ["--wait with --dry-run: a dry run takes no release lease"]),
        (["deploy", "--dry-run", "--break-lease"], ["--break-lease with --dry-run"]),
        (["reconcile", "--wait"], ["--wait is for `fab reconcile --fix`"]),
        (["reconcile", "--days", "0"], ["--days 0", "from 1 to 366"]),
        (["reconcile", "--days", "-1"], ["--days -1", "from 1 to 366"]),
        (["reconcile", "--days", "100000000000"], ["--days 100000000000", "from 1 to 366"]),
        (["reconcile", "--database", "a;drop"], ["--database 'a;drop'", "lowercase letters"]),
        (["athena-ddl", "--workgroup", "a b"], ["--workgroup 'a b'"]),
        (["hooks", "--event", " , "], ["--event ' , '"]),
        (["hooks", "--group", "video"], ["fab hooks needs --event"]),
        (["hooks", "--event", "Install", "--bundle", "no-such.tgz"], ["--bundle 'no-such.tgz'", "no such file"]),
        (["hooks", "--event", "ApplicationStart", "--group", "vidoe"], ["--group 'vidoe'", "did you mean 'video'?"]),
        (["sandbox-up", "--target", "prodution"], ["--target 'prodution'", "did you mean 'production'?"]),
        (["sandbox", "--churn", "--churn-every", "0"], ["--churn-every '0'", "from 1 to 600"]),
        (["sandbox", "--churn", "--churn-seed", "x"], ["--churn-seed 'x'", "whole number"]),
        (["sandbox", "--churn-every", "3"], ["--churn-every, --churn-seed and --churn-kill go with --churn"]),
        (["sandbox", "--churn-kill"], ["--churn-every, --churn-seed and --churn-kill go with --churn"]),
        (["sandbox-interrupt", "--notice", "spot"], ["fab sandbox-interrupt needs --instance ID"]),
        (
            ["sandbox-interrupt", "--instance", "i-1"],
            ["needs exactly one of --notice spot|rebalance|terminate and --kill"],
        ),
        (["sandbox-interrupt", "--instance", "i-1", "--notice", "spot", "--kill"], ["needs exactly one of --notice"]),
        (["sandbox-interrupt", "--instance", "i-1", "--notice", "reboot"], ["--notice 'reboot'", "spot, rebalance"]),
        (
            ["sandbox-interrupt", "--instance", "i-1", "--notice", "spot", "--seconds", "5"],
            ["--seconds '5'", "10 to 3600"],
        ),
        (
            ["sandbox-interrupt", "--instance", "i-1", "--notice", "rebalance", "--seconds", "60"],
            ["--seconds goes with"],
        ),
        (["publish", "--endpoint-url", "localhost:9000"], ["--endpoint-url 'localhost:9000'", "http://"]),
        (["deploy", "--json-out", "j" * 5000], ["--json-out 'jjj", "cannot use this path (File name too long)"]),
        (["build", "--out", "o" * 5000], ["--out 'ooo", "cannot use this path (File name too long)"]),
        (["check", "--fleet", ""], ["--fleet '' is empty"]),
        (["check", "--fleet", "a\nb.toml"], ["a\\nb.toml"]),
    ],
)
def test_every_option_is_checked_before_the_sandbox(repo: Path, args: list[str], needles: list[str]) -> None:
    one_line(fab(repo, *args), *needles)


@pytest.mark.parametrize(
    "args",
    [
        ["deploy", "--on-failure", "bogus"],
        ["deploy", "--max-parallel", "-1"],
        ["reconcile", "--engine", "sqlite"],
        ["hooks", "--event", "Bogus"],
        ["hooks", "--event", "ApplicationStart", "--file-exists-behavior", "x"],
    ],
)
def test_options_that_were_already_one_line_stay_so(repo: Path, args: list[str]) -> None:
    """Found right before this change (a regression guard, not a fix): one line naming the option, exit 2."""
    one_line(fab(repo, *args), args[-2])


# a dry run on a local target needs no sandbox ----------------------------------------------------


def test_deploy_dry_run_prints_the_plan_without_a_sandbox(repo: Path) -> None:
    done = fab(repo, "deploy", "--dry-run", "--ci", "--groups", "video,email", "--max-parallel", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "to sandbox, 2 groups, max-parallel 2, on failure stop-wave" in lines[0]
    assert "not known while no sandbox runs" in lines[0]
    assert lines[1:5] == [
        "wave 0:",
        "  email: AllAtOnce (CodeDeployDefault.AllAtOnce): start a deployment",
        "wave 1:",
        "  video: HalfAtATime (CodeDeployDefault.HalfAtATime): start a deployment",
    ]
    assert "no sandbox is running for target 'sandbox'" in lines[-1]
    assert not (repo / ".sandbox").exists()


def test_restart_dry_run_prints_the_plan_without_a_sandbox(repo: Path) -> None:
    done = fab(repo, "restart", "--dry-run", "--ci")
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if line.startswith("  ")] == [
        "  email: AllAtOnce (CodeDeployDefault.AllAtOnce): start a deployment",
        "  reports: min 50% (deploytool-min-healthy-percent-50): start a deployment",
        "  video: HalfAtATime (CodeDeployDefault.HalfAtATime): start a deployment",
    ]
