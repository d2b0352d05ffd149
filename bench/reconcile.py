#!/usr/bin/env python3
"""Benchmark: reconcile on DuckDB over 1,000,000 inventory rows in 30 daily partitions.

The data is what `fab reconcile` writes, in the tool's own format (inventory.encode_rows: gzip JSON
lines, one object per snapshot) and layout (P/A/inventory/dt=YYYY-MM-DD/<snapshot>-0.json.gz), plus
one release manifest a day (P/A/releases/dt=.../<release_id>.json). 50 groups x 20 instances,
1000 snapshots (one every 43.2 minutes over 30 days); each day's release rolls out over the next
snapshots; a few instances stay on the old version and a few replacements are untagged.

Measured in one run: athena/reconcile.sql transpiled to DuckDB and run over the snapshot's day (what
`fab reconcile` does) and, as the baseline, the same query over the whole 30-day window. Times are
medians of several runs, each opening a fresh DuckDB and creating the views; partitions_read is
counted from the files DuckDB opened (its FileSystem log), not assumed.

    python bench/reconcile.py [--runs 5]
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploytool.model import inventory_key, iso_micro, manifest_key
from deploytool.owned import fresh_owned
from deploytool.reconcile.inventory import InventoryRow, encode_rows
from deploytool.reconcile.query import DuckDbEngine
from deploytool.reconcile.sql import load_query

APP, PREFIX, TARGET = "bench-app", "deploytool", "production"
GROUPS, PER_GROUP, SNAPSHOTS, DAYS = 50, 20, 1000, 30
START = datetime(2024, 4, 1, tzinfo=UTC)
STEP = timedelta(days=DAYS) / SNAPSHOTS
WORK = Path(__file__).resolve().parent / ".work" / "reconcile"
STAMP = WORK / "generated.json"


def _releases() -> list[tuple[datetime, str, str]]:
    out = []
    for day in range(DAYS):
        created = START + timedelta(days=day, hours=10)
        version = f"2024.{created:%m.%d}-{day:07x}"
        out.append((created, f"{created:%Y%m%dT%H%M%SZ}-{version}", version))
    return out


def generate(root: Path) -> None:
    """Write the data set (skipped when the same one is already there)."""
    spec = {"groups": GROUPS, "per_group": PER_GROUP, "snapshots": SNAPSHOTS, "days": DAYS, "format": 2}
    if STAMP.exists() and json.loads(STAMP.read_text()) == spec:
        return
    fresh_owned(root, "bench/reconcile.py's generated data set")
    releases = _releases()
    for created, release_id, version in releases:
        path = root / manifest_key(PREFIX, APP, release_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        manifest = {
            "release_id": release_id,
            "app": APP,
            "version": version,
            "target": TARGET,
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "bucket": "b",
            "key": f"{version}.tgz",
            "groups": [
                {
                    "group": f"group-{g:02d}",
                    "asg": f"asg-{g:02d}",
                    "expected_version": version,
                    "strategy": "OneAtATime",
                    "wave": g % 3,
                    "outcome": "succeeded",
                }
                for g in range(GROUPS)
            ],
            "deployments": {},
        }
        path.write_text(json.dumps(manifest, separators=(",", ":")) + "\n")
    for n in range(SNAPSHOTS):
        at = START + n * STEP
        snapshot_at = iso_micro(at)
        live = [r for r in releases if r[0] <= at]
        rows = []
        for g in range(GROUPS):
            for i in range(PER_GROUP):
                serial = g * PER_GROUP + i
                generation = (at - START).days // 7 if serial % 53 == 0 else 0  # spot replacements
                instance_id = f"i-{serial:08x}{generation:09x}"
                row_version: str | None = None
                row_release: str | None = None
                if live:
                    created, release_id, row_version = live[-1]
                    rolled = at - created >= timedelta(minutes=4 * i)  # one at a time
                    stuck = serial % 97 == 0  # a failed instance keeps the previous version
                    if (not rolled or stuck) and len(live) > 1:
                        _, release_id, row_version = live[-2]
                    row_release = release_id
                if serial % 53 == 0 and generation > 0:
                    row_version = row_release = None  # replacement launched after the deployment: untagged
                rows.append(
                    InventoryRow(
                        snapshot_at=snapshot_at,
                        app=APP,
                        instance_id=instance_id,
                        asg=f"asg-{g:02d}",
                        group=f"group-{g:02d}",
                        az=f"us-east-1{'abc'[i % 3]}",
                        lifecycle_state="InService",
                        health="Healthy",
                        state="running",
                        market="spot" if i % 4 == 0 else "on-demand",
                        launch_time="2024-04-01T00:00:00Z",
                        version=row_version,
                        release=row_release,
                    )
                )
        path = root / inventory_key(PREFIX, APP, at, 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_rows(rows))
    STAMP.write_text(json.dumps(spec))


def run_once(root: Path, dt_from: str, dt_to: str, *, measure: bool) -> tuple[float, object]:
    values = {"app": APP, "target": TARGET, "releases_from": "", "release": "", "dt_from": dt_from, "dt_to": dt_to}
    query = load_query("reconcile")
    started = time.perf_counter()
    with DuckDbEngine(root, PREFIX) as duck:
        result = duck.run(query, values, measure=measure)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    root = WORK / "mirror"
    generate(root)
    files = sorted((root / PREFIX / APP / "inventory").rglob("*.json.gz"))
    partitions = {f.parent.name for f in files}
    last = (START + (SNAPSHOTS - 1) * STEP).strftime("%Y-%m-%d")
    first = START.strftime("%Y-%m-%d")

    run_once(root, last, last, measure=False)  # warm the page cache for both
    timings = [run_once(root, last, last, measure=False)[0] for _ in range(args.runs)]
    _, measured = run_once(root, last, last, measure=True)
    baseline = [run_once(root, first, last, measure=False)[0] for _ in range(max(3, args.runs // 2))]
    _, full = run_once(root, first, last, measure=True)

    rows = measured.rows  # type: ignore[attr-defined]
    print(
        json.dumps(
            {
                "rows": SNAPSHOTS * GROUPS * PER_GROUP,
                "partitions": len(partitions),
                "partitions_read": len(measured.partitions_read["inventory"]),  # type: ignore[attr-defined]
                "duckdb_s": round(statistics.median(timings), 4),
                "files": len(files),
                "files_read": measured.files_read,  # type: ignore[attr-defined]
                "groups": GROUPS,
                "releases": DAYS,
                "drifted": sum(1 for r in rows if r["status"] == "drift"),
                "untagged": sum(1 for r in rows if r["status"] == "untagged"),
                "format": "gzip JSON lines (deploytool encode_rows), one object per snapshot",
                "baseline_full_window_s": round(statistics.median(baseline), 4),
                "baseline_partitions_read": len(full.partitions_read["inventory"]),  # type: ignore[attr-defined]
                "runs": args.runs,
            }
        )
    )


if __name__ == "__main__":
    main()
