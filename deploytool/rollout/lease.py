"""One release at a time per app and target: a lease object in S3.

Contract (key: deploytool.model.lease_key, P/A/lease/<target>.json in the fleet's bucket; every S3 call through
deploytool.aws.s3 with its write_args(), so SSE-KMS like every other write):
- taken with a conditional PutObject (If-None-Match: *): of two takers racing, exactly one creates the object;
  the other reads who holds it and is refused (LeaseHeld, exit 1, one line naming the holder), or with `wait`
  polls until it is free (bounded by WAIT_MAX_S, a line every WAIT_SAY_S);
- the object holds who (user@host, pid), where (target), the release id, the command, since and renewed_at
  (UTC, ISO seconds) and a random token (so two takers' bodies, hence ETags, always differ);
- renewed every RENEW_S by rewriting it with If-Match: <its ETag>: a lease someone took over (broken, or deleted)
  fails the condition, and the holder learns it has lost the lease (`Lease.lost`); the rollout then starts no
  new wave and says so (deploytool.rollout.wiring). A background thread renews it in real time (LeaseKeeper);
  the orchestrator also asks before each wave (`Lease.check`), which renews when due on the injected clock;
- stale when renewed_at is more than STALE_S old (3 renewal intervals: the holder is gone, e.g. SIGKILLed);
  only a stale lease can be taken over, with `break_lease`: its ETag is the If-Match of the overwrite, so two
  breakers cannot both win; what was broken is returned for the release record (`lease_broken`);
- released (DeleteObject with If-Match: its ETag) at the end of the rollout, also on Ctrl-C or an error.
Times compared across hosts are wall-clock UTC (`now`), so a clock skew of more than STALE_S between two hosts
could call a live lease stale; `clock` only sleeps (SimulatedClock in tests: no real waiting).
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from deploytool.aws.s3 import S3Gateway
from deploytool.errors import DeployFailed, DeployToolError, UsageError
from deploytool.model import iso_seconds, lease_key, utc
from deploytool.rollout.clock import Clock

RENEW_S = 40.0  # the holder rewrites the lease this often
STALE_S = 3 * RENEW_S  # 120 s: a lease not renewed for this long belongs to a holder that is gone
WAIT_POLL_S = 5.0  # --wait: how often the lease is read again
WAIT_SAY_S = 30.0  # --wait: a line this often while waiting
WAIT_MAX_S = 3600.0  # --wait gives up after this long


class LeaseHeld(DeployFailed):
    """Someone else holds the target's lease (exit 1)."""


@dataclass(frozen=True)
class LeaseInfo:
    holder: str  # user@host
    pid: int
    target: str
    release_id: str
    command: str
    since: str
    renewed_at: str
    token: str

    @classmethod
    def from_json(cls, body: bytes) -> LeaseInfo:
        data: Mapping[str, Any] = json.loads(body)
        return cls(**{k: data.get(k, "" if k != "pid" else 0) for k in cls.__dataclass_fields__})

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True) + "\n").encode()

    def age(self, now: datetime) -> float:
        """Seconds since it was last renewed (a renewed_at that cannot be read counts as very old)."""
        try:
            renewed = datetime.strptime(self.renewed_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=utc(now).tzinfo)
        except ValueError:
            return float("inf")
        return (utc(now) - renewed).total_seconds()

    def stale(self, now: datetime) -> bool:
        return self.age(now) > STALE_S

    def line(self, now: datetime) -> str:
        age = self.age(now)
        state = f"STALE (not renewed for {age:.0f}s; --break-lease takes it over)" if self.stale(now) else "live"
        return (
            f"{self.holder} (pid {self.pid}) holds the release lease of target {self.target!r}: `{self.command}` "
            f"release {self.release_id or '-'} since {self.since}, renewed {age:.0f}s ago, {state}"
        )


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


class LeaseStore:
    """The lease objects of one app in the fleet's bucket."""

    def __init__(self, s3: S3Gateway, *, bucket: str, prefix: str, app: str) -> None:
        self.s3, self.bucket, self.prefix, self.app = s3, bucket, prefix, app

    def key(self, target: str) -> str:
        return lease_key(self.prefix, self.app, target)

    def read(self, target: str) -> tuple[LeaseInfo, str] | None:
        got = self.s3.get_with_etag(self.bucket, self.key(target))
        if got is None:
            return None
        body, etag = got
        try:
            return LeaseInfo.from_json(body), etag
        except (ValueError, TypeError):
            bad = LeaseInfo("unreadable lease object", 0, target, "", "?", "?", "", "")
            return bad, etag

    def create(self, info: LeaseInfo) -> str | None:
        put = self.s3.put_conditional(self.bucket, self.key(info.target), info.to_json(), if_none_match=True)
        return None if put is None else put.etag

    def replace(self, info: LeaseInfo, etag: str) -> str | None:
        put = self.s3.put_conditional(self.bucket, self.key(info.target), info.to_json(), if_match=etag)
        return None if put is None else put.etag

    def delete(self, target: str, etag: str) -> bool:
        return self.s3.delete_if_match(self.bucket, self.key(target), etag)


