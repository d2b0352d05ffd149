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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from deploytool.config import App
from deploytool.sandbox.clock import REAL_CLOCK, Clock
from deploytool.sandbox.instance import Instance


@dataclass(frozen=True)
class TaskTally:
    submitted: int
    completed: int
    lost: int
    duplicated: int
    by_release: Mapping[str, int]  # runs per release note of the sample app (which version did the work)


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
    clock: Clock = REAL_CLOCK,
    step_s: float = 0.5,
) -> TaskTally:
    deadline = clock.monotonic() + timeout_s
    while True:
        result = tally(submitted, *read_ledgers(ledgers))
        if result.lost == 0 or clock.monotonic() >= deadline:
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
        table.add_column(column)
    for group, by_version in per_group.items():
        for version, ids in sorted(by_version.items()):
            mark = "" if version == expected else " (not the release)"
            table.add_row(group, version + mark, str(len(ids)), ", ".join(ids))
    return table


def tasks_table(result: TaskTally) -> Table:
    table = Table(title="tasks")
    for column in ("submitted", "completed", "lost", "duplicated"):
        table.add_column(column, justify="right")
    table.add_row(str(result.submitted), str(result.completed), str(result.lost), str(result.duplicated))
    return table
