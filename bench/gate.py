"""Benchmark: the health gate on the real sandbox: a bad release halted after its first wave, a good one let through.

    python bench/gate.py [--runs 10] [--bake 60] [--share 0.2] [--baseline 60] [--record FILE] [--keep DIR]
                         [--verbose]

Runs the real sandbox (deploytool.sandbox: a moto server with S3, EC2, Auto Scaling, SQS and CloudWatch; real Celery
workers of the sample app publishing their telemetry; releases through `fab deploy`'s own path) with three groups
in three waves (email, then reports, then video; two instances each, AllAtOnce) and a steady load on every queue
from one sender (0.05 s tasks; a tenth send_email on email, the first wave's queue, the rest build_report on reports
and transcode_video on video; the mix and pace seeded per run; the sender manages about 20 a second against the moto
server, `load_per_s` says what it did). Each run, in a sandbox of its own: v1 released with no gate, `--baseline`
seconds of load on v1 (the previous release's record the gate compares with: a real fleet has hours of it, the gate
reads 15 minutes; at a tenth of 20 tasks a second, 60 s give it about 120 send_email runs), then v2 with `--bake` (the
gate after each wave, looking every 5 s, the sandbox workers' publishing interval; 60 s by default: send_email runs
about 1.5 times a second, so a 15 s bake sees some 30 of them and misses a third of the bad releases (README, "Health
gate"), while the looks halt a bad release long before a longer bake is over: the bake costs only good releases):
- a bad run's v2 sets the sample app's failure switch, FAILING = {"send_email": --share}: validation passes, a share
  of one task type fails;
- a good run's v2 changes only its release note.
--runs of each kind, alternating. Measured per run: whether the gate halted and after which wave (counted from 1:
the first wave, the fleet file's wave 0), whether every group it reached runs v1 again afterwards (rolled_back_ok),
the share of all the run's tasks that ran on the bad release (bad_task_share_max: the largest; the run is the
baseline on v1, the release and its rollback, 3 s after; it depends on how much of the load the first wave carries,
here a tenth, and on the baseline's length, so bad_task_share_of_release_max gives the stricter share: of the tasks
run from v2's start to the run's end only), the time from v2's start to the halting verdict
(detect_s_median), what one gate check costs the release (its bake plus reading CloudWatch: gate_overhead_s, the
largest) and the workers' PutMetricData calls per minute (telemetry_calls_per_worker_min, from each worker's
run/telemetry.json; the sandbox publishes every 5 s, production every 30 s).
Prints one JSON line: {"runs", "bad_halted", "bad_halted_after_wave", "bad_task_share_max", "rolled_back_ok",
"good_false_halts", "detect_s_median", "gate_overhead_s", "telemetry_calls_per_worker_min", ...}. Targets: every bad
release halted after its first wave and rolled back, bad_task_share_max <= 0.05, good_false_halts 0,
gate_overhead_s <= bake + 10. Exit 1 when one is missed. --record FILE also writes what each gate check judged (its
counts by interval and baseline, from the JSON result's `counts`) per run: tests/data/gate_recorded.json is such a
file, replayed by tests/test_health_recorded.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from deploytool.config import Fleet, load_fleet  # noqa: E402
from deploytool.deploy_flow import sandbox_releases  # noqa: E402
from deploytool.errors import DeployFailed  # noqa: E402
from deploytool.rollout.events import Collect, GateChecked, ReleaseStarted  # noqa: E402
from deploytool.rollout.plan import RolloutOptions  # noqa: E402
from deploytool.sandbox.load import CelerySender  # noqa: E402
from deploytool.sandbox.report import read_ledgers  # noqa: E402
from deploytool.sandbox.session import SandboxSession  # noqa: E402
from deploytool.sandbox.workrepo import WorkRepo  # noqa: E402

TASKS = {"email": "send_email", "reports": "build_report", "video": "transcode_video"}
GOOD_NOTE, BAD_NOTE = "v2: a good release", "v2: a bad release"
FAILING_LINE = re.compile(r"^FAILING: dict\[str, float\] = \{\}$", re.M)

FLEET = """[app]
name = "acme-workers"
source = "sample_app"
celery_app = "acme_workers.celery_app:app"

[artifacts]
bucket = "acme-deploy-artifacts"

[defaults]
concurrency = 2
strategy = "AllAtOnce"

[[groups]]
name = "email"
asg = "acme-email-workers"
queues = ["email"]
wave = 0

[[groups]]
name = "reports"
asg = "acme-reports-workers"
queues = ["reports"]
wave = 1

[[groups]]
name = "video"
asg = "acme-video-workers"
queues = ["video"]
wave = 2

