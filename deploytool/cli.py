"""What every fab task shares: load the fleet, build the console, turn errors into one line.

A task body raises DeployToolError (or lets one through); `cli_task` prints `error: <message>` on
stderr and exits with the error's code (2 bad input, 1 failed deploy, 3 drift). The traceback is
shown only with the task's --debug flag, `fab -d`, or DEPLOYTOOL_DEBUG=1.

invoke's own parse errors (an unknown task or option, a missing or non-integer value) happen before any
task runs and would exit 1, or with a traceback: importing this module (deploytool.tasks does, so both a
fabfile's import and the `deploytool` command (deploytool.main) do it before invoke parses the task arguments)
adapts invoke's parser once so that each of them, and an option given an empty or blank value, is
`error: <one line>; see `fab --help <task>`` (`deploytool --help <task>` under that command) and exit 2
(`adapt_invoke_parser`). tests/test_cli_parse.py fails if a newer invoke stops going through it.
"""

from __future__ import annotations

import ast
import functools
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, overload

from invoke.exceptions import Exit, ParseError
from invoke.parser import Parser, ParseResult
from invoke.parser.context import ParserContext
from invoke.parser.parser import ParseMachine
from invoke.tasks import Task, task
from rich.console import Console

from deploytool import options
from deploytool.config import Fleet, load_fleet
from deploytool.console import LogConsole
from deploytool.errors import DeployToolError, UsageError

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_FLEET = "deploy.toml"


def debug_enabled(flag: bool = False) -> bool:
    invoke_debug = logging.getLogger("invoke").isEnabledFor(logging.DEBUG)
    return flag or invoke_debug or os.environ.get("DEPLOYTOOL_DEBUG", "") not in ("", "0")


