"""Stage 1, config: read and validate the fleet file (deploy.toml) into a frozen Fleet.

Contract: `load_fleet(path)` reads one TOML file and returns a `Fleet`, or raises `ConfigError`
whose message names the file, the key path (``groups[3].strategy``), the value and what is allowed.
No I/O beyond reading that file and looking at the paths it names (`check_paths`: the app source,
the local targets' roots); `parse_fleet` alone touches no disk. `Fleet.warnings` carries lint
findings that are not errors.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from deploytool.errors import ConfigError

# CodeDeploy allows 3600 s for all scripts of one lifecycle event; the drain keeps this much of it
# for the cold shutdown (SIGQUIT) and the worker's exit after its budget is spent.
LIFECYCLE_EVENT_LIMIT_S = 3600
DRAIN_RESERVE_S = 60
MAX_DRAIN_TIMEOUT_S = LIFECYCLE_EVENT_LIMIT_S - DRAIN_RESERVE_S
# visibility_timeout must exceed task_time_limit by this much, else a slow task is redelivered.
VISIBILITY_MARGIN_S = 120

NAMED_STRATEGIES = ("AllAtOnce", "HalfAtATime", "OneAtATime")
STRATEGY_TABLE_KEYS = ("min_healthy_hosts", "min_healthy_percent")

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_QUEUE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$"
_APP_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
# Instance paths end up in the appspec, shell hooks and systemd units: absolute, no spaces or quotes.
_ABS_PATH = r"^(/[A-Za-z0-9_.@+-]+)+$"


@dataclass(frozen=True)
class Strategy:
    """A group's deployment strategy with CodeDeploy's meaning.

    kind is one of AllAtOnce, HalfAtATime, OneAtATime, HostCount (min healthy hosts = value) or
    FleetPercent (min healthy percent = value, rounded up to hosts at the start).
    """

    kind: Literal["AllAtOnce", "HalfAtATime", "OneAtATime", "HostCount", "FleetPercent"]
    value: int = 0

    @property
    def label(self) -> str:
        if self.kind == "HostCount":
            return f"min {self.value} hosts"
        if self.kind == "FleetPercent":
            return f"min {self.value}%"
        return self.kind

    @property
    def deployment_config_name(self) -> str:
        """The CodeDeploy deployment config: a built-in one, or our deterministic custom name."""
        if self.kind == "HostCount":
            return f"deploytool-min-healthy-hosts-{self.value}"
        if self.kind == "FleetPercent":
            return f"deploytool-min-healthy-percent-{self.value}"
        return f"CodeDeployDefault.{self.kind}"

    def as_toml_value(self) -> str | dict[str, int]:
        if self.kind == "HostCount":
            return {"min_healthy_hosts": self.value}
        if self.kind == "FleetPercent":
            return {"min_healthy_percent": self.value}
        return self.kind


def parse_strategy(value: object) -> Strategy:
    """Parse a strategy as written in the fleet file; ValueError says what is allowed."""
    allowed = (
        "allowed: AllAtOnce, HalfAtATime, OneAtATime, {min_healthy_hosts = N} (N >= 0) "
        "or {min_healthy_percent = P} (0 <= P < 100)"
    )
    if isinstance(value, Strategy):
        return value
    if isinstance(value, str):
        if value in NAMED_STRATEGIES:
            return Strategy(kind=value)  # type: ignore[arg-type]
        close = difflib.get_close_matches(value, NAMED_STRATEGIES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown strategy {value!r}{hint}; {allowed}")
    if isinstance(value, Mapping):
        keys = list(value)
        if len(keys) != 1 or keys[0] not in STRATEGY_TABLE_KEYS:
            raise ValueError(f"strategy table {dict(value)!r} must have exactly one key; {allowed}")
        key, number = keys[0], value[keys[0]]
        if not isinstance(number, int) or isinstance(number, bool):
            raise ValueError(f"{key} must be a whole number, got {number!r}; {allowed}")
        if key == "min_healthy_hosts":
            if number < 0:
                raise ValueError(f"min_healthy_hosts must be >= 0, got {number}")
            return Strategy(kind="HostCount", value=number)
        if not 0 <= number < 100:
            raise ValueError(
                f"min_healthy_percent must be >= 0 and < 100, got {number} "
                "(CodeDeploy needs at least one instance it may take out of service)"
            )
        return Strategy(kind="FleetPercent", value=number)
    raise ValueError(f"strategy must be a string or a table, got {value!r}; {allowed}")


ROOT_ALLOWED = (
    "allowed: a relative path inside the fleet file's directory, not that directory itself "
    "(e.g. '.sandbox'; the sandbox deletes and re-creates its subdirectories)"
)


def check_root(value: str) -> str:
    """A local target's root as written: relative, below the fleet file's directory (ValueError if not).
    Where it leads through symlinks is checked against the disk by check_paths."""
    parts = value.replace("\\", "/").split("/")
    if (
        not value.strip()
        or not value.isprintable()  # no NUL, line breaks or other control characters
        or value.startswith(("/", "~"))
        or ".." in parts
        or os.path.normpath(value) == "."
    ):
        raise ValueError(f"got {value!r}; {ROOT_ALLOWED}")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class App(_Model):
    name: Annotated[str, Field(pattern=_APP_NAME)]
    source: Annotated[str, Field(min_length=1)] = "app"
    celery_app: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?$")]
    install_dir: Annotated[str, Field(pattern=_ABS_PATH)] | None = None
    python: Annotated[str, Field(pattern=_ABS_PATH)] | None = None
    env_file: Annotated[str, Field(pattern=_ABS_PATH)] | None = None
    user: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] | None = None

    @property
    def install_path(self) -> str:
        """Where releases live on an instance: <install_path>/releases/<version>, current -> it."""
        return self.install_dir or f"/opt/{self.name}"

    @property
    def python_path(self) -> str:
        """The app's own Python on the instance (hooks run with it, not with deploytool)."""
        return self.python or f"{self.install_path}/venv/bin/python"

    @property
    def env_path(self) -> str:
        """The instance's environment file with CELERY_BROKER_URL and friends (not shipped)."""
        return self.env_file or f"/etc/{self.name}/worker.env"