[targets.sandbox]
backend = "local"
instances_per_group = 2
"""


@dataclass
class Run:
    bad: bool
    halted: bool
    halted_after: int | None
    rolled_back_ok: bool | None
    bad_share: float
    bad_share_of_release: float
    load_per_s: float
    detect_s: float | None
    overhead_s: float
    calls_per_worker_min: float | None
    tasks: int
    checks: list[dict[str, Any]]


MIX = (("email", 0.1), ("reports", 0.45), ("video", 0.45))  # the first wave's group gets a tenth of the load
RATE_PER_S = 40.0


def steady_load(sender: CelerySender, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    queues, weights = [q for q, _ in MIX], [w for _, w in MIX]
    n = 0
    while not stop.wait(rng.uniform(0.5, 1.5) / RATE_PER_S):
        queue = rng.choices(queues, weights)[0]
        sender.send(
            f"acme_workers.tasks.{TASKS[queue]}", [n if queue != "email" else f"u{n}@x"], {"seconds": 0.05}, queue
        )
        n += 1


def one_run(
    work: Path, console: Console, *, bad: bool, bake: float, share: float, baseline: float, seed: int, verbose: bool
) -> Run:
    def say(text: str) -> None:
        if verbose:
            console.print(f"[bold]bench[/] {text}", highlight=False)

    (work / "src").mkdir(parents=True)
    shutil.copytree(ROOT / "sample_app", work / "src" / "sample_app", ignore=shutil.ignore_patterns("__pycache__"))
    (work / "src" / "deploy.toml").write_text(FLEET)
    fleet: Fleet = load_fleet(work / "src" / "deploy.toml")
    with SandboxSession(fleet, root=work / "sandbox", log=say, worker_stop_grace_s=10.0) as sandbox:
        repo = WorkRepo.create(fleet, sandbox.work_dir)
        releases = sandbox_releases(console if verbose else Console(quiet=True), ci=True)(sandbox)
        seen = Collect()
        releases.watch(seen)
        quick = RolloutOptions(poll_min_s=0.5, poll_max_s=1.0, rollback_grace_s=5.0)
        releases.release(repo.fleet(), sandbox.groups, quick, out_dir=sandbox.root / "dist")
        sender = CelerySender(sandbox.fleet.broker)
        stop = threading.Event()
        loader = threading.Thread(target=steady_load, args=(sender, stop, seed), daemon=True)
        loader.start()
        load_started = time.monotonic()
        try:
            time.sleep(baseline)  # v1's record: the baseline the gate compares with
            counted_before = sum(read_ledgers([i.ledger for i in sandbox.fleet.on_disk()])[1].values())
            init = repo.root / "sample_app" / "acme_workers" / "__init__.py"
            if bad:
                init.write_text(FAILING_LINE.sub(f'FAILING = {{"send_email": {share}}}', init.read_text()))
            repo.change_release_note(BAD_NOTE if bad else GOOD_NOTE)  # commits the switch with it
            marker = len(seen.events)
            with contextlib.suppress(DeployFailed):  # a halted release fails: that is the point
                releases.release(
                    repo.fleet(), sandbox.groups, replace(quick, bake_s=bake), out_dir=sandbox.root / "dist"
                )
            time.sleep(3.0)  # the rollback's workers take a little load
        finally:
            stop.set()
            loader.join()
            sender.close()
        load_s = time.monotonic() - load_started
        time.sleep(2.0)
        events = seen.events[marker:]
        release_at = next((e.at for e in events if isinstance(e, ReleaseStarted)), None)
        checks = [e for e in events if isinstance(e, GateChecked)]
        halt = next((c for c in checks if c.decision != "continue"), None)
        instances = list(sandbox.fleet.on_disk())
        _, by_release = read_ledgers([i.ledger for i in instances])
        total = sum(by_release.values())
        on_bad = sum(n for note, n in by_release.items() if note == BAD_NOTE)
        rolled: bool | None = None
        if halt is not None:  # the halted wave's group (email, wave 0) runs v1 again
            notes = [note_of(i, fleet) for i in instances if i.root.parent.name == "email"]
            rolled = bool(notes) and all(n is not None and not n.startswith("v2") for n in notes)
        stats = [
            json.loads(path.read_text())
            for i in instances
            if (path := i.install_dir(fleet.app) / "run" / "telemetry.json").exists()
        ]
        per_min = [s["calls"] / ((s["at"] - s["since"]) / 60) for s in stats if s.get("calls") and s["at"] > s["since"]]
        return Run(
            bad=bad,
            halted=halt is not None and halt.decision == "halt",
            halted_after=halt.after_wave if halt is not None else None,
            rolled_back_ok=rolled,
            bad_share=on_bad / total if total else 0.0,
            bad_share_of_release=on_bad / (total - counted_before) if total > counted_before else 0.0,
            load_per_s=total / load_s,
            detect_s=(halt.at - release_at) if halt is not None and release_at is not None else None,
            overhead_s=max((c.took_s for c in checks), default=0.0),
            calls_per_worker_min=statistics.median(per_min) if per_min else None,
            tasks=total,
            checks=[check_record(c) for c in checks],
        )


def check_record(check: GateChecked) -> dict[str, Any]:
    return {"after_wave": check.after_wave, "decision": check.decision, "early": check.early,
            "took_s": round(check.took_s, 3), "counts": dict(check.counts)}  # fmt: skip


def note_of(instance: Any, fleet: Fleet) -> str | None:
    """The release note the instance's current worker runs (its copy's acme_workers/__init__.py)."""
    current = instance.install_dir(fleet.app) / "current" / "app" / "acme_workers" / "__init__.py"
    with contextlib.suppress(OSError):
        found = re.search(r'^RELEASE_NOTE = ["\'](.*)["\']$', current.read_text(), re.M)
        return found.group(1) if found else None
    return None


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of each kind (bad, good)")
    parser.add_argument("--bake", type=float, default=60.0)
    parser.add_argument("--share", type=float, default=0.2, help="share of send_email runs the bad release fails")
    parser.add_argument("--baseline", type=float, default=60.0, help="seconds of load on v1 before v2")
    parser.add_argument("--record", type=Path, help="write what each gate check judged, per run, to this file")
    parser.add_argument("--keep", type=Path, help="work under this new directory and keep it (logs, for a look)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.runs < 1 or not 5 <= args.bake <= 600 or not 0 < args.share < 1 or not 0 <= args.baseline <= 600:
        parser.error("--runs at least 1, --bake 5 to 600 s, --share between 0 and 1, --baseline 0 to 600 s")
    console = Console(stderr=True)
    runs: list[Run] = []
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True)
            work = args.keep
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deploytool-bench-gate-")))
        for n in range(args.runs):
            for bad in (True, False):
                kind = "bad" if bad else "good"
                runs.append(one_run(work / f"{kind}-{n}", console, bad=bad, bake=args.bake, share=args.share,
                                    baseline=args.baseline, seed=n, verbose=args.verbose))  # fmt: skip
                if args.verbose:
                    console.print(f"[bold]bench[/] {kind} run {n}: {runs[-1]}", highlight=False)
    bad_runs = [r for r in runs if r.bad]
    good_runs = [r for r in runs if not r.bad]
    detect = [r.detect_s for r in bad_runs if r.detect_s is not None]
    calls = [r.calls_per_worker_min for r in runs if r.calls_per_worker_min is not None]
    result: dict[str, Any] = {
        "runs": len(runs),
        "bake_s": args.bake,
        "share": args.share,
        "baseline_s": args.baseline,
        "bad_halted": sum(1 for r in bad_runs if r.halted),
        "bad_runs": len(bad_runs),
        "bad_halted_after_wave": sorted({r.halted_after + 1 for r in bad_runs if r.halted_after is not None}),
        "bad_task_share_max": round(max(r.bad_share for r in bad_runs), 4),
        "bad_task_share_of_release_max": round(max(r.bad_share_of_release for r in bad_runs), 4),
        "rolled_back_ok": all(r.rolled_back_ok for r in bad_runs if r.halted),
        "good_false_halts": sum(1 for r in good_runs if r.halted),
        "detect_s_median": round(statistics.median(detect), 1) if detect else None,
        "gate_overhead_s": round(max(r.overhead_s for r in runs), 1),
        "telemetry_calls_per_worker_min": round(statistics.median(calls), 1) if calls else None,
        "tasks": sum(r.tasks for r in runs),
        "load_per_s": round(statistics.median(r.load_per_s for r in runs), 1),
        "mode": "sandbox",
    }
    print(json.dumps(result), flush=True)
    if args.record is not None:
        recorded = {"bench": {k: result[k] for k in ("bake_s", "share", "baseline_s", "mode")},
                    "runs": [{"kind": "bad" if r.bad else "good", "checks": r.checks} for r in runs]}  # fmt: skip
        args.record.write_text(json.dumps(recorded, indent=1) + "\n")
    ok = (
        result["bad_halted"] == len(bad_runs)
        and result["bad_halted_after_wave"] == [1]
        and result["rolled_back_ok"]
        and result["bad_task_share_max"] <= 0.05
        and result["good_false_halts"] == 0
        and result["gate_overhead_s"] <= args.bake + 10
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
