"""Cross-field rules of the fleet file: a group's settings together, strategies against group sizes, uniqueness.

Contract: each check takes validated models and the raw tables they came from (to name where a value was set:
the group, or [defaults] when inherited) and raises ConfigError with one line; none touches the disk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from deploytool.config.messages import check_keys, key_path
from deploytool.config.models import (
    DRAIN_RESERVE_S,
    HEARTBEAT_MARGIN_S,
    LIFECYCLE_EVENT_LIMIT_S,
    MAX_DRAIN_TIMEOUT_S,
    STRATEGY_TABLE_KEYS,
    VISIBILITY_MARGIN_S,
    Group,
    LocalTarget,
)
from deploytool.errors import ConfigError


def lint_group(path: str, index: int, group: Group, table: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
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
    if group.visibility_heartbeat and group.visibility_timeout < group.min_visibility_timeout:
        raise_(
            "visibility_timeout",
            f"got {group.visibility_timeout}; with visibility_heartbeat it must exceed visibility_heartbeat_step + "
            f"{HEARTBEAT_MARGIN_S} s = {group.min_visibility_timeout - 1} (else a message expires between two beats "
            "and runs twice)",
        )
    if not group.visibility_heartbeat and group.visibility_timeout < group.min_visibility_timeout:
        raise_(
            "visibility_timeout",
            f"got {group.visibility_timeout}; must exceed task_time_limit + {VISIBILITY_MARGIN_S} s "
            f"= {group.task_time_limit + VISIBILITY_MARGIN_S} (else the broker redelivers running tasks "
            "and they run twice); on SQS, visibility_heartbeat = true allows a short one",
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
    if group.restart == "handoff" and group.prefetch_multiplier != 1:
        raise_(
            "prefetch_multiplier",
            f'got {group.prefetch_multiplier}; restart = "handoff" needs 1: a worker handing off keeps what it '
            "holds until it ends, so a task prefetched behind a long one would wait for it on the old release",
        )
    if group.restart == "handoff" and group.autoscale is not None:
        raise_(
            "autoscale",
            'cannot be used with restart = "handoff": the prefetch follows the pool\'s maximum, so a worker '
            "handing off could hold tasks it has not started; set concurrency instead",
        )
    if group.autoscale is not None:
        high, low = group.autoscale
        if high < 1 or low > high:
            raise_("autoscale", f"got {group.autoscale!r}; allowed: [max, min] with max >= 1 and min <= max")


def check_strategy_keys(path: str, where: str, table: Mapping[str, Any]) -> None:
    """A strategy table's keys, with a did-you-mean like every other table (before the model sees it)."""
    strategy = table.get("strategy")
    if isinstance(strategy, Mapping):
        check_keys(path, f"{where}.strategy", strategy, STRATEGY_TABLE_KEYS)


def check_min_healthy(
    path: str,
    name: str,
    target: LocalTarget,
    groups: Sequence[Group],
    tables: Sequence[Mapping[str, Any]],
    defaults: Mapping[str, Any],
) -> None:
    """On a local target the group sizes are known: a minimum of healthy hosts not below a group's
    size fails every deployment at once (CodeDeploy's rule, deploytool.strategy), so it is an error here."""
    from deploytool.strategy import health_policy  # it imports deploytool.config

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


def check_unique(path: str, groups: Sequence[Group]) -> None:
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
