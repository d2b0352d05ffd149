"""Benchmark: the sandbox's v1 -> v2 release of every group of deploy.toml while the autoscaler scales the ASGs.

    python bench/churn.py [--every 1] [--seed 0] [--no-static] [--no-hook-off]

Runs `fab sandbox`'s own path (deploytool.sandbox.run.run_sandbox: moto, real Celery workers on SQS, load running
through v2) up to three times in the same run: as is (static_release_s), with `--churn` (the autoscaler of
deploytool.sandbox.autoscaler scales a group out or in every --every seconds during v2, out and in alternating, each
group between its starting size and two more, with the termination hook on), and with `--churn --churn-kill` (the
same with the termination hook off: a scale-in SIGKILLs the worker's process group, as a spot power-off does).
Prints one JSON line:
{"scale_out", "scale_in", "scale_out_while_deploying", "scale_in_while_deploying", "launch_deployments",
 "followon_deployments", "termination_deployments", "waited_s", "release_ok", "drift_after", "submitted", "lost",
 "completed_twice", "release_s", "static_release_s", "hook_off": {...}}
*_while_deploying: scale actions that landed while the group's own deployment (the release) ran there.
waited_s: over the groups, the time from the first "waiting for ... deployment" of a group to its own start.
drift_after: instances off their group's expected version in the closing reconcile (0 when it found no drift;
1 stands for "some": the reconcile's message names them).
hook_off (the baseline the interruption work improves on): {"killed": workers SIGKILLed, "stranded": tasks that
had not run once the queues held nothing visible, "stranded_in_flight": SQS's count of messages received and
neither deleted nor returned then, "stranded_observed_s": from the first kill to that moment (they were still held:
a measured lower bound), "stranded_until_s": the largest visibility timeout of the groups killed in (SQS returns a
message that long after its receipt: not waited for), "lost_for_good": 0 by SQS's semantics, "release_ok",
"completed_twice"}.
Targets (hook on): release_ok true, drift_after 0, lost 0, completed_twice 0, scale_out and scale_in >= 6, each
*_while_deploying >= 1. Exit 1 when one is missed.
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


def run_once(
    work: Path, churn_every_s: float | None, seed: int, console: Console, *, hook: bool = True
) -> tuple[SandboxRunResult, Waits]:
    work.mkdir(parents=True)
    shutil.copy(ROOT / "deploy.toml", work / "deploy.toml")
    (work / "sample_app").symlink_to(ROOT / "sample_app")
    fleet = load_fleet(work / "deploy.toml")
    waits = Waits()
    connect = sandbox_releases(console, ci=True)

    def connected(session: SandboxSession) -> Any:
        releases = connect(session)
        releases.watch(waits)
        return releases

    options = SandboxRunOptions(churn_every_s=churn_every_s, churn_seed=seed, churn_termination_hook=hook)
    return run_sandbox(fleet, console=console, options=options, connect=connected), waits


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--every", type=float, default=1.0, help="seconds between two scale actions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-static", action="store_true", help="skip the release without churn")
    parser.add_argument("--no-hook-off", action="store_true", help="skip the release with the termination hook off")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="deploytool-bench-churn-") as work:
        churned, waits = run_once(Path(work) / "churn", args.every, args.seed, console)
        static = None if args.no_static else run_once(Path(work) / "static", None, args.seed, console)[0]
        hook_off = None if args.no_hook_off else killed_pass(Path(work) / "hook-off", args.every, args.seed, console)
    done = churned.churn or {}
    release = churned.rollouts[1]
    result = {
        "scale_out": done.get("scale_out", 0),
        "scale_in": done.get("scale_in", 0),
        "scale_out_while_deploying": done.get("scale_out_while_deploying", 0),
        "scale_in_while_deploying": done.get("scale_in_while_deploying", 0),
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
        "hook_off": hook_off,
        "churn_errors": list(churned.churn_errors),
        "mode": "sandbox",
    }
    print(json.dumps(result), flush=True)
    moved = min(done.get("scale_out", 0), done.get("scale_in", 0)) >= 6 and (
        min(done.get("scale_out_while_deploying", 0), done.get("scale_in_while_deploying", 0)) >= 1
    )
    ok = release.succeeded and not churned.drift and churned.tasks.lost == 0 and churned.tasks.duplicated == 0
    return 0 if ok and moved else 1


def killed_pass(work: Path, every_s: float, seed: int, console: Console) -> dict[str, Any]:
    """The churned release with the termination hook off: what the SIGKILLed workers strand."""
    started = time.monotonic()
    result, _ = run_once(work, every_s, seed, console, hook=False)
    ended = time.monotonic()
    kills = [a for a in result.churn_actions if a.killed_pid is not None]
    fleet = load_fleet(ROOT / "deploy.toml")
    timeouts = [fleet.group(g).visibility_timeout for g in sorted({a.group for a in kills})]
    return {
        "killed": len(kills),
        "stranded": result.tasks.lost,
        "stranded_in_flight": result.tasks.in_flight,
        "stranded_observed_s": round(ended - kills[0].at, 1) if kills and result.tasks.lost else 0.0,
        "stranded_until_s": max(timeouts, default=0),
        "lost_for_good": 0,
        "release_ok": result.rollouts[1].succeeded,
        "completed_twice": result.tasks.duplicated,
        "pass_s": round(ended - started, 1),
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
