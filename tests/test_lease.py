"""The release lease (deploytool.rollout.lease) on moto S3 (in-process), with a simulated clock.

moto 5.2.5 honours If-None-Match: * and If-Match on PutObject and If-Match on DeleteObject (412
PreconditionFailed), as S3 does: the first test proves it, so the others test real conditional writes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from deploytool.aws.s3 import S3Gateway
from deploytool.aws.session import AwsSession
from deploytool.errors import UsageError
from deploytool.rollout.clock import SimulatedClock
from deploytool.rollout.lease import (
    RENEW_S,
    STALE_S,
    WAIT_MAX_S,
    LeaseHeld,
    LeaseStore,
    Taken,
    acquire,
)

BUCKET = "lease-test-bucket"
EPOCH = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
KEY = "deploytool/acme/lease/production.json"


class World:
    def __init__(self, boto: boto3.Session) -> None:
        self.boto = boto
        self.clock = SimulatedClock()
        self.s3 = S3Gateway(AwsSession(region="us-east-1", boto_session=boto), kms_key_id="alias/lease-test")
        self.store = LeaseStore(self.s3, bucket=BUCKET, prefix="deploytool", app="acme")
        self.said: list[str] = []

    def now(self) -> datetime:
        return EPOCH + timedelta(seconds=self.clock.now())

    def take(self, who: str = "alice@host1", **kwargs: object) -> Taken:
        args: dict[str, object] = {
            "target": "production",
            "release_id": "20260101T120000Z-v1",
            "command": "deploy",
            "now": self.now,
            "clock": self.clock,
            "say": self.said.append,
            "holder": who,
            "pid": 100,
        }
        args.update(kwargs)
        return acquire(self.store, **args)  # type: ignore[arg-type]

    def body(self) -> dict[str, object] | None:
        found = self.s3.get_bytes(BUCKET, KEY)
        return None if found is None else json.loads(found)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "t"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        boto = boto3.Session(region_name="us-east-1")
        boto.client("s3").create_bucket(Bucket=BUCKET)
        yield World(boto)


def test_moto_honours_conditional_put_and_delete(world: World) -> None:
    client = world.boto.client("s3")
    first = client.put_object(Bucket=BUCKET, Key="k", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        client.put_object(Bucket=BUCKET, Key="k", Body=b"2", IfNoneMatch="*")
    assert exc.value.response["Error"]["Code"] == "PreconditionFailed"
    with pytest.raises(ClientError):
        client.put_object(Bucket=BUCKET, Key="k", Body=b"3", IfMatch='"0123"')
    second = client.put_object(Bucket=BUCKET, Key="k", Body=b"3", IfMatch=first["ETag"])
    with pytest.raises(ClientError):
        client.delete_object(Bucket=BUCKET, Key="k", IfMatch=first["ETag"])
    client.delete_object(Bucket=BUCKET, Key="k", IfMatch=second["ETag"])
    assert client.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_take_writes_who_where_what_and_when_encrypted(world: World) -> None:
    taken = world.take()
    body = world.body()
    assert body is not None
    assert body["holder"] == "alice@host1" and body["pid"] == 100 and body["target"] == "production"
    assert body["release_id"] == "20260101T120000Z-v1" and body["command"] == "deploy"
    assert body["since"] == body["renewed_at"] == "2026-01-01T12:00:00Z"
    head = world.boto.client("s3").head_object(Bucket=BUCKET, Key=KEY)
    assert head["ServerSideEncryption"] == "aws:kms"  # through write_args(), like every write
    assert taken.broken is None


def test_a_second_taker_is_refused_with_the_holders_line(world: World) -> None:
    world.take()
    world.clock.advance(10)
    with pytest.raises(LeaseHeld) as exc:
        world.take("bob@host2")
    line = str(exc.value)
    assert "\n" not in line
    assert "alice@host1 (pid 100) holds the release lease of target 'production'" in line
    assert "`deploy` release 20260101T120000Z-v1 since 2026-01-01T12:00:00Z, renewed 10s ago, live" in line
    assert "--wait" in line
    assert LeaseHeld("x").exit_code == 1


def test_release_frees_it_and_only_our_own_lease_is_deleted(world: World) -> None:
    taken = world.take()
    assert taken.lease.release()
    assert world.body() is None
    world.take("bob@host2")
    assert not taken.lease.release()  # released already: bob's lease stays
    assert world.body() is not None and world.body()["holder"] == "bob@host2"  # type: ignore[index]


def test_renew_rewrites_renewed_at_and_keeps_it_fresh(world: World) -> None:
    taken = world.take()
    for _ in range(5):
        world.clock.advance(RENEW_S)
        assert taken.lease.check()
    body = world.body()
    assert body is not None and body["since"] == "2026-01-01T12:00:00Z"
    assert body["renewed_at"] == (EPOCH + timedelta(seconds=5 * RENEW_S)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(LeaseHeld, match="live"):  # renewed for 200 s: not stale, not breakable
        world.take("bob@host2", break_lease=True)


def test_check_renews_only_when_due(world: World) -> None:
    taken = world.take()
    etag = taken.lease.etag
    world.clock.advance(RENEW_S - 1)
    assert taken.lease.check() and taken.lease.etag == etag
    world.clock.advance(1)
    assert taken.lease.check() and taken.lease.etag != etag


def test_a_stale_lease_is_refused_until_broken_and_the_break_is_reported(world: World) -> None:
    world.take()  # its holder dies: never renewed
    world.clock.advance(STALE_S)
    with pytest.raises(LeaseHeld, match="live"):  # exactly STALE_S old: still live
        world.take("bob@host2", break_lease=True)
    world.clock.advance(1)
    with pytest.raises(LeaseHeld, match=r"STALE .*--break-lease takes it over"):
        world.take("bob@host2")
    taken = world.take("bob@host2", break_lease=True)
    assert taken.broken is not None and taken.broken.holder == "alice@host1"
    assert world.body()["holder"] == "bob@host2"  # type: ignore[index]
    assert any("broke the stale lease of alice@host1" in line for line in world.said)


def test_a_holder_whose_lease_was_taken_over_notices(world: World) -> None:
    alice = world.take()
    world.clock.advance(STALE_S + 1)  # alice's keeper was stuck past the stale limit
    bob = world.take("bob@host2", break_lease=True)
    assert not alice.lease.renew()
    assert alice.lease.lost is not None and "bob@host2" in alice.lease.lost
    assert not alice.lease.check()
    assert not alice.lease.release()  # never deletes bob's lease
    assert world.body()["holder"] == "bob@host2"  # type: ignore[index]
    assert bob.lease.renew()


def test_a_deleted_lease_is_lost_too(world: World) -> None:
    alice = world.take()
    world.boto.client("s3").delete_object(Bucket=BUCKET, Key=KEY)
    assert not alice.lease.renew()
    assert alice.lease.lost == "the lease object was deleted by someone else"


@pytest.fixture
def atomic_puts(monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 evaluates a conditional PutObject (If-None-Match, If-Match) and writes atomically; moto checks, then
    writes, without a lock, so two racing writers can both pass its check (seen once in CI). A lock around moto's
    PutObject handler gives these tests S3's atomicity: what they then prove is that deploytool's own logic lets
    exactly one racer win (no retry or fallback path that lets a second one in)."""
    from moto.s3.responses import S3Response

    lock = threading.Lock()
    original = S3Response.put_object

    def put_object(self: S3Response) -> object:
        with lock:
            return original(self)

    monkeypatch.setattr(S3Response, "put_object", put_object)


