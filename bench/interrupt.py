"""Benchmark: what a hard kill (and a spot notice) costs the tasks an instance held, on the real sandbox.

    python bench/interrupt.py [--broker sqs|redis|rabbitmq] [--task-s 60] [--instances 3]
                              [--passes kill,baseline,notice] [--keep DIR] [--verbose]

Runs the real sandbox (deploytool.sandbox: a moto server with S3, EC2, Auto Scaling and SQS; real Celery workers
of the sample app on the lifecycle runner; v1 released through `fab deploy`'s own path) with one group, `video`
(concurrency 2, task_time_limit = 2 x --task-s), and for each pass: one long task (--task-s) per instance, held by
the workers before anything happens, and a steady short load (0.3 s tasks, 4 a second) on the same queue. Then:
(a) "kill": one instance holding long tasks gets a hard kill (deploytool.sandbox.faults.hard_kill: SIGKILL of the
    worker's process group, as a power-off) with the SQS visibility heartbeat on (visibility_timeout 30 s, the
    default 10 s step); measured per task it held: from the kill until another instance's worker logs the task
    as received again (kill_redelivery_max_s, the largest).
(b) "baseline": the same with the heartbeat off and the visibility timeout the lint requires without it
    (task_time_limit + 121 s); the wait for redelivery is capped at that timeout plus 30 s, and
    kill_baseline_capped says whether the cap was hit (then the figure is a lower bound).
(c) "notice": the same fleet with the heartbeat on, long tasks of 130 s (longer than what is left of the notice,
    so they must be handed back) and a two-minute spot notice posted to one instance's metadata (the sandbox's
    fake IMDS, deploytool.sandbox.imds); its interruption watcher drains the worker: notice_drained_s is from
    the notice to the worker's exit (the watcher's run/interruption.json), notice_released the long tasks it
    handed back, notice_redelivery_max_s from the cold shutdown that handed them back (the watcher records when it
    sent SIGQUIT) to each of them received by another instance.
Every pass then waits for every task submitted to run: lost and completed_twice count over all passes.
heartbeat_calls_per_task_min: ChangeMessageVisibilityBatch calls per minute of one held task, from the workers'
run/visibility.json in pass (a) (batching makes it lower than 60 / step when a worker holds several).
On Redis and RabbitMQ (--broker) the heartbeat does not apply (the worker says so and keeps the long visibility
timeout): the same kill measures the broker's own redelivery (RabbitMQ: when the connection drops; Redis: after
its visibility timeout, capped as in (b)).
Prints one JSON line: {"broker", "task_s", "tasks_interrupted", "kill_redelivery_max_s", "kill_baseline_redelivery_s",
"kill_baseline_capped", "notice_drained_s", "notice_released", "notice_redelivery_max_s", "lost",
"completed_twice", "heartbeat_calls_per_task_min", ...}. Targets on SQS: kill_redelivery_max_s <= 45,
notice_drained_s <= 110, notice_redelivery_max_s <= 15, lost 0, completed_twice 0.
Exit 1 when one is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import re
import shutil
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
from rich.console import Console  # noqa: E402

from deploytool.config import Fleet, load_fleet  # noqa: E402
from deploytool.deploy_flow import sandbox_releases  # noqa: E402
from deploytool.errors import DeployFailed  # noqa: E402
from deploytool.rollout.plan import RolloutOptions  # noqa: E402
from deploytool.sandbox.faults import hard_kill  # noqa: E402
from deploytool.sandbox.imds import post_notice  # noqa: E402
from deploytool.sandbox.instance import Instance  # noqa: E402
from deploytool.sandbox.load import CelerySender  # noqa: E402
from deploytool.sandbox.report import wait_for_drain  # noqa: E402
from deploytool.sandbox.session import SandboxSession  # noqa: E402
from deploytool.sandbox.workrepo import WorkRepo  # noqa: E402

TASK = "acme_workers.tasks.transcode_video"
SHORT_S, SHORT_PER_S = 0.3, 4.0
HEARTBEAT_VISIBILITY_S = 30
SPOT_S = 120  # the notice AWS gives
NOTICE_LONG_S = 130.0  # the notice pass's long tasks: longer than what is left of the notice, so they are released
RECEIVED = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] Task \S+\[([0-9a-f-]+)\] received"
)

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
visibility_heartbeat = {heartbeat}
drain_timeout = 30
strategy = "AllAtOnce"

[targets.sandbox]
backend = "local"
instances_per_group = {instances}
broker = "{broker}"
"""


@dataclass
class Pass:
    interrupted: list[str]
    redelivery_s: list[float]
    capped: bool
    submitted: list[str]
    completed: int
    lost: int
    duplicated: int
    calls_per_task_min: float | None
    notice: dict[str, Any] | None = None


