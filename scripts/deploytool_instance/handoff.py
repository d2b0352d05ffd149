"""restart = "handoff", the hooks' side: a release never waits for the longest task, and no task is killed.

- `hand_off` (ApplicationStop, or ApplicationStart finding the old worker still running): asks the running
  worker to finish what it holds and exit by itself (run/control/<pid> = "finish", then SIGUSR2: finish.HandOff),
  waits up to HANDOFF_CONFIRM_S for its answer (run/handoff/<pid>.json) and records it in run/draining/<pid>.json;
  the hook returns in seconds. With systemd the old unit gets a runtime drop-in Restart=no first (its exit after
  a reap must not bring it back) and is disabled, so a reboot starts only the current release.
- `refusal`: why a hand-off would not be safe, so the hook drains instead and says so: handoff_max_draining
  workers already finishing on this instance, or too little memory for a second worker (MemAvailable less the
  running worker's resident memory below handoff_min_free_mb).
- `make_live`: the worker of a hand-off release runs from its own copy of the release, live/<version>.<stamp>:
  at the next Install the CodeDeploy agent deletes the files it installed last time (releases/<version>), which
  would pull the code from under a worker still finishing there. `prune_live` removes the copies no running
  worker uses (the current one's is kept).
- `resume_latest` (ValidateService or ApplicationStart failing): the newest worker still finishing takes work
  again and is the current worker once more: an instance is never left with no consumer.
- `reap_overdue`: a worker still finishing OVERDUE_GRACE_S after its reap time (task_time_limit + margin after
  its hand-off; it reaps itself then) gets a cold shutdown from the hooks (its tasks go back to the broker).
- `finish_all` (a termination: the instance is going away): waits for every finishing worker within the
  deadline, then cold-shuts-down those left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from deploytool_instance.base import Clock, HookError, Log, summarize
from deploytool_instance.finish import REAP_MARGIN_S
from deploytool_instance.imds import Imds, ImdsUnavailable, endpoint_of
from deploytool_instance.layout import read_json, remove_if_pid, write_atomic
from deploytool_instance.processes import (
    WorkerProcess,
    is_our_worker,
    launcher_script,
    process_alive,
    process_cmdline,
    run_command,
)
from deploytool_instance.settings import Settings, read_env_file

HANDOFF_CONFIRM_S = 10.0  # the worker answers a hand-off within this (its event loop reads the request)
OVERDUE_GRACE_S = 30.0  # after a finishing worker's own reap time, the hooks reap it
REAP_WAIT_S = 10.0  # a reaped worker's cold shutdown is waited for this long (then it no longer counts to the cap)
DROP_IN = "50-deploytool-handoff.conf"


@dataclass(frozen=True)
class Draining:
    pid: int
    version: str
    node: str
    unit: str | None
    since: float
    reap_at: float  # wall clock
    held: tuple[str, ...] = ()


def worker_root(pid: int) -> Path | None:
    """The release directory a worker runs from (<root>/deploytool/hooks/celery_worker.py), if it is a worker."""
    script = launcher_script(process_cmdline(pid))
    return Path(os.path.realpath(script)).parents[2] if script else None


def draining_workers(settings: Settings) -> list[Draining]:
    """The workers handed off and still finishing, oldest first; records of those gone are removed."""
    found: list[Draining] = []
    directory = settings.layout.draining_dir
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        data = read_json(path)
        pid = int(data.get("pid") or 0) if data else 0
        if not data or pid <= 0 or not process_alive(pid) or not is_our_worker(pid, settings.layout):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        found.append(
            Draining(
                pid=pid,
                version=str(data.get("version") or "?"),
                node=str(data.get("node") or "?"),
                unit=str(data["unit"]) if data.get("unit") else None,
                since=float(data.get("since") or 0.0),
                reap_at=float(data.get("reap_at") or 0.0),
                held=tuple(str(t) for t in data.get("held") or ()),
            )
        )
    return sorted(found, key=lambda d: d.since)


def mem_available_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def tree_rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its descendants (the worker and its pool)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += rss.get(current, 0)
        todo.extend(children.get(current, []))
    return total / (1024 * 1024)


def refusal(settings: Settings, worker: WorkerProcess, draining: list[Draining]) -> str | None:
    cap = int(settings.group.get("handoff_max_draining") or 1)
    if len(draining) >= cap:
        pids = ", ".join(str(d.pid) for d in draining)
        return f"{len(draining)} worker(s) already finishing here (pid {pids}; handoff_max_draining {cap})"
    floor = float(settings.group.get("handoff_min_free_mb") or 0)
    available = mem_available_mb()
    if available is not None:
        needed = tree_rss_mb(worker.pid)
        if available - needed < floor:
            return (
                f"{available:.0f} MB available; a second worker needs about {needed:.0f} MB and "
                f"handoff_min_free_mb keeps {floor:.0f} MB free"
            )
    return None


def _signal(pid: int, unit: str | None) -> None:
    if unit:
        run_command(["systemctl", "kill", "--kill-who=main", "--signal=SIGUSR2", unit], privileged=True, timeout=15)
    else:
        os.kill(pid, signal.SIGUSR2)


def ask(settings: Settings, pid: int, what: str, unit: str | None) -> None:
    write_atomic(settings.layout.control_file(pid), what + "\n")
    _signal(pid, unit)


def wait_state(
    settings: Settings, pid: int, states: tuple[str, ...], clock: Clock, within: float
) -> dict[str, object] | None:
    """The worker's answer once its state is one of `states` (None: no answer within `within`, or it is gone
    without one)."""
    until = clock.now() + within
    while True:
        data = read_json(settings.layout.handoff_state_file(pid))
        if data and data.get("pid") == pid and data.get("state") in states:
            return data
        if clock.now() >= until or not process_alive(pid):
            return None
        clock.sleep(0.05)


def _drop_in(settings: Settings, unit: str) -> Path:
    return settings.layout.on_instance(f"/run/systemd/system/{unit}.d/{DROP_IN}")


def _no_restart(settings: Settings, unit: str, on: bool) -> None:
    """The finishing unit's runtime drop-in Restart=no (on), or its removal (off); then daemon-reload."""
    path = _drop_in(settings, unit)
    if on:
        staged = settings.layout.run_dir / f".{DROP_IN}"
        write_atomic(staged, "[Service]\nRestart=no\n")
        run_command(["install", "-D", "-m", "0644", str(staged), str(path)], privileged=True, timeout=15)
        staged.unlink()
    else:
        run_command(["rm", "-f", str(path)], privileged=True, timeout=15)
    run_command(["systemctl", "daemon-reload"], privileged=True, timeout=60)


