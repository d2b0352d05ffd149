"""Ctrl-C during a rollout: ask whether to stop everything, detach, or keep following.

Contract: `follow(orchestrator, ask)` runs the orchestrator; on KeyboardInterrupt it calls `ask()`
(-> "stop" | "detach" | "continue"): stop = StopDeployment with rollback on every deployment in flight,
then follow them to their end; detach = return at once, the deployments keep running and the
release record holds their ids (`fab deploy` of the same version follows them again); continue =
keep following. A second Ctrl-C while asking means detach. Without a terminal the answer is detach.

When the deployments cannot outlive this process (`detachable=False`: the sandbox's local backend runs
them in this process's threads) there is no detach: the question offers stop or continue, and every
answer that would detach (no terminal, a second Ctrl-C) stops instead: StopDeployment with rollback on
every deployment in flight, followed to the end (rollbacks included) in this same process.
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
QUESTION_IN_PROCESS = (
    "[bold]Interrupted.[/] [bold]s[/]top every deployment in flight and roll back, or [bold]c[/]ontinue? "
    "(the sandbox's deployments run in this process: they cannot be detached) [s/c] "
)
STOPPING_IN_PROCESS = (
    "interrupted: stopping every deployment in flight and rolling back (the sandbox's deployments run in this "
    "process and cannot outlive it); following them to the end"
)


class Pausable(Protocol):
    def pause(self) -> None: ...

    def resume(self) -> None: ...


def follow(orchestrator: Orchestrator, ask: Callable[[], Choice], *, detachable: bool = True) -> RolloutResult:
    while True:
        try:
            return orchestrator.run()
        except KeyboardInterrupt:
            try:
                choice = ask()
            except KeyboardInterrupt:
                choice = "detach"
            if choice == "detach" and not detachable:
                choice = "stop"
            if choice == "stop":
                orchestrator.stop_all()
            elif choice == "detach":
                return orchestrator.detach()


def console_prompt(
    console: Console, *, interactive: bool, display: Pausable | None = None, detachable: bool = True
) -> Callable[[], Choice]:
    def ask() -> Choice:
        if not interactive:
            if not detachable:
                console.print(STOPPING_IN_PROCESS, markup=False)
                return "stop"
            console.print("interrupted: detaching; the deployments keep running", markup=False)
            return "detach"
        if display is not None:
            display.pause()
        try:
            answer = console.input(QUESTION if detachable else QUESTION_IN_PROCESS).strip().lower()[:1]
        except EOFError:
            answer = "d" if detachable else "s"
        finally:
            if display is not None:
                display.resume()
        choices: dict[str, Choice] = {"s": "stop", "d": "detach"} if detachable else {"s": "stop"}
        return choices.get(answer, "continue")

    return ask
