"""This bundle's fleet settings narrowed to one group, read on the instance.

- bundle_root(): the bundle this package came in (<bundle>/deploytool/hooks/deploytool_instance/ here);
  <bundle>/deploytool/fleet.json holds {"app": {...}, "version": ..., "groups": {<name>: worker settings}}.
- load_settings picks the group named by DEPLOYMENT_GROUP_NAME (unknown or unset: a HookError, exit 2,
  naming the allowed groups). DEPLOYTOOL_PYTHON overrides app.python; DEPLOYTOOL_PROCESS_MANAGER=direct
  runs the worker without systemd.
- read_env_file reads app.env_file as systemd's EnvironmentFile does (CELERY_BROKER_URL, optional
  CELERY_BROKER_TRANSPORT_OPTIONS as JSON).
- The worker's node name is celery@<group>.<instance id>: DEPLOYTOOL_INSTANCE_ID, else the EC2 instance
  id from IMDSv2 (imds), else the hostname; `start` writes the name it used to run/node-name.
- fleet.json's "records" says where the interruption watcher records a notice (s3put: the artifacts bucket,
  prefix, region, KMS key, expected owner); bundles that predate it record nothing off the instance.
- fleet.json's "hooks" holds each hook's timeout as the appspec gives it (Settings.hook_budget: what a
  hook may spend, REPORT_MARGIN_S less, so it reports its own failure before the agent's SIGTERM).
- file_error(exc, settings) turns an OSError of the hooks' file set-up into one HookError line naming
  the path, the user the hook runs as and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pwd
import re
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploytool_instance.base import EXIT_BAD_INPUT, HookError
from deploytool_instance.imds import Imds, ImdsUnavailable, endpoint_of
from deploytool_instance.layout import Layout

# Each hook's timeout in the appspec deploytool renders (deploytool.render), for bundles whose fleet.json
# predates its "hooks" entry.
DEFAULT_HOOK_TIMEOUTS_S = {"ApplicationStart": 300.0, "ValidateService": 300.0}
REPORT_MARGIN_S = 10.0  # of a hook's timeout, kept to report a failure before the agent's SIGTERM


def bundle_root() -> Path:
    """<bundle>/deploytool/hooks/deploytool_instance/settings.py -> <bundle> (the archive or the release dir)."""
    return Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Settings:
    """This bundle's fleet.json, narrowed to one group, on this instance."""

    bundle_root: Path
    app: Mapping[str, Any]
    version: str
    group: Mapping[str, Any]
    layout: Layout
    environ: Mapping[str, str]
    hook_timeouts: Mapping[str, float] = field(default_factory=dict)
    records: Mapping[str, Any] = field(default_factory=dict)  # where the watcher records notices (s3put.Target)

    def hook_budget(self, event: str) -> float:
        """What the hook of `event` may spend: its appspec timeout less a margin (10 s, at most a tenth)."""
        timeout = float(self.hook_timeouts.get(event) or DEFAULT_HOOK_TIMEOUTS_S.get(event, 3600.0))
        return timeout - min(REPORT_MARGIN_S, timeout / 10)

    @property
    def group_name(self) -> str:
        return str(self.group["name"])

    @property
    def queues(self) -> list[str]:
        return [str(q) for q in self.group["queues"]]

    @property
    def drain_timeout(self) -> float:
        return float(self.group["drain_timeout"])

    @property
    def restart(self) -> str:
        return "handoff" if self.group.get("restart") == "handoff" else "drain"

    @property
    def task_time_limit(self) -> float:
        return float(self.group.get("task_time_limit") or 300)

    @property
    def release_dir(self) -> Path:
        return self.layout.releases / self.version

    @property
    def env_file(self) -> Path:
        return self.layout.on_instance(self.app.get("env_file") or f"/etc/{self.app['name']}/worker.env")

    @property
    def python(self) -> str:
        chosen = self.environ.get("DEPLOYTOOL_PYTHON") or self.app.get("python")
        return str(chosen or sys.executable)

    @property
    def process_manager(self) -> str:
        return "direct" if self.environ.get("DEPLOYTOOL_PROCESS_MANAGER") == "direct" else "systemd"

    @property
    def unit_name(self) -> str:
        return f"{self.app['name']}-{self.group_name}.service"

    @property
    def release_unit_template(self) -> str:
        """restart = "handoff": one unit per release copy, <app>-<group>@<live dir name>.service."""
        return f"{self.app['name']}-{self.group_name}@.service"

    def release_unit(self, instance: str) -> str:
        return f"{self.app['name']}-{self.group_name}@{instance}.service"

    @property
    def watcher_unit_name(self) -> str:
        return f"{self.app['name']}-{self.group_name}-watch.service"


