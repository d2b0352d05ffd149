"""The health gate between waves: bake, read the workers' telemetry, judge (health.py), continue or halt.

Contract: `HealthGate` is a Reporter (it follows the release's events: when it started, which groups reached
instances and how many) and its `gate()` is the orchestrator's gate, asked before each wave starts (with the
release lease's: rollout.wiring). Before the first wave, while no group of this release has reached an instance,
and after a wave with no bake, it says yes at once. Otherwise it waits the wave's bake (`bakes`, on the rollout
clock), looking at the task outcomes every `look_s` on the way (the workers' publishing interval: a look sees
new data): a look halts at once when the task rates already prove the release bad (or an unregistered-task error
shows), so a bad release stops serving after seconds rather than after the whole bake; nothing else is decided
before the bake is over (a continue needs the whole bake, and the heartbeat and backlog guards a full interval).
Each read also keeps what arrived since the one before, per queue and task: a halt must not rest on one burst
(health.py, "Bursts"). The looks share the false-halt budget: with k looks, each early look tests at
alpha / (2 (k - 1)) and the last one at alpha / 2, so a good release is halted no more often than by one look at
alpha (Bonferroni). A look that cannot read the telemetry decides nothing. Each read takes from CloudWatch
(aws/cloudwatch.py, what deploytool_instance.telemetry publishes):
- the new release's task outcomes since the release started, per queue and task;
- the baseline: every other release's outcomes per queue and task from BASELINE_S before the release started until
  now (the groups not deployed yet, and the deployed ones before their switch);
- the guards: unregistered-task errors on the new release; workers of the new release silent (the instances its
  deployments reached less those heard in the last HEARD_S); the backlog of the reached groups' queues growing
  over the bake (SQS: the messages waiting before and after it; skipped where the broker has no such queues).
and gives health.verdict's decision: "continue" starts the next wave; "halt" starts none (`halted` holds the
verdict; commands.deploy then rolls back every group the release touched); "hold" (not enough data, when the
group's `not_enough_data` says so) asks `ask` (a terminal) and halts without one. Each verdict is published as a
GateChecked event (the progress display, the JSON result and the step summary show it). A CloudWatch error halts
too: a gate that cannot see must not wave a release through.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from deploytool.aws.cloudwatch import Heartbeat
from deploytool.errors import DeployToolError
from deploytool.rollout.clock import Clock
from deploytool.rollout.events import Event, GateChecked, GroupFinished, ReleaseStarted, WaveFinished
from deploytool.rollout.health import Counts, Guards, Policy, Verdict, minus, verdict

PRODUCTION_TELEMETRY_S = 30.0  # how often workers publish on a real fleet (deploytool_instance.telemetry.INTERVAL_S)
BASELINE_S = 900  # the previous releases' outcomes are read from this long before the release started
HEARD_S = 120  # a worker not heard for this long is silent (workers publish every 30 s)
BACKLOG_FLOOR = 20  # a queue's growth is measured from at least this many waiting messages (5 -> 12 is noise)
OUTCOME_FIELDS = {"succeeded": "succeeded", "failed": "failed", "retried": "retried", "lost": "lost",
                  "unregistered": "rejected", "rejected": "rejected"}  # fmt: skip


class Telemetry(Protocol):
    def task_counts(
        self, app: str, since: datetime, until: datetime, release: str | None = None
    ) -> dict[tuple[str, ...], int]: ...

    def heartbeats(self, app: str, since: datetime, until: datetime) -> list[Heartbeat]: ...


def add(into: dict[str, dict[str, int]], key: str, outcome: str, n: int) -> None:
    slot = OUTCOME_FIELDS.get(outcome)
    if slot is not None:
        into.setdefault(key, {})[slot] = into.get(key, {}).get(slot, 0) + n


def evidence_lines(found: Verdict) -> tuple[str, ...]:
    return tuple(f"{e.key}: {e.decision}: {e.reason}" for e in found.evidence)


@dataclass
class HealthGate:
    app: str
    version: str
    bakes: Mapping[int, float]  # wave number -> the bake after it (plan.wave_bakes); 0: no check after that wave
    telemetry: Telemetry
    clock: Clock
    now: Callable[[], datetime]
    policy: Policy = field(default_factory=Policy)
    ask: Callable[[str], bool] | None = None  # a terminal's question on "hold"; None: hold halts
    emit: Callable[[Event], None] = lambda event: None  # the release's reporters (set by the wiring)
    # the backlog guard: each group's queues, and their waiting messages (SQS; None: no such guard)
    queues: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    depths: Callable[[list[str]], Mapping[str, int]] | None = None
    not_enough_data: Mapping[str, str] = field(default_factory=dict)  # group -> "pass" | "hold" (its fleet setting)
    look_s: float | None = None  # a look at the task outcomes this often during the bake; None: only at its end
    started_at: datetime | None = None
    reached: dict[str, int] = field(default_factory=dict)  # group -> instances the new release reached
    checks: list[GateChecked] = field(default_factory=list)
    halted: Verdict | None = None
    last_wave: int | None = None  # the number of the last wave that finished
    # this check's reads: the last one's counts of the new release, and what arrived between reads, per key (the
    # first interval: everything since the release started); reset by each check, so a failure that starts with
    # a later wave's groups is never one interval among the earlier checks'
    seen: dict[str, Counts] = field(default_factory=dict)
    buckets: dict[str, list[Counts]] = field(default_factory=dict)
    base: dict[str, Counts] = field(default_factory=dict)  # the last read's baseline, per key

    def publish(self, event: Event) -> None:
        if isinstance(event, ReleaseStarted):
            self.started_at = self.now()
        elif isinstance(event, GroupFinished) and event.result.succeeded:
            self.reached[event.result.group] = event.result.succeeded
        elif isinstance(event, WaveFinished):
            self.last_wave = event.wave

    def gate(self) -> bool:
        if self.halted is not None:
            return False
        bake = self.bakes.get(self.last_wave, 0.0) if self.last_wave is not None else 0.0
        if not self.reached or self.started_at is None or bake <= 0:
            return True
        entered = self.clock.now()
        self.seen, self.buckets, self.base = {}, {}, {}
        backlog_before = self.backlog()
        looks = self.looks(bake)
        policy = replace(self.policy, alpha=self.policy.alpha / 2) if looks > 1 else self.policy
        interim = replace(self.policy, alpha=self.policy.alpha / (2 * (looks - 1))) if looks > 1 else None
        found = self.bake(entered + bake, interim)
        early = found is not None
        alpha = (interim if early and interim is not None else policy).alpha
        blind: str | None = None
        if found is None:
            try:
                found = self.judge(backlog_before, policy)
            except DeployToolError as exc:
                found, blind = (
                    Verdict("halt", ()),
                    f"telemetry: halt: cannot read it ({exc}); a gate that cannot see halts",
                )
        # a check that could not read judged nothing: no counts of an earlier read under its verdict
        lines = (blind,) if blind else (self.window(), *evidence_lines(found))
        judged = {} if blind else self.counts(alpha)
        now = self.clock.now()
        check = GateChecked(self.last_wave or 0, found.decision, lines, bake, now, now - entered, early, judged)
        self.checks.append(check)
        self.emit(check)
        if found.decision == "continue":
            return True
        if found.decision == "hold" and self.ask is not None and self.ask("\n".join(lines)):
            return True
        self.halted = found
        return False

    def counts(self, alpha: float) -> dict[str, Any]:
        """What the check judged, for the JSON result: per queue and task the new release's failures and tasks by
        interval between reads, and the baseline's."""
        return {
            "alpha": alpha,
            "new": {key: [[b.bad, b.total] for b in series] for key, series in sorted(self.buckets.items())},
            "base": {key: [c.bad, c.total] for key, c in sorted(self.base.items())},
        }

    def looks(self, bake: float) -> int:
        """How many looks a bake of this length takes: one per `look_s`, the last at its end."""
        if not self.look_s or self.look_s <= 0 or bake <= self.look_s:
            return 1
        return max(1, math.ceil(bake / self.look_s - 1e-9))

    def bake(self, until: float, early: Policy | None) -> Verdict | None:
        """Wait until the bake is over (clock time `until`), looking every `look_s` (with `early`, the early looks'
        policy: their share of alpha): the halting verdict of the first look whose task outcomes prove the release
        bad, else None."""
        while True:
            left = until - self.clock.now()
            if early is None or self.look_s is None or left <= self.look_s + 1e-9:
                self.clock.sleep(left)
                return None
            self.clock.sleep(self.look_s)
            try:
                found = self.judge(None, early, interim=True)
            except DeployToolError:
                continue  # an early look that cannot read decides nothing; the last one halts on it
            if found.decision == "halt":
                return found

    def window(self) -> str:
        assert self.started_at is not None
        start = self.started_at.strftime("%H:%M:%SZ")
        since = (self.started_at - timedelta(seconds=BASELINE_S)).strftime("%H:%M:%SZ")
        return (
            f"window: {self.version} since {start} on {', '.join(sorted(self.reached))}; the other releases since "
            f"{since}; until {self.now().strftime('%H:%M:%SZ')}"
        )

    def backlog(self) -> dict[str, int] | None:
        """Messages waiting in the reached groups' queues, when the broker can tell (None: it cannot)."""
        names = sorted({q for group in self.reached for q in self.queues.get(group, ())})
        if self.depths is None or not names:
            return None
        try:
            return dict(self.depths(names))
        except DeployToolError:
            return None  # the guard is optional: a broker without these queues (Redis, RabbitMQ) has none

    def growth(self, before: Mapping[str, int] | None) -> float:
        """The largest relative growth of a queue's backlog over the bake (from at least BACKLOG_FLOOR messages)."""
        after = self.backlog() if before is not None else None
        if not before or not after:
            return 0.0
        return max(((after[q] - before[q]) / max(before[q], BACKLOG_FLOOR) for q in before if q in after), default=0.0)

    def judge(
        self, backlog_before: Mapping[str, int] | None = None, policy: Policy | None = None, *, interim: bool = False
    ) -> Verdict:
        """The verdict now; `interim` (an early look during the bake): task outcomes and unregistered errors only
        (the heartbeat and backlog guards need the whole bake), and its caller acts on a halt alone."""
        assert self.started_at is not None
        policy = policy or self.policy
        until = self.now()
        rows = self.telemetry.task_counts(self.app, self.started_at - timedelta(seconds=BASELINE_S), until)
        new: dict[str, dict[str, int]] = {}
        base: dict[str, dict[str, int]] = {}
        per_key: dict[str, Policy] = {}
        unregistered = 0
        for (release, group, queue, task, outcome), n in rows.items():
            key = f"{queue}/{task}"
            if release == self.version:
                if group in self.reached:
                    add(new, key, outcome, n)
                    wanted = self.not_enough_data.get(group)
                    if wanted in ("hold", "pass"):
                        per_key[key] = replace(policy, not_enough_data="hold" if wanted == "hold" else "pass")
                    unregistered += n if outcome == "unregistered" else 0
            else:
                add(base, key, outcome, n)
        now_counts = as_counts(new)
        for key, counts in now_counts.items():  # the intervals between reads: a burst shows as one
            self.buckets.setdefault(key, []).append(minus(counts, self.seen.get(key, Counts())))
        self.seen = {**self.seen, **now_counts}  # a key one read missed keeps its last counts
        self.base = as_counts(base)
        if interim:
            return verdict(now_counts, self.base, Guards(unregistered=unregistered), policy, per_key, self.buckets,
                           interim=True)  # fmt: skip
        heard = {
            b.instance
            for b in self.telemetry.heartbeats(self.app, until - timedelta(seconds=HEARD_S), until)
            if b.release == self.version and b.group in self.reached
        }
        guards = Guards(
            missing_heartbeats=max(0, sum(self.reached.values()) - len(heard)),
            unregistered=unregistered,
            backlog_growth=self.growth(backlog_before),
        )
        return verdict(now_counts, self.base, guards, policy, per_key, self.buckets)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bakes_s": {str(wave): bake for wave, bake in sorted(self.bakes.items())},
            "halted": self.halted is not None,
            "checks": [
                {
                    "after_wave": c.after_wave,
                    "decision": c.decision,
                    "took_s": round(c.took_s, 3),
                    "early": c.early,
                    "counts": dict(c.counts),
                    "evidence": list(c.evidence),
                }
                for c in self.checks
            ],
        }


def as_counts(table: Mapping[str, Mapping[str, int]]) -> dict[str, Counts]:
    return {key: Counts(**dict(fields)) for key, fields in table.items()}
