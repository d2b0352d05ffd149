"""Shared fixtures and the test tiers.

Brokers: a test marked `broker` skips when its broker is down, and fails instead when
DEPLOYTOOL_REQUIRE_BROKERS=1 (as on CI); it is `slow` too, so the fast tier (`-m "not slow"`,
`python3 dev.py test --fast`) never needs a broker."""

from __future__ import annotations

import os
import resource
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.broker_fixtures import broker, moto_sqs, reaper  # noqa: F401  (fixtures for every module)

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("DEPLOYTOOL_TEST_REDIS", "redis://127.0.0.1:6379/0")
RABBIT_URL = os.environ.get("DEPLOYTOOL_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672//")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def need_broker(name: str, host: str, port: int) -> None:
    """Skip (or fail on CI) when a real broker is not listening."""
    if _port_open(host, port):
        return
    message = f"{name} is not listening on {host}:{port}"
    if os.environ.get("DEPLOYTOOL_REQUIRE_BROKERS") == "1":
        pytest.fail(f"{message} (DEPLOYTOOL_REQUIRE_BROKERS=1)")
    pytest.skip(message)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("broker") is not None:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def redis_url() -> str:
    need_broker("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture
def rabbitmq_url() -> str:
    need_broker("RabbitMQ", "127.0.0.1", 5672)
    return RABBIT_URL


@pytest.fixture
def sample_fleet_path() -> Path:
    return ROOT / "deploy.toml"


@contextmanager
def file_size_limit(size: int) -> Iterator[None]:
    """Inside the block, any write of this process past `size` bytes of a file fails with EFBIG (RLIMIT_FSIZE:
    a full disk, for one process; SIGXFSZ ignored meanwhile). Keep only the code under test in the block:
    pytest's own output to a file would hit the limit too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
