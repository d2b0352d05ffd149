"""The health gate's verdict (deploytool.rollout.health) on synthetic series: its rules case by case, then its
false-halt and miss rates over seeded runs at the volumes a bake window gives (the README states them)."""

from __future__ import annotations

import random

import pytest

from deploytool.rollout.health import Counts, Guards, Policy, fisher_greater, verdict

KEY = "video/acme_workers.tasks.transcode_video"


def sample(rng: random.Random, n: int, rate: float) -> Counts:
    bad = sum(rng.random() < rate for _ in range(n))
    return Counts(succeeded=n - bad, failed=bad)


def test_fisher_matches_a_hand_computed_case() -> None:
    # 3 of 10 new tasks failed, 0 of 10 old: P = C(10,3)C(10,0)/C(20,3) = 120/1140
    assert fisher_greater(3, 10, 0, 10) == pytest.approx(120 / 1140)
    assert fisher_greater(0, 10, 3, 10) == 1.0 and fisher_greater(0, 0, 0, 0) == 1.0


def test_a_task_failing_one_time_in_five_halts_with_its_evidence() -> None:
    result = verdict({KEY: Counts(succeeded=40, failed=10)}, {KEY: Counts(succeeded=198, failed=2)})
    assert result.decision == "halt"
    (evidence,) = result.halting
    assert evidence.key == KEY and evidence.new_rate == 0.2 and evidence.base_rate == 0.01
    assert evidence.reason.startswith("10/50 failed (20.0%) vs 2/200 (1.0%) before; p=")


def test_a_good_release_with_the_baselines_noise_continues() -> None:
    result = verdict({KEY: Counts(succeeded=97, failed=3)}, {KEY: Counts(succeeded=490, failed=10)})
    assert result.decision == "continue" and not result.halting


def test_too_few_tasks_is_not_enough_data_and_the_policy_decides() -> None:
    new = {KEY: Counts(succeeded=5, failed=5)}
    assert verdict(new, {}).decision == "continue"
    held = verdict(new, {}, policy=Policy(not_enough_data="hold"))
    assert held.decision == "hold" and held.evidence[0].reason == (
        "not enough data: 10 task(s) on the new release, 20 needed"
    )


def test_retries_and_lost_workers_count_as_failures_and_a_new_task_compares_with_a_clean_baseline() -> None:
    result = verdict({"q/new_task": Counts(succeeded=40, retried=8, lost=2)}, {})
    assert result.decision == "halt"
    assert "(no baseline: taken as clean)" in result.halting[0].reason


def test_a_small_difference_on_a_large_window_does_not_halt() -> None:
    # 3 % vs 1 %: statistically clear at these volumes, but under the 5-point margin
    result = verdict({KEY: Counts(succeeded=9700, failed=300)}, {KEY: Counts(succeeded=9900, failed=100)})
    assert result.decision == "continue" and result.evidence[0].p_value is not None
    assert result.evidence[0].p_value < 1e-6


def test_guards_halt_on_their_own() -> None:
    clean = {KEY: Counts(succeeded=100)}
    assert verdict(clean, clean, Guards(unregistered=1)).halting[0].key == "unregistered"
    assert verdict(clean, clean, Guards(missing_heartbeats=1)).halting[0].key == "heartbeats"
    assert verdict(clean, clean, Guards(backlog_growth=1.5)).halting[0].key == "backlog"
    assert verdict(clean, clean, Guards(backlog_growth=0.5)).decision == "continue"


def rates(trials: int, new_n: int, base_n: int, good_rate: float, bad_rate: float, seed: int) -> tuple[float, float]:
    """(false halts of a good release, misses of a bad one) over seeded trials: one task at `bad_rate` among
    two at the baseline's noise, the baseline at `good_rate` everywhere."""
    rng = random.Random(seed)
    false_halts = misses = 0
    keys = ["q/a", "q/b", "q/c"]
    for _ in range(trials):
        base = {k: sample(rng, base_n, good_rate) for k in keys}
        good = {k: sample(rng, new_n, good_rate) for k in keys}
        bad = {**{k: sample(rng, new_n, good_rate) for k in keys[1:]}, "q/a": sample(rng, new_n, bad_rate)}
        false_halts += verdict(good, base).decision == "halt"
        misses += verdict(bad, base).decision != "halt"
    return false_halts / trials, misses / trials


@pytest.mark.parametrize(
    ("new_n", "base_n", "good_rate", "max_false_halts", "max_misses"),
    [  # measured: 0.1 % / 2.6 %, 0.2 % / 34.9 %, 0.2 % / 0 %, 0.1 % / 60.9 % (README, "Health gate")
        (60, 300, 0.01, 0.005, 0.05),  # a typical bake: 60 of each task on the new release, 1 % noise
        (30, 300, 0.02, 0.005, 0.45),  # low volume: the misses grow (a longer bake sees more), false halts do not
        (200, 1000, 0.05, 0.005, 0.01),  # noisy tasks, more volume
        (40, 300, 0.05, 0.005, 0.70),  # noisy tasks at low volume: most misses, still no false halts
    ],
)
def test_false_halt_and_miss_rates_over_seeded_runs(
    new_n: int, base_n: int, good_rate: float, max_false_halts: float, max_misses: float
) -> None:
    """One task failing 20 % of the time among three (the others at the baseline's noise), 1,000 seeded runs."""
    false_halts, misses = rates(1000, new_n, base_n, good_rate, 0.20, seed=new_n)
    assert false_halts <= max_false_halts, false_halts
    assert misses <= max_misses, misses