def test_two_takers_racing_exactly_one_wins(world: World, atomic_puts: None) -> None:
    for round_ in range(5):
        barrier = threading.Barrier(8)
        won: list[str] = []
        refused: list[str] = []

        def taker(
            n: int, barrier: threading.Barrier = barrier, won: list[str] = won, refused: list[str] = refused
        ) -> None:
            barrier.wait()
            try:
                world.take(f"user{n}@host")
                won.append(f"user{n}@host")
            except LeaseHeld as exc:
                refused.append(str(exc))

        threads = [threading.Thread(target=taker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1, (round_, won)
        assert len(refused) == 7 and all(won[0] in line for line in refused)
        world.boto.client("s3").delete_object(Bucket=BUCKET, Key=KEY)


def test_two_breakers_of_one_stale_lease_exactly_one_wins(world: World, atomic_puts: None) -> None:
    world.take()
    world.clock.advance(STALE_S + 1)
    barrier = threading.Barrier(4)
    won: list[str] = []

    def breaker(n: int) -> None:
        barrier.wait()
        try:
            world.take(f"breaker{n}@host", break_lease=True)
            won.append(str(n))
        except LeaseHeld:
            pass

    threads = [threading.Thread(target=breaker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1


def test_wait_polls_until_the_lease_is_free_and_says_so(world: World) -> None:
    alice = world.take()

    class FreesLater(SimulatedClock):
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            world.clock.advance(seconds)
            if self.now() >= 42:
                alice.lease.release()

    clock = FreesLater()
    taken = world.take("bob@host2", wait=True, clock=clock)
    assert world.body()["holder"] == "bob@host2"  # type: ignore[index]
    assert taken.lease.info.holder == "bob@host2"
    assert 42 <= clock.slept <= 50
    assert world.said and "waiting for the release lease" in world.said[0] and "alice@host1" in world.said[0]


def test_wait_is_bounded(world: World) -> None:
    world.take()
    with pytest.raises(LeaseHeld, match=r"gave up waiting after 3600s: alice@host1"):
        world.take("bob@host2", wait=True)
    assert world.clock.slept == WAIT_MAX_S


def test_wait_and_break_together_are_refused(world: World) -> None:
    with pytest.raises(UsageError, match="choose one"):
        world.take(wait=True, break_lease=True)