class Artifacts(_Model):
    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")] = "deploytool"
    kms_key_id: Annotated[str, Field(min_length=1)] | None = None
    expected_bucket_owner: Annotated[str, Field(pattern=r"^\d{12}$")] | None = None


class Aws(_Model):
    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")] = "us-east-1"
    profile: Annotated[str, Field(min_length=1)] | None = None


class GroupSettings(_Model):
    """Worker and rollout settings a group may set, or inherit from [defaults]."""

    queues: Annotated[list[Annotated[str, Field(pattern=_QUEUE)]], Field(min_length=1)] | None = None
    concurrency: Annotated[int, Field(ge=1, le=512)] = 2
    prefetch_multiplier: Annotated[int, Field(ge=1, le=1024)] = 1
    acks_late: bool = True
    max_tasks_per_child: Annotated[int, Field(ge=1)] | None = None
    autoscale: Annotated[list[Annotated[int, Field(ge=0, le=512)]], Field(min_length=2, max_length=2)] | None = None
    task_time_limit: Annotated[int, Field(ge=1, le=86400)] = 300
    task_soft_time_limit: Annotated[int, Field(ge=1, le=86400)] | None = None
    visibility_timeout: Annotated[int, Field(ge=1, le=43200)] = 3600
    drain_timeout: Annotated[int, Field(ge=1)] = 600
    strategy: Strategy = Strategy(kind="OneAtATime")
    wave: Annotated[int, Field(ge=0, le=1000)] = 1
    suspend_terminate: bool = False
    alarms: Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=10)] = []

    @field_validator("strategy", mode="before")
    @classmethod
    def _strategy(cls, value: object) -> Strategy:
        return parse_strategy(value)


