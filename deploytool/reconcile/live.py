"""Stage reconcile/live (`fab reconcile --live`): what runs, from the workers' heartbeats, against what the tags say.

Contract: `live_check(snapshot, heartbeats, window_s=)` compares each instance of the snapshot with the heartbeats
its workers sent in the last `window_s` seconds (deploytool_instance.telemetry, read by aws/cloudwatch.py):
- "ok": a worker of the tagged version runs there;
- "other release": the workers heard run another release than the tag says (tagged v2, worker reports v1);
- "silent": an InService instance from which no worker was heard (no worker, or it cannot publish);
- a worker still finishing after a hand-off (state draining) is listed beside, not a problem while the instance's
  tagged version runs too.
Instances not InService (Standby, Pending, Terminating) are listed only when heard. Heartbeats from instances the
snapshot does not know (terminated meanwhile, another ASG) are counted in `unknown`. No I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from deploytool.aws.cloudwatch import Heartbeat
from deploytool.reconcile.inventory import Snapshot

LIVE_WINDOW_S = 120  # heard in the last 2 minutes (workers publish every 30 s; CloudWatch sums by minute)
PROBLEMS = ("other release", "silent")


@dataclass(frozen=True)
class LiveInstance:
    instance_id: str
    group: str
    tagged: str | None
    lifecycle_state: str | None
    running: tuple[str, ...]  # releases heard in state "running"
    draining: tuple[str, ...]  # releases heard finishing after a hand-off
    finding: str  # ok | other release | silent | not in service

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "group": self.group,
            "tagged": self.tagged,
            "lifecycle_state": self.lifecycle_state,
            "running": list(self.running),
            "draining": list(self.draining),
            "finding": self.finding,
        }


@dataclass(frozen=True)
class LiveReport:
    window_s: int
    instances: tuple[LiveInstance, ...] = ()
    unknown: tuple[str, ...] = field(default_factory=tuple)  # instances heard that the snapshot has not

    @property
    def problems(self) -> tuple[LiveInstance, ...]:
        return tuple(i for i in self.instances if i.finding in PROBLEMS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_s": self.window_s,
            "problems": len(self.problems),
            "instances": [i.to_dict() for i in self.instances],
            "unknown_instances": list(self.unknown),
        }


def live_check(
    snapshot: Snapshot, heartbeats: Sequence[Heartbeat], *, groups: Sequence[str] | None = None, window_s: int
) -> LiveReport:
    heard: dict[str, list[Heartbeat]] = {}
    for beat in heartbeats:
        if groups is None or beat.group in groups:
            heard.setdefault(beat.instance, []).append(beat)
    found: list[LiveInstance] = []
    known: set[str] = set()
    for row in snapshot.rows:
        if row.instance_id is None or (groups is not None and row.group not in groups):
            continue
        known.add(row.instance_id)
        beats = heard.get(row.instance_id, [])
        running = tuple(sorted({b.release for b in beats if b.state != "draining"}))
        draining = tuple(sorted({b.release for b in beats if b.state == "draining"}))
        in_service = row.lifecycle_state == "InService"
        if not beats and not in_service:
            continue
        if not running:
            finding = "silent" if in_service else "not in service"
        elif row.version is not None and running != (row.version,):
            finding = "other release"
        else:
            finding = "ok"
        found.append(
            LiveInstance(row.instance_id, row.group, row.version, row.lifecycle_state, running, draining, finding)
        )
    unknown = tuple(sorted(set(heard) - known))
    return LiveReport(window_s, tuple(sorted(found, key=lambda i: (i.group, i.instance_id))), unknown)
