"""Time for code that waits: the real clock, and a simulated one for tests and benchmarks.

Contract: domain code never calls time.time/time.sleep; it gets a `Clock` and asks it for `now()`
(seconds, monotonic) and to `sleep(seconds)`. `SimulatedClock.sleep` advances the time at once, so a
rollout that takes minutes on AWS takes milliseconds on the simulated clock. Backends and simulators
that model time read the same clock, so they agree with the orchestrator on what time it is.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait that many seconds."""
        ...


class SystemClock:
    """The real monotonic clock."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class SimulatedClock:
    """A clock that moves only when someone sleeps on it (or calls `advance`). Thread-safe."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.slept = 0.0
        self.sleeps = 0

    def now(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, seconds)
            self.slept += max(0.0, seconds)
            self.sleeps += 1

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, seconds)
