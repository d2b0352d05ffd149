"""Benchmark: a rolling deploy of every group of deploy.toml under load, measuring the drain.

    /work/venv/bin/python bench/drain.py [--broker sqs|redis|rabbitmq] [--tasks 1000] [--no-baseline]

Two instances per group run the sample app (real Celery workers). After v1 is up on all of them, --tasks
build_report tasks of 0.2-2 s are queued over the groups' queues (weighted by each group's worker slots),
then v2 is rolled through: waves in order, groups of a wave in parallel, instances of a group in the
batches deploytool.strategy gives for the group's strategy; each instance runs ApplicationStop (from the
previous release), install, ApplicationStart and ValidateService. Every task must run exactly once.

NOTE: until the sandbox runner (deploytool/sandbox/) is on main, the instances are driven by the agent
emulation of tests/hooktools.py (the same hooks, environment and timeouts, without moto EC2/ASGs).

Prints one JSON line: broker, submitted, completed, lost, duplicates, max_drain_s (the longest
ApplicationStop) and drain_overhead_s: over all drains, the worst of (drain end - the later of drain start
and the end of the last task the drained worker finished), i.e. drain time minus the longest remaining task
it waited for. `baseline` is the same deploy, same load, measured in the same run with the worker's stock
Celery shutdown (DEPLOYTOOL_PROMPT_SHUTDOWN=0). Targets: lost 0, duplicates 0, drain_overhead_s <= 1.5.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deploytool.config import Group, load_fleet  # noqa: E402
from deploytool.strategy import batches  # noqa: E402
from tests.hooktools import (  # noqa: E402
    HookRun,
    Instance,
    Load,
    ProcessReaper,
    delete_broker_queues,
    make_instances,
    moto_sqs_server,
    render_bundle,
)

BROKERS = {"redis": "redis://127.0.0.1:6379/11", "rabbitmq": "amqp://guest:guest@127.0.0.1:5672//"}
SUCCEEDED = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/ForkPoolWorker-\d+\] Task \S+ succeeded in")


@dataclass
class Drain:
    instance: str
    started: float
    seconds: float
    last_task_end: float | None
    sigquit: bool

    @property
    def overhead(self) -> float:
        waited_until = max(self.started, self.last_task_end or self.started)
        return self.started + self.seconds - waited_until


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


def drain_of(instance: Instance, stop: HookRun) -> Drain:
    ends = task_ends(instance.worker_log, stop.started_at, stop.started_at + stop.seconds)
    return Drain(instance.instance_id, stop.started_at, stop.seconds, max(ends, default=None), "SIGQUIT" in stop.output)


def roll(groups: Sequence[Group], fleets: dict[str, list[Instance]], waves: list[int], bundle: Path) -> list[Drain]:
    """Deploy `bundle` wave by wave, groups of a wave in parallel, each group in its strategy's batches."""

    def deploy_group(group: Group) -> list[Drain]:
        drains: list[Drain] = []
        instances = fleets[group.name]
        done = 0
        for size in batches(group.strategy, len(instances)):
            batch = instances[done : done + size]
            done += size
            with ThreadPoolExecutor(len(batch)) as pool:
                for instance, runs in zip(batch, pool.map(lambda i: i.deploy(bundle), batch), strict=True):
                    for run in runs:
                        if run.returncode != 0:
                            raise SystemExit(f"{instance.instance_id} {run.event} failed:\n{run.output}")
                    drains.append(drain_of(instance, runs[0]))
        return drains

    drains: list[Drain] = []
    for wave in waves:
        members = [g for g in groups if g.wave == wave]
        with ThreadPoolExecutor(len(members)) as pool:
            for result in pool.map(deploy_group, members):
                drains.extend(result)
    return drains


@contextlib.contextmanager
def broker_for(name: str) -> Iterator[tuple[str, dict[str, Any] | None]]:
    if name == "sqs":
        with moto_sqs_server() as (url, options):
            yield url, options
    else:
        yield BROKERS[name], None


