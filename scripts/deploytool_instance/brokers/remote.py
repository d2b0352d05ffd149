"""Celery remote control aimed at one worker node (Redis and RabbitMQ: brokers with fanout exchanges).

Drain uses active_queues, cancel_consumer and busy (inspect active + reserved); ValidateService uses
ping and active_queues. Broker errors never escape a RemoteControl: a method answers None/False and
`error` says what went wrong, so drain can fall back to SIGTERM.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

INSPECT_TIMEOUT_S = 0.25  # how long one inspect waits for the worker's reply
CONTROL_TIMEOUT_S = 1.0  # active_queues / cancel_consumer / ping reply timeout


class Control(Protocol):
    def active_queues(self) -> list[str] | None: ...

    def cancel_consumer(self, queue: str) -> bool: ...

    def busy(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


class RemoteControl:
    """Celery remote control aimed at one node, over one broker connection.

    Broker errors do not escape: a method answers None/False and `error` says what went wrong.
    """

    def __init__(self, client: Any, node: str) -> None:
        self.client = client
        self.node = node
        self.connection = client.connection_for_write()
        self.error = ""

    def _call(self, request: Callable[[], Any]) -> Any:
        try:
            return request()
        except Exception as exc:  # kombu/amqp/redis/botocore errors all mean "no answer"
            self.error = f"{type(exc).__name__}: {exc}"
            return None

    def _inspect(self, timeout: float) -> Any:
        return self.client.control.inspect(
            destination=[self.node], timeout=timeout, limit=1, connection=self.connection
        )

    def _reply(self, replies: Any) -> Any:
        return replies.get(self.node) if replies else None

    def active_queues(self) -> list[str] | None:
        reply = self._reply(self._call(lambda: self._inspect(CONTROL_TIMEOUT_S).active_queues()))
        return None if reply is None else [str(q["name"]) for q in reply]

    def cancel_consumer(self, queue: str) -> bool:
        replies = self._call(
            lambda: self.client.control.cancel_consumer(
                queue, destination=[self.node], reply=True, timeout=CONTROL_TIMEOUT_S, connection=self.connection
            )
        )
        return any(self.node in reply for reply in replies or [])

    def busy(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        inspect = self._inspect(INSPECT_TIMEOUT_S)
        active = self._reply(self._call(inspect.active))
        reserved = self._reply(self._call(inspect.reserved)) if active is not None else None
        if active is None or reserved is None:
            return None
        return list(active), list(reserved)

    def ping(self) -> bool:
        replies = self._call(
            lambda: self.client.control.ping(
                destination=[self.node], timeout=CONTROL_TIMEOUT_S, connection=self.connection
            )
        )
        return any(self.node in reply for reply in replies or [])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.release()
