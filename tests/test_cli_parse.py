"""deploytool.cli adapts invoke's parser (invoke 2.x internals): these tests fail if a newer invoke stops going
through the two seams it wraps, or words its parse errors differently, so that the adaptation is looked at
again instead of silently falling back to invoke's own messages."""

from __future__ import annotations

import io
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
    deploy = ParserContext("deploy", args=[Argument(names=("max_parallel", "m"), kind=int, default=0),
                                           Argument(names=("target", "t"), kind=str),
                                           Argument(names=("dry_run", "d"), kind=bool, default=False)])
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
        (["deploy", "--max-parallel", "x"],
         "error: --max-parallel 'x' is not allowed; allowed: a whole number; see `fab --help deploy`"),
        (["deploy", "-m", "1.5"],
         "error: --max-parallel '1.5' is not allowed; allowed: a whole number; see `fab --help deploy`"),
        (["deploy", "--dry-runn"],
         "error: fab deploy: unknown option '--dry-runn' (did you mean '--dry-run'?); see `fab --help deploy`"),
        (["deplyo"], "error: unknown task 'deplyo' (did you mean 'deploy'?); `fab --list` lists the tasks"),
        (["deploy", "--target"], "error: --target needs a value; see `fab --help deploy`"),
        (["hooks"], "error: fab hooks needs --event; see `fab --help hooks`"),
        (["deploy", "--target", " "], "error: --target ' ' is empty: give a value, or leave --target out for its "
                                      "default; see `fab --help deploy`"),
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
    assert err.getvalue() == ("error: --max-parallel 'x' is not allowed; allowed: a whole number; "
                              "see `fab --help deploy`\n")
