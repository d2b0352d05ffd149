"""Stage reconcile/interruptions: the notices the instances' interruption watchers recorded, read from S3.

Contract: `read_interruptions(s3, bucket, prefix=, app=, days=, groups=)` lists
`<prefix>/<app>/interruptions/dt=<day>/` for each day of the window (the watcher writes one small JSON object per
notice, deploytool_instance.s3put, once when its drain begins and again when it ends) and returns them oldest
first, limited to the groups asked for. They are read straight from S3, not through Athena: a few objects a
day, and each one's body is what the report shows. An object that is not a JSON record is skipped and named in
`unreadable`. Reads only; prints nothing.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from deploytool.model import interruptions_partition
from deploytool.reconcile.mirror import ObjectReader


@dataclass(frozen=True)
class Interruption:
    instance_id: str
    group: str
    version: str
    kind: str  # spot | terminated | rebalance
    detail: str
    policy: str  # drain | ignore
    noticed_at: float
    outcome: str  # draining (the drain had begun when last heard of) | drained | quit | ignored | no worker ...
    drained_s: float
    released: tuple[str, ...]  # the tasks still running at the cold shutdown, handed back to the broker
    key: str

    @property
    def finished(self) -> bool:
        """The watcher wrote its final record (else the instance went before the drain ended, or it is draining)."""
        return self.outcome != "draining"

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "group": self.group,
            "version": self.version,
            "kind": self.kind,
            "detail": self.detail,
            "policy": self.policy,
            "noticed_at": self.noticed_at,
            "outcome": self.outcome,
            "drained_s": self.drained_s,
            "released": list(self.released),
            "key": self.key,
        }


@dataclass(frozen=True)
class Interruptions:
    records: tuple[Interruption, ...] = ()
    unreadable: tuple[str, ...] = field(default_factory=tuple)


def parse(key: str, body: bytes) -> Interruption:
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return Interruption(
        instance_id=str(data.get("instance") or "?"),
        group=str(data.get("group") or "?"),
        version=str(data.get("version") or "?"),
        kind=str(data.get("kind") or "?"),
        detail=str(data.get("detail") or ""),
        policy=str(data.get("policy") or "?"),
        noticed_at=float(data.get("noticed_at") or 0.0),
        outcome=str(data.get("outcome") or "?"),
        drained_s=float(data.get("drained_s") or 0.0),
        released=tuple(str(t) for t in data.get("interrupted") or ()),
        key=key,
    )


def read_interruptions(
    s3: ObjectReader,
    bucket: str,
    *,
    prefix: str,
    app: str,
    days: Sequence[str],
    groups: Collection[str] | None = None,
) -> Interruptions:
    found: list[Interruption] = []
    unreadable: list[str] = []
    for day in days:
        for obj in s3.list_keys(bucket, interruptions_partition(prefix, app, day)):
            if not obj.key.endswith(".json"):
                continue
            body = s3.get_bytes(bucket, obj.key)
            if body is None:  # deleted between LIST and GET
                continue
            try:
                record = parse(obj.key, body)
            except (ValueError, TypeError):
                unreadable.append(obj.key)
                continue
            if groups is None or record.group in groups:
                found.append(record)
    found.sort(key=lambda r: (r.noticed_at, r.instance_id))
    return Interruptions(tuple(found), tuple(unreadable))