def one_line(text: str) -> str:
    """The text with its line breaks and other control characters escaped (a value a user typed may hold them)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def fail(exc: BaseException, *, debug: bool, stream: Any = None) -> Exit:
    """The Exit a task raises for an error: one line, or the traceback under --debug."""
    out = stream or sys.stderr
    if debug:
        traceback.print_exception(exc, file=out)
    if isinstance(exc, DeployToolError):
        print(f"error: {one_line(str(exc))}", file=out)
        return Exit(code=exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        print("interrupted", file=out)
        return Exit(code=130)
    print(
        f"error: unexpected {type(exc).__name__}: {one_line(str(exc))} (run again with --debug for the traceback)",
        file=out,
    )
    return Exit(code=1)


@overload
def cli_task(body: F, /) -> Task[F]: ...


@overload
def cli_task(**kwargs: Any) -> Callable[[F], Task[F]]: ...


def cli_task(*args: Any, **kwargs: Any) -> Any:
    """invoke's @task, plus deploytool's error handling. Tasks take a `debug=False` parameter."""

    def decorate(body: F) -> Task[F]:
        @functools.wraps(body)
        def run(*a: Any, **kw: Any) -> Any:
            try:
                return body(*a, **kw)
            except Exit:
                raise
            except (DeployToolError, KeyboardInterrupt) as exc:
                raise fail(exc, debug=debug_enabled(bool(kw.get("debug")))) from None
            except Exception as exc:
                raise fail(exc, debug=debug_enabled(bool(kw.get("debug")))) from None

        made: Task[F] = task(*args, **kwargs)(run)
        return made

    if len(args) == 1 and callable(args[0]) and not kwargs:
        body, args = args[0], ()
        return decorate(body)
    return decorate


def fleet_from(path: str | None) -> Fleet:
    options.text("--fleet", path)
    return load_fleet(Path(path or os.environ.get("DEPLOYTOOL_FLEET") or DEFAULT_FLEET))


def make_console(*, ci: bool = False, stderr: bool = False) -> Console:
    """The one console a task writes through: rich, sized to the terminal, on a terminal; with --ci, $CI
    or no terminal (a pipe, a file), a LogConsole: plain, and never cutting an id or version to a width."""
    stream = sys.stderr if stderr else sys.stdout
    if ci or os.environ.get("CI") or not stream.isatty():
        return LogConsole(stderr=stderr)
    return Console(stderr=stderr)


# --- invoke's parse errors: one line, exit 2 ------------------------------------------------------

_NO_IDEA = re.compile(r"^No idea what (.+) is!$")
_NEEDS_VALUE = re.compile(r"^Flag <Argument: ([\w-]+).*> needed value and was not given one!$")
_POSITIONAL = re.compile(r"^'([\w-]+)' did not receive required positional arguments: (.+)$")


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _literal(text: str) -> str:
    try:
        return str(ast.literal_eval(text))
    except (ValueError, SyntaxError):
        return text


def command_parser(parser: Parser, command: str) -> Parser:
    """`parser`, whose errors name `command` (the program it parses for) instead of `fab`."""
    parser.deploytool_command = command  # type: ignore[attr-defined]
    return parser


def _command(parser: Parser) -> str:
    return str(getattr(parser, "deploytool_command", "fab"))


def parse_error_line(parser: Parser, exc: ParseError) -> str:
    """invoke's ParseError as deploytool's one line: what was wrong, what is allowed, where to look."""
    context: ParserContext | None = exc.context
    task_name = context.name if context is not None and context.name in parser.contexts else None
    fab = _command(parser)
    see = f"see `{fab} --help {task_name}`" if task_name else f"see `{fab} --help` and `{fab} --list`"
    message = str(exc)
    if found := _NO_IDEA.match(message):
        token = _literal(found.group(1))
        if token.startswith("-"):
            flags = [f for f in (context.flags if context is not None else {}) if f.startswith("--")]
            where = f"{fab} {task_name}: " if task_name else ""
            message = f"{where}unknown option {options.shown(token)}{options.did_you_mean(token, flags)}"
        else:
            tasks = [name for name in parser.contexts if name]
            message = f"unknown task {options.shown(token)}{options.did_you_mean(token, tasks)}"
            see = f"`{fab} --list` lists the tasks"
    elif found := _NEEDS_VALUE.match(message):
        message = f"{_flag(found.group(1))} needs a value"
    elif found := _POSITIONAL.match(message):
        names = ", ".join(_flag(_literal(n.strip())) for n in found.group(2).split(","))
        message = f"{fab} {found.group(1)} needs {names}"
    return f"error: {one_line(message)}; {see}"


def _check_blank(parser: Parser, result: ParseResult) -> None:
    for context in result:
        if context.name not in parser.contexts:
            continue
        for arg in context.args.values():
            if arg.kind is str and isinstance(arg.raw_value, str):
                try:
                    options.text(_flag(arg.name), arg.raw_value)
                except UsageError as exc:
                    raise Exit(f"error: {exc}; see `{_command(parser)} --help {context.name}`", code=2) from None


def adapt_invoke_parser() -> None:
    """Make every invoke parse error one line and exit 2 (idempotent). Two seams of invoke 2.x: a value that
    cannot be converted (int("x")) raises ValueError out of ParseMachine.see_value, which becomes a ParseError
    naming the option; Parser.parse_argv turns every ParseError into Exit(code=2), and refuses blank values."""
    if getattr(Parser.parse_argv, "deploytool", False):
        return
    see_value, parse_argv = ParseMachine.see_value, Parser.parse_argv

    def checked_see_value(self: ParseMachine, value: Any) -> None:
        try:
            see_value(self, value)
        except ValueError:
            flag = self.flag
            if flag is None:
                raise
            kind = "a whole number" if flag.kind is int else f"a {getattr(flag.kind, '__name__', 'value')}"
            raise ParseError(
                f"{_flag(flag.name)} {options.shown(value)} is not allowed; allowed: {kind}", self.context
            ) from None

    def checked_parse_argv(self: Parser, argv: list[str]) -> ParseResult:
        try:
            result = parse_argv(self, argv)
        except ParseError as exc:
            raise Exit(parse_error_line(self, exc), code=2) from None
        _check_blank(self, result)
        return result

    checked_parse_argv.deploytool = True  # type: ignore[attr-defined]
    ParseMachine.see_value = checked_see_value  # type: ignore[method-assign]
    Parser.parse_argv = checked_parse_argv  # type: ignore[method-assign]


adapt_invoke_parser()