class Lease:
    """A lease this process holds. Thread-safe: the keeper thread and the orchestrator both renew it."""

    def __init__(self, store: LeaseStore, info: LeaseInfo, etag: str, now: Callable[[], datetime]) -> None:
        self.store, self.info, self.etag, self.now = store, info, etag, now
        self.lost: str | None = None  # why the lease is no longer ours
        self.released = False
        self._lock = threading.Lock()

    def renew(self) -> bool:
        """Rewrite renewed_at with If-Match: False (and `lost` says why) when someone else has the lease now."""
        with self._lock:
            if self.lost or self.released:
                return not self.lost and not self.released
            info = replace(self.info, renewed_at=iso_seconds(self.now()))
            try:
                etag = self.store.replace(info, self.etag)
            except DeployToolError:
                return True  # S3 did not answer: try again at the next renewal; STALE_S leaves room for it
            if etag is None:
                found = self.store.read(self.info.target)
                self.lost = found[0].line(self.now()) if found else "the lease object was deleted by someone else"
                return False
            self.info, self.etag = info, etag
            return True

    def check(self) -> bool:
        """Renew when due (by `now`); False once the lease is lost."""
        if self.lost:
            return False
        if self.info.age(self.now()) >= RENEW_S:
            return self.renew()
        return True

    def release(self) -> bool:
        """Delete it (If-Match: ours); False when it was not ours any more."""
        with self._lock:
            if self.released or self.lost:
                self.released = True
                return False
            self.released = True
            return self.store.delete(self.info.target, self.etag)


class LeaseKeeper:
    """Renews a lease every `interval` real seconds in a daemon thread until stopped; `on_lost` hears of a loss."""

    def __init__(self, lease: Lease, on_lost: Callable[[str], None], *, interval: float = RENEW_S) -> None:
        self.lease, self.on_lost, self.interval = lease, on_lost, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deploytool-lease", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.lease.renew():
                self.on_lost(self.lease.lost or "lost")
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


@dataclass(frozen=True)
class Taken:
    lease: Lease
    broken: LeaseInfo | None = None  # the stale lease --break-lease took over


def acquire(
    store: LeaseStore,
    *,
    target: str,
    release_id: str,
    command: str,
    now: Callable[[], datetime],
    clock: Clock,
    say: Callable[[str], None],
    wait: bool = False,
    break_lease: bool = False,
    holder: str | None = None,
    pid: int | None = None,
) -> Taken:
    """Take the target's lease (module doc), or raise LeaseHeld."""
    if wait and break_lease:
        raise UsageError("--wait and --break-lease: choose one (--break-lease takes over a stale lease at once)")
    waited = 0.0
    said = -WAIT_SAY_S
    while True:
        stamp = iso_seconds(now())
        info = LeaseInfo(
            holder or who(),
            os.getpid() if pid is None else pid,
            target,
            release_id,
            command,
            stamp,
            stamp,
            secrets.token_hex(8),
        )
        etag = store.create(info)
        if etag is not None:
            return Taken(Lease(store, info, etag, now))
        found = store.read(target)
        if found is None:
            continue  # released between our write and our read: try again
        other, other_etag = found
        if break_lease:
            if not other.stale(now()):
                raise LeaseHeld(
                    f"{other.line(now())}; --break-lease only takes over a lease not renewed for {STALE_S:.0f}s"
                )
            etag = store.replace(info, other_etag)
            if etag is None:
                raise LeaseHeld(f"the stale lease of target {target!r} changed while breaking it: try again")
            say(
                f"lease: broke the stale lease of {other.holder} (pid {other.pid}, `{other.command}`, last renewed "
                f"{other.renewed_at}); this release holds it now"
            )
            return Taken(Lease(store, info, etag, now), broken=other)
        if not wait:
            hint = "" if other.stale(now()) else "; --wait waits until it is free"  # a stale line names --break-lease
            raise LeaseHeld(f"{other.line(now())}{hint}")
        if waited >= WAIT_MAX_S:
            raise LeaseHeld(f"gave up waiting after {waited:.0f}s: {other.line(now())}")
        if waited - said >= WAIT_SAY_S:
            say(f"waiting for the release lease ({waited:.0f}s of at most {WAIT_MAX_S:.0f}s): {other.line(now())}")
            said = waited
        clock.sleep(WAIT_POLL_S)
        waited += WAIT_POLL_S


def broken_record(broken: LeaseInfo, by: LeaseInfo) -> dict[str, Any]:
    """The release record's `lease_broken` field."""
    return {"broken": asdict(broken), "by": by.holder, "pid": by.pid, "at": by.since}
