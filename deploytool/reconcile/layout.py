"""Where reconcile data lives in S3 (CONTRACTS §3) and how its times are written. Keys only, no I/O.

    P/A/inventory/dt=YYYY-MM-DD/<snapshot stamp>-<n>.json.gz   gzip JSON lines, one row per instance
    P/A/releases/dt=YYYY-MM-DD/<release_id>.json               one line of JSON per release

Times are UTC. `snapshot_at` in rows is ISO 8601 with microseconds and a Z (fixed width, so text order
is time order, and Athena's from_iso8601_timestamp reads it); `dt` is the snapshot's UTC day.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from deploytool.errors import UsageError


def utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: reconcile times must be timezone-aware UTC")
    return moment.astimezone(UTC)


def iso_micro(moment: datetime) -> str:
    """2024-01-05T00:15:01.123456Z: the fixed-width form stored in inventory rows."""
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_seconds(moment: datetime) -> str:
    """2024-01-05T00:15:01Z: the deploytool:deployed-at tag."""
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def day_of(moment: datetime) -> str:
    return utc(moment).strftime("%Y-%m-%d")


def app_root(prefix: str, app: str) -> str:
    return f"{prefix}/{app}" if prefix else app


def inventory_prefix(prefix: str, app: str) -> str:
    return f"{app_root(prefix, app)}/inventory/"


def inventory_partition(prefix: str, app: str, day: str) -> str:
    return f"{inventory_prefix(prefix, app)}dt={day}/"


def inventory_key(prefix: str, app: str, snapshot_at: datetime, n: int) -> str:
    stamp = utc(snapshot_at).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{inventory_partition(prefix, app, day_of(snapshot_at))}{stamp}-{n}.json.gz"


def releases_prefix(prefix: str, app: str) -> str:
    return f"{app_root(prefix, app)}/releases/"


def release_day(release_id: str) -> str:
    """The dt partition of a release: release ids start with their UTC time, yyyymmddThhmmssZ."""
    try:
        created = datetime.strptime(release_id[:16], "%Y%m%dT%H%M%SZ")
    except ValueError:
        raise UsageError(
            f"release id {release_id!r} does not start with a UTC time like 20240105T001501Z"
        ) from None
    return created.strftime("%Y-%m-%d")


def release_key(prefix: str, app: str, release_id: str) -> str:
    return f"{releases_prefix(prefix, app)}dt={release_day(release_id)}/{release_id}.json"


def days_back(last: str, days: int) -> tuple[str, str]:
    """The dt window [last - (days - 1), last] as text."""
    if days < 1:
        raise UsageError(f"--days {days}: allowed: 1 or more")
    end = date.fromisoformat(last)
    return (end - timedelta(days=days - 1)).isoformat(), end.isoformat()


def day_range(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]
