"""Benchmark: a sandbox rolling deploy of every group of deploy.toml under load, measuring the drain.

    python bench/drain.py [--broker sqs|redis|rabbitmq] [--tasks 1000] [--no-baseline]

Runs the real sandbox (deploytool.sandbox): a SandboxSession (moto server with S3, EC2, Auto Scaling
and SQS; one ASG per group, two instances each; real Celery workers of the sample app), releases built,
published and rolled out over the `local` backend through `fab deploy`'s own path, as `fab sandbox`
does (deploytool.deploy_flow.sandbox_releases -> deploytool.rollout.wiring). After v1 is up
everywhere, half of --tasks is queued as a backlog (weighted by each
group's worker slots, 0.2-2 s each) and the LoadGenerator keeps submitting while v2 is rolled through
(waves in order, each group in its strategy's batches; every instance runs ApplicationStop from the
previous release, install, ApplicationStart, ValidateService); after the rollout the rest up to --tasks
is submitted, then the bench waits for the queues to drain and counts every task in the workers'
ledgers (deploytool.sandbox.report). Every task must run exactly once.

Prints one JSON line: broker, submitted, completed, lost, duplicates, max_drain_s (the longest drain,
from the hook's own `drained` line) and drain_overhead_s: over all drains, the worst of (drain end - the
later of drain start and the end of the last task the drained worker finished), i.e. drain time minus
the longest remaining task it waited for. Drain start and end come from the hook's log lines (its
`+offset` of the `drained` step) anchored to the wall clock by watching the ApplicationStop logs (the
mtime of the `drained` line when it is the file's last line, else the moment it was seen: an upper
bound, so the overhead is never under-reported); task ends from the drained worker's log.
`baseline` is the same deploy, same load, measured in the same run with the worker's stock Celery
shutdown (DEPLOYTOOL_PROMPT_SHUTDOWN=0 in the instances' env files).
Targets: lost 0, duplicates 0, drain_overhead_s <= 1.5.
"""

from __future__ import annotations

import argparse
import dataclasses
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

from rich.console import Console  # noqa: E402

from deploytool.config import Fleet, load_fleet  # noqa: E402
from deploytool.deploy_flow import sandbox_releases  # noqa: E402
from deploytool.errors import DeployFailed  # noqa: E402
from deploytool.rollout.plan import RolloutOptions  # noqa: E402
from deploytool.rollout.result import RolloutResult  # noqa: E402
from deploytool.sandbox.instance import Instance  # noqa: E402
from deploytool.sandbox.load import SAMPLE_TASKS, CelerySender, LoadGenerator, TaskKind  # noqa: E402
from deploytool.sandbox.report import TaskTally, wait_for_drain  # noqa: E402
from deploytool.sandbox.session import SandboxSession  # noqa: E402
from deploytool.sandbox.workrepo import WorkRepo  # noqa: E402

BROKERS = {"redis": "redis://127.0.0.1:6379/13", "rabbitmq": "amqp://guest:guest@127.0.0.1:5672//"}
TASK_S = (0.2, 2.0)
LOAD_PER_S = 10.0
WATCH_POLL_S = 0.01
SUCCEEDED = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/ForkPoolWorker-\d+\] Task \S+ succeeded in")
DRAINED = re.compile(r"deploytool drain \+(\d+\.\d+)s drained: pid \d+: (\w+) in")


@dataclass
class Drain:
    instance: str
    started: float  # wall clock
    seconds: float  # hook start to its `drained` step
    last_task_end: float | None
    sigquit: bool

    @property
    def overhead(self) -> float:
        waited_until = max(self.started, self.last_task_end or self.started)
        return self.started + self.seconds - waited_until


class DrainWatch:
    """Notes, for every ApplicationStop log that appears under the instances, when its `drained` line
    was written (the file's mtime while that line is its last, else the moment it was first seen)."""

    def __init__(self, instances_dir: Path) -> None:
        self.instances_dir = instances_dir
        self.before = set(instances_dir.glob("*/i-*/logs/*/ApplicationStop.log"))
        self.ends: dict[Path, float] = {}
        self.exact = 0  # ends taken from the file's mtime (the rest: when first seen, at most a poll late)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drain-watch", daemon=True)

    def __enter__(self) -> DrainWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(WATCH_POLL_S):
            for path in self.instances_dir.glob("*/i-*/logs/*/ApplicationStop.log"):
                if path in self.before or path in self.ends:
                    continue
                seen = time.time()
                try:
                    mtime = path.stat().st_mtime
                    lines = path.read_text(errors="replace").splitlines()
                except OSError:
                    continue
                for n, line in enumerate(lines):
                    if DRAINED.search(line):
                        last = n == len(lines) - 1
                        self.ends[path] = mtime if last else seen
                        self.exact += last
                        break


