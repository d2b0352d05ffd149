"""`celery_hooks.py watch`: the interruption watcher, one per instance and group, started with the worker.

A spot interruption gives two minutes' notice and runs no lifecycle hook, so nothing else drains the worker
before the power goes. The watcher polls the instance metadata service (imds: IMDSv2, every POLL_S, each
request bounded) and on a notice:
- spot (spot/instance-action): the drain of a deploy (drain.drain_running: the worker stops taking tasks at
  once, its running tasks go on) with the notice's own deadline less RELEASE_MARGIN_S: a task that ends by
  then ends on this worker; what is still running then gets the cold shutdown, which hands it back to the
  broker at once (on SQS the worker releases each message, ChangeMessageVisibility 0), all before the
  instance is stopped;
- Auto Scaling's target lifecycle state Terminated and the rebalance recommendation: the group's policy
  (fleet file `on_terminated`, `on_rebalance`: "drain", the default, is the same drain as a deploy within
  drain_timeout; "ignore" logs the notice and goes on watching).
What happened is logged (one line per step) and written to run/interruption.json ({"instance", "group",
"version", "kind", "detail", "policy", "noticed_at", "deadline_at", "outcome", "drained_s", "interrupted", and
"cold_shutdown_at" when it came to that}), which the sandbox's report and bench/interrupt.py read, and to the
fleet's bucket (s3put: once when a drain begins, outcome "draining", and again when it ends), where
`fab reconcile` lists it after the instance is gone. After a drain the watcher exits 0 (the instance is going
away). No metadata
service (not on EC2) is a quiet no-op: one line, exit 0. SIGTERM (the next ApplicationStart replacing it,
systemd stopping it) ends it with exit 0; in the middle of a drain the worker gets its cold shutdown first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping

from deploytool_instance.base import EXIT_OK, Clock, HookError, HookTerminated, Log
from deploytool_instance.drain import QUIT_GRACE_S, drain_running
from deploytool_instance.imds import Imds, ImdsUnavailable, Notice, endpoint_of
from deploytool_instance.layout import write_atomic
from deploytool_instance.processes import find_worker
from deploytool_instance.s3put import Target, interruption_key, put_record
from deploytool_instance.settings import Settings, instance_id, read_env_file, running_node

POLL_S = 5.0
RELEASE_MARGIN_S = 20.0  # a spot drain ends this long before the notice's time: cold shutdown and release fit
POLICIES = ("drain", "ignore")


def policy_for(settings: Settings, kind: str) -> str:
    if kind == "spot":
        return "drain"
    key = "on_terminated" if kind == "terminated" else "on_rebalance"
    value = str(settings.group.get(key) or "drain")
    return value if value in POLICIES else "drain"


def drain_budget(settings: Settings, notice: Notice, now_wall: float) -> float:
    """Seconds the drain may take: to the notice's deadline less the margin, else drain_timeout."""
    if notice.deadline is not None:
        return max(1.0, notice.deadline - now_wall - RELEASE_MARGIN_S)
    return settings.drain_timeout


Recorder = Callable[[Mapping[str, object]], None]


def s3_recorder(settings: Settings, imds: Imds, environ: Mapping[str, str], log: Log) -> Recorder | None:
    """What writes a notice's record to the fleet's bucket (s3put), or None when the bundle names no bucket."""
    target = Target.of(settings.records)
    if target is None:
        return None

    def record(data: Mapping[str, object]) -> None:
        key = interruption_key(
            target.prefix,
            str(settings.app["name"]),
            str(data["instance"]),
            settings.group_name,
            float(str(data["noticed_at"])),
        )
        log.step("record", put_record(target, key, data, imds, environ))

    return record


def handle(
    settings: Settings, notice: Notice, clock: Clock, log: Log, recorder: Recorder | None = None, instance: str = ""
) -> dict[str, object]:
    noticed_at = time.time()
    policy = policy_for(settings, notice.kind)
    record: dict[str, object] = {
        "instance": instance,
        "group": settings.group_name,
        "version": settings.version,
        "kind": notice.kind,
        "detail": notice.detail,
        "policy": policy,
        "noticed_at": round(noticed_at, 3),
        "deadline_at": notice.deadline,
        "outcome": "ignored" if policy == "ignore" else "no worker",
        "drained_s": 0.0,
        "interrupted": [],
    }
    log.step("notice", f"{notice.detail}; policy {policy}")
    if policy == "drain" and recorder is not None:  # known off the instance before the drain, should power go first
        recorder({**record, "outcome": "draining"})
    if policy == "drain":
        worker, where = find_worker(settings)
        if worker is None:
            log.step("find worker", f"no worker running ({where}); nothing to drain")
        else:
            budget = drain_budget(settings, notice, noticed_at)
            node = running_node(settings)
            log.step("find worker", f"pid {worker.pid} ({node}) via {where}; draining within {budget:.0f}s")
            quit_grace, what = QUIT_GRACE_S, "drain_timeout"
            if notice.deadline is not None:
                quit_grace = min(QUIT_GRACE_S, RELEASE_MARGIN_S / 2)
                what = f"the notice's time less {RELEASE_MARGIN_S:.0f} s"
            deadline = clock.now() + budget
            result = drain_running(settings, worker, node, deadline, clock, log, quit_grace, what)
            record.update(
                outcome=result.outcome, drained_s=round(result.seconds, 3), interrupted=list(result.interrupted)
            )
            if result.quit_at is not None:  # when the cold shutdown began handing tasks back, on the wall clock
                record["cold_shutdown_at"] = round(time.time() - (clock.now() - result.quit_at), 3)
    write_atomic(settings.layout.interruption_file, json.dumps(record) + "\n")
    if recorder is not None:
        recorder(record)
    return record


def watch(settings: Settings, clock: Clock, log: Log) -> int:
    environ = dict(settings.environ)
    try:  # the environment file may name the endpoint (the sandbox's fake IMDS does)
        environ.update(read_env_file(settings.env_file))
    except (HookError, OSError):  # none or unreadable: the default endpoint
        pass
    imds = Imds(endpoint_of(environ))
    try:
        if not imds.reachable():
            log.step("imds", f"no instance metadata service at {imds.endpoint}: not on EC2; nothing to watch")
            return EXIT_OK
        log.step("watching", f"{imds.endpoint} every {POLL_S:.0f}s for spot, rebalance and Terminated notices")
        recorder = s3_recorder(settings, imds, environ, log)
        handled: set[str] = set()
        failing = False
        while True:
            try:
                notice = imds.poll()
                if failing:
                    log.step("imds", "answering again")
                failing = False
            except ImdsUnavailable as exc:
                if not failing:
                    log.step("imds", f"not answering ({exc}); trying again every {POLL_S:.0f}s")
                failing, notice = True, None
            if notice is not None and notice.kind not in handled:
                handled.add(notice.kind)
                record = handle(settings, notice, clock, log, recorder, instance_id(environ))
                if record["policy"] == "drain":
                    return EXIT_OK
            clock.sleep(POLL_S)
    except HookTerminated:
        log.step("stopped", "SIGTERM")
        return EXIT_OK
