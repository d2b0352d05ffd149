"""The fleet file's models: frozen pydantic models for each table, the Strategy, and the validated Fleet.

Contract: the models hold the per-field rules (patterns, bounds, the strategy's and a local root's spelling)
and raise pydantic's ValidationError; deploytool.config.messages turns that into our one line. No I/O.
`PATTERN_WORDS` says in words what each pattern allows, for those messages.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from deploytool.errors import ConfigError

# CodeDeploy allows 3600 s for all scripts of one lifecycle event; the drain keeps this much of it
# for the cold shutdown (SIGQUIT) and the worker's exit after its budget is spent.
LIFECYCLE_EVENT_LIMIT_S = 3600
DRAIN_RESERVE_S = 60
MAX_DRAIN_TIMEOUT_S = LIFECYCLE_EVENT_LIMIT_S - DRAIN_RESERVE_S
# visibility_timeout must exceed task_time_limit by this much, else a slow task is redelivered.
VISIBILITY_MARGIN_S = 120
# With the visibility heartbeat (SQS) it must only exceed the heartbeat's step by this much.
HEARTBEAT_MARGIN_S = 10

NAMED_STRATEGIES = ("AllAtOnce", "HalfAtATime", "OneAtATime")
STRATEGY_TABLE_KEYS = ("min_healthy_hosts", "min_healthy_percent")

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_QUEUE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$"
_APP_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
# Instance paths end up in the appspec, shell hooks and systemd units: absolute, no spaces or quotes.
_ABS_PATH = r"^(/[A-Za-z0-9_.@+-]+)+$"
# The oldest CodeDeploy agent on the fleet, as a version: '1.7', '1.7.1', '2.1.0'.
_AGENT_VERSION = r"^[0-9]{1,4}(\.[0-9]{1,4}){0,2}$"
# CreateDeployment's deploymentMode RESTART needs this agent or newer on every instance (1.x agents do not
# auto-update to 2.x); below it `fab restart` redeploys each group's last successful revision instead.
RESTART_MODE_AGENT = (2, 1, 0)


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


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class App(Model):
    name: Annotated[str, Field(pattern=_APP_NAME)]
    source: Annotated[str, Field(min_length=1)] = "app"
    celery_app: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?$")]
    install_dir: Annotated[str, Field(pattern=_ABS_PATH)] | None = None
    python: Annotated[str, Field(pattern=_ABS_PATH)] | None = None
    env_file: Annotated[str, Field(pattern=_ABS_PATH)] | None = None
    user: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] | None = None
    codedeploy_agent: Annotated[str, Field(pattern=_AGENT_VERSION)] | None = None

    @property
    def restart_mode(self) -> bool:
        """Whether `fab restart` may send deploymentMode RESTART: the declared oldest CodeDeploy agent is 2.1.0 or
        newer. Not declared counts as older (the safe side: a redeploy of the last good revision works on any agent)."""
        if self.codedeploy_agent is None:
            return False
        parts = tuple(int(p) for p in self.codedeploy_agent.split("."))
        return parts + (0,) * (3 - len(parts)) >= RESTART_MODE_AGENT

    def user_requirements(self) -> str | None:
        """What `user` needs on every instance, which no check here can see (fab check prints it)."""
        if self.user is None:
            return None
        user = self.user
        return (
            f"app.user = {user!r}: the CodeDeploy agent runs every hook as `su {user} -c SCRIPT`, so on each "
            f"instance {user} needs a login shell that runs commands (/bin/bash or /bin/sh; nologin or false fail "
            f"every hook), read access to {self.env_path}, and passwordless sudo for `install` and `systemctl` "
            f"(the worker's unit); the appspec gives {user} {self.install_path} when the first install creates "
            f"it, and one made before by root needs `chown {user}: {self.install_path}` once"
        )

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


class Artifacts(Model):
    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")] = "deploytool"
    kms_key_id: Annotated[str, Field(min_length=1)] | None = None
    expected_bucket_owner: Annotated[str, Field(pattern=r"^\d{12}$")] | None = None


class Aws(Model):
    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")] = "us-east-1"
    profile: Annotated[str, Field(min_length=1)] | None = None


class GroupSettings(Model):
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
    visibility_heartbeat: bool = False
    visibility_heartbeat_step: Annotated[int, Field(ge=1, le=3600)] = 10
    on_rebalance: Literal["drain", "ignore"] = "drain"
    on_terminated: Literal["drain", "ignore"] = "drain"
    drain_timeout: Annotated[int, Field(ge=1)] = 600
    restart: Literal["drain", "handoff"] = "drain"
    handoff_max_draining: Annotated[int, Field(ge=1, le=8)] = 1
    handoff_min_free_mb: Annotated[int, Field(ge=0, le=1048576)] = 256
    strategy: Strategy = Strategy(kind="OneAtATime")
    wave: Annotated[int, Field(ge=0, le=1000)] = 1
    bake: Annotated[int, Field(ge=0, le=3600)] | None = None  # the health gate's bake after this group's wave
    not_enough_data: Literal["pass", "hold"] = "pass"  # the health gate, when this group's tasks are too few to judge
    suspend_terminate: bool = False
    alarms: Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=10)] = []

    @field_validator("strategy", mode="before")
    @classmethod
    def _strategy(cls, value: object) -> Strategy:
        return parse_strategy(value)


class Group(GroupSettings):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    asg: Annotated[str, Field(min_length=1, max_length=255)]

    @property
    def min_visibility_timeout(self) -> int:
        """The smallest visibility_timeout that never redelivers a running task: above the heartbeat's step plus a
        margin with the heartbeat (SQS), above task_time_limit + 120 s without it."""
        if self.visibility_heartbeat:
            return self.visibility_heartbeat_step + HEARTBEAT_MARGIN_S + 1
        return self.task_time_limit + VISIBILITY_MARGIN_S + 1

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
            "visibility_heartbeat": self.visibility_heartbeat,
            "visibility_heartbeat_step": self.visibility_heartbeat_step,
            "on_rebalance": self.on_rebalance,
            "on_terminated": self.on_terminated,
            "drain_timeout": self.drain_timeout,
            "restart": self.restart,
            "handoff_max_draining": self.handoff_max_draining,
            "handoff_min_free_mb": self.handoff_min_free_mb,
        }


PARTIAL_FAILURE = ("rollback", "keep")


class Rollout(Model):
    """Fleet-level rollout settings ([rollout]).

    partial_failure: what becomes of a group whose deployment the backend calls Succeeded although instances
    failed (AllAtOnce with one success, OneAtATime failing on its last instance): "rollback" deploys the
    group's last good revision (deploytool.rollout.partial), "keep" leaves the failed instances as they are.
    bake: seconds the health gate waits after each wave before it judges the new release's telemetry and starts
    the next wave (deploytool.rollout.gate); 0 (the default): no gate.
    """

    partial_failure: Literal["rollback", "keep"] = "rollback"
    bake: Annotated[int, Field(ge=0, le=3600)] = 0


class LocalTarget(Model):
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


class CodeDeployTarget(Model):
    backend: Literal["codedeploy"]
    application: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+-]{1,100}$")] | None = None
    service_role_arn: Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")]
    outdated_instances: Literal["UPDATE", "IGNORE"] = "UPDATE"
    termination_hook: bool = True


Target = LocalTarget | CodeDeployTarget


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
    rollout: Rollout = field(default_factory=Rollout)

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


# What the patterns above mean, for error messages (the regex is shown for any other).
PATTERN_WORDS = {
    _APP_NAME: "lowercase letters, digits and '-' (at most 63, starting with a letter or digit)",
    _ABS_PATH: "an absolute path of letters, digits and _ . @ + - (no spaces, no trailing '/')",
    NAME_PATTERN: "letters, digits, '_', '.' and '-' (at most 100, starting with a letter or digit)",
    _QUEUE: "letters, digits, '_', '.' and '-' (at most 80, starting with a letter or digit)",
    r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?$": "a Celery app path like 'package.module:app'",
    r"^[a-z_][a-z0-9_-]{0,31}$": "a Linux user name",
    _AGENT_VERSION: "the version of the oldest CodeDeploy agent on the fleet, like '1.7.1' or '2.1'",
    r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$": "an S3 bucket name (3-63 lowercase letters, digits, '.' and '-')",
    r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$": "key parts of letters, digits, '_', '.' and '-' joined by '/'",
    r"^\d{12}$": "a 12-digit AWS account id",
    r"^[a-z]{2}(-[a-z]+)+-\d$": "an AWS region like 'us-east-1'",
    r"^(sqs|(redis|rediss|amqp|amqps|pyamqp|sqs)://.+)$": "'sqs' or a redis://, rediss://, amqp:// or sqs:// URL",
    r"^[A-Za-z0-9_.+-]{1,100}$": "a CodeDeploy application name (1-100 letters, digits, _ . + -)",
    r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$": "an IAM role ARN like 'arn:aws:iam::123456789012:role/Name'",
}


def valid_name(value: str) -> bool:
    return re.fullmatch(NAME_PATTERN, value) is not None
