"""Shared fixtures. Brokers: a test marked `broker` skips when its broker is down, and fails
instead when DEPLOYTOOL_REQUIRE_BROKERS=1 (as on CI)."""

from __future__ import annotations

import os
import resource
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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


@pytest.fixture
def file_size_limit() -> Iterator[Callable[[int], None]]:
    """Lets a test cap the size of any file this process writes (RLIMIT_FSIZE: a full disk, for one
    process): a write past the cap fails with EFBIG (SIGXFSZ is ignored meanwhile). Lifted at teardown."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield lambda size: resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
