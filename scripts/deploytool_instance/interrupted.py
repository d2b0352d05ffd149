"""The tasks a cold shutdown cut off, told to whoever reads the hook's output.

The launcher writes run/interrupted.json ({"pid", "tasks": [{"name", "id"}]}) when SIGQUIT arrives;
report_interrupted logs them once and removes the file. Each task also gets one line
`deploytool: interrupted task NAME[ID]: FATE` on the hook's output: the sandbox's lifecycle runner turns
those into warnings of the deployment (deploytool/sandbox/backend.py reads INTERRUPTED_MARK); on
CodeDeploy they stay in the agent's scripts.log. FATE follows the group's acks_late.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from deploytool_instance.base import Log, summarize
from deploytool_instance.layout import read_json
from deploytool_instance.settings import Settings

INTERRUPTED_MARK = "deploytool: interrupted task"  # the sandbox runner reads these lines into the deploy's output


def interrupted_fate(acks_late: bool) -> str:
    """What becomes of a task a cold shutdown cut off, given the group's acks_late (the worker also sets
    task_reject_on_worker_lost=True)."""
    if acks_late:
        return "not acknowledged (acks_late): re-queued by the broker, it runs again"
    return "acknowledged when received (acks_late = false): it does not run again unless the task sets acks_late"


def mark_interrupted(settings: Settings, labels: Sequence[str], log: Log) -> None:
    """One line per interrupted task, `deploytool: interrupted task NAME[ID]: FATE`, on the hook's output: the
    sandbox's lifecycle runner turns them into warnings of the deployment; on CodeDeploy they stay in the
    agent's scripts.log."""
    fate = interrupted_fate(bool(settings.group.get("acks_late", True)))
    for label in labels:
        print(f"{INTERRUPTED_MARK} {label}: {fate}", file=log.out, flush=True)


def report_interrupted(settings: Settings, pid: int, log: Log) -> list[str]:
    """Log the tasks the worker says a cold shutdown cut off (the launcher writes them), then forget them."""
    data = read_json(settings.layout.interrupted_file)
    if not data or data.get("pid") != pid:
        return []
    labels = [f"{t.get('name')}[{t.get('id')}]" for t in data.get("tasks", [])]
    if labels:
        log.step("interrupted", f"{len(labels)} task(s) cut off by the cold shutdown: {summarize(labels)}")
        mark_interrupted(settings, labels, log)
    with contextlib.suppress(OSError):
        settings.layout.interrupted_file.unlink()
    return labels
