"""Read the fleet file and validate it into a Fleet: the document's structure, table by table.

Contract: `load_fleet(path)` reads one TOML file (ConfigError for a missing, unreadable, non-UTF-8 or
malformed one), validates it with `parse_fleet` and checks its paths against the disk
(deploytool.config.paths). `parse_fleet` touches no disk: top-level keys, each table through its model
(deploytool.config.messages), the cross-field rules (deploytool.config.checks), target names and the
default target; `Fleet.warnings` gets the lint findings that are not errors.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deploytool.config.checks import check_min_healthy, check_strategy_keys, check_unique, lint_group
from deploytool.config.messages import check_keys, field_names, key_path, require_table, validate, validate_table
from deploytool.config.models import (
    NAME_PATTERN,
    PATTERN_WORDS,
    App,
    Artifacts,
    Aws,
    CodeDeployTarget,
    Fleet,
    Group,
    GroupSettings,
    LocalTarget,
    Model,
    Rollout,
    Target,
    valid_name,
)
from deploytool.config.paths import check_paths
from deploytool.errors import ConfigError

_TOP_KEYS = ("app", "artifacts", "aws", "rollout", "defaults", "groups", "targets", "default_target")
_TARGET_MODELS: dict[str, type[Model]] = {"local": LocalTarget, "codedeploy": CodeDeployTarget}


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


def parse_fleet(data: Mapping[str, Any], file: Path, shown: str | None = None) -> Fleet:
    """Validate already-parsed fleet data (the TOML document as a dict)."""
    path = shown or str(file)
    check_keys(path, "", data, _TOP_KEYS)
    for required in ("app", "artifacts", "groups", "targets"):
        if required not in data:
            raise ConfigError("is required", path=path, key=required)

    app = validate_table(App, path, "app", data["app"])
    artifacts = validate_table(Artifacts, path, "artifacts", data["artifacts"])
    aws = validate_table(Aws, path, "aws", data.get("aws", {}))
    rollout = validate_table(Rollout, path, "rollout", data.get("rollout", {}))

    defaults_raw = require_table(path, "defaults", data.get("defaults", {}))
    settings_fields = field_names(GroupSettings)
    check_keys(path, "defaults", defaults_raw, settings_fields)
    check_strategy_keys(path, "defaults", defaults_raw)
    validate(GroupSettings, defaults_raw, path, ["defaults"])

    groups_raw = data["groups"]
    if not isinstance(groups_raw, list) or not groups_raw:
        raise ConfigError(f"got {groups_raw!r}; allowed: at least one [[groups]] table", path=path, key="groups")
    groups: list[Group] = []
    group_fields = ["name", "asg", *settings_fields]
    for index, raw in enumerate(groups_raw):
        where = f"groups[{index}]"
        table = require_table(path, where, raw)
        check_keys(path, where, table, group_fields)
        check_strategy_keys(path, where, table)
        merged = {**defaults_raw, **table}

        def origin(key: str, table: Mapping[str, Any] = table, index: int = index) -> list[str | int]:
            return ["defaults"] if key in defaults_raw and key not in table else ["groups", index]

        group = validate(Group, merged, path, ["groups", index], origin)
        lint_group(path, index, group, table, defaults_raw)
        groups.append(group)
    check_unique(path, groups)

    targets_raw = require_table(path, "targets", data["targets"])
    if not targets_raw:
        raise ConfigError("allowed: at least one target table, e.g. [targets.sandbox]", path=path, key="targets")
    targets: dict[str, Target] = {}
    names = {g.name for g in groups}
    for name, raw in targets_raw.items():
        where = key_path(["targets", name])
        if not valid_name(name):  # it goes into release records, S3 keys and --target
            raise ConfigError(
                f"got {name!r} as a target name; allowed: {PATTERN_WORDS[NAME_PATTERN]}", path=path, key=where
            )
        table = require_table(path, where, raw)
        backend = table.get("backend")
        if not isinstance(backend, str) or backend not in _TARGET_MODELS:  # a list or table is no key
            raise ConfigError(
                f"got {backend!r}; allowed: {', '.join(repr(b) for b in _TARGET_MODELS)}",
                path=path,
                key=f"{where}.backend",
            )
        model = _TARGET_MODELS[backend]
        check_keys(path, where, table, field_names(model))
        target = validate(model, table, path, ["targets", name])
        if isinstance(target, LocalTarget):
            for group_name in target.instances:
                if group_name not in names:
                    raise ConfigError(
                        f"no group named {group_name!r}; groups are: {', '.join(sorted(names))}",
                        path=path,
                        key=key_path(["targets", name, "instances", group_name]),
                    )
            check_min_healthy(path, name, target, groups, groups_raw, defaults_raw)
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
        if g.drain_timeout < g.task_time_limit and g.restart == "drain"  # a hand-off does not wait for tasks
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
        rollout=rollout,
    )
