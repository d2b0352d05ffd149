"""The sandbox run's report: which version each instance runs, and what happened to every task.

Contract: `read_ledgers(paths)` counts the runs of each task id in the sample app's ledgers (lines
`<task_id> <name> <release note...> <pid>`); `tally(submitted, runs)` gives submitted / completed /
lost / duplicated (a task that ran n > 1 times counts n - 1 duplicates); `wait_for_drain(...)`
polls the ledgers until every submitted task has run or the timeout passes (injected clock);
`versions(...)` maps each group's instances to the version in `{install_dir}/run/VERSION`. The
tables are rich renderables; nothing here prints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rich.table import Table

from deploytool.config import App
from deploytool.sandbox.clock import SYSTEM_CLOCK, Clock
from deploytool.sandbox.instance import Instance


@dataclass(frozen=True)
class TaskTally:
    submitted: int
    completed: int
    lost: int  # submitted tasks that never ran (within the wait)
    duplicated: int
    by_release: Mapping[str, int]  # runs per release note of the sample app (which version did the work)
    waiting: int | None = None  # the broker's count of messages not received yet (when it can tell)
    in_flight: int | None = None  # received but never finished: held until the visibility timeout


def read_ledgers(paths: Iterable[Path]) -> tuple[Counter[str], Counter[str]]:
    """(runs per task id, runs per release note) from the ledger files that exist."""
    runs: Counter[str] = Counter()
    releases: Counter[str] = Counter()
    for path in paths:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) >= 4:
                runs[parts[0]] += 1
                releases[" ".join(parts[2:-1])] += 1
    return runs, releases


def tally(submitted: Sequence[str], runs: Mapping[str, int], releases: Mapping[str, int]) -> TaskTally:
    wanted = set(submitted)
    completed = sum(1 for task in wanted if runs.get(task, 0) > 0)
    duplicated = sum(runs[task] - 1 for task in wanted if runs.get(task, 0) > 1)
    return TaskTally(len(wanted), completed, len(wanted) - completed, duplicated, dict(releases))


def wait_for_drain(
    submitted: Sequence[str],
    ledgers: Sequence[Path],
    *,
    timeout_s: float,
    clock: Clock = SYSTEM_CLOCK,
    step_s: float = 0.5,
    depth: Callable[[], tuple[int, int]] | None = None,
    settle_s: float = 5.0,
) -> TaskTally:
    """Wait until every submitted task ran, or the timeout passes, or (when the broker's depth
    `(waiting, in_flight)` is known) nothing waits and nothing has completed for `settle_s`: the
    rest is held in flight by the broker, and waiting longer would not change the answer."""
    deadline = clock.now() + timeout_s
    completed, since = -1, clock.now()
    while True:
        result = tally(submitted, *read_ledgers(ledgers))
        now = clock.now()
        if result.completed != completed:
            completed, since = result.completed, now
        if depth is not None:
            waiting, in_flight = depth()
            result = replace(result, waiting=waiting, in_flight=in_flight)
        if result.lost == 0 or now >= deadline:
            return result
        if result.waiting == 0 and now - since >= settle_s:
            return result
        clock.sleep(step_s)


def versions(instances: Mapping[str, Sequence[Instance]], app: App) -> dict[str, dict[str, list[str]]]:
    """Per group: version -> instance ids (version "none" when no worker recorded one)."""
    out: dict[str, dict[str, list[str]]] = {}
    for group, members in instances.items():
        by_version: dict[str, list[str]] = {}
        for instance in members:
            by_version.setdefault(instance.running_version(app) or "none", []).append(instance.instance_id)
        out[group] = by_version
    return out


def versions_table(per_group: Mapping[str, Mapping[str, Sequence[str]]], expected: str) -> Table:
    table = Table(title="instances per version")
    for column in ("group", "version", "instances", "ids"):
        table.add_column(column, overflow="fold")
    for group, by_version in per_group.items():
        for version, ids in sorted(by_version.items()):
            mark = "" if version == expected else " (not the release)"
            table.add_row(group, version + mark, str(len(ids)), "\n".join(ids))
    return table


def tasks_table(result: TaskTally) -> Table:
    table = Table(title="tasks")
    for column in ("submitted", "completed", "lost", "duplicated"):
        table.add_column(column, justify="right")
    table.add_row(str(result.submitted), str(result.completed), str(result.lost), str(result.duplicated))
    return table


def lost_explained(result: TaskTally) -> str:
    """Where the lost tasks are, when the broker can tell."""
    if not result.lost or result.in_flight is None:
        return ""
    held = min(result.lost, result.in_flight)
    text = (
        f"{held} of the {result.lost} lost tasks are held in flight by the broker: a worker received them and "
        "stopped without running them; they run again only after the group's visibility timeout"
    )
    if result.waiting:
        text += f"; {result.waiting} messages are still waiting in the queues"
    return text