def current_unit(settings: Settings) -> str | None:
    with contextlib.suppress(OSError):
        text = settings.layout.unit_file.read_text().strip()
        return text or None
    return None


def hand_off(settings: Settings, worker: WorkerProcess, node: str, clock: Clock, log: Log) -> bool:
    """Ask the running worker to finish and exit by itself; False (and it goes on as before) when it does not
    confirm (a worker of a release without hand-off)."""
    layout = settings.layout
    step = clock.now()
    unit = current_unit(settings) if settings.process_manager == "systemd" else None
    if settings.process_manager == "systemd" and unit is None:
        log.step("hand-off", f"pid {worker.pid} runs in {settings.unit_name}, not a per-release unit: draining")
        return False
    ask(settings, worker.pid, "finish", unit)
    # An idle worker may be finished (and gone) before the first look: that is an answer too.
    answer = wait_state(settings, worker.pid, ("finishing", "finished"), clock, HANDOFF_CONFIRM_S)
    if answer is None:
        with contextlib.suppress(OSError):
            layout.control_file(worker.pid).unlink()
        log.step("hand-off", f"pid {worker.pid} did not confirm within {HANDOFF_CONFIRM_S:.0f}s", clock.now() - step)
        return False
    if unit:
        _no_restart(settings, unit, True)
        run_command(["systemctl", "disable", unit], privileged=True, timeout=60)
    held = [str(t) for t in answer.get("held") or []]  # type: ignore[attr-defined]
    since = float(str(answer.get("since") or time.time()))
    record = {
        "pid": worker.pid,
        "version": answer.get("version"),
        "node": node,
        "unit": unit,
        "since": since,
        "reap_at": since + settings.task_time_limit + REAP_MARGIN_S,
        "held": held,
    }
    write_atomic(layout.draining_dir / f"{worker.pid}.json", json.dumps(record) + "\n")
    for owned in (layout.pidfile, layout.ready_file, layout.first_task_file):
        remove_if_pid(owned, worker.pid)
    if unit:
        with contextlib.suppress(OSError):
            layout.unit_file.unlink()
    log.step(
        "hand-off",
        f"pid {worker.pid} ({node}, {answer.get('version')}) takes no new task and exits by itself after its "
        f"{len(held)} running: {summarize(held) if held else 'none'}",
        clock.now() - step,
    )
    return True


