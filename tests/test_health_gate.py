"""The health gate between waves (deploytool.rollout.gate) on the orchestrator and a fake backend, with the workers'
telemetry as CloudWatch would return it: a release whose task fails is halted after its first wave with the
evidence, a good one goes on, a gate that cannot read telemetry halts, and "not enough data" holds or passes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from deploytool.aws.cloudwatch import Heartbeat
from deploytool.errors import AwsError
from deploytool.rollout.events import Collect, GateChecked
from deploytool.rollout.gate import HealthGate
from deploytool.rollout.health import Policy
from deploytool.rollout.orchestrator import Orchestrator
from deploytool.rollout.plan import rollout_plan
from tests.fakes import FakeBackend, FakeClock, Script
from tests.test_orchestrator import REVISION, group


class Telemetry:
    """What the workers reported: (release, group, queue, task, outcome) -> count, and who is heard."""

    def __init__(self, counts: dict[tuple[str, ...], int], instances: dict[str, int], fail: bool = False) -> None:
        self.counts, self.instances, self.fail = counts, instances, fail
        self.asked: list[tuple[datetime, datetime]] = []

    def task_counts(
        self, app: str, since: datetime, until: datetime, release: str | None = None
    ) -> dict[tuple[str, ...], int]:
        if self.fail:
            raise AwsError("CloudWatch GetMetricData deploytool/Tasks: AccessDenied")
        self.asked.append((since, until))
        return dict(self.counts)

    def heartbeats(self, app: str, since: datetime, until: datetime) -> list[Heartbeat]:
        return [Heartbeat(g, "v2", f"i-{g}-{n}", "running", until) for g, n in self.instances.items() for n in range(n)]


def release(
    telemetry: Telemetry,
    policy: Policy | None = None,
    depths: Callable[[list[str]], dict[str, int]] | None = None,
    not_enough_data: dict[str, str] | None = None,
    look_s: float | None = None,
) -> tuple[HealthGate, Collect, object]:
    clock = FakeClock()
    backend = FakeBackend(clock, default=Script(duration=30, instances=2))
    plan = rollout_plan(
        release_id="20261202T080000Z-v2", version="v2", target="prod", revision=REVISION,
        groups=[group("reports", 0), group("email", 1), group("video", 2)],
    )  # fmt: skip
    gate = HealthGate(app="acme", version="v2", bakes={0: 60, 1: 60}, telemetry=telemetry, clock=clock, now=clock.wall,
                      policy=policy or Policy(), queues={"reports": ("reports",)}, depths=depths,
                      not_enough_data=not_enough_data or {}, look_s=look_s)  # fmt: skip
    seen = Collect()

    def publish(event: object) -> None:
        gate.publish(event)  # type: ignore[arg-type]
        seen.publish(event)  # type: ignore[arg-type]

    gate.emit = seen.publish
    reporter = type("Both", (), {"publish": staticmethod(publish)})()
    result = Orchestrator(backend, plan, reporter=reporter, clock=clock, gate=gate.gate).run()
    return gate, seen, result


def counts(bad_v2: int, total_v2: int, bad_v1: int = 1, total_v1: int = 400) -> dict[tuple[str, ...], int]:
    return {
        ("v2", "reports", "reports", "acme.build_report", "failed"): bad_v2,
        ("v2", "reports", "reports", "acme.build_report", "succeeded"): total_v2 - bad_v2,
        ("v1", "reports", "reports", "acme.build_report", "failed"): bad_v1,
        ("v1", "reports", "reports", "acme.build_report", "succeeded"): total_v1 - bad_v1,
        ("v1", "email", "email", "acme.send_email", "succeeded"): 900,
    }


def test_a_release_whose_task_fails_is_halted_after_its_first_wave_with_the_evidence() -> None:
    gate, seen, result = release(Telemetry(counts(bad_v2=12, total_v2=60), {"reports": 2}))
    assert gate.halted is not None and gate.halted.decision == "halt"
    outcomes = {g.group: g.outcome for g in result.groups}  # type: ignore[attr-defined]
    assert outcomes == {"reports": "succeeded", "email": "not-started", "video": "not-started"}
    [check] = [e for e in seen.events if isinstance(e, GateChecked)]
    assert check.after_wave == 0 and check.decision == "halt" and check.bake_s == 60
    assert any(line.startswith("reports/acme.build_report: halt: 12/60 failed (20.0%) vs 1/400 (0.2%)") for line in
               check.evidence), check.evidence  # fmt: skip
    assert (
        check.evidence[0].startswith("window: v2 since ")
        and "on reports; the other releases since" in check.evidence[0]
    )
    data = gate.to_dict()
    assert data["halted"] and data["checks"][0]["decision"] == "halt"


def test_a_good_release_goes_on_through_every_wave() -> None:
    telemetry = Telemetry(counts(bad_v2=1, total_v2=60), {"reports": 2, "email": 2})
    gate, seen, result = release(telemetry)
    assert gate.halted is None and result.succeeded  # type: ignore[attr-defined]
    checks = [e for e in seen.events if isinstance(e, GateChecked)]
    assert [(c.after_wave, c.decision) for c in checks] == [(0, "continue"), (1, "continue")]
    since, until = telemetry.asked[0]
    assert until - since >= timedelta(seconds=900 + 60)  # the baseline reaches back before the release


def test_a_silent_worker_or_unreadable_telemetry_halts() -> None:
    gate, _, _ = release(Telemetry(counts(bad_v2=0, total_v2=60), {"reports": 1}))  # one of two heard
    assert gate.halted is not None
    assert [e.key for e in gate.halted.halting] == ["heartbeats"]
    gate, seen, _ = release(Telemetry({}, {}, fail=True))
    assert gate.halted is not None
    [check] = [e for e in seen.events if isinstance(e, GateChecked)]
    assert "cannot read it" in check.evidence[0] and "AccessDenied" in check.evidence[0]


def test_not_enough_data_passes_or_holds_per_policy() -> None:
    few = Telemetry(counts(bad_v2=2, total_v2=8), {"reports": 2, "email": 2})
    gate, _, result = release(few)
    assert gate.halted is None and result.succeeded  # type: ignore[attr-defined]
    gate, _, result = release(few, Policy(not_enough_data="hold"))  # no terminal to ask: a hold halts
    assert gate.halted is not None and gate.halted.decision == "hold"
    gate, _, _ = release(few, not_enough_data={"reports": "hold"})  # the group's own setting (fleet file)
    assert gate.halted is not None and gate.halted.decision == "hold"
    gate, _, result = release(few, Policy(not_enough_data="hold"), not_enough_data={"reports": "pass"})
    assert gate.halted is None and result.succeeded  # type: ignore[attr-defined]


def test_each_wave_bakes_for_its_groups_unless_bake_is_given() -> None:
    from deploytool.config import Group
    from deploytool.rollout.plan import RolloutOptions, wave_bakes

    def plan_waves(options: RolloutOptions) -> dict[int, float]:
        plan = rollout_plan(
            release_id="20261202T080000Z-v2", version="v2", target="prod", revision=REVISION, options=options,
            groups=[Group(name="a", asg="a", queues=["a"], wave=0, bake=300),
                    Group(name="b", asg="b", queues=["b"], wave=0), Group(name="c", asg="c", queues=["c"], wave=1)],
        )  # fmt: skip
        return wave_bakes(plan.waves, options)

    assert plan_waves(RolloutOptions(bake_s=60)) == {0: 300, 1: 60}  # a group's own bake, else the release's
    assert plan_waves(RolloutOptions(bake_s=30, bake_given=True)) == {0: 30, 1: 30}  # --bake wins
    assert plan_waves(RolloutOptions(bake_s=60, gate=False)) == {}  # --no-gate


def test_a_backlog_growing_over_the_bake_halts_and_a_broker_without_queues_skips_the_guard() -> None:
    good = counts(bad_v2=0, total_v2=60)
    seen: list[list[str]] = []
    readings = iter([{"reports": 30}, {"reports": 100}])

    def growing(names: list[str]) -> dict[str, int]:
        seen.append(names)
        return next(readings)

    gate, _, _ = release(Telemetry(good, {"reports": 2}), depths=growing)
    assert seen == [["reports"], ["reports"]]  # before and after the bake, the reached group's queues
    assert gate.halted is not None and [e.key for e in gate.halted.halting] == ["backlog"]
    assert "backlog grew 233% over the bake" in gate.halted.halting[0].reason

    def no_queues(names: list[str]) -> dict[str, int]:
        raise AwsError("SQS queue reports: AccessDenied")

    gate, _, result = release(Telemetry(good, {"reports": 2, "email": 2}), depths=no_queues)
    assert gate.halted is None and result.succeeded  # type: ignore[attr-defined]


class Growing(Telemetry):
    """Telemetry that grows as the bake goes on: the n-th read returns `series[n]` (the last one from then on);
    `fail_reads`: the reads (by number) that fail as CloudWatch would."""

    def __init__(self, series: list[dict[tuple[str, ...], int]], instances: dict[str, int],
                 fail_reads: tuple[int, ...] = ()) -> None:  # fmt: skip
        super().__init__(series[0], instances)
        self.series, self.fail_reads, self.reads = series, fail_reads, 0

    def task_counts(
        self, app: str, since: datetime, until: datetime, release: str | None = None
    ) -> dict[tuple[str, ...], int]:
        n, self.reads = self.reads, self.reads + 1
        if n in self.fail_reads:
            raise AwsError("CloudWatch GetMetricData deploytool/Tasks: Throttling")
        self.counts = self.series[min(n, len(self.series) - 1)]
        return super().task_counts(app, since, until, release)


def test_a_look_during_the_bake_halts_a_bad_release_as_soon_as_its_rates_prove_it() -> None:
    from deploytool.rollout.progress import gate_headline

    # looks every 10 s of a 60 s bake: 6 looks; the release's failures show by the second (one interval alone
    # never halts early: it could be a burst)
    series = [counts(bad_v2=3, total_v2=15), counts(bad_v2=7, total_v2=35), counts(bad_v2=12, total_v2=60)]
    telemetry = Growing(series, {"reports": 2})
    gate, seen, result = release(telemetry, look_s=10)
    [check] = [e for e in seen.events if isinstance(e, GateChecked)]
    assert gate.halted is not None and check.decision == "halt" and check.early
    assert check.took_s == 20 and telemetry.reads == 2  # halted at the second look, not after 60 s
    assert any(line.startswith("reports/acme.build_report: halt: 7/35 failed") for line in check.evidence)
    assert gate_headline(check) == "health gate after wave 0 (60 s bake, halted early at 20 s): halt"
    assert {g.group: g.outcome for g in result.groups}["email"] == "not-started"  # type: ignore[attr-defined]
    assert gate.to_dict()["checks"][0]["early"] is True
    judged = gate.to_dict()["checks"][0]["counts"]  # what it judged, by interval, in the JSON result
    assert judged["new"] == {"reports/acme.build_report": [[3, 15], [4, 20]]}
    assert judged["base"] == {"reports/acme.build_report": [1, 400], "email/acme.send_email": [0, 900]}
    assert judged["alpha"] == Policy().alpha / 10  # an early look of six
    from dataclasses import replace

    from deploytool.rollout.summary import markdown

    summary = markdown(replace(result, gate=gate.to_dict()))  # type: ignore[type-var, arg-type]
    assert "🛑 **Health gate after wave 0: halt** (halted early, 20 s into the bake)" in summary


def test_looks_never_pass_a_release_early_nor_halt_on_what_only_the_whole_bake_can_show() -> None:
    good = Growing([counts(bad_v2=0, total_v2=n) for n in (20, 40, 60, 80, 100, 120)], {"reports": 2, "email": 2})
    gate, seen, result = release(good, look_s=10)
    assert gate.halted is None and result.succeeded  # type: ignore[attr-defined]
    checks = [e for e in seen.events if isinstance(e, GateChecked)]
    assert [(c.decision, c.early, c.took_s) for c in checks] == [("continue", False, 60), ("continue", False, 60)]
    assert good.reads == 12  # six looks a bake, the last the verdict

    # a worker not heard yet is no reason to halt at an early look; at the end of the bake it is
    quiet = Growing([counts(bad_v2=0, total_v2=60)], {"reports": 1})
    gate, seen, _ = release(quiet, look_s=10)
    [check] = [e for e in seen.events if isinstance(e, GateChecked)]
    assert gate.halted is not None and not check.early and check.took_s == 60
    assert [e.key for e in gate.halted.halting] == ["heartbeats"]


def test_an_early_look_that_cannot_read_decides_nothing_and_the_last_one_halts() -> None:
    flaky = Growing([counts(bad_v2=0, total_v2=60)], {"reports": 2, "email": 2}, fail_reads=(0, 2))
    gate, _, result = release(flaky, look_s=10)
    assert gate.halted is None and result.succeeded  # type: ignore[attr-defined]
    blind = Growing([counts(bad_v2=0, total_v2=60)], {"reports": 2}, fail_reads=(5,))  # the last look of wave 0
    gate, seen, _ = release(blind, look_s=10)
    [check] = [e for e in seen.events if isinstance(e, GateChecked)]
    assert gate.halted is not None and "cannot read it" in check.evidence[0] and not check.early


def test_the_looks_share_the_false_halt_budget() -> None:
    """A borderline release the single look at alpha halts; split over six looks no single test may spend
    alpha, so neither an early look nor the last (at alpha / 2) does: looking often does not halt more often."""
    from deploytool.rollout.health import fisher_greater

    p = fisher_greater(4, 40, 2, 400)  # 4/40 failed against 2/400 before: p between alpha/2 and alpha
    assert Policy().alpha / 2 < p < Policy().alpha
    borderline = counts(bad_v2=4, total_v2=40, bad_v1=2)
    gate, _, _ = release(Telemetry(borderline, {"reports": 2}))
    assert gate.halted is not None  # one look at alpha
    gate, _, _ = release(Growing([borderline], {"reports": 2, "email": 2}), look_s=10)
    assert gate.halted is None


def test_the_production_look_follows_the_workers_publishing_interval() -> None:
    from deploytool.rollout.gate import PRODUCTION_TELEMETRY_S
    from deploytool.sandbox.fleet import TELEMETRY_INTERVAL_S
    from deploytool_instance import telemetry

    assert PRODUCTION_TELEMETRY_S == telemetry.INTERVAL_S and TELEMETRY_INTERVAL_S < PRODUCTION_TELEMETRY_S
    from deploytool import targets
    from deploytool.config import load_fleet
    from tests.conftest import ROOT

    fleet = load_fleet(ROOT / "deploy.toml")
    assert targets.target(fleet, "sandbox").telemetry_s == TELEMETRY_INTERVAL_S  # the gate looks as often
    assert targets.target(fleet, "production").telemetry_s == PRODUCTION_TELEMETRY_S


def test_failures_that_all_came_in_one_interval_are_a_burst_not_a_bad_release() -> None:
    # 10 failures between the first and the second look, none before or after: a dependency's hiccup
    burst = [counts(bad_v2=0, total_v2=20), counts(bad_v2=10, total_v2=40)] + [
        counts(bad_v2=10, total_v2=n)
        for n in range(60, 280, 20)  # clean tasks go on, through wave 1's bake
    ]
    gate, seen, result = release(Growing(burst, {"reports": 2, "email": 2}), look_s=10)
    assert gate.halted is None and result.succeeded  # type: ignore[attr-defined]
    first = next(e for e in seen.events if isinstance(e, GateChecked))
    assert first.decision == "continue" and not first.early
    [line] = [line for line in first.evidence if line.startswith("reports/")]
    assert "but 10 of the 10 failures came in one interval of 6" in line and "a burst, not enough data" in line
    # the same counts as one read (no looks): nothing to tell a burst by, the test stands alone and halts
    gate, _, _ = release(Telemetry(counts(bad_v2=10, total_v2=120), {"reports": 2}))
    assert gate.halted is not None


def test_a_held_gate_asks_in_a_terminal_and_goes_on_only_on_yes() -> None:
    import io

    from rich.console import Console

    from deploytool.rollout.plan import RolloutOptions
    from deploytool.rollout.wiring import Output, Services, health_gate
    from tests.reconcile_support import stubbed_session

    plan = rollout_plan(
        release_id="20261202T080000Z-v2", version="v2", target="prod", revision=REVISION,
        groups=[group("reports", 0), group("email", 1)], options=RolloutOptions(bake_s=60),
    )  # fmt: skip
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    answers = iter(["y", "", "no"])
    console.input = lambda prompt="", **_: (out.write(prompt), next(answers))[1]  # type: ignore[method-assign]
    paused: list[str] = []
    display = type("Display", (), {"pause": lambda self: paused.append("pause"),
                                   "resume": lambda self: paused.append("resume")})()  # fmt: skip
    store = type("Store", (), {"app": "acme"})()
    services = Services(stubbed_session(), None, store, console)  # type: ignore[arg-type]
    gate = health_gate(plan, services, Output(), display)  # type: ignore[arg-type]
    assert gate is not None and gate.ask is not None and gate.look_s is None  # no publishing interval known
    assert gate.ask("reports/acme.build_report: hold: not enough data") is True
    assert "reports/acme.build_report: hold: not enough data" in out.getvalue()
    assert "The health gate holds (not enough data). Start the next wave? [y/N]" in out.getvalue()
    assert gate.ask("again") is False and gate.ask("again") is False  # Enter and "no" both halt
    assert paused == ["pause", "resume"] * 3  # the live display steps aside while it asks

    in_ci = health_gate(plan, services, Output(ci=True), display)  # type: ignore[arg-type]
    assert in_ci is not None and in_ci.ask is None  # CI: no one to ask, a hold halts
    quiet = Services(stubbed_session(), None, store, console, interactive=False)  # type: ignore[arg-type]
    assert health_gate(plan, quiet, Output(), display).ask is None  # type: ignore[arg-type, union-attr]


def test_a_task_that_breaks_only_on_a_later_waves_groups_is_halted_there() -> None:
    """Each check's intervals are its own reads: failures that start with wave 1's groups are not one interval
    among wave 0's clean ones (which would excuse them as a burst)."""
    v1 = {("v1", "email", "shared", "acme.t", "succeeded"): 1000, ("v1", "email", "shared", "acme.t", "failed"): 5}
    clean = {**v1, ("v2", "reports", "shared", "acme.t", "succeeded"): 40}
    broken = {**clean, ("v2", "email", "shared", "acme.t", "succeeded"): 40,
              ("v2", "email", "shared", "acme.t", "failed"): 20}  # fmt: skip
    for look_s in (None, 10.0):
        reads = 6 if look_s else 1  # the reads of wave 0's check, all clean; wave 1's all broken
        gate, seen, _ = release(Growing([clean] * reads + [broken], {"reports": 2, "email": 2}), look_s=look_s)
        decisions = [(c.after_wave, c.decision) for c in seen.events if isinstance(c, GateChecked)]
        assert decisions == [(0, "continue"), (1, "halt")], (look_s, decisions)
        assert gate.halted is not None and "20/100 failed" in gate.halted.halting[0].reason


def test_a_burst_needs_enough_tasks_beside_it_to_be_called_one() -> None:
    from deploytool.rollout.health import Counts, verdict

    base = {"q/t": Counts(succeeded=1000, failed=5)}
    one_aside = [Counts(failed=40), Counts(succeeded=1)]  # 40 failures, one task beside them
    new = {"q/t": Counts(succeeded=1, failed=40)}
    assert verdict(new, base, buckets={"q/t": one_aside}).decision == "halt"  # nothing tells a burst here
    many_aside = [Counts(failed=10), Counts(succeeded=60)]
    new = {"q/t": Counts(succeeded=60, failed=10)}
    assert verdict(new, base, buckets={"q/t": many_aside}).decision == "continue"  # 60 fine tasks beside it
