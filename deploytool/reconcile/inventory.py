"""Stage reconcile/inventory: snapshot each group's Auto Scaling group and write it to S3.

Contract: `take_snapshot` reads the groups' ASGs (DescribeAutoScalingGroups, 50 names a call,
paginated) and their instances (DescribeInstances, 1000 ids a call, paginated) and returns one row
per instance, all with the same snapshot_at: instance_id, asg, group, az, lifecycle_state, health,
EC2 state, market (spot | on-demand), launch_time and the deploytool:version / release /
deployed-at tags. A group whose ASG is empty or missing gets one row with instance_id null, so the
snapshot records that it had no instances. `write_snapshot` stores the rows as gzip JSON lines under
P/A/inventory/dt=<snapshot day>/ (at most ROWS_PER_OBJECT rows per object). No printing.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

from deploytool.aws.autoscaling import AsgInfo
from deploytool.aws.ec2 import InstanceInfo
from deploytool.aws.s3 import ObjectInfo
from deploytool.config import Group
from deploytool.model import TAG_DEPLOYED_AT, TAG_RELEASE, TAG_VERSION, day_of, inventory_key, iso_micro, iso_seconds

ROWS_PER_OBJECT = 50_000


class AsgReader(Protocol):
    def describe_groups(self, names: Sequence[str]) -> dict[str, AsgInfo]: ...


class InstanceReader(Protocol):
    def describe_instances(self, instance_ids: Sequence[str]) -> list[InstanceInfo]: ...


class ObjectWriter(Protocol):
    def put_bytes(
        self, bucket: str, key: str, body: bytes, *, content_type: str = ..., extra: Mapping[str, Any] | None = ...
    ) -> ObjectInfo: ...


@dataclass(frozen=True)
class InventoryRow:
    snapshot_at: str
    app: str
    instance_id: str | None
    asg: str
    group: str
    az: str | None = None
    lifecycle_state: str | None = None
    health: str | None = None
    state: str | None = None
    market: str | None = None
    launch_time: str | None = None
    version: str | None = None
    release: str | None = None
    deployed_at: str | None = None


@dataclass(frozen=True)
class Snapshot:
    app: str
    taken_at: datetime
    rows: tuple[InventoryRow, ...]
    missing_asgs: tuple[str, ...] = ()

    @property
    def snapshot_at(self) -> str:
        return iso_micro(self.taken_at)

    @property
    def day(self) -> str:
        return day_of(self.taken_at)

    @property
    def instances(self) -> int:
        return sum(1 for row in self.rows if row.instance_id is not None)


def _row(snapshot_at: str, app: str, group: Group, asg_instance: Any, info: InstanceInfo | None) -> InventoryRow:
    tags = info.tags if info else {}
    return InventoryRow(
        snapshot_at=snapshot_at,
        app=app,
        instance_id=asg_instance.instance_id,
        asg=group.asg,
        group=group.name,
        az=asg_instance.availability_zone or (info.availability_zone if info else None),
        lifecycle_state=asg_instance.lifecycle_state,
        health=asg_instance.health_status,
        state=info.state if info else "unknown",
        market=info.market if info else None,
        launch_time=iso_seconds(info.launch_time) if info and info.launch_time else None,
        version=tags.get(TAG_VERSION),
        release=tags.get(TAG_RELEASE),
        deployed_at=tags.get(TAG_DEPLOYED_AT),
    )


def take_snapshot(
    asgs: AsgReader, ec2: InstanceReader, *, app: str, groups: Sequence[Group], now: datetime
) -> Snapshot:
    """One row per instance of every group's ASG, all stamped `now`."""
    snapshot_at = iso_micro(now)
    found = asgs.describe_groups([g.asg for g in groups])
    ids = [i.instance_id for g in groups if g.asg in found for i in found[g.asg].instances]
    described = {info.instance_id: info for info in ec2.describe_instances(ids)} if ids else {}
    rows: list[InventoryRow] = []
    for group in groups:
        members = found[group.asg].instances if group.asg in found else ()
        if not members:
            rows.append(InventoryRow(snapshot_at, app, instance_id=None, asg=group.asg, group=group.name))
        for member in sorted(members, key=lambda m: m.instance_id):
            rows.append(_row(snapshot_at, app, group, member, described.get(member.instance_id)))
    missing = tuple(g.asg for g in groups if g.asg not in found)
    return Snapshot(app=app, taken_at=now, rows=tuple(rows), missing_asgs=missing)


def encode_rows(rows: Iterable[InventoryRow]) -> bytes:
    """gzip JSON lines, byte-reproducible (no gzip timestamp, sorted keys)."""
    text = "".join(json.dumps(asdict(row), sort_keys=True, separators=(",", ":")) + "\n" for row in rows)
    return gzip.compress(text.encode(), mtime=0)


def write_snapshot(s3: ObjectWriter, bucket: str, prefix: str, snapshot: Snapshot) -> list[str]:
    """Write the snapshot under P/A/inventory/dt=<day>/; returns the keys written."""
    keys: list[str] = []
    rows = snapshot.rows
    for n, start in enumerate(range(0, len(rows), ROWS_PER_OBJECT)):
        key = inventory_key(prefix, snapshot.app, snapshot.taken_at, n)
        s3.put_bytes(bucket, key, encode_rows(rows[start : start + ROWS_PER_OBJECT]), content_type="application/gzip")
        keys.append(key)
    return keys
