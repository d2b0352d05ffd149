"""What every hook shares: exit codes, the two exceptions, the clock and the one-line-per-step log.

Exit status of a hook: 0 done, 1 failed, 2 bad input, 143 terminated (the agent's SIGTERM). A HookError
carries one clear line for the deployment log and its exit code. Clock is monotonic time and sleep,
injected so tests run the drain on a simulated clock. Log prints `deploytool CMD +1.234s step: detail
(0.012s)` on stdout, which the agent keeps in its scripts.log.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_TERMINATED = 0, 1, 2, 143


class HookError(Exception):
    """A failure with one clear line for the deployment log."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class HookTerminated(BaseException):
    """The CodeDeploy agent (or the sandbox runner) sent SIGTERM to this hook: its timeout ran out.

    A BaseException, like KeyboardInterrupt: the signal handler raises it from wherever the hook is, most
    often inside a broker call, and no `except Exception` (ours for broker errors, or kombu's) may take it
    for an error of that call.
    """


class Clock:
    """Monotonic time and sleep; tests pass a simulated one."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class Log:
    """One line per step: `deploytool drain +1.234s step: detail (0.012s)` on stdout (the agent's log)."""

    def __init__(self, command: str, clock: Clock, started: float | None = None, out: Any = None) -> None:
        self.command = command
        self.clock = clock
        self.started = clock.now() if started is None else started
        self.out = out if out is not None else sys.stdout
        self.lines: list[str] = []

    def elapsed(self) -> float:
        return self.clock.now() - self.started

    def step(self, name: str, detail: str = "", took: float | None = None) -> None:
        text = f"deploytool {self.command} +{self.elapsed():.3f}s {name}"
        if detail:
            text += f": {detail}"
        if took is not None:
            text += f" ({took:.3f}s)"
        self.lines.append(text)
        print(text, file=self.out, flush=True)


def summarize(labels: Sequence[str], limit: int = 8) -> str:
    """The first `limit` labels, and how many more there are."""
    shown = ", ".join(labels[:limit])
    return shown + (f", ... ({len(labels) - limit} more)" if len(labels) > limit else "")
