"""CodeDeploy's deployment-config semantics as pure functions, shared by the sandbox backend,
the CodeDeploy simulator in tests/ and the reports.

CodeDeploy rolls: it keeps at least `min_healthy` instances healthy, so at most
`fleet - min_healthy - failed` instances are out of service at any moment, and starts another as
soon as one finishes.

Per-instance health persists across deployments (user guide, "instances-health"): an instance whose last
deployment failed, or that was never deployed to (fresh from the ASG), is UNHEALTHY; the others are healthy.
Unhealthy instances are deployed first and do not count toward the minimum healthy hosts: taking one out of
service costs nothing, so of the instances started at once only `healthy - min_healthy` may be healthy ones
(`startable_split`). In flight, every instance counts as out of service. An instance that succeeds becomes
healthy, one that fails unhealthy (`next_health`). With the unhealthy ones first, as many instances deploy at a
time as on a fully healthy fleet (a fresh fleet deploys as before); what changes is which: a failed instance is
retried first, and with OneAtATime its failing again stops the deployment at once (it is no longer the last).

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
from collections.abc import Mapping, Sequence
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


HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"


def is_unhealthy(health: str | None) -> bool:
    """Never deployed (no health recorded) or last deployment failed."""
    return health != HEALTHY


def next_health(current: str | None, instance_status: str) -> str | None:
    """An instance's health after a deployment in which it ended `instance_status`: Succeeded makes it healthy,
    Failed unhealthy; Skipped (never started) leaves it as it was."""
    if instance_status == "Succeeded":
        return HEALTHY
    if instance_status == "Failed":
        return UNHEALTHY
    return current


def unhealthy_first(instance_ids: Sequence[str], health: Mapping[str, str | None]) -> list[str]:
    """The deployment order: the unhealthy instances first, each part in the given order."""
    ids = list(instance_ids)
    return [i for i in ids if is_unhealthy(health.get(i))] + [i for i in ids if not is_unhealthy(health.get(i))]


def startable_split(
    policy: HealthPolicy, *, failed: int, in_flight: int, pending: int, pending_unhealthy: int = 0
) -> tuple[int, int]:
    """(unhealthy, healthy) instances that may start now. `pending_unhealthy` of the `pending` are unhealthy.

    In service and healthy: the instances neither failed, in flight nor unhealthy-and-waiting. Healthy
    instances may be taken out of service down to the minimum; unhealthy ones cost nothing, but all
    together stay within `fleet - minimum - failed` out of service (the deployment's concurrency)."""
    if policy.error or policy.fleet_size - failed < policy.required_successes:
        return 0, 0
    room = max(0, policy.fleet_size - failed - in_flight - policy.min_healthy)
    unhealthy = max(0, min(pending_unhealthy, pending, room))
    healthy_in_service = policy.fleet_size - failed - in_flight - pending_unhealthy
    healthy = max(0, min(pending - pending_unhealthy, room - unhealthy, healthy_in_service - policy.min_healthy))
    return unhealthy, healthy


def startable(policy: HealthPolicy, *, failed: int, in_flight: int, pending: int, pending_unhealthy: int = 0) -> int:
    """How many more instances may start now (the unhealthy ones first) without dropping below the minimum."""
    return sum(
        startable_split(
            policy, failed=failed, in_flight=in_flight, pending=pending, pending_unhealthy=pending_unhealthy
        )
    )


def verdict(
    policy: HealthPolicy, *, succeeded: int, failed: int, in_flight: int, pending: int, pending_unhealthy: int = 0
) -> Verdict:
    """CodeDeploy's verdict on a deployment in this state: succeeded once every instance is deployed and at
    least `required_successes` (>= 1) succeeded; failed once that is out of reach, or when nothing is in flight
    and nothing may start (the healthy instances left are not above the minimum)."""
    if policy.error:
        return Verdict.FAILED
    if policy.fleet_size - failed < policy.required_successes:
        # Success is out of reach: no need to wait for the rest.
        return Verdict.FAILED if in_flight == 0 else Verdict.RUNNING
    stuck = not startable(policy, failed=failed, in_flight=0, pending=pending, pending_unhealthy=pending_unhealthy)
    if pending and not in_flight and stuck:
        return Verdict.FAILED
    if pending or in_flight:
        return Verdict.RUNNING
    return Verdict.SUCCEEDED if succeeded >= policy.required_successes else Verdict.FAILED


def batches(strategy: Strategy, fleet_size: int, unhealthy: int = 0) -> list[int]:
    """Batch sizes when every instance succeeds and takes the same time (for plans and docs)."""
    return [u + h for u, h in health_batches(strategy, fleet_size, unhealthy)]


def health_batches(strategy: Strategy, fleet_size: int, unhealthy: int = 0) -> list[tuple[int, int]]:
    """(unhealthy, healthy) instances of each batch when every instance succeeds and takes the same time,
    `unhealthy` of the `fleet_size` instances unhealthy at the start."""
    policy = health_policy(strategy, fleet_size)
    if policy.error:
        return []
    out: list[tuple[int, int]] = []
    left, left_unhealthy = fleet_size, min(max(0, unhealthy), fleet_size)
    while left:
        u, h = startable_split(policy, failed=0, in_flight=0, pending=left, pending_unhealthy=left_unhealthy)
        out.append((u, h))
        left -= u + h
        left_unhealthy -= u
    return out
