"""CodeDeploy's deployment-config semantics as pure functions, shared by the sandbox backend,
the CodeDeploy simulator in tests/ and the reports.

CodeDeploy rolls: it keeps at least `min_healthy` instances healthy, so at most
`fleet - min_healthy - failed` instances are out of service at any moment, and starts another as
soon as one finishes. Instances not yet deployed count as healthy.

- AllAtOnce: min healthy 0. CodeDeploy calls it a success when at least ONE instance succeeds
  (deploytool's own verdict, `all_succeeded`, still counts the failed ones as a failure).
- HalfAtATime: FLEET_PERCENT 50: min healthy = ceil(N/2), so floor(N/2) at a time; success needs
  ceil(N/2) successes. A one-instance fleet is deployed (one at a time) rather than failed.
- OneAtATime: one at a time, all but one kept healthy: the first failure stops the deployment,
  except a failure of the LAST instance, after which the deployment still succeeds.
- HostCount n: min healthy n; FleetPercent p: n = ceil(p * N / 100) at the start.
  n >= N fails the deployment at once; at least one instance must succeed even when n is 0.

Reference: MinimumHealthyHosts in the CodeDeploy API reference (nine instances, HOST_COUNT 6:
three at a time, success with six; FLEET_PERCENT 40: five at a time, success with four).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from deploytool.config import Strategy


class Verdict(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class HealthPolicy:
    """A strategy applied to a fleet of a given size, fixed when a deployment starts."""

    fleet_size: int
    min_healthy: int
    required_successes: int
    error: str | None = None  # set when the deployment fails at once

    @property
    def max_in_flight(self) -> int:
        return max(0, self.fleet_size - self.min_healthy)


def health_policy(strategy: Strategy, fleet_size: int) -> HealthPolicy:
    """The minimum healthy hosts and the successes needed, as CodeDeploy computes them."""
    n = fleet_size
    if n <= 0:
        return HealthPolicy(0, 0, 1, error="no instances in the deployment group")
    if strategy.kind == "AllAtOnce":
        return HealthPolicy(n, 0, 1)
    if strategy.kind == "OneAtATime":
        return HealthPolicy(n, n - 1, max(1, n - 1))
    if strategy.kind == "HalfAtATime":
        if n == 1:
            return HealthPolicy(1, 0, 1)
        half_up = math.ceil(n / 2)
        return HealthPolicy(n, half_up, half_up)
    minimum = strategy.value if strategy.kind == "HostCount" else math.ceil(strategy.value * n / 100)
    if minimum >= n:
        return HealthPolicy(
            n,
            minimum,
            max(1, minimum),
            error=f"minimum healthy hosts {minimum} ({strategy.label}) is not below the fleet size {n}",
        )
    return HealthPolicy(n, minimum, max(1, minimum))


def startable(policy: HealthPolicy, *, failed: int, in_flight: int, pending: int) -> int:
    """How many more instances may start now without dropping below the minimum healthy."""
    if policy.error or policy.fleet_size - failed < policy.required_successes:
        return 0
    healthy = policy.fleet_size - failed - in_flight
    return max(0, min(pending, healthy - policy.min_healthy))


def verdict(policy: HealthPolicy, *, succeeded: int, failed: int, in_flight: int, pending: int) -> Verdict:
    """CodeDeploy's verdict on a deployment in this state."""
    if policy.error:
        return Verdict.FAILED
    if policy.fleet_size - failed < policy.required_successes:
        # Success is out of reach: no need to wait for the rest.
        return Verdict.FAILED if in_flight == 0 else Verdict.RUNNING
    if pending and not in_flight and not startable(policy, failed=failed, in_flight=0, pending=pending):
        return Verdict.FAILED
    if pending or in_flight:
        return Verdict.RUNNING
    return Verdict.SUCCEEDED if succeeded >= policy.required_successes else Verdict.FAILED


def batches(strategy: Strategy, fleet_size: int) -> list[int]:
    """Batch sizes when every instance succeeds and takes the same time (for plans and docs)."""
    policy = health_policy(strategy, fleet_size)
    if policy.error:
        return []
    out: list[int] = []
    left = fleet_size
    while left:
        size = startable(policy, failed=0, in_flight=0, pending=left)
        out.append(size)
        left -= size
    return out
