"""Benchmark: a release with hand-off restarts vs a drain that waits for long tasks, on the real sandbox.

    python bench/handoff.py [--broker sqs|redis|rabbitmq] [--task-s 60] [--instances 3] [--repeat 3] [--keep DIR]
                            [--verbose]

Runs the real sandbox (deploytool.sandbox: a moto server with S3, EC2, Auto Scaling and SQS; real Celery workers
of the sample app on the lifecycle runner; releases through `fab deploy`'s own path) with one group, `video`
(concurrency 2, prefetch 1, OneAtATime over --instances instances, task_time_limit 2 x --task-s), in passes, each
in a sandbox of its own with v1 released first and a steady short load (0.3 s tasks, 4 a second) on the queue
(hand-off and idle --repeat times each, interleaved, so a noisy spell of the machine falls on both; medians):
- "handoff": restart = "handoff"; every instance holds a long task (--task-s) when v2's release starts;
- "drain": restart = "drain" with drain_timeout above the task length, so each instance's ApplicationStop waits
  for its long task; the same long tasks;
- "idle": restart = "handoff" and no long task in flight (what a release costs when nothing is long).
handoff_s, drain_s and idle_s are v2's release wall time (start to end of `releases.release`; medians for hand-off
and idle, every run in handoff_runs_s and idle_runs_s); ratio = handoff_s / idle_s, drain_ratio = drain_s / idle_s.
Then every task submitted must run: lost and completed_twice count over all passes (the sample app's ledger).
long_finished_on_old: long tasks of the hand-off passes that ran once, to the end, on v1 (the release they started
on); killed: long tasks of the hand-off and drain passes that ran more than once or not on v1 (a cold shutdown cut
them off). peak_workers_per_instance: most worker processes (the current one and those finishing after a hand-off)
alive on one instance, sampled every 0.2 s during the hand-off passes; overlap_rss_mb: the largest resident memory
of an instance's workers (with their pools) while two ran at once.
Prints one JSON line: {"broker", "task_s", "handoff_s", "drain_s", "idle_s", "ratio", "drain_ratio", "long_tasks",
"long_finished_on_old", "killed", "lost", "completed_twice", "peak_workers_per_instance", "overlap_rss_mb", ...}.
Targets: ratio <= 1.25, every long task finished on v1, killed 0, lost 0, completed_twice 0, peak <= 2. Exit 1 when
one is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from drain import BROKERS, delete_queues  # noqa: E402  (bench/drain.py: the shared brokers, their clean-up)
from interrupt import received_at  # noqa: E402
from rich.console import Console  # noqa: E402

from deploytool.config import Fleet, load_fleet  # noqa: E402
from deploytool.deploy_flow import sandbox_releases  # noqa: E402
from deploytool.errors import DeployFailed  # noqa: E402
from deploytool.rollout.plan import RolloutOptions  # noqa: E402
from deploytool.sandbox.instance import Instance  # noqa: E402
from deploytool.sandbox.load import CelerySender  # noqa: E402
from deploytool.sandbox.procs import read_pidfile, runs_script  # noqa: E402
from deploytool.sandbox.report import wait_for_drain  # noqa: E402
from deploytool.sandbox.session import SandboxSession  # noqa: E402
from deploytool.sandbox.workrepo import WorkRepo  # noqa: E402

TASK = "acme_workers.tasks.transcode_video"
SHORT_S, SHORT_PER_S = 0.3, 4.0
V2_NOTE = "v2: released while long tasks ran"

FLEET = """[app]
name = "acme-workers"
source = "sample_app"
celery_app = "acme_workers.celery_app:app"

[artifacts]
bucket = "acme-deploy-artifacts"

[[groups]]
name = "video"
asg = "acme-video-workers"
queues = ["{queue}"]
concurrency = 2
prefetch_multiplier = 1
task_time_limit = {limit}
visibility_timeout = {visibility}
drain_timeout = {drain}
restart = "{restart}"
strategy = "OneAtATime"

