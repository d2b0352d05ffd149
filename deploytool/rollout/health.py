"""The health gate's verdict between two waves: plain code, no I/O (the telemetry that feeds it is elsewhere).

Input: per (queue, task name), the outcome counts of the NEW release's workers over the bake window and of
the BASELINE (the previous release's workers over a comparable window: the groups not yet deployed, or the
window before the release); plus absolute guards the collector measured (workers whose heartbeat is missing,
unregistered-task errors, backlog growth).

Rules, per (queue, task):
- "not enough data" when the new release ran fewer than `min_tasks` of it: the policy's `not_enough_data`
  decides ("pass" or "hold"), and the evidence says so;
- otherwise HALT when the new release's failure rate (failed + retried + worker lost, over all outcomes) is
  both practically and statistically worse than the baseline's: at least `min_failures` failures, a rate above
  the baseline's by `margin` or more, and a one-sided Fisher exact test (is the new release's share of failures
  larger than chance?) below `alpha`. Fisher's test is exact at the small counts a bake window gives, where a
  normal approximation is not; the margin keeps a large window from halting on a difference nobody cares about.
- A task the baseline never ran compares against a zero-failure baseline of the same size (prior: it was fine).
- Bursts: the test assumes tasks fail independently; a dependency's hiccup fails a run of tasks at once, and a
  burst of k failures would weigh as k independent ones (with short bakes, a good release hit by one burst would
  be halted one time in ten). When the new release's counts come in intervals (`buckets`: what arrived between
  two looks of the gate), a halt must survive leaving out the interval with the most failures: the rest still at
  least 2 failures, `margin` above the baseline, and Fisher below `burst_alpha`. A release whose failures sit in
  one interval, beside at least `min_tasks` tasks that show nothing, is judged "not enough data" (the policy's pass
  or hold) with the evidence saying so. With `interim` (a look during the bake) a halt the rest does not confirm
  waits for the next look, and so does one with fewer than two intervals; at the end of the bake with a single
  interval (no looks), or too few tasks beside the worst one, there is nothing to tell a burst by and the test
  stands alone. The gate's intervals are one check's reads (its first: everything since the release started).
Guards halt on their own: any unregistered-task error, `missing_heartbeats` above its bound, backlog growth
above its bound.
Verdict: "halt" if any rule halts (with every halting evidence), else "hold" if a not-enough-data evidence holds,
else "continue". Tested on synthetic series (tests/test_health_verdict.py), which gives its false-halt and miss
rates at typical volumes (README, "Health gate: the verdict").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, field
from typing import Literal

Decision = Literal["continue", "hold", "halt"]


@dataclass(frozen=True)
class Counts:
    """Task outcomes of one release for one (queue, task) over a window."""

    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    rejected: int = 0  # unregistered or rejected: a guard of its own as well
    lost: int = 0  # worker lost (the process died under the task)

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.retried + self.rejected + self.lost

    @property
    def bad(self) -> int:
        return self.failed + self.retried + self.rejected + self.lost

    @property
    def rate(self) -> float:
        return self.bad / self.total if self.total else 0.0


@dataclass(frozen=True)
class Guards:
    missing_heartbeats: int = 0  # workers of the new release whose heartbeat stopped
    unregistered: int = 0  # "Received unregistered task" errors on the new release
    backlog_growth: float = 0.0  # relative growth of the queues' backlog over the bake (0.5 = +50 %)


@dataclass(frozen=True)
class Policy:
    min_tasks: int = 20
    min_failures: int = 3
    margin: float = 0.05
    alpha: float = 0.001
    not_enough_data: Literal["pass", "hold"] = "pass"
    max_missing_heartbeats: int = 0
    max_backlog_growth: float = 1.0
    burst_alpha: float = 0.05  # the halt must survive leaving out the worst interval (module doc, "Bursts")


@dataclass(frozen=True)
class Evidence:
    key: str  # "queue/task", or the guard's name
    decision: Decision
    reason: str
    new_rate: float | None = None
    base_rate: float | None = None
    p_value: float | None = None


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    evidence: tuple[Evidence, ...] = field(default_factory=tuple)

    @property
    def halting(self) -> tuple[Evidence, ...]:
        return tuple(e for e in self.evidence if e.decision == "halt")


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_greater(bad_new: int, total_new: int, bad_base: int, total_base: int) -> float:
    """One-sided Fisher exact test: P(the new release gets >= bad_new of all the failures, by chance alone)."""
    bad = bad_new + bad_base
    total = total_new + total_base
    if bad == 0 or total_new == 0:
        return 1.0
    low, high = max(0, bad - total_base), min(bad, total_new)
    denominator = _log_comb(total, bad)
    p = 0.0
    for k in range(max(bad_new, low), high + 1):
        p += math.exp(_log_comb(total_new, k) + _log_comb(total_base, bad - k) - denominator)
    return min(1.0, p)


def minus(a: Counts, b: Counts) -> Counts:
    return Counts(*(max(0, x - y) for x, y in zip(astuple(a), astuple(b), strict=True)))


def judge_task(
    key: str, new: Counts, base: Counts | None, policy: Policy, buckets: Sequence[Counts] = (), interim: bool = False
) -> Evidence:
    if new.total < policy.min_tasks:
        decision: Decision = "hold" if policy.not_enough_data == "hold" else "continue"
        return Evidence(
            key, decision, f"not enough data: {new.total} task(s) on the new release, {policy.min_tasks} needed"
        )
    baseline = base if base is not None and base.total > 0 else Counts(succeeded=new.total)
    p_value = fisher_greater(new.bad, new.total, baseline.bad, baseline.total)
    worse = new.rate - baseline.rate
    what = (
        f"{new.bad}/{new.total} failed ({new.rate:.1%}) vs {baseline.bad}/{baseline.total} "
        f"({baseline.rate:.1%}) before{'' if base is not None and base.total else ' (no baseline: taken as clean)'}"
    )
    if not (new.bad >= policy.min_failures and worse >= policy.margin and p_value < policy.alpha):
        return Evidence(key, "continue", what, new.rate, baseline.rate, p_value)
    filled = [b for b in buckets if b.total]
    if interim and buckets and len(filled) < 2:
        return Evidence(key, "continue", f"{what}; p={p_value:.2g}; one interval so far: the next look decides")
    if len(filled) >= 2:
        worst = max(filled, key=lambda b: b.bad)
        rest = minus(new, worst)
        p_rest = fisher_greater(rest.bad, rest.total, baseline.bad, baseline.total)
        confirmed = rest.bad >= 2 and rest.rate - baseline.rate >= policy.margin and p_rest < policy.burst_alpha
        if not confirmed and not interim and rest.total < policy.min_tasks:
            confirmed = True  # too few tasks beside the worst interval to call it a burst: the window stands alone
        if not confirmed:
            return Evidence(
                key,
                "hold" if policy.not_enough_data == "hold" else "continue",
                f"{what}; p={p_value:.2g}, but {worst.bad} of the {new.bad} failures came in one interval of "
                f"{len(filled)} and the rest ({rest.bad}/{rest.total}) does not show it: a burst, not enough data",
                new.rate,
                baseline.rate,
                p_value,
            )
    return Evidence(key, "halt", f"{what}; p={p_value:.2g}", new.rate, baseline.rate, p_value)


def verdict(
    new: Mapping[str, Counts],
    base: Mapping[str, Counts],
    guards: Guards = Guards(),
    policy: Policy = Policy(),
    per_key: Mapping[str, Policy] | None = None,
    buckets: Mapping[str, Sequence[Counts]] | None = None,
    interim: bool = False,
) -> Verdict:
    """`per_key`: a policy of its own for some keys (the gate gives each queue its group's not_enough_data);
    `buckets`: per key, the new release's counts by interval (module doc, "Bursts"); `interim`: a look during the
    bake."""
    evidence = [
        judge_task(key, counts, base.get(key), (per_key or {}).get(key, policy), (buckets or {}).get(key, ()), interim)
        for key, counts in sorted(new.items())
    ]
    if guards.unregistered > 0:
        evidence.append(Evidence("unregistered", "halt", f"{guards.unregistered} unregistered-task error(s)"))
    if guards.missing_heartbeats > policy.max_missing_heartbeats:
        evidence.append(
            Evidence(
                "heartbeats", "halt", f"{guards.missing_heartbeats} worker(s) of the new release stopped reporting"
            )
        )
    if guards.backlog_growth > policy.max_backlog_growth:
        evidence.append(Evidence("backlog", "halt", f"backlog grew {guards.backlog_growth:.0%} over the bake"))
    if any(e.decision == "halt" for e in evidence):
        return Verdict("halt", tuple(evidence))
    if any(e.decision == "hold" for e in evidence):
        return Verdict("hold", tuple(evidence))
    return Verdict("continue", tuple(evidence))