def resume_latest(settings: Settings, clock: Clock, log: Log) -> Draining | None:
    """The newest finishing worker takes work again and is the current worker once more (None: there is none)."""
    layout = settings.layout
    for candidate in reversed(draining_workers(settings)):
        try:
            ask(settings, candidate.pid, "resume", candidate.unit)
        except (HookError, OSError) as exc:
            log.step("resume", f"pid {candidate.pid}: {exc}")
            continue
        if wait_state(settings, candidate.pid, ("resumed",), clock, HANDOFF_CONFIRM_S) is None:
            log.step("resume", f"pid {candidate.pid} ({candidate.node}) did not confirm; it finishes and exits")
            continue
        if candidate.unit:
            _no_restart(settings, candidate.unit, False)
            run_command(["systemctl", "enable", candidate.unit], privileged=True, timeout=60)
            write_atomic(layout.unit_file, candidate.unit + "\n")
        else:
            write_atomic(layout.pidfile, f"{candidate.pid}\n")
        write_atomic(layout.node_file, candidate.node + "\n")
        write_atomic(layout.version_file, candidate.version + "\n")
        with contextlib.suppress(OSError):
            (layout.draining_dir / f"{candidate.pid}.json").unlink()
        log.step("resume", f"pid {candidate.pid} ({candidate.node}, {candidate.version}) takes work again")
        return candidate
    return None


def cold_stop(settings: Settings, draining: Draining) -> None:
    if draining.unit:
        with contextlib.suppress(HookError):
            run_command(["systemctl", "stop", "--no-block", draining.unit], privileged=True, timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.kill(draining.pid, signal.SIGQUIT)


def reap_overdue(settings: Settings, log: Log) -> list[int]:
    reaped = []
    for draining in draining_workers(settings):
        if time.time() >= draining.reap_at + OVERDUE_GRACE_S:
            cold_stop(settings, draining)
            log.step(
                "reap",
                f"pid {draining.pid} ({draining.node}) still finishing {time.time() - draining.since:.0f}s after its "
                "hand-off (past task_time_limit + margin): cold shutdown, its tasks go back to the broker",
            )
            reaped.append(draining.pid)
    until = time.monotonic() + REAP_WAIT_S
    while any(process_alive(pid) for pid in reaped) and time.monotonic() < until:
        time.sleep(0.05)
    return reaped


def finish_all(settings: Settings, deadline: float, clock: Clock, log: Log) -> None:
    """The instance is going away: every finishing worker ends by `deadline`, cold-shut-down if need be."""
    waiting = draining_workers(settings)
    if not waiting:
        return
    step = clock.now()
    log.step("finishing", f"{len(waiting)} handed-off worker(s) still running: waiting until the drain's end")
    while clock.now() < deadline and any(process_alive(d.pid) for d in waiting):
        clock.sleep(0.1)
    left = [d for d in waiting if process_alive(d.pid)]
    for draining in left:
        cold_stop(settings, draining)
    detail = f"cold shutdown of pid {', '.join(str(d.pid) for d in left)}" if left else "every one finished"
    log.step("finished", detail, clock.now() - step)


def terminating(settings: Settings) -> bool:
    """Auto Scaling is taking this instance out (IMDS target lifecycle state Terminated): a scale-in's
    ApplicationStop drains every worker rather than hand off. No metadata service: False."""
    environ = dict(settings.environ)
    with contextlib.suppress(HookError, OSError):
        environ.update(read_env_file(settings.env_file))
    try:
        state = Imds(endpoint_of(environ)).get("autoscaling/target-lifecycle-state")
    except ImdsUnavailable:
        return False
    return (state or "").strip() == "Terminated"


def make_live(settings: Settings, stamp: str) -> Path:
    """Copy releases/<version> to live/<version>.<stamp> (atomically: a temporary directory renamed)."""
    live = settings.layout.live
    live.mkdir(parents=True, exist_ok=True)
    target = live / f"{settings.version}.{stamp}"
    temporary = live / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    shutil.copytree(settings.release_dir, temporary, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    os.replace(temporary, target)
    return target


def prune_live(settings: Settings, keep: Path | None, log: Log) -> list[str]:
    """Remove the live/ copies no running worker of this app uses (and never `keep`)."""
    live = settings.layout.live
    if not live.is_dir():
        return []
    used = {str(keep.resolve())} if keep is not None else set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            root = worker_root(int(entry.name))
            if root is not None:
                used.add(str(root))
    removed = []
    for path in sorted(live.iterdir()):
        if path.is_dir() and not path.name.startswith(".") and str(path.resolve()) not in used:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    if removed:
        log.step("prune", f"removed {len(removed)} release copy(ies) no worker uses: {summarize(removed)}")
    return removed
