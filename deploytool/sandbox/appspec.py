"""appspec.yml for EC2/On-Premises deployments (version 0.0, os linux), parsed and validated.

Contract: `parse_appspec(text, where=...)` returns a frozen AppSpec or raises AppSpecError with one
line naming the file, the key path and what is allowed. It accepts what the CodeDeploy agent
accepts (the agent's own messages where it has one) and, on purpose, also rejects two mistakes the
agent silently ignores: an unknown top-level key and an unknown lifecycle event name (a typo such
as `AfterInstal` would never run). Hooks of the load-balancer events are accepted and reported in
`warnings`: the sandbox has no load balancer, so they never run (as on the agent without one).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from deploytool.sandbox.errors import AppSpecError

FileExistsBehavior = Literal["DISALLOW", "OVERWRITE", "RETAIN"]
FILE_EXISTS_BEHAVIORS: tuple[str, ...] = ("DISALLOW", "OVERWRITE", "RETAIN")
DEFAULT_SCRIPT_TIMEOUT_S = 3600  # the agent's default, also the limit for all scripts of an event

SCRIPT_EVENTS = ("ApplicationStop", "BeforeInstall", "AfterInstall", "ApplicationStart", "ValidateService")
TRAFFIC_EVENTS = ("BeforeBlockTraffic", "AfterBlockTraffic", "BeforeAllowTraffic", "AfterAllowTraffic")
AGENT_EVENTS = ("DownloadBundle", "Install")  # run by the agent itself: no scripts allowed
TOP_KEYS = ("version", "os", "files", "permissions", "hooks", "file_exists_behavior")


@dataclass(frozen=True)
class FileMapping:
    source: str  # relative to the revision's root; "/" is the whole revision
    destination: str  # absolute path on the instance


@dataclass(frozen=True)
class Permission:
    object: str
    pattern: str = "**"
    excepts: tuple[str, ...] = ()
    types: tuple[str, ...] = ("file", "directory")
    owner: str | None = None
    group: str | None = None
    mode: int | None = None
    unsupported: tuple[str, ...] = ()  # acls / context: not applied in the sandbox


@dataclass(frozen=True)
class Script:
    location: str
    timeout_s: int = DEFAULT_SCRIPT_TIMEOUT_S
    runas: str | None = None


@dataclass(frozen=True)
class AppSpec:
    files: tuple[FileMapping, ...] = ()
    permissions: tuple[Permission, ...] = ()
    hooks: Mapping[str, tuple[Script, ...]] = field(default_factory=dict)
    file_exists_behavior: FileExistsBehavior | None = None
    warnings: tuple[str, ...] = ()

    def scripts(self, event: str) -> tuple[Script, ...]:
        return self.hooks.get(event, ())


def _hint(value: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Reader:
    def __init__(self, where: str) -> None:
        self.where = where

    def error(self, key: str, message: str) -> AppSpecError:
        return AppSpecError(f"{self.where}: {key}: {message}" if key else f"{self.where}: {message}")

    def mapping(self, key: str, value: object) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(key, f"got {value!r}; allowed: a mapping")
        return value

    def sequence(self, key: str, value: object) -> Sequence[Any]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error(key, f"got {value!r}; allowed: a list")
        return value

    def text(self, key: str, value: object, *, required: bool = True) -> str | None:
        if value is None and not required:
            return None
        if not isinstance(value, str | int | float) or isinstance(value, bool) or not str(value).strip():
            raise self.error(key, f"got {value!r}; allowed: a non-empty string")
        return str(value).strip()

    def strings(self, key: str, value: object) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else self.sequence(key, value)
        return tuple(str(self.text(f"{key}[{i}]", item)) for i, item in enumerate(items))


def parse_appspec(text: str, *, where: str = "appspec.yml") -> AppSpec:
    r = _Reader(where)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise r.error("", f"malformed YAML: {' '.join(str(exc).split())}") from exc
    root = r.mapping("", data)
    for key in root:
        if key not in TOP_KEYS:
            raise r.error(str(key), f"unknown key{_hint(str(key), TOP_KEYS)}; allowed: {', '.join(TOP_KEYS)}")
    version = root.get("version")
    if version != 0.0 or isinstance(version, bool | str):
        raise r.error("version", f"got {version!r}; the only AppSpec version for EC2/On-Premises is 0.0")
    if root.get("os") != "linux":
        raise r.error("os", f"got {root.get('os')!r}; allowed: linux (the sandbox runs Linux instances only)")
    files = tuple(_file(r, i, raw) for i, raw in enumerate(r.sequence("files", root.get("files"))))
    permissions = tuple(
        _permission(r, i, raw) for i, raw in enumerate(r.sequence("permissions", root.get("permissions")))
    )
    hooks, warnings = _hooks(r, root.get("hooks"))
    behavior = root.get("file_exists_behavior")
    if behavior is not None and behavior not in FILE_EXISTS_BEHAVIORS:
        raise r.error("file_exists_behavior", f"got {behavior!r}; allowed: {', '.join(FILE_EXISTS_BEHAVIORS)}")
    warnings += tuple(
        f"{where}: permissions[{i}]: {', '.join(p.unsupported)} not applied in the sandbox"
        for i, p in enumerate(permissions)
        if p.unsupported
    )
    return AppSpec(files, permissions, hooks, behavior, warnings)


def load_appspec(archive: Path) -> AppSpec:
    """The appspec of an unpacked revision (appspec.yml, or appspec.yaml as the agent also accepts)."""
    for name in ("appspec.yml", "appspec.yaml"):
        path = archive / name
        if path.is_file():
            return parse_appspec(path.read_text(encoding="utf-8", errors="replace"), where=name)
    raise AppSpecError(f"{archive}: the revision has no appspec.yml at its root")


def _file(r: _Reader, index: int, raw: object) -> FileMapping:
    key = f"files[{index}]"
    table = r.mapping(key, raw)
    for name in table:
        if name not in ("source", "destination"):
            raise r.error(f"{key}.{name}", "unknown key; allowed: source, destination")
    source = str(r.text(f"{key}.source", table.get("source")))
    destination = str(r.text(f"{key}.destination", table.get("destination")))
    if not destination.startswith("/"):
        raise r.error(f"{key}.destination", f"got {destination!r}; allowed: an absolute path such as /opt/app")
    if ".." in Path(source).parts or ".." in Path(destination).parts:
        raise r.error(key, "'..' is not allowed in source or destination")
    return FileMapping(source, destination)


def _mode(r: _Reader, key: str, value: object) -> int | None:
    if value is None:
        return None
    digits = str(value).strip()
    if not digits.isdigit() or len(digits) > 4 or any(d in "89" for d in digits):
        raise r.error(key, f"got {value!r}; allowed: up to four octal digits, such as 644 or 0755")
    return int(digits, 8)


def _permission(r: _Reader, index: int, raw: object) -> Permission:
    key = f"permissions[{index}]"
    table = r.mapping(key, raw)
    allowed = ("object", "pattern", "except", "type", "owner", "group", "mode", "acls", "context")
    for name in table:
        if name not in allowed:
            raise r.error(f"{key}.{name}", f"unknown key{_hint(str(name), allowed)}; allowed: {', '.join(allowed)}")
    if table.get("object") is None:
        raise r.error(f"{key}.object", "a permission listed in the application specification file has no object value")
    obj = str(r.text(f"{key}.object", table["object"]))
    if not obj.startswith("/"):
        raise r.error(f"{key}.object", f"got {obj!r}; allowed: an absolute path on the instance")
    types = r.strings(f"{key}.type", table["type"]) if "type" in table else ("file", "directory")
    for kind in types:
        if kind not in ("file", "directory"):
            raise r.error(f"{key}.type", f"got {kind!r}; allowed: file, directory")
    return Permission(
        object=obj,
        pattern=str(r.text(f"{key}.pattern", table.get("pattern", "**"))),
        excepts=r.strings(f"{key}.except", table.get("except")),
        types=types,
        owner=r.text(f"{key}.owner", table.get("owner"), required=False),
        group=r.text(f"{key}.group", table.get("group"), required=False),
        mode=_mode(r, f"{key}.mode", table.get("mode")),
        unsupported=tuple(name for name in ("acls", "context") if table.get(name) is not None),
    )


def _timeout(r: _Reader, key: str, value: object) -> int:
    if value is None:
        return DEFAULT_SCRIPT_TIMEOUT_S
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
        raise r.error(key, f"got {value!r}; allowed: a whole number of seconds")
    seconds = int(value)
    if seconds <= 0:
        raise r.error(key, f"got {value!r}; an invalid timeout value was provided for a script (must be > 0)")
    return seconds


def _hooks(r: _Reader, raw: object) -> tuple[dict[str, tuple[Script, ...]], tuple[str, ...]]:
    if raw is None:
        return {}, ()
    table = r.mapping("hooks", raw)
    known = SCRIPT_EVENTS + TRAFFIC_EVENTS
    hooks: dict[str, tuple[Script, ...]] = {}
    warnings: list[str] = []
    for event, scripts_raw in table.items():
        key = f"hooks.{event}"
        if event in AGENT_EVENTS:
            raise r.error(key, f"{event} is run by the agent itself and takes no scripts")
        if event not in known:
            raise r.error(key, f"unknown lifecycle event{_hint(str(event), known)}; allowed: {', '.join(known)}")
        scripts: list[Script] = []
        for i, script_raw in enumerate(r.sequence(key, scripts_raw)):
            skey = f"{key}[{i}]"
            script = r.mapping(skey, script_raw)
            for name in script:
                if name not in ("location", "timeout", "runas", "sudo"):
                    raise r.error(f"{skey}.{name}", "unknown key; allowed: location, timeout, runas")
            if script.get("location") is None:
                raise r.error(f"{skey}.location", "a script with no location value")
            location = str(r.text(f"{skey}.location", script["location"]))
            scripts.append(
                Script(
                    location=location,
                    timeout_s=_timeout(r, f"{skey}.timeout", script.get("timeout")),
                    runas=r.text(f"{skey}.runas", script.get("runas"), required=False),
                )
            )
        total = sum(s.timeout_s for s in scripts)
        if total > DEFAULT_SCRIPT_TIMEOUT_S:
            warnings.append(
                f"{r.where}: {key}: the scripts' timeouts add up to {total} s; the agent allows "
                f"{DEFAULT_SCRIPT_TIMEOUT_S} s for all scripts of one event"
            )
        if event in TRAFFIC_EVENTS and scripts:
            warnings.append(f"{r.where}: {key}: runs only with a load balancer; the sandbox has none")
        hooks[str(event)] = tuple(scripts)
    return hooks, tuple(warnings)