def task_ends(log: Path, since: float, until: float) -> list[float]:
    """Wall-clock ends of the tasks that finished in [since, until], from a worker's log."""
    ends = []
    for line in log.read_text(errors="replace").splitlines():
        match = SUCCEEDED.match(line)
        if match:
            moment = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if since <= moment <= until:
                ends.append(moment)
    return ends


def drains_of(watch: DrainWatch, fleet: Fleet) -> list[Drain]:
    drains = []
    for path, end in sorted(watch.ends.items()):
        text = path.read_text(errors="replace")
        match = DRAINED.search(text)
        if match is None:
            continue
        seconds = float(match.group(1))
        started = end - seconds
        instance_dir = path.parent.parent.parent
        instance = Instance(instance_dir.parent.name, instance_dir.name, instance_dir)
        worker_log = instance.install_dir(fleet.app) / "log" / "worker.log"
        last = max(task_ends(worker_log, started, end), default=None)
        drains.append(Drain(instance.instance_id, started, seconds, last, "SIGQUIT" in text))
    return drains


def bench_fleet(work: Path, broker: str) -> tuple[Fleet, str]:
    """deploy.toml and the sample app copied under `work`; on a shared Redis/RabbitMQ the queues get a
    unique suffix (other runs use the same brokers) and the sandbox target uses that broker."""
    shutil.copytree(ROOT / "sample_app", work / "sample_app", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    text = (ROOT / "deploy.toml").read_text()
    tag = ""
    if broker != "sqs":
        tag = uuid.uuid4().hex[:8]
        text = re.sub(r'^queues = \["(\w+)"\]', lambda m: f'queues = ["{m.group(1)}-{tag}"]', text, flags=re.M)
        text = text.replace('broker = "sqs"', f'broker = "{BROKERS[broker]}"')
    (work / "deploy.toml").write_text(text)
    return load_fleet(work / "deploy.toml"), tag


def bench_kinds(fleet: Fleet, tag: str) -> list[TaskKind]:
    """One kind per worker slot of each group (round-robin submission is then weighted by capacity)."""
    catalogue = {k.queue: k for k in SAMPLE_TASKS}
    kinds = []
    for group in fleet.groups:
        slots = group.autoscale[0] if group.autoscale else group.concurrency
        for queue in group.queues or []:
            base = catalogue[queue.removesuffix(f"-{tag}") if tag else queue]
            kind = dataclasses.replace(base, queue=queue, min_s=TASK_S[0], max_s=TASK_S[1])
            kinds += [kind] * slots
    return kinds


def delete_queues(url: str, queues: Sequence[str]) -> None:
    """What the run left for its own (uniquely named) queues on a shared Redis or RabbitMQ."""
    if url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(url)
        try:
            for queue in queues:  # only keys named after the run's own queues: the db may be shared
                for key in client.scan_iter(match=f"*{queue}*"):
                    client.delete(key)
        finally:
            client.close()
    elif url.startswith("amqp"):
        from kombu.connection import Connection

        with Connection(url) as connection:  # type: ignore[no-untyped-call]  # kombu's __init__ has no annotations
            channel = connection.channel()
            for queue in queues:
                channel.queue_delete(queue)
                channel.exchange_delete(queue)


def run_once(broker: str, tasks: int, prompt: bool, work: Path, console: Console, verbose: bool) -> dict[str, Any]:
    (work / "src").mkdir(parents=True)
    fleet, tag = bench_fleet(work / "src", broker)
    queues = [q for g in fleet.groups for q in g.queues or []]

    def say(text: str) -> None:
        if verbose:
            console.print(f"[bold]bench[/] {text}", highlight=False)

    try:
        with SandboxSession(fleet, root=work / "sandbox", log=say, worker_stop_grace_s=15.0) as sandbox:
            if not prompt:
                for instance in sandbox.fleet.on_disk():
                    with instance.env_file(fleet.app).open("a") as env:
                        env.write("DEPLOYTOOL_PROMPT_SHUTDOWN=0\n")
            repo = WorkRepo.create(fleet, sandbox.work_dir)
            # `fab sandbox`'s releases: `fab deploy`'s path (record, tags) on this session; progress when verbose
            releases = sandbox_releases(console if verbose else Console(quiet=True), ci=True)(sandbox)
            options = RolloutOptions(poll_min_s=0.5, poll_max_s=1.0, rollback_grace_s=5.0)

            def release(label: str) -> RolloutResult:
                try:
                    return releases.release(repo.fleet(), sandbox.groups, options, out_dir=sandbox.root / "dist")
                except DeployFailed as exc:
                    raise SystemExit(f"{label}: {exc}") from None

            release("v1")
            sender = CelerySender(sandbox.fleet.broker)
            load = LoadGenerator(sender, bench_kinds(fleet, tag), sandbox.root / "load" / "submitted.log",
                                 rate_per_s=LOAD_PER_S)  # fmt: skip
            try:
                backlog = tasks // 2
                load.log_path.parent.mkdir(parents=True, exist_ok=True)  # start() makes it; the backlog comes first
                for n in range(backlog):
                    load.submit_one(n)
                say(f"backlog of {backlog} tasks queued; rolling out v2 under {LOAD_PER_S:g} tasks/s")
                repo.change_release_note("v2: rolled out by bench/drain.py")
                rollout_started = time.monotonic()
                with DrainWatch(sandbox.root / "instances") as watch:
                    load.start()
                    try:
                        second = release("v2")
                    finally:
                        load.stop()
                rollout_s = time.monotonic() - rollout_started
                for n in range(len(load.submitted) + load.errors, tasks):
                    load.submit_one(n)
            finally:
                sender.close()
            submitted = [t.task_id for t in load.submitted]
            say(f"{len(submitted)} tasks submitted ({load.errors} sends failed); waiting for the queues to drain")
            tally: TaskTally = wait_for_drain(
                submitted,
                [i.ledger for i in sandbox.fleet.on_disk()],
                timeout_s=600,
                depth=sandbox.queue_depth(queues),
                settle_s=2 * TASK_S[1] + 3,
            )
            drains = drains_of(watch, fleet)
            instances = len(sandbox.fleet.on_disk())
            if verbose:
                for drain in drains:
                    say(f"{drain} overhead {drain.overhead:.3f}")
    finally:  # after the workers are gone, so none re-declares them
        if tag:
            delete_queues(BROKERS[broker], queues)
    return {
        "submitted": tally.submitted,
        "completed": tally.completed,
        "lost": tally.lost,
        "duplicates": tally.duplicated,
        "max_drain_s": round(max((d.seconds for d in drains), default=0.0), 3),
        "drain_overhead_s": round(max((d.overhead for d in drains), default=0.0), 3),
        "drains": len(drains),
        "instances": instances,
        "sigquit": sum(d.sigquit for d in drains),
        "drain_ends_from_mtime": watch.exact,
        "load_errors": load.errors,
        "rollout_s": round(rollout_s, 1),
        "deployed": second.version,
    }


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--broker", choices=["sqs", "redis", "rabbitmq"], default="sqs")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--no-baseline", action="store_true", help="skip the stock-shutdown baseline run")
    parser.add_argument("--verbose", action="store_true", help="progress, each drain on stderr")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="deploytool-bench-drain-") as work:
        result: dict[str, Any] = {"broker": args.broker}
        result.update(run_once(args.broker, args.tasks, True, Path(work) / "tuned", console, args.verbose))
        if not args.no_baseline:
            baseline = run_once(args.broker, args.tasks, False, Path(work) / "baseline", console, args.verbose)
            result["baseline"] = {"what": "stock Celery shutdown (DEPLOYTOOL_PROMPT_SHUTDOWN=0)", **baseline}
    result["mode"] = "sandbox"
    print(json.dumps(result), flush=True)
    return 0 if result["lost"] == 0 and result["duplicates"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
