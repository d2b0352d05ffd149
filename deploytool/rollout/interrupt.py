"""Ctrl-C during a rollout: ask whether to stop everything, detach, or keep following.

Contract: `follow(orchestrator, ask)` runs the orchestrator; on KeyboardInterrupt it calls `ask()`
(-> "stop" | "detach" | "continue"): stop = StopDeployment with rollback on every deployment in flight,
then follow them to their end; detach = return at once, the deployments keep running and the
release record holds their ids (`fab deploy` of the same version follows them again); continue =
keep following. A second Ctrl-C while asking means detach. Without a terminal the answer is detach.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

from rich.console import Console

from deploytool.rollout.orchestrator import Orchestrator
from deploytool.rollout.result import RolloutResult

Choice = Literal["stop", "detach", "continue"]
QUESTION = (
    "[bold]Interrupted.[/] [bold]s[/]top every deployment in flight and roll back, [bold]d[/]etach (they keep "
    "running; `fab deploy` again follows them), or [bold]c[/]ontinue? [s/d/c] "
)


class Pausable(Protocol):
    def pause(self) -> None: ...

    def resume(self) -> None: ...


def follow(orchestrator: Orchestrator, ask: Callable[[], Choice]) -> RolloutResult:
    while True:
        try:
            return orchestrator.run()
        except KeyboardInterrupt:
            try:
                choice = ask()
            except KeyboardInterrupt:
                choice = "detach"
            if choice == "stop":
                orchestrator.stop_all()
            elif choice == "detach":
                return orchestrator.detach()


def console_prompt(console: Console, *, interactive: bool, display: Pausable | None = None) -> Callable[[], Choice]:
    def ask() -> Choice:
        if not interactive:
            console.print("interrupted: detaching; the deployments keep running", markup=False)
            return "detach"
        if display is not None:
            display.pause()
        try:
            answer = console.input(QUESTION).strip().lower()[:1]
        except EOFError:
            answer = "d"
        finally:
            if display is not None:
                display.resume()
        return {"s": "stop", "d": "detach"}.get(answer, "continue")  # type: ignore[return-value]

    return ask
