"""The health gate's verdict on recorded series: what the gate judged in `python bench/gate.py --record` runs on the
sandbox (real Celery workers publishing to CloudWatch on moto, a bad release failing a fifth of send_email, a good
one changing only its release note), replayed through deploytool.rollout.health.verdict. The verdict is plain code:
given the same counts it must decide as it did live, halting every bad release after its first wave and no good
one; and the recorded bad series, cut at each of its intervals, show when the evidence became enough."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deploytool.rollout.health import Counts, Policy, verdict

DATA = Path(__file__).parent / "data" / "gate_recorded.json"


def counts(pair: list[int]) -> Counts:
    failures, tasks = pair
    return Counts(succeeded=tasks - failures, failed=failures)


def judged(check: dict[str, Any]) -> tuple[dict[str, Counts], dict[str, Counts], dict[str, list[Counts]]]:
    buckets = {key: [counts(pair) for pair in series] for key, series in check["counts"]["new"].items()}
    new = {key: total(series) for key, series in buckets.items()}
    base = {key: counts(pair) for key, pair in check["counts"]["base"].items()}
    return new, base, buckets


def total(series: list[Counts]) -> Counts:
    return Counts(succeeded=sum(c.succeeded for c in series), failed=sum(c.failed for c in series))


def recorded() -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = json.loads(DATA.read_text())["runs"]
    assert sum(r["kind"] == "bad" for r in runs) >= 10 and sum(r["kind"] == "good" for r in runs) >= 10
    return runs


def test_every_recorded_check_replays_to_the_verdict_the_gate_gave() -> None:
    for run in recorded():
        for check in run["checks"]:
            new, base, buckets = judged(check)
            policy = Policy(alpha=check["counts"]["alpha"])
            got = verdict(new, base, policy=policy, buckets=buckets, interim=check["early"])
            assert got.decision == check["decision"], (run["kind"], check)


def test_recorded_bad_releases_halt_after_their_first_wave_and_good_ones_never() -> None:
    for run in recorded():
        decisions = [(c["after_wave"], c["decision"]) for c in run["checks"]]
        if run["kind"] == "bad":
            assert decisions[-1] == (0, "halt"), decisions
            [halt] = [c for c in run["checks"] if c["decision"] == "halt"]
            assert [key for key in halt["counts"]["new"]] == ["email/acme_workers.tasks.send_email"]
        else:
            assert all(d == "continue" for _, d in decisions) and len(decisions) == 2, decisions


def test_the_bad_series_cut_short_never_halt_on_one_interval() -> None:
    """Each recorded bad series cut after 1, 2, ... intervals, judged as an early look would: one interval never
    halts (it could be a burst), and the series halts by the interval the live gate halted at."""
    for run in recorded():
        if run["kind"] != "bad":
            continue
        halt = next(c for c in run["checks"] if c["decision"] == "halt")
        _, base, buckets = judged(halt)
        policy = Policy(alpha=halt["counts"]["alpha"])
        decisions = []
        for cut in range(1, len(buckets["email/acme_workers.tasks.send_email"]) + 1):
            part = {key: series[:cut] for key, series in buckets.items()}
            new = {key: total(series) for key, series in part.items()}
            decisions.append(verdict(new, base, policy=policy, buckets=part, interim=True).decision)
        assert decisions[0] != "halt" and "halt" in decisions, decisions
