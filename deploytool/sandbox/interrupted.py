"""Tasks a drain's cold shutdown cut off, read back from an instance's event logs for the deployment's warnings.

The drain hook prints one line per task, `deploytool: interrupted task NAME[ID]: FATE`
(scripts/deploytool_instance/interrupted.py); once an instance is done, the local backend reads them here.
"""

from __future__ import annotations

from deploytool.rollout.backend import LIFECYCLE_EVENTS
from deploytool.sandbox.instance import Instance

INTERRUPTED_MARK = "deploytool: interrupted task "  # printed by scripts/celery_hooks.py (mark_interrupted)


def interrupted_tasks(instance: Instance, deployment_id: str) -> list[str]:
    """`<instance>: interrupted task NAME[ID] in <event>: FATE` for each marker line in the instance's event logs
    of this deployment, in lifecycle order."""
    logs = instance.logs_dir(deployment_id)
    found: list[str] = []
    for event in LIFECYCLE_EVENTS:
        try:
            lines = (logs / f"{event}.log").read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            _, mark, rest = line.partition(INTERRUPTED_MARK)
            if mark and rest.strip():
                task, _, fate = rest.strip().partition(": ")
                where = f"{instance.instance_id}: interrupted task {task} in {event}"
                found.append(f"{where}: {fate}" if fate else where)
    return found