def run_once(
    url: str, options: dict[str, Any] | None, tasks: int, prompt: bool, work: Path, verbose: bool = False
) -> dict[str, Any]:
    fleet = load_fleet(ROOT / "deploy.toml")
    tag = uuid.uuid4().hex[:8]
    groups = [g.model_copy(update={"queues": [f"{q}-{tag}" for q in g.queues or []]}) for g in fleet.groups]
    app = {
        "name": fleet.app.name,
        "celery_app": fleet.app.celery_app,
        "install_dir": fleet.app.install_path,
        "python": fleet.app.python_path,
        "env_file": fleet.app.env_path,
        "user": fleet.app.user,
    }
    settings = [g.worker_settings() for g in groups]
    v1 = render_bundle(work / "bundle-v1", app, settings, "v1", release_note="v1")
    v2 = render_bundle(work / "bundle-v2", app, settings, "v2", release_note="v2")
    ledger = work / "ledger.txt"
    reaper = ProcessReaper()
    load = Load(url, options, ledger)
    try:
        fleets = {g.name: make_instances(work, g.name, 2, app, reaper, tag) for g in groups}
        every = [i for instances in fleets.values() for i in instances]
        extra = {} if prompt else {"DEPLOYTOOL_PROMPT_SHUTDOWN": "0"}
        for instance in every:
            instance.write_env(url, options, ledger, extra)
        with ThreadPoolExecutor(len(every)) as pool:
            for runs in pool.map(lambda i: i.deploy(v1), every):
                for run in runs:
                    if run.returncode != 0:
                        raise SystemExit(f"v1 {run.event} failed:\n{run.output}")

        slots = []
        for group in groups:
            per_worker = group.autoscale[0] if group.autoscale else group.concurrency
            slots += [q for q in group.queues or []] * per_worker
        load.send_many(tasks, slots, 0.2, 2.0)
        time.sleep(2.0)  # the v1 workers are busy when the deploy starts
        waves = sorted({g.wave for g in groups})
        drains = roll(groups, fleets, waves, v2)
        completed, lost, duplicates = load.wait_done(600)
        if verbose:
            for drain in drains:
                print(drain, f"overhead {drain.overhead:.3f}", file=sys.stderr)
            for instance in every:
                print(instance.runs[-3].output, file=sys.stderr)
    finally:
        reaper.stop_all()
        load.close()
        leftovers = [q for g in groups for q in g.queues or []]
        if url.startswith("redis"):
            leftovers.append("_kombu.binding_deadlines")  # kombu's, in the bench's own database
        delete_broker_queues(url, leftovers)
    return {
        "submitted": tasks,
        "completed": completed,
        "lost": lost,
        "duplicates": duplicates,
        "max_drain_s": round(max(d.seconds for d in drains), 3),
        "drain_overhead_s": round(max(d.overhead for d in drains), 3),
        "drains": len(drains),
        "sigquit": sum(d.sigquit for d in drains),
    }


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", choices=["sqs", "redis", "rabbitmq"], default="sqs")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--no-baseline", action="store_true", help="skip the stock-shutdown baseline run")
    parser.add_argument("--verbose", action="store_true", help="each drain and its hook log on stderr")
    args = parser.parse_args(argv)
    with (
        broker_for(args.broker) as (url, options),
        tempfile.TemporaryDirectory(prefix="deploytool-bench-drain-") as work,
    ):
        result: dict[str, Any] = {"broker": args.broker}
        result.update(run_once(url, options, args.tasks, True, Path(work) / "tuned", args.verbose))
        if not args.no_baseline:
            baseline = run_once(url, options, args.tasks, False, Path(work) / "baseline")
            result["baseline"] = {"what": "stock Celery shutdown (DEPLOYTOOL_PROMPT_SHUTDOWN=0)", **baseline}
    result["mode"] = "agent emulation (tests/hooktools.py); sandbox runner not on main yet"
    print(json.dumps(result), flush=True)
    return 0 if result["lost"] == 0 and result["duplicates"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