[targets.sandbox]
backend = "local"
instances_per_group = {instances}
broker = "{broker}"
"""


@dataclass
class Pass:
    release_s: float
    long_ids: list[str]
    submitted: list[str]
    runs: dict[str, list[str]]  # task id -> the release notes it ran on
    lost: int
    duplicated: int
    peak_workers: int = 0
    overlap_rss_mb: float = 0.0


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a worker and its pool (its children, through /proc/<pid>/task/*/children)."""
    pages, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            pages += int(Path(f"/proc/{current}/statm").read_text().split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return pages * 4096 / (1024 * 1024)


def workers_on(instance: Instance, fleet: Fleet) -> list[int]:
    current = read_pidfile(instance.worker_pidfile(fleet.app))
    alive = [current] if current is not None and runs_script(current, "celery_worker.py") else []
    return alive + [p for p in instance.draining_workers(fleet.app) if p not in alive]


class Sampler(threading.Thread):
    """Workers per instance (and their memory while two overlap), every 0.2 s."""

    def __init__(self, nodes: Sequence[Instance], fleet: Fleet) -> None:
        super().__init__(daemon=True)
        self.nodes, self.fleet = nodes, fleet
        self.stop = threading.Event()
        self.peak, self.rss = 0, 0.0

    def run(self) -> None:
        while not self.stop.wait(0.2):
            for node in self.nodes:
                pids = workers_on(node, self.fleet)
                self.peak = max(self.peak, len(pids))
                if len(pids) >= 2:
                    self.rss = max(self.rss, sum(tree_rss_mb(p) for p in pids))


def bench_fleet(work: Path, broker: str, *, restart: str, task_s: float, instances: int) -> tuple[Fleet, str]:
    shutil.copytree(ROOT / "sample_app", work / "sample_app", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    limit = int(2 * task_s)
    queue = "video" if broker == "sqs" else f"video-{uuid.uuid4().hex[:8]}"
    text = FLEET.format(
        queue=queue, limit=limit, visibility=limit + 121, drain=int(task_s) + 60, restart=restart,
        instances=instances, broker="sqs" if broker == "sqs" else BROKERS[broker],
    )  # fmt: skip
    (work / "deploy.toml").write_text(text)
    return load_fleet(work / "deploy.toml"), queue


def run_pass(
    broker: str, work: Path, console: Console, *, restart: str, long: bool, task_s: float, instances: int, verbose: bool
) -> Pass:
    (work / "src").mkdir(parents=True)
    fleet, queue = bench_fleet(work / "src", broker, restart=restart, task_s=task_s, instances=instances)
    try:
        return release_under_load(work, console, fleet, queue, long=long, task_s=task_s, verbose=verbose)
    finally:  # after the workers are gone, so none re-declares them
        if broker != "sqs":
            delete_queues(BROKERS[broker], [queue])


def hold_long_tasks(
    sender: CelerySender, queue: str, nodes: Sequence[Instance], fleet: Fleet, task_s: float
) -> list[str]:
    """Long tasks until every instance's worker holds one: one per instance, then one more per instance still
    without (the broker gives a task to whichever worker asks first), three rounds at most."""
    logs = {i.instance_id: i.install_dir(fleet.app) / "log" / "worker.log" for i in nodes}
    long_ids: list[str] = []
    missing = len(nodes)
    for _ in range(3):
        long_ids += [
            sender.send(TASK, [f"long-{len(long_ids) + n}"], {"seconds": task_s}, queue) for n in range(missing)
        ]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            held = {iid: set(received_at(log)) & set(long_ids) for iid, log in logs.items()}
            missing = sum(1 for ids in held.values() if not ids)
            if missing == 0 and set().union(*held.values()) == set(long_ids):
                return long_ids
            time.sleep(0.2)
    raise SystemExit(f"{missing} of {len(nodes)} instances took no long task")


def release_under_load(
    work: Path, console: Console, fleet: Fleet, queue: str, *, long: bool, task_s: float, verbose: bool
) -> Pass:
    def say(text: str) -> None:
        if verbose:
            console.print(f"[bold]bench[/] {text}", highlight=False)

    with SandboxSession(fleet, root=work / "sandbox", log=say, worker_stop_grace_s=15.0) as sandbox:
        repo = WorkRepo.create(fleet, sandbox.work_dir)
        releases = sandbox_releases(console if verbose else Console(quiet=True), ci=True)(sandbox)
        options = RolloutOptions(poll_min_s=0.5, poll_max_s=1.0, rollback_grace_s=5.0)
        try:
            releases.release(repo.fleet(), sandbox.groups, options, out_dir=sandbox.root / "dist")
        except DeployFailed as exc:
            raise SystemExit(f"v1: {exc}") from None
        nodes: list[Instance] = list(sandbox.fleet.on_disk())
        sender = CelerySender(sandbox.fleet.broker)
        submitted: list[str] = []
        stop = threading.Event()

        def short_load() -> None:
            n = 0
            while not stop.wait(1 / SHORT_PER_S):
                submitted.append(sender.send(TASK, [f"short-{n}"], {"seconds": SHORT_S}, queue))
                n += 1

        long_ids = hold_long_tasks(sender, queue, nodes, fleet, task_s) if long else []
        submitted += long_ids
        loader = threading.Thread(target=short_load, daemon=True)
        loader.start()
        sampler = Sampler(nodes, fleet)
        sampler.start()
        try:
            repo.change_release_note(V2_NOTE)
            say(f"v2: release with {len(long_ids)} long task(s) in flight")
            started = time.monotonic()
            try:
                releases.release(repo.fleet(), sandbox.groups, options, out_dir=sandbox.root / "dist")
            except DeployFailed as exc:
                raise SystemExit(f"v2: {exc}") from None
            release_s = time.monotonic() - started
            say(f"v2 released in {release_s:.1f}s")
            time.sleep(2.0)  # a little load on v2
        finally:
            stop.set()
            loader.join()
            sender.close()
        ledgers = [i.ledger for i in sandbox.fleet.on_disk()]
        tally = wait_for_drain(submitted, ledgers, timeout_s=task_s + 120, settle_s=task_s + 10)
        sampler.stop.set()
        sampler.join()
        runs: dict[str, list[str]] = {}
        for path in ledgers:
            with contextlib.suppress(OSError):
                for line in path.read_text(errors="replace").splitlines():
                    parts = line.split()
                    if len(parts) >= 4:
                        runs.setdefault(parts[0], []).append(" ".join(parts[2:-1]))
        return Pass(
            release_s=release_s,
            long_ids=long_ids,
            submitted=submitted,
            runs=runs,
            lost=tally.lost,
            duplicated=tally.duplicated,
            peak_workers=sampler.peak,
            overlap_rss_mb=sampler.rss,
        )


def on_v1(notes: list[str]) -> bool:
    return len(notes) == 1 and not notes[0].startswith("v2")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--broker", choices=["sqs", "redis", "rabbitmq"], default="sqs")
    parser.add_argument("--task-s", type=float, default=60.0, help="length of the long tasks (seconds)")
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3, help="hand-off and idle releases each (medians)")
    parser.add_argument("--keep", type=Path, help="work under this new directory and keep it (logs, for a look)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.task_s < 10 or args.instances < 2 or args.repeat < 1:
        parser.error("--task-s must be at least 10, --instances at least 2 and --repeat at least 1")
    console = Console(stderr=True)
    common = {"task_s": args.task_s, "instances": args.instances, "verbose": args.verbose}
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True)
            work = args.keep
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deploytool-bench-handoff-")))
        # Interleaved, each in a sandbox of its own: a noisy spell of the machine lands on both kinds alike.
        handoffs: list[Pass] = []
        idles: list[Pass] = []
        for n in range(args.repeat):
            handoffs.append(
                run_pass(args.broker, work / f"handoff-{n}", console, restart="handoff", long=True, **common)
            )
            idles.append(run_pass(args.broker, work / f"idle-{n}", console, restart="handoff", long=False, **common))
        drain = run_pass(args.broker, work / "drain", console, restart="drain", long=True, **common)
    passes = (*handoffs, drain, *idles)
    handoff_s = statistics.median(p.release_s for p in handoffs)
    idle_s = statistics.median(p.release_s for p in idles)
    long_ids = [(p, t) for p in handoffs for t in p.long_ids]
    killed = sum(1 for p in (*handoffs, drain) for t in p.long_ids if not on_v1(p.runs.get(t, [])))
    result: dict[str, Any] = {
        "broker": args.broker,
        "task_s": args.task_s,
        "instances": args.instances,
        "repeat": args.repeat,
        "handoff_s": round(handoff_s, 1),
        "drain_s": round(drain.release_s, 1),
        "idle_s": round(idle_s, 1),
        "ratio": round(handoff_s / idle_s, 2),
        "drain_ratio": round(drain.release_s / idle_s, 2),
        "handoff_runs_s": [round(p.release_s, 1) for p in handoffs],
        "idle_runs_s": [round(p.release_s, 1) for p in idles],
        "long_tasks": len(long_ids),
        "long_finished_on_old": sum(1 for p, t in long_ids if on_v1(p.runs.get(t, []))),
        "killed": killed,
        "lost": sum(p.lost for p in passes),
        "completed_twice": sum(p.duplicated for p in passes),
        "submitted": sum(len(p.submitted) for p in passes),
        "peak_workers_per_instance": max(p.peak_workers for p in handoffs),
        "overlap_rss_mb": round(max(p.overlap_rss_mb for p in handoffs), 1),
        "drain_peak_workers_per_instance": drain.peak_workers,
        "mode": "sandbox",
    }
    print(json.dumps(result), flush=True)
    ok = (
        result["ratio"] <= 1.25
        and result["long_finished_on_old"] == result["long_tasks"]
        and killed == 0
        and result["lost"] == 0
        and result["completed_twice"] == 0
        and result["peak_workers_per_instance"] <= 2
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