class Group(GroupSettings):
    name: Annotated[str, Field(pattern=_NAME)]
    asg: Annotated[str, Field(min_length=1, max_length=255)]

    @property
    def autoscale_max_min(self) -> tuple[int, int] | None:
        return (self.autoscale[0], self.autoscale[1]) if self.autoscale else None

    def worker_settings(self) -> dict[str, Any]:
        """The settings the hook scripts need on the instance (shipped in the bundle)."""
        return {
            "name": self.name,
            "asg": self.asg,
            "queues": list(self.queues or []),
            "concurrency": self.concurrency,
            "prefetch_multiplier": self.prefetch_multiplier,
            "acks_late": self.acks_late,
            "max_tasks_per_child": self.max_tasks_per_child,
            "autoscale": list(self.autoscale) if self.autoscale else None,
            "task_time_limit": self.task_time_limit,
            "task_soft_time_limit": self.task_soft_time_limit,
            "visibility_timeout": self.visibility_timeout,
            "drain_timeout": self.drain_timeout,
        }


class LocalTarget(_Model):
    backend: Literal["local"]
    instances_per_group: Annotated[int, Field(ge=1, le=20)] = 2
    instances: dict[str, Annotated[int, Field(ge=1, le=20)]] = {}
    broker: Annotated[str, Field(pattern=r"^(sqs|(redis|rediss|amqp|amqps|pyamqp|sqs)://.+)$")] = "sqs"
    root: str = ".sandbox"

    @field_validator("root")
    @classmethod
    def _root(cls, value: str) -> str:
        return check_root(value)

    def instance_count(self, group: str) -> int:
        return self.instances.get(group, self.instances_per_group)


class CodeDeployTarget(_Model):
    backend: Literal["codedeploy"]
    application: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+-]{1,100}$")] | None = None
    service_role_arn: Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")]
    outdated_instances: Literal["UPDATE", "IGNORE"] = "UPDATE"
    termination_hook: bool = True


Target = LocalTarget | CodeDeployTarget

_TOP_KEYS = ("app", "artifacts", "aws", "defaults", "groups", "targets", "default_target")
_TARGET_MODELS: dict[str, type[_Model]] = {"local": LocalTarget, "codedeploy": CodeDeployTarget}


@dataclass(frozen=True)
class Fleet:
    """A validated fleet file."""

    path: Path
    app: App
    artifacts: Artifacts
    aws: Aws
    groups: tuple[Group, ...]
    targets: Mapping[str, Target]
    default_target: str
    warnings: tuple[str, ...] = ()

    @property
    def root(self) -> Path:
        """The directory of the fleet file; relative paths in it are relative to this."""
        return self.path.parent

    @property
    def source_dir(self) -> Path:
        return (self.root / self.app.source).resolve()

    def group(self, name: str) -> Group:
        for group in self.groups:
            if group.name == name:
                return group
        raise ConfigError(
            f"no group named {name!r}; groups are: {', '.join(g.name for g in self.groups)}",
            path=str(self.path),
        )

    def select_groups(self, names: Sequence[str] | None) -> tuple[Group, ...]:
        """The groups named (in fleet order), or all of them; unknown names are an error."""
        if not names:
            return self.groups
        wanted = set(names)
        for name in names:
            self.group(name)
        return tuple(g for g in self.groups if g.name in wanted)

    def target(self, name: str | None = None) -> tuple[str, Target]:
        chosen = name or self.default_target
        if chosen not in self.targets:
            raise ConfigError(
                f"no target named {chosen!r}; targets are: {', '.join(self.targets)}", path=str(self.path)
            )
        return chosen, self.targets[chosen]

    def waves(self, groups: Sequence[Group] | None = None) -> list[tuple[int, tuple[Group, ...]]]:
        """Groups by wave, lowest wave first; fleet order inside a wave."""
        chosen = self.groups if groups is None else groups
        numbers = sorted({g.wave for g in chosen})
        return [(n, tuple(g for g in chosen if g.wave == n)) for n in numbers]


