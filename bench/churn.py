"""Benchmark: the sandbox's v1 -> v2 release of every group of deploy.toml while the autoscaler scales the ASGs.

    python bench/churn.py [--every 3] [--seed 0] [--no-static]

Runs `fab sandbox`'s own path (deploytool.sandbox.run.run_sandbox: moto, real Celery workers on SQS, load running
through v2) twice in the same run: once as is (static_release_s) and once with `--churn` (the autoscaler of
deploytool.sandbox.autoscaler scales a group out or in every --every seconds during v2, each group between its
starting size and two more, with the termination hook on). Prints one JSON line:
{"scale_out", "scale_in", "launch_deployments", "followon_deployments", "waited_s", "release_ok", "drift_after",
 "submitted", "lost", "completed_twice", "release_s", "static_release_s"}
waited_s: over the groups, the time from the first "waiting for ... deployment" of a group to its own start.
drift_after: instances off their group's expected version in the closing reconcile (0 when it found no drift;
1 stands for "some": the reconcile's message names them). Not measured here (yet): the termination hook off.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from deploytool.config import load_fleet  # noqa: E402
from deploytool.deploy_flow import sandbox_releases  # noqa: E402
from deploytool.rollout.events import Event, GroupStarted, GroupWaiting  # noqa: E402
from deploytool.sandbox.run import SandboxRunOptions, SandboxRunResult, run_sandbox  # noqa: E402
from deploytool.sandbox.session import SandboxSession  # noqa: E402


class Waits:
    """Per group: from its first GroupWaiting to its GroupStarted, on this process's clock."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.waited_s = 0.0

    def publish(self, event: Event) -> None:
        if isinstance(event, GroupWaiting):
            self.first.setdefault(event.group, time.monotonic())
        elif isinstance(event, GroupStarted) and event.group in self.first:
            self.waited_s += time.monotonic() - self.first.pop(event.group)


def run_once(work: Path, churn_every_s: float | None, seed: int, console: Console) -> tuple[SandboxRunResult, Waits]:
    work.mkdir(parents=True)
    shutil.copy(ROOT / "deploy.toml", work / "deploy.toml")
    (work / "sample_app").symlink_to(ROOT / "sample_app")
    fleet = load_fleet(work / "deploy.toml")
    waits = Waits()
    connect = sandbox_releases(console, ci=True)

    def connected(session: SandboxSession) -> Any:
        releases = connect(session)
        releases.services.extra_reporters.append(waits)
        return releases

    options = SandboxRunOptions(churn_every_s=churn_every_s, churn_seed=seed)
    return run_sandbox(fleet, console=console, options=options, connect=connected), waits


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--every", type=float, default=3.0, help="seconds between two scale actions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-static", action="store_true", help="skip the release without churn")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="deploytool-bench-churn-") as work:
        churned, waits = run_once(Path(work) / "churn", args.every, args.seed, console)
        static = None if args.no_static else run_once(Path(work) / "static", None, args.seed, console)[0]
    done = churned.churn or {}
    release = churned.rollouts[1]
    result = {
        "scale_out": done.get("scale_out", 0),
        "scale_in": done.get("scale_in", 0),
        "launch_deployments": done.get("launch_deployments", 0),
        "followon_deployments": done.get("followon_deployments", 0),
        "termination_deployments": done.get("termination_deployments", 0),
        "waited_s": round(waits.waited_s, 1),
        "release_ok": release.succeeded,
        "drift_after": 1 if churned.drift else 0,
        "submitted": churned.tasks.submitted,
        "lost": churned.tasks.lost,
        "completed_twice": churned.tasks.duplicated,
        "release_s": round(release.elapsed_s, 1),
        "static_release_s": round(static.rollouts[1].elapsed_s, 1) if static else None,
        "churn_errors": list(churned.churn_errors),
        "mode": "sandbox",
    }
    print(json.dumps(result), flush=True)
    ok = result["release_ok"] and not churned.drift and churned.tasks.lost == 0 and churned.tasks.duplicated == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
