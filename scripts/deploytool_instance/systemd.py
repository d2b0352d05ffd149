"""The group's systemd unit on a production instance (DEPLOYTOOL_PROCESS_MANAGER unset).

The bundle carries deploytool/hooks/systemd/<group>.service, rendered by deploytool from
scripts/systemd/worker.service.j2 (ExecStart runs celery_worker.py GROUP from {install_dir}/current).
install_unit copies it to /etc/systemd/system/<app>-<group>.service, reloads systemd, enables and
restarts it (with `sudo -n` unless root), each command within 60 s and all of them before `deadline`
(monotonic: the hook's budget); a missing unit, a failing or a hanging command is a HookError naming it.
With restart = "handoff", install_release_unit installs deploytool/hooks/systemd/<group>@.service (from
scripts/systemd/worker@.service.j2) as <app>-<group>@.service and starts one instance per release copy
(live/<name>), so the worker finishing and the new one never share a unit.
`watcher=True` does the same for the interruption watcher's unit, deploytool/hooks/systemd/<group>-watch.service
(from scripts/systemd/watcher.service.j2), installed as <app>-<group>-watch.service.
"""

from __future__ import annotations

from pathlib import Path

from deploytool_instance.base import Clock, HookError
from deploytool_instance.processes import run_command
from deploytool_instance.settings import Settings

COMMAND_TIMEOUT_S = 60.0


def unit_source(settings: Settings, suffix: str = "") -> Path:
    """The bundle's rendered unit: <group>.service (the worker) or <group>-watch.service (the watcher)."""
    return settings.bundle_root / "deploytool" / "hooks" / "systemd" / f"{settings.group_name}{suffix}.service"


def install_release_unit(settings: Settings, instance: str, deadline: float, clock: Clock) -> str:
    """restart = "handoff": install the group's template unit (<group>@.service in the bundle) and enable and start
    its instance for this release copy, beside a unit still finishing; the group's plain unit, from a release
    that drained, is disabled so a reboot does not start both. Returns the instance's unit name."""
    source = unit_source(settings, "@")
    if not source.is_file():
        raise HookError(f"{source}: the group's per-release systemd unit is missing from the bundle")
    template = settings.release_unit_template
    unit = settings.release_unit(instance)
    target = settings.layout.on_instance(f"/etc/systemd/system/{template}")

    def run(argv: list[str]) -> None:
        run_command(argv, privileged=True, timeout=max(1.0, min(COMMAND_TIMEOUT_S, deadline - clock.now())))

    run(["install", "-D", "-m", "0644", str(source), str(target)])
    run(["systemctl", "daemon-reload"])
    if settings.layout.on_instance(f"/etc/systemd/system/{settings.unit_name}").is_file():
        run(["systemctl", "disable", settings.unit_name])
    run(["systemctl", "enable", unit])
    run(["systemctl", "start", unit])
    return unit


def install_unit(settings: Settings, deadline: float, clock: Clock, *, watcher: bool = False) -> None:
    source = unit_source(settings, "-watch" if watcher else "")
    unit = settings.watcher_unit_name if watcher else settings.unit_name
    if not source.is_file():
        raise HookError(f"{source}: the group's systemd unit is missing from the bundle")
    target = settings.layout.on_instance(f"/etc/systemd/system/{unit}")
    for argv in (
        ["install", "-D", "-m", "0644", str(source), str(target)],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", unit],
        ["systemctl", "restart", unit],
    ):
        run_command(argv, privileged=True, timeout=max(1.0, min(COMMAND_TIMEOUT_S, deadline - clock.now())))