def key_path(loc: Sequence[str | int]) -> str:
    """('groups', 3, 'strategy') -> 'groups[3].strategy'. A key that is not a bare TOML key (letters,
    digits, '_' and '-') is quoted as TOML does, so the path stays on one line: targets."a b".root."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part) if re.fullmatch(r"[A-Za-z0-9_-]+", str(part)) else _quoted(str(part))
            out += f".{text}" if out else text
    return out


def _quoted(key: str) -> str:
    """A TOML quoted key; what is not printable (line breaks too) as a \\u or \\U escape."""
    out = ""
    for char in key:
        if char in '"\\':
            out += "\\" + char
        elif char in "\n\t\r":
            out += {"\n": "\\n", "\t": "\\t", "\r": "\\r"}[char]
        elif char.isprintable():
            out += char
        else:
            out += f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"
    return f'"{out}"'


def _unknown_key_error(path: str, where: str, key: str, allowed: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    full = f"{where}.{key_path([key])}" if where else key_path([key])
    return ConfigError(f"unknown key{hint}; allowed: {', '.join(allowed)}", path=path, key=full)


def _check_keys(path: str, where: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for key in data:
        if key not in allowed:
            raise _unknown_key_error(path, where, key, allowed)


def _fields(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


_TYPE_WORDS = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
}


# What the patterns above mean, for error messages (the regex is shown for any other).
_PATTERN_WORDS = {
    _APP_NAME: "lowercase letters, digits and '-' (at most 63, starting with a letter or digit)",
    _ABS_PATH: "an absolute path of letters, digits and _ . @ + - (no spaces, no trailing '/')",
    _NAME: "letters, digits, '_', '.' and '-' (at most 100, starting with a letter or digit)",
    _QUEUE: "letters, digits, '_', '.' and '-' (at most 80, starting with a letter or digit)",
    r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?$": "a Celery app path like 'package.module:app'",
    r"^[a-z_][a-z0-9_-]{0,31}$": "a Linux user name",
    r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$": "an S3 bucket name (3-63 lowercase letters, digits, '.' and '-')",
    r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$": "key parts of letters, digits, '_', '.' and '-' joined by '/'",
    r"^\d{12}$": "a 12-digit AWS account id",
    r"^[a-z]{2}(-[a-z]+)+-\d$": "an AWS region like 'us-east-1'",
    r"^(sqs|(redis|rediss|amqp|amqps|pyamqp|sqs)://.+)$": "'sqs' or a redis://, rediss://, amqp:// or sqs:// URL",
    r"^[A-Za-z0-9_.+-]{1,100}$": "a CodeDeploy application name (1-100 letters, digits, _ . + -)",
    r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$": "an IAM role ARN like 'arn:aws:iam::123456789012:role/Name'",
}


def _describe(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind in _TYPE_WORDS:
        return f"got {value!r}; allowed: {_TYPE_WORDS[kind]}"
    if kind == "missing":
        return "is required"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern"))
        return f"got {value!r}; allowed: {_PATTERN_WORDS.get(pattern, 'text matching ' + pattern)}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        bound = {
            "greater_than_equal": ">=",
            "less_than_equal": "<=",
            "greater_than": ">",
            "less_than": "<",
        }[kind]
        limit = next(iter(ctx.values()), "?")
        return f"got {value!r}; allowed: a number {bound} {limit}"
    if kind == "too_short":
        return f"got {value!r}; allowed: at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"got {value!r}; allowed: at most {ctx.get('max_length')} item(s)"
    if kind == "literal_error":
        return f"got {value!r}; allowed: {ctx.get('expected')}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return f"got {value!r}; {error['msg']}"


def _validate(
    model: type[_Model], data: Mapping[str, Any], path: str, where: Sequence[str | int], origin: Any = None
) -> Any:
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = list(first["loc"])
        if origin is not None and loc and isinstance(loc[0], str):
            where = origin(loc[0])
        raise ConfigError(_describe(first), path=path, key=key_path([*where, *loc])) from exc


def _require_table(path: str, key: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"got {value!r}; allowed: a table", path=path, key=key)
    return value


def _validate_table(model: type[_Model], path: str, key: str, value: object) -> Any:
    """A top-level table: unknown keys (with a did-you-mean) first, then the model's rules."""
    table = _require_table(path, key, value)
    _check_keys(path, key, table, _fields(model))
    return _validate(model, table, path, [key])


