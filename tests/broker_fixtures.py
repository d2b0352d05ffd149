"""The broker fixtures of the hook tests (tests/test_hooks_brokers.py, tests/test_sqs_visibility.py): a real
Redis, RabbitMQ, or SQS on a moto server; conftest.py makes them available to every test module."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.hooktools import ProcessReaper, moto_sqs_server

HOOKS_REDIS_DB = 12  # this test module's own Redis database; queue names carry a per-test tag as well


@dataclass
class BrokerSpec:
    name: str
    url: str
    options: dict[str, Any] | None
    remote_control: bool
    cleanups: list[Callable[[], None]] = field(default_factory=list)


@pytest.fixture
def reaper() -> Iterator[ProcessReaper]:
    reaper = ProcessReaper()
    try:
        yield reaper
    finally:
        reaper.stop_all()


@pytest.fixture(scope="module")
def moto_sqs() -> Iterator[tuple[str, dict[str, Any]]]:
    """A moto server for the SQS tests of this module."""
    with moto_sqs_server() as server:
        yield server


def _redis_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerSpec]:
    kind = request.param
    if kind == "redis":
        spec = BrokerSpec("redis", _redis_db(request.getfixturevalue("redis_url"), HOOKS_REDIS_DB), None, True)
    elif kind == "rabbitmq":
        spec = BrokerSpec("rabbitmq", request.getfixturevalue("rabbitmq_url"), None, True)
    else:
        url, options = request.getfixturevalue("moto_sqs")
        spec = BrokerSpec("sqs", url, options, False)
    try:
        yield spec
    finally:
        for cleanup in spec.cleanups:
            cleanup()


def queue_counts(broker: BrokerSpec, queue: str) -> tuple[int, int]:
    """(visible, in flight) as SQS counts the queue's messages."""
    import boto3

    port = urlsplit(broker.url).port
    client = boto3.client(
        "sqs", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
        aws_access_key_id="k", aws_secret_access_key="s",
    )  # fmt: skip
    url = client.get_queue_url(QueueName=queue)["QueueUrl"]
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    got = client.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return int(got[names[0]]), int(got[names[1]])
