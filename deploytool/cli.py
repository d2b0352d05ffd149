"""What every fab task shares: load the fleet, build the console, turn errors into one line.

A task body raises DeployToolError (or lets one through); `cli_task` prints `error: <message>` on
stderr and exits with the error's code (2 bad input, 1 failed deploy, 3 drift). The traceback is
shown only with the task's --debug flag, `fab -d`, or DEPLOYTOOL_DEBUG=1.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from invoke.exceptions import Exit
from invoke.tasks import task
from rich.console import Console

from deploytool.config import Fleet, load_fleet
from deploytool.console import LogConsole
from deploytool.errors import DeployToolError

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_FLEET = "deploy.toml"


def debug_enabled(flag: bool = False) -> bool:
    invoke_debug = logging.getLogger("invoke").isEnabledFor(logging.DEBUG)
    return flag or invoke_debug or os.environ.get("DEPLOYTOOL_DEBUG", "") not in ("", "0")


def fail(exc: BaseException, *, debug: bool, stream: Any = None) -> Exit:
    """The Exit a task raises for an error: one line, or the traceback under --debug."""
    out = stream or sys.stderr
    if debug:
        traceback.print_exception(exc, file=out)
    if isinstance(exc, DeployToolError):
        print(f"error: {exc}", file=out)
        return Exit(code=exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        print("interrupted", file=out)
        return Exit(code=130)
    print(f"error: unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback)", file=out)
    return Exit(code=1)


def cli_task(*args: Any, **kwargs: Any) -> Any:
    """invoke's @task, plus deploytool's error handling. Tasks take a `debug=False` parameter."""

    def decorate(body: F) -> Any:
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

        return task(*args, **kwargs)(run)

    if len(args) == 1 and callable(args[0]) and not kwargs:
        body, args = args[0], ()
        return decorate(body)
    return decorate


def fleet_from(path: str | None) -> Fleet:
    return load_fleet(Path(path or os.environ.get("DEPLOYTOOL_FLEET") or DEFAULT_FLEET))


def make_console(*, ci: bool = False, stderr: bool = False) -> Console:
    """The one console a task writes through: rich, sized to the terminal, on a terminal; with --ci, $CI
    or no terminal (a pipe, a file), a LogConsole: plain, and never cutting an id or version to a width."""
    stream = sys.stderr if stderr else sys.stdout
    if ci or os.environ.get("CI") or not stream.isatty():
        return LogConsole(stderr=stderr)
    return Console(stderr=stderr)


def split_csv(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]
