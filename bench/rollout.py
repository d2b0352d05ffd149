#!/usr/bin/env python3
"""Benchmark: deploytool's parallel rollout against the two usual ways, on one simulated fleet, in one run.

    python bench/rollout.py [--groups 50] [--instances-per-group 6] [--seed 1]

The fleet: 50 groups of 6 instances (300, in moto's Auto Scaling), strategies mixed (AllAtOnce,
HalfAtATime, OneAtATime, min 2 healthy hosts, min 50% healthy), one wave; each instance's lifecycle
takes 60 to 180 s (seeded per instance, so every run below sees the same fleet). CodeDeploy is the
simulator from tests/cdsim (botocore-validated requests), time is a simulated clock: nothing sleeps.
Each run gets a fresh simulator on the same instances and counts every CodeDeploy call it makes.
- ours: the one rollout wiring (deploytool.rollout.wiring, as `fab deploy` runs it) + CodeDeploy backend
  (one poll loop, BatchGetDeployments 25 ids a call, 1 s backing off to 10 s);
- sequential: one group after another, each followed by boto3's deployment_successful waiter
  (GetDeployment every 15 s: delay and attempts read from botocore's waiter model);
- waiter: every deployment created at once, one such waiter per deployment.
critical_path_s is the slowest group's own time (its CreateDeployment to its completion in the
simulator); overhead_ratio = ours_s / critical_path_s. Calls per minute count every CodeDeploy call of
a run (creates included) over that run's simulated minutes. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402
from rich.console import Console  # noqa: E402

from deploytool.aws.codedeploy import CodeDeployGateway  # noqa: E402
from deploytool.aws.s3 import S3Gateway  # noqa: E402
from deploytool.aws.session import AwsSession  # noqa: E402
from deploytool.config import Fleet  # noqa: E402
from deploytool.rollout.backend import DeployRequest  # noqa: E402
from deploytool.rollout.clock import SimulatedClock  # noqa: E402
from deploytool.rollout.codedeploy import CodeDeployBackend, create_params  # noqa: E402
from deploytool.rollout.plan import rollout_plan  # noqa: E402
from deploytool.rollout.record import ReleaseStore  # noqa: E402
from deploytool.rollout.wiring import Output, Services, run_rollout  # noqa: E402
from tests.builders import make_fleet  # noqa: E402
from tests.cdsim import CodeDeploySim, install, seeded_durations  # noqa: E402
from tests.cdsim.env import CREDENTIALS, MOTO_CONFIG, REGION, create_asgs  # noqa: E402
from tests.rollout_helpers import revision, set_up  # noqa: E402

STRATEGIES: list[Any] = [
    "AllAtOnce",
    "HalfAtATime",
    "OneAtATime",
    {"min_healthy_hosts": 2},
    {"min_healthy_percent": 50},
]
APP = "acme-workers"


@dataclass
class Run:
    clock: SimulatedClock
    sim: CodeDeploySim
    aws: AwsSession
    gateway: CodeDeployGateway
    client: Any

    def calls(self) -> int:
        return sum(self.sim.calls.values())

    def group_times(self) -> list[float]:
        return [
            d.completed_at - d.created_at
            for d in self.sim.deployments.values()
            if d.completed_at is not None and d.creator == "user"
        ]


def fresh_run(fleet: Fleet, instances: dict[str, list[str]], seed: int) -> Run:
    """A new simulator and clock on the same instances, set up, with its call counter at zero."""
    clock = SimulatedClock()
    seeded = seeded_durations(seed)
    # moto's instance ids are random: seed each instance's times by its place in its ASG instead.
    place = {i: f"{asg}#{n}" for asg, ids in instances.items() for n, i in enumerate(sorted(ids))}

    def durations(group: str, instance_id: str, mode: str) -> Sequence[tuple[str, float]]:
        return seeded(group, place[instance_id], mode)

    sim = CodeDeploySim(clock, fleet=instances, durations=durations, seed=seed)
    boto = boto3.Session(region_name=REGION)
    install(sim, boto)
    aws = AwsSession(region=REGION, boto_session=boto)
    gateway = CodeDeployGateway(aws)
    set_up(gateway, fleet)
    previous = "s3://acme-deploy-artifacts/deploytool/acme-workers/v0/v0sha.tgz#etag-v0"
    for ids in instances.values():  # the fleet runs a previous version, so ApplicationStop runs too
        sim.instance_revision.update((i, previous) for i in ids)
    sim.calls.clear()
    return Run(clock, sim, aws, gateway, aws.client("codedeploy"))


def ours(run: Run, fleet: Fleet) -> float:
    plan = rollout_plan(
        release_id="20250101T000000Z-v1",
        version="v1",
        target="production",
        groups=fleet.groups,
        revision=revision("v1"),
    )
    store = ReleaseStore(
        S3Gateway(run.aws), bucket=fleet.artifacts.bucket, prefix=fleet.artifacts.prefix, app=fleet.app.name
    )  # not written to: a plan with no manifest has no record
    services = Services(
        run.aws,
        CodeDeployBackend(run.gateway, application=APP),
        store,
        Console(quiet=True),
        clock=run.clock,
        interactive=False,
    )
    result = run_rollout(plan, services, Output(ci=True))  # the one rollout wiring, as `fab deploy` runs it
    if not result.succeeded:
        raise SystemExit(f"ours: the release failed: {result.counts()}")
    return result.elapsed_s


def waiter_config(client: Any) -> tuple[float, int]:
    config = client.get_waiter("deployment_successful").config
    return float(config.delay), int(config.max_attempts)


def create(run: Run, group_name: str, fleet: Fleet) -> str:
    request = DeployRequest(group=fleet.group(group_name), revision=revision("v1"), release_id="baseline")
    return str(
        run.client.create_deployment(applicationName=APP, deploymentGroupName=group_name, **create_params(request))[
            "deploymentId"
        ]
    )


def waiters(run: Run, fleet: Fleet, groups: list[str]) -> float:
    """Create these deployments at once and follow each with its own waiter; when the last is seen done."""
    delay, attempts = waiter_config(run.client)
    start = run.clock.now()
    queue: list[tuple[float, int, str]] = []
    for n, name in enumerate(groups):
        heapq.heappush(queue, (run.clock.now(), n, create(run, name, fleet)))
    done_at = start
    tries: dict[str, int] = {}
    while queue:
        at, n, deployment_id = heapq.heappop(queue)
        run.clock.sleep(at - run.clock.now())
        status = run.client.get_deployment(deploymentId=deployment_id)["deploymentInfo"]["status"]
        tries[deployment_id] = tries.get(deployment_id, 0) + 1
        if status in ("Succeeded", "Failed", "Stopped"):
            done_at = max(done_at, run.clock.now())
            if status != "Succeeded":
                raise SystemExit(f"waiter: {deployment_id} {status}")
        elif tries[deployment_id] >= attempts:
            raise SystemExit(f"waiter: {deployment_id} still running after {attempts} attempts (waiter gives up)")
        else:
            heapq.heappush(queue, (at + delay, n, deployment_id))
    return done_at - start


def sequential(run: Run, fleet: Fleet) -> float:
    start = run.clock.now()
    for group in fleet.groups:
        waiters(run, fleet, [group.name])
    return run.clock.now() - start


def per_min(calls: int, seconds: float) -> float:
    return round(calls / (seconds / 60.0), 2) if seconds else 0.0


@contextmanager
def simulated_aws() -> Iterator[None]:
    os.environ.update(CREDENTIALS)
    with mock_aws(config=MOTO_CONFIG):
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--instances-per-group", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    fleet = make_fleet(
        [{"name": f"g{n:03d}", "strategy": STRATEGIES[n % len(STRATEGIES)], "wave": 0} for n in range(args.groups)]
    )
    with simulated_aws():
        instances = create_asgs(
            boto3.Session(region_name=REGION), {g.asg: args.instances_per_group for g in fleet.groups}
        )

        run = fresh_run(fleet, instances, args.seed)
        ours_s = ours(run, fleet)
        critical = max(run.group_times())
        ours_calls = run.calls()

        run = fresh_run(fleet, instances, args.seed)
        sequential_s = sequential(run, fleet)

        run = fresh_run(fleet, instances, args.seed)
        waiter_s = waiters(run, fleet, [g.name for g in fleet.groups])
        waiter_calls = run.calls()

    print(
        json.dumps(
            {
                "groups": len(fleet.groups),
                "instances": sum(len(ids) for ids in instances.values()),
                "critical_path_s": round(critical, 1),
                "ours_s": round(ours_s, 1),
                "overhead_ratio": round(ours_s / critical, 4),
                "ours_calls_per_min": per_min(ours_calls, ours_s),
                "sequential_s": round(sequential_s, 1),
                "waiter_s": round(waiter_s, 1),
                "waiter_calls_per_min": per_min(waiter_calls, waiter_s),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
