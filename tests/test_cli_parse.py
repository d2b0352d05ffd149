"""deploytool.cli adapts invoke's parser (invoke 2.x internals): these tests fail if a newer invoke stops going
through the two seams it wraps, or words its parse errors differently, so that the adaptation is looked at
again instead of silently falling back to invoke's own messages."""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from fabric.main import make_program
from invoke.exceptions import Exit
from invoke.parser import Argument, Parser
from invoke.parser.context import ParserContext
from invoke.parser.parser import ParseMachine

import deploytool.cli  # noqa: F401  (importing it adapts the parser, as the fabfile's import does)

ROOT = Path(__file__).resolve().parent.parent


def parser() -> Parser:
    deploy = ParserContext(
        "deploy",
        args=[
            Argument(names=("max_parallel", "m"), kind=int, default=0),
            Argument(names=("target", "t"), kind=str),
            Argument(names=("dry_run", "d"), kind=bool, default=False),
        ],
    )
    hooks = ParserContext("hooks", args=[Argument(names=("event",), kind=str, positional=True)])
    return Parser(initial=ParserContext(), contexts=[deploy, hooks])


def refused(argv: list[str]) -> str:
    with pytest.raises(Exit) as raised:
        parser().parse_argv(argv)
    assert raised.value.code == 2
    return str(raised.value.message)


def test_the_two_seams_are_wrapped() -> None:
    assert getattr(Parser.parse_argv, "deploytool", False)
    assert ParseMachine.see_value.__name__ == "checked_see_value"


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["deploy", "--max-parallel", "x"],
            "error: --max-parallel 'x' is not allowed; allowed: a whole number; see `fab --help deploy`",
        ),
        (
            ["deploy", "-m", "1.5"],
            "error: --max-parallel '1.5' is not allowed; allowed: a whole number; see `fab --help deploy`",
        ),
        (
            ["deploy", "--dry-runn"],
            "error: fab deploy: unknown option '--dry-runn' (did you mean '--dry-run'?); see `fab --help deploy`",
        ),
        (["deplyo"], "error: unknown task 'deplyo' (did you mean 'deploy'?); `fab --list` lists the tasks"),
        (["deploy", "--target"], "error: --target needs a value; see `fab --help deploy`"),
        (["hooks"], "error: fab hooks needs --event; see `fab --help hooks`"),
        (
            ["deploy", "--target", " "],
            "error: --target ' ' is empty: give a value, or leave --target out for its "
            "default; see `fab --help deploy`",
        ),
    ],
)
def test_invoke_parse_errors_become_deploytools_one_line(argv: list[str], line: str) -> None:
    assert refused(argv) == line


def test_a_good_command_line_parses_as_before() -> None:
    result = parser().parse_argv(["deploy", "-m", "3", "--target", "sandbox", "--dry-run"])
    args = result[1].args
    assert (args["max_parallel"].value, args["target"].value, args["dry_run"].value) == (3, "sandbox", True)


def test_fabs_program_parses_its_tasks_through_the_adapted_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err), pytest.raises(SystemExit) as raised:
        make_program().run(["fab", "deploy", "--max-parallel", "x"])
    assert raised.value.code == 2
    assert err.getvalue() == (
        "error: --max-parallel 'x' is not allowed; allowed: a whole number; see `fab --help deploy`\n"
    )


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["deploy", "--max-parallel", "x"],
            "error: --max-parallel 'x' is not allowed; allowed: a whole number; see `deploytool --help deploy`",
        ),
        (["deplyo"], "error: unknown task 'deplyo' (did you mean 'deploy'?); `deploytool --list` lists the tasks"),
        (
            ["deploy", "--dry-runn"],
            "error: deploytool deploy: unknown option '--dry-runn' (did you mean "
            "'--dry-run'?); see `deploytool --help deploy`",
        ),
        (
            ["deploy", "--groups", ""],
            "error: --groups '' is empty: give a value, or leave --groups out for its "
            "default; see `deploytool --help deploy`",
        ),
    ],
)
def test_the_deploytool_command_answers_parse_errors_in_one_line_naming_itself(
    argv: list[str], line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deploytool.main import program

    monkeypatch.chdir(tmp_path)  # no fabfile here: the command carries its tasks
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err), pytest.raises(SystemExit) as raised:
        program.run(["deploytool", *argv])
    assert (raised.value.code, err.getvalue()) == (2, line + "\n")


def test_the_deploytool_command_lists_the_same_tasks_as_fab(monkeypatch: pytest.MonkeyPatch) -> None:
    from deploytool.main import program

    def listed(run: Callable[[], None]) -> list[str]:
        out = io.StringIO()
        with redirect_stdout(out), pytest.raises(SystemExit) as raised:
            run()
        assert raised.value.code in (0, None)
        return out.getvalue().splitlines()[1:]  # the heading differs: "Available tasks" / "Subcommands"

    monkeypatch.chdir(ROOT)
    fab = listed(lambda: make_program().run(["fab", "--list"]))
    assert fab == listed(lambda: program.run(["deploytool", "--list"]))
    assert any(line.split()[:1] == ["sandbox-up"] for line in fab)
