"""The clock the sandbox waits with: deploytool.rollout.clock's (now() is monotonic seconds), so
tests can pass a simulated one; SYSTEM_CLOCK is the default. Log timestamps use wall time directly."""

from __future__ import annotations

from deploytool.rollout.clock import Clock, SystemClock

SYSTEM_CLOCK: Clock = SystemClock()

__all__ = ["SYSTEM_CLOCK", "Clock"]
