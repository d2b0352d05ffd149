"""The broker as the hooks and the worker see it: its settings, a bare Celery client, remote control.

Broker.from_env reads CELERY_BROKER_URL and CELERY_BROKER_TRANSPORT_OPTIONS (a JSON object) from the
environment file, merging in the group's visibility_timeout for the worker. Brokers fall in two kinds:
- with remote control (Redis, RabbitMQ: the transport supports fanout exchanges): brokers.remote,
  celery's inspect/control aimed at one node;
- without (SQS): brokers.sqs, where SIGTERM is the drain (the worker stops consuming by itself) and
  ValidateService proves the worker takes work with a canary through a per-instance queue.
The user's Celery app is never imported by the hooks: celery_client builds a bare one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deploytool_instance.base import EXIT_BAD_INPUT, HookError
from deploytool_instance.brokers.remote import RemoteControl
from deploytool_instance.brokers.sqs import NO_FANOUT_SCHEMES


@dataclass(frozen=True)
class Broker:
    url: str
    transport_options: Mapping[str, Any]

    @classmethod
    def from_env(cls, env: Mapping[str, str], visibility_timeout: int | None, where: str) -> Broker:
        url = env.get("CELERY_BROKER_URL", "")
        if not url:
            raise HookError(f"{where}: CELERY_BROKER_URL is not set", EXIT_BAD_INPUT)
        raw = env.get("CELERY_BROKER_TRANSPORT_OPTIONS") or "{}"
        try:
            options = json.loads(raw)
        except ValueError:
            options = None
        if not isinstance(options, dict):
            raise HookError(f"{where}: CELERY_BROKER_TRANSPORT_OPTIONS must be a JSON object, got {raw!r}")
        if visibility_timeout is not None:
            options["visibility_timeout"] = visibility_timeout
        return cls(url=url, transport_options=options)


def celery_client(broker: Broker) -> Any:
    """A bare Celery app for remote control and sending the canary (the user's app is not imported)."""
    from celery import Celery

    client = Celery("deploytool-hooks", set_as_current=False)
    client.conf.update(
        broker_url=broker.url,
        broker_transport_options=dict(broker.transport_options),
        broker_connection_timeout=3.0,
        broker_connection_retry=False,
        broker_connection_max_retries=1,
        task_create_missing_queues=True,
    )
    return client


def has_remote_control(client: Any) -> bool:
    """Whether the broker can broadcast (celery's own test: the transport supports fanout exchanges)."""
    return bool(client.connection_for_write().supports_exchange_type("fanout"))


def drain_control(broker: Broker, node: str) -> RemoteControl | None:
    """Remote control of `node` for drain, or None when the broker has none (then SIGTERM is the drain)."""
    if broker.url.partition("://")[0] in NO_FANOUT_SCHEMES:
        return None
    client = celery_client(broker)
    return RemoteControl(client, node) if has_remote_control(client) else None