def load_fleet(path: str | Path) -> Fleet:
    """Read and validate a fleet file. Raises ConfigError with one clear line."""
    file = Path(path)
    shown = str(path)
    try:
        raw_bytes = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError("fleet file not found (pass --fleet PATH or create deploy.toml)", path=shown) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a fleet file", path=shown) from None
    except OSError as exc:
        raise ConfigError(f"cannot read fleet file: {exc.strerror}", path=shown) from exc
    try:
        data = tomllib.loads(raw_bytes.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", path=shown) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"malformed TOML: {exc}", path=shown) from exc
    fleet = parse_fleet(data, file.resolve(), shown)
    check_paths(fleet, shown)
    return fleet


def _resolved(base: Path, value: str) -> Path | None:
    """`value` below `base`, symlinks followed; None when the OS cannot make a path of it."""
    try:
        return (base / value).resolve()
    except (OSError, ValueError, RuntimeError):
        return None


def check_paths(fleet: Fleet, shown: str) -> None:
    """The fleet's paths against the disk (ConfigError if not as allowed).

    [app].source must be an existing directory inside the fleet file's directory as written (that
    directory itself is allowed; a symlink there may lead elsewhere, as the sandbox run's work tree
    allows): bundles and the sandbox run take the app from there. A local
    target's root must lead (through symlinks too) to a place inside that directory, not the directory
    itself, and not to a file.
    """
    base = fleet.root
    source = _resolved(base, fleet.app.source)
    problem = None
    if source is None or not Path(os.path.normpath(base / fleet.app.source)).is_relative_to(base):
        problem = f"is outside the fleet file's directory {base}"
    elif not source.is_dir():
        problem = "does not exist" if not os.path.lexists(source) else "is not a directory"
    if problem:
        raise ConfigError(
            f"got {fleet.app.source!r}, which {problem}; allowed: the app's directory, relative to the fleet "
            "file's directory and inside it",
            path=shown,
            key="app.source",
        )
    for name, target in fleet.targets.items():
        if not isinstance(target, LocalTarget):
            continue
        root = _resolved(base, target.root)
        if root is None or root == base or not root.is_relative_to(base):
            where = f"it leads to {root}" if root is not None else "it is no usable path"
            raise ConfigError(
                f"got {target.root!r}, but {where}; {ROOT_ALLOWED}", path=shown, key=key_path(["targets", name, "root"])
            )
        if os.path.lexists(root) and not root.is_dir():
            raise ConfigError(
                f"got {target.root!r}, which is a file, not a directory; {ROOT_ALLOWED}",
                path=shown,
                key=key_path(["targets", name, "root"]),
            )


def parse_fleet(data: Mapping[str, Any], file: Path, shown: str | None = None) -> Fleet:
    """Validate already-parsed fleet data (the TOML document as a dict)."""
    path = shown or str(file)
    _check_keys(path, "", data, _TOP_KEYS)
    for required in ("app", "artifacts", "groups", "targets"):
        if required not in data:
            raise ConfigError("is required", path=path, key=required)

    app = _validate_table(App, path, "app", data["app"])
    artifacts = _validate_table(Artifacts, path, "artifacts", data["artifacts"])
    aws = _validate_table(Aws, path, "aws", data.get("aws", {}))

    defaults_raw = _require_table(path, "defaults", data.get("defaults", {}))
    settings_fields = _fields(GroupSettings)
    _check_keys(path, "defaults", defaults_raw, settings_fields)
    _check_strategy_keys(path, "defaults", defaults_raw)
    _validate(GroupSettings, defaults_raw, path, ["defaults"])

    groups_raw = data["groups"]
    if not isinstance(groups_raw, list) or not groups_raw:
        raise ConfigError(f"got {groups_raw!r}; allowed: at least one [[groups]] table", path=path, key="groups")
    groups: list[Group] = []
    group_fields = ["name", "asg", *settings_fields]
    for index, raw in enumerate(groups_raw):
        where = f"groups[{index}]"
        table = _require_table(path, where, raw)
        _check_keys(path, where, table, group_fields)
        _check_strategy_keys(path, where, table)
        merged = {**defaults_raw, **table}

        def origin(key: str, table: Mapping[str, Any] = table, index: int = index) -> list[str | int]:
            return ["defaults"] if key in defaults_raw and key not in table else ["groups", index]

        group = _validate(Group, merged, path, ["groups", index], origin)
        _lint_group(path, index, group, table, defaults_raw)
        groups.append(group)
    _check_unique(path, groups)

    targets_raw = _require_table(path, "targets", data["targets"])
    if not targets_raw:
        raise ConfigError("allowed: at least one target table, e.g. [targets.sandbox]", path=path, key="targets")
    targets: dict[str, Target] = {}
    names = {g.name for g in groups}
    for name, raw in targets_raw.items():
        where = key_path(["targets", name])
        if not valid_name(name):  # it goes into release records, S3 keys and --target
            raise ConfigError(f"got {name!r} as a target name; allowed: {_PATTERN_WORDS[_NAME]}", path=path, key=where)
        table = _require_table(path, where, raw)
        backend = table.get("backend")
        if not isinstance(backend, str) or backend not in _TARGET_MODELS:  # a list or table is no key
            raise ConfigError(
                f"got {backend!r}; allowed: {', '.join(repr(b) for b in _TARGET_MODELS)}",
                path=path,
                key=f"{where}.backend",
            )
        model = _TARGET_MODELS[backend]
        _check_keys(path, where, table, _fields(model))
        target = _validate(model, table, path, ["targets", name])
        if isinstance(target, LocalTarget):
            for group_name in target.instances:
                if group_name not in names:
                    raise ConfigError(
                        f"no group named {group_name!r}; groups are: {', '.join(sorted(names))}",
                        path=path,
                        key=key_path(["targets", name, "instances", group_name]),
                    )
            _check_min_healthy(path, name, target, groups, groups_raw, defaults_raw)
        targets[name] = target

    default_target = data.get("default_target")
    if default_target is None:
        default_target = "sandbox" if "sandbox" in targets else next(iter(targets))
    elif not isinstance(default_target, str) or default_target not in targets:
        raise ConfigError(
            f"got {default_target!r}; allowed: one of the targets ({', '.join(targets)})",
            path=path,
            key="default_target",
        )

    warnings = tuple(
        f"{path}: groups[{i}].drain_timeout: {g.drain_timeout} s is shorter than task_time_limit "
        f"{g.task_time_limit} s ({g.name}): tasks running longer than the drain are interrupted and re-run"
        for i, g in enumerate(groups)
        if g.drain_timeout < g.task_time_limit
    )
    return Fleet(
        path=file,
        app=app,
        artifacts=artifacts,
        aws=aws,
        groups=tuple(groups),
        targets=targets,
        default_target=default_target,
        warnings=warnings,
    )


def _lint_group(path: str, index: int, group: Group, table: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """Cross-field rules from production Celery practice. An error names where the value was set:
    the group, or [defaults] when the group inherits it from there."""

    inherited = f" (inherited by groups[{index}], {group.name!r})"

    def key(field: str) -> str:
        return f"defaults.{field}" if field in defaults and field not in table else f"groups[{index}].{field}"

    def raise_(field: str, message: str) -> NoReturn:
        suffix = inherited if key(field).startswith("defaults.") else ""
        raise ConfigError(message + suffix, path=path, key=key(field))

    if not group.queues:
        raise_("queues", "is required: the queues this group's workers consume")
    if len(set(group.queues)) != len(group.queues):
        raise_("queues", f"got {group.queues!r}; a queue may be listed once")
    if group.visibility_timeout <= group.task_time_limit + VISIBILITY_MARGIN_S:
        raise_(
            "visibility_timeout",
            f"got {group.visibility_timeout}; must exceed task_time_limit + {VISIBILITY_MARGIN_S} s "
            f"= {group.task_time_limit + VISIBILITY_MARGIN_S} (else the broker redelivers running tasks "
            "and they run twice)",
        )
    if group.task_soft_time_limit is not None and group.task_soft_time_limit >= group.task_time_limit:
        raise_(
            "task_soft_time_limit",
            f"got {group.task_soft_time_limit}; must be below task_time_limit ({group.task_time_limit})",
        )
    if group.drain_timeout > MAX_DRAIN_TIMEOUT_S:
        raise_(
            "drain_timeout",
            f"got {group.drain_timeout}; allowed: at most {MAX_DRAIN_TIMEOUT_S} s (CodeDeploy gives a lifecycle "
            f"event {LIFECYCLE_EVENT_LIMIT_S} s; {DRAIN_RESERVE_S} s are kept for the cold shutdown)",
        )
    if group.autoscale is not None:
        high, low = group.autoscale
        if high < 1 or low > high:
            raise_("autoscale", f"got {group.autoscale!r}; allowed: [max, min] with max >= 1 and min <= max")


def _check_strategy_keys(path: str, where: str, table: Mapping[str, Any]) -> None:
    """A strategy table's keys, with a did-you-mean like every other table (before the model sees it)."""
    strategy = table.get("strategy")
    if isinstance(strategy, Mapping):
        _check_keys(path, f"{where}.strategy", strategy, STRATEGY_TABLE_KEYS)


def _check_min_healthy(
    path: str,
    name: str,
    target: LocalTarget,
    groups: Sequence[Group],
    tables: Sequence[Mapping[str, Any]],
    defaults: Mapping[str, Any],
) -> None:
    """On a local target the group sizes are known: a minimum of healthy hosts not below a group's
    size fails every deployment at once (CodeDeploy's rule, deploytool.strategy), so it is an error here."""
    from deploytool.strategy import health_policy  # it imports this module

    for index, group in enumerate(groups):
        size = target.instance_count(group.name)
        policy = health_policy(group.strategy, size)
        if policy.error is None:
            continue  # AllAtOnce, HalfAtATime and OneAtATime fit any size
        minimum = policy.min_healthy
        sized_by = (
            ["targets", name, "instances", group.name]
            if group.name in target.instances
            else ["targets", name, "instances_per_group"]
        )
        inherited = "strategy" in defaults and "strategy" not in tables[index]
        raise ConfigError(
            f"{group.strategy.label} needs {minimum} healthy host(s), not below the {size} instance(s) of group "
            f"{group.name!r} on target {name!r} ({key_path(sized_by)}): CodeDeploy fails every deployment of it at "
            f"once; allowed: a minimum below {size}, HalfAtATime or OneAtATime",
            path=path,
            key="defaults.strategy" if inherited else key_path(["groups", index, "strategy"]),
        )


def _check_unique(path: str, groups: Sequence[Group]) -> None:
    seen_names: dict[str, int] = {}
    seen_asgs: dict[str, int] = {}
    for index, group in enumerate(groups):
        if group.name in seen_names:
            raise ConfigError(
                f"duplicate group name {group.name!r} (also groups[{seen_names[group.name]}])",
                path=path,
                key=f"groups[{index}].name",
            )
        if group.asg in seen_asgs:
            raise ConfigError(
                f"ASG {group.asg!r} already belongs to groups[{seen_asgs[group.asg]}]; CodeDeploy needs one "
                "deployment group per ASG (two cause lifecycle hook timeouts)",
                path=path,
                key=f"groups[{index}].asg",
            )
        seen_names[group.name] = index
        seen_asgs[group.asg] = index


def valid_name(value: str) -> bool:
    return re.fullmatch(_NAME, value) is not None
