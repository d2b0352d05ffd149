"""The group's systemd unit on a production instance (DEPLOYTOOL_PROCESS_MANAGER unset).

The bundle carries deploytool/hooks/systemd/<group>.service, rendered by deploytool from
scripts/systemd/worker.service.j2 (ExecStart runs celery_worker.py GROUP from {install_dir}/current).
install_unit copies it to /etc/systemd/system/<app>-<group>.service, reloads systemd, enables and
restarts it (with `sudo -n` unless root); a missing unit is a HookError naming the file.
"""

from __future__ import annotations

from deploytool_instance.base import HookError
from deploytool_instance.processes import run_command
from deploytool_instance.settings import Settings


def install_unit(settings: Settings) -> None:
    source = settings.bundle_root / "deploytool" / "hooks" / "systemd" / f"{settings.group_name}.service"
    if not source.is_file():
        raise HookError(f"{source}: the group's systemd unit is missing from the bundle")
    target = settings.layout.on_instance(f"/etc/systemd/system/{settings.unit_name}")
    run_command(["install", "-D", "-m", "0644", str(source), str(target)], privileged=True)
    run_command(["systemctl", "daemon-reload"], privileged=True)
    run_command(["systemctl", "enable", settings.unit_name], privileged=True)
    run_command(["systemctl", "restart", settings.unit_name], privileged=True)