def received_at(log: Path) -> dict[str, list[float]]:
    """Wall-clock times each task was received, from a worker's log."""
    found: dict[str, list[float]] = {}
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return found
    for line in lines:
        match = RECEIVED.match(line)
        if match:
            moment = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.setdefault(match.group(2), []).append(moment)
    return found


def wait_record(instance: Instance, fleet: Fleet, timeout_s: float) -> dict[str, Any]:
    """The watcher's run/interruption.json, once it is written."""
    path = instance.install_dir(fleet.app) / "run" / "interruption.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return dict(json.loads(path.read_text()))
        time.sleep(0.2)
    raise SystemExit(f"{instance.instance_id}: the watcher wrote no {path.name} within {timeout_s:.0f} s")


def bench_fleet(work: Path, broker: str, *, heartbeat: bool, task_s: float, instances: int) -> tuple[Fleet, str]:
    shutil.copytree(ROOT / "sample_app", work / "sample_app", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    limit = int(2 * task_s)
    visibility = HEARTBEAT_VISIBILITY_S if heartbeat else limit + 121
    queue = "video" if broker == "sqs" else f"video-{uuid.uuid4().hex[:8]}"
    text = FLEET.format(
        queue=queue, limit=limit, visibility=visibility, heartbeat="true" if heartbeat else "false",
        instances=instances, broker="sqs" if broker == "sqs" else BROKERS[broker],
    )  # fmt: skip
    (work / "deploy.toml").write_text(text)
    return load_fleet(work / "deploy.toml"), queue


def run_pass(
    broker: str,
    work: Path,
    console: Console,
    *,
    heartbeat: bool,
    task_s: float,
    instances: int,
    verbose: bool,
    notice: bool = False,
) -> Pass:
    (work / "src").mkdir(parents=True)
    fleet, queue = bench_fleet(work / "src", broker, heartbeat=heartbeat, task_s=task_s, instances=instances)
    group = fleet.group("video")
    visibility = group.visibility_timeout
    if broker != "sqs":  # no heartbeat there: the worker keeps the long timeout (launcher.broker_visibility)
        visibility = max(visibility, group.task_time_limit + 120)
    try:
        return kill_or_notice(broker, work, console, fleet, queue, visibility, heartbeat, task_s, verbose, notice)
    finally:  # after the workers are gone, so none re-declares them
        if broker != "sqs":
            delete_queues(BROKERS[broker], [queue])


def kill_or_notice(
    broker: str,
    work: Path,
    console: Console,
    fleet: Fleet,
    queue: str,
    visibility: int,
    heartbeat: bool,
    task_s: float,
    verbose: bool,
    notice: bool,
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
        logs = {i.instance_id: i.install_dir(fleet.app) / "log" / "worker.log" for i in nodes}
        sender = CelerySender(sandbox.fleet.broker)
        submitted: list[str] = []
        stop = threading.Event()

        def short_load() -> None:
            n = 0
            while not stop.wait(1 / SHORT_PER_S):
                submitted.append(sender.send(TASK, [f"short-{n}"], {"seconds": SHORT_S}, queue))
                n += 1

        long_ids = [sender.send(TASK, [f"long-{n}"], {"seconds": task_s}, queue) for n in range(len(nodes))]
        submitted += long_ids
        holder: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while len(holder) < len(long_ids) and time.monotonic() < deadline:
            for iid, log in logs.items():
                for task_id in received_at(log):
                    if task_id in long_ids:
                        holder.setdefault(task_id, iid)
            time.sleep(0.2)
        if len(holder) < len(long_ids):
            raise SystemExit(f"only {len(holder)} of {len(long_ids)} long tasks started within 60 s")
        loader = threading.Thread(target=short_load, daemon=True)
        loader.start()
        try:
            time.sleep(min(15.0, task_s / 4))  # a few heartbeats in
            victim_id = max(set(holder.values()), key=lambda iid: sum(1 for v in holder.values() if v == iid))
            victim = next(i for i in nodes if i.instance_id == victim_id)
            interrupted = sorted(t for t, iid in holder.items() if iid == victim_id)
            posted_at = killed_at = time.time()
            if notice:
                post_notice(victim.root, "spot", seconds=SPOT_S)
                say(f"spot notice to {victim_id} holding {len(interrupted)} long task(s)")
                record = wait_record(victim, fleet, SPOT_S + 30)
                drained_at = float(record["noticed_at"]) + float(record["drained_s"])  # the worker is gone
                killed_at = float(record.get("cold_shutdown_at") or drained_at)  # it began handing tasks back
                released = [t for t in interrupted if any(t in label for label in record["interrupted"])]
                notice_result = {"drained_s": drained_at - posted_at, "released": len(released)}
                interrupted = released
            else:
                hard_kill(victim.worker_pidfile(fleet.app))
                say(f"hard kill of {victim_id} holding {len(interrupted)} long task(s)")
            cap = visibility + 60.0
            redelivery: dict[str, float] = {}
            while len(redelivery) < len(interrupted) and time.time() - killed_at < cap:
                for iid, log in logs.items():
                    if iid == victim_id:
                        continue
                    for task_id, moments in received_at(log).items():
                        later = [m for m in moments if m >= killed_at]
                        if task_id in interrupted and later and task_id not in redelivery:
                            redelivery[task_id] = min(later) - killed_at
                time.sleep(0.2)
        finally:
            stop.set()
            loader.join()
            sender.close()
        capped = len(redelivery) < len(interrupted)
        if notice and not interrupted:
            raise SystemExit("the spot notice released no long task: they all ended within the notice")
        say(f"redelivered {len(redelivery)} of {len(interrupted)}: {sorted(redelivery.values())}")
        others = [i.ledger for i in nodes]
        tally = wait_for_drain(submitted, others, timeout_s=task_s + visibility + 60, settle_s=task_s + 10)
        calls, seconds = 0, 0.0
        for node in nodes:
            stats_file = node.install_dir(fleet.app) / "run" / "visibility.json"
            if stats_file.exists():
                stats = json.loads(stats_file.read_text())
                calls += stats["calls"]
                seconds += stats["task_seconds"]
        return Pass(
            interrupted=interrupted,
            redelivery_s=[redelivery.get(t, time.time() - killed_at) for t in interrupted],
            notice=notice_result if notice else None,
            capped=capped,
            submitted=submitted,
            completed=tally.completed,
            lost=tally.lost,
            duplicated=tally.duplicated,
            calls_per_task_min=round(calls / (seconds / 60), 2) if heartbeat and seconds else None,
        )


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--broker", choices=["sqs", "redis", "rabbitmq"], default="sqs")
    parser.add_argument("--task-s", type=float, default=60.0, help="length of the long tasks (seconds)")
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--passes", default="kill,baseline,notice", help="which of kill,baseline,notice to run")
    parser.add_argument("--keep", type=Path, help="work under this new directory and keep it (logs, for a look)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    chosen = [p.strip() for p in args.passes.split(",") if p.strip()]
    if args.task_s < 5 or args.instances < 2:
        parser.error("--task-s must be at least 5 and --instances at least 2")
    if not chosen or set(chosen) - {"kill", "baseline", "notice"}:
        parser.error(f"--passes {args.passes!r}: allowed: kill, baseline, notice, comma-separated")
    console = Console(stderr=True)
    common = {"task_s": args.task_s, "instances": args.instances, "verbose": args.verbose}
    done: dict[str, Pass] = {}
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True)
            work = args.keep
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deploytool-bench-interrupt-")))
        for name in chosen:
            if name == "notice":
                options = {**common, "task_s": NOTICE_LONG_S}
                done[name] = run_pass(args.broker, work / name, console, heartbeat=True, notice=True, **options)
            else:
                done[name] = run_pass(args.broker, work / name, console, heartbeat=name == "kill", **common)
    kill, base, spot = done.get("kill"), done.get("baseline"), done.get("notice")
    result: dict[str, Any] = {
        "broker": args.broker,
        "task_s": args.task_s,
        "tasks_interrupted": len(kill.interrupted) if kill else None,
        "kill_redelivery_max_s": round(max(kill.redelivery_s), 1) if kill else None,
        "kill_capped": kill.capped if kill else None,
        "kill_baseline_redelivery_s": round(max(base.redelivery_s), 1) if base else None,
        "kill_baseline_capped": base.capped if base else None,
        "notice_drained_s": round(spot.notice["drained_s"], 1) if spot and spot.notice else None,
        "notice_released": spot.notice["released"] if spot and spot.notice else None,
        "notice_redelivery_max_s": round(max(spot.redelivery_s), 1) if spot and spot.redelivery_s else None,
        "notice_task_s": NOTICE_LONG_S if spot else None,
        "lost": sum(p.lost for p in done.values()),
        "completed_twice": sum(p.duplicated for p in done.values()),
        "submitted": sum(len(p.submitted) for p in done.values()),
        "heartbeat_calls_per_task_min": kill.calls_per_task_min if kill else None,
        "mode": "sandbox",
    }
    print(json.dumps(result), flush=True)
    ok = result["lost"] == 0 and result["completed_twice"] == 0 and not (kill and kill.capped)
    if args.broker == "sqs" and kill is not None:
        ok = ok and result["kill_redelivery_max_s"] <= 45
    if args.broker == "sqs" and spot is not None:
        ok = ok and result["notice_drained_s"] <= 110 and result["notice_redelivery_max_s"] <= 15
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
