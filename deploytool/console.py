"""LogConsole: the console for output that is read later (CI logs, pipes, files), never cut to a screen.

Contract: it is never a terminal (no live display, no questions, no colour). Strings
print as they are, one line each however long (soft wrap). A table, or any other renderable that
measures itself, prints at its natural width (at least BASE_WIDTH): no cell is cut short with "…"
and no instance id, version or release id is split, however wide the table. What only fills the
width it is given (a rule) gets BASE_WIDTH.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.protocol import is_renderable

BASE_WIDTH = 120
_UNBOUNDED = 1 << 16  # the console's own width: what a renderable may take when it asks


class LogConsole(Console):
    def __init__(self, *, stderr: bool = False) -> None:
        super().__init__(stderr=stderr, force_terminal=False, no_color=True, width=_UNBOUNDED, soft_wrap=True)

    def natural_width(self, objects: tuple[Any, ...]) -> int:
        """The width the widest of `objects` needs, at least BASE_WIDTH (strings do not count: they never wrap)."""
        widest = BASE_WIDTH
        for obj in objects:
            if isinstance(obj, str) or not is_renderable(obj):
                continue
            needed = Measurement.get(self, self.options, obj).maximum
            if needed < _UNBOUNDED:  # it measured itself; else it fills whatever it is given
                widest = max(widest, needed)
        return widest

    def print(self, *objects: Any, width: int | None = None, **kwargs: Any) -> None:
        super().print(*objects, width=width or self.natural_width(objects), **kwargs)