def load_settings(bundle_root: Path, environ: Mapping[str, str], group_name: str | None = None) -> Settings:
    """Read <bundle>/deploytool/fleet.json and pick the group (DEPLOYMENT_GROUP_NAME unless given)."""
    fleet_file = bundle_root / "deploytool" / "fleet.json"
    try:
        fleet = json.loads(fleet_file.read_text())
    except FileNotFoundError:
        raise HookError(f"{fleet_file}: not found; is this hook inside a deploytool bundle?", EXIT_BAD_INPUT) from None
    except (OSError, ValueError) as exc:
        raise HookError(f"{fleet_file}: cannot read fleet settings: {exc}", EXIT_BAD_INPUT) from exc
    name = group_name or environ.get("DEPLOYMENT_GROUP_NAME", "")
    groups = fleet.get("groups") or {}
    if not name:
        raise HookError(
            f"DEPLOYMENT_GROUP_NAME is not set; allowed: one of the bundle's groups ({', '.join(groups)})",
            EXIT_BAD_INPUT,
        )
    if name not in groups:
        raise HookError(
            f"{fleet_file}: no group named {name!r} (DEPLOYMENT_GROUP_NAME); allowed: {', '.join(groups)}",
            EXIT_BAD_INPUT,
        )
    app = fleet["app"]
    return Settings(
        bundle_root=bundle_root,
        app=app,
        version=str(fleet["version"]),
        group=groups[name],
        layout=Layout.of(app, environ),
        environ=environ,
        hook_timeouts={str(k): float(v) for k, v in (fleet.get("hooks") or {}).items()},
        records=dict(fleet.get("records") or {}),
    )


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile reads them (comments, blank lines, quotes, `export`)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise HookError(f"{path}: environment file not found; it must set CELERY_BROKER_URL") from None
    except OSError as exc:
        raise HookError(
            f"{path}: cannot read the environment file as user {current_user()}: {exc.strerror or exc}; "
            "make it readable by that user (app.user), e.g. chgrp it to the user's group with mode 0640"
        ) from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise HookError(f"{path}:{number}: expected KEY=VALUE, got {raw!r}", EXIT_BAD_INPUT)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def instance_id(environ: Mapping[str, str], metadata_timeout: float = 1.0) -> str:
    """DEPLOYTOOL_INSTANCE_ID, else the EC2 instance id from IMDSv2 (DEPLOYTOOL_IMDS_ENDPOINT), else the hostname."""
    given = environ.get("DEPLOYTOOL_INSTANCE_ID")
    if given:
        return given
    try:
        found = Imds(endpoint_of(environ), metadata_timeout).get("instance-id")
    except ImdsUnavailable:
        found = None
    return found.strip() if found else socket.gethostname()


def node_name(group: str, instance: str) -> str:
    return f"celery@{group}.{instance}"


def running_node(settings: Settings) -> str:
    """The node name the running worker was started with (start writes it), else the computed one."""
    with contextlib.suppress(OSError):
        written = settings.layout.node_file.read_text().strip()
        if written:
            return written
    return node_name(settings.group_name, instance_id(settings.environ))


def current_user() -> str:
    """The user this process runs as (the appspec's runas, app.user, when set)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def file_error(exc: OSError, settings: Settings | None) -> HookError:
    """One line for an OSError of the hooks' file set-up: the path, the user, what to do."""
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    what = exc.strerror or str(exc)
    where = f"{paths}: " if paths else ""
    user = current_user()
    if exc.errno not in (errno.EACCES, errno.EPERM) or settings is None or os.geteuid() == 0:
        return HookError(f"{where}{what} (running as user {user})")
    install_dir = settings.layout.install_dir
    return HookError(
        f"{where}{what}: the hooks run as user {user} (app.user, appspec runas), which cannot write there; "
        f"{install_dir} (where they make run/, log/ and current) must belong to {user}: the appspec's permissions "
        f"give it to {user} when the first install creates it; for a directory made before (by root, or an older "
        f"bundle) run `chown {user}: {install_dir}` once on the instance (and `chown -R {user}:` its run/ and log/ "
        "if they exist)"
    )
