"""Stage reconcile/mirror: copy the reconcile tables' objects from S3 to a local directory for DuckDB.

Contract: `mirror_tables` makes `root` hold the same keys as the bucket for the inventory partitions
of the days asked for and for every release manifest: objects whose ETag changed are downloaded
(to a temporary file, then renamed), unchanged ones are kept, local files whose object is gone are
removed, but only those it downloaded itself (the keys in its index, INDEX): other files in `root`
are never touched. A release manifest that is not one line of JSON is stored locally as one line (the form
Athena's JSON SerDe and DuckDB's newline-delimited reader need). Partitions of other days already in
`root` stay: DuckDB prunes them by `dt`. Returns counts; prints nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from deploytool.aws.s3 import ObjectInfo
from deploytool.errors import AwsError
from deploytool.model import inventory_partition, releases_prefix

INDEX = ".etags.json"


class ObjectReader(Protocol):
    def list_keys(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]: ...

    def get_bytes(self, bucket: str, key: str) -> bytes | None: ...


@dataclass(frozen=True)
class MirrorResult:
    downloaded: int
    kept: int
    removed: int


def one_line(body: bytes) -> bytes:
    """A JSON document as exactly one line (unchanged when it already is one)."""
    stripped = body.strip()
    if stripped and b"\n" not in stripped:
        return stripped + b"\n"
    return json.dumps(json.loads(stripped), separators=(",", ":"), sort_keys=True).encode() + b"\n"


def _write_atomic(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_index(root: Path) -> dict[str, str]:
    try:
        data = json.loads((root / INDEX).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def mirror_tables(
    s3: ObjectReader, bucket: str, *, prefix: str, app: str, root: Path, days: Sequence[str]
) -> MirrorResult:
    root.mkdir(parents=True, exist_ok=True)
    index = _load_index(root)
    prefixes = [inventory_partition(prefix, app, day) for day in days] + [releases_prefix(prefix, app)]
    downloaded = kept = removed = 0
    for listed_prefix in prefixes:
        wanted: set[str] = set()
        for obj in s3.list_keys(bucket, listed_prefix):
            if obj.key.endswith("/"):
                continue
            wanted.add(obj.key)
            local = root / obj.key
            if index.get(obj.key) == obj.etag and local.exists():
                kept += 1
                continue
            body = s3.get_bytes(bucket, obj.key)
            if body is None:  # deleted between LIST and GET
                continue
            if obj.key.endswith(".json"):
                try:
                    body = one_line(body)
                except ValueError as exc:
                    raise AwsError(f"s3://{bucket}/{obj.key}: not a JSON release manifest ({exc})") from exc
            _write_atomic(local, body)
            index[obj.key] = obj.etag
            downloaded += 1
        local_dir = root / listed_prefix
        if local_dir.is_dir():
            for path in local_dir.rglob("*"):
                key = path.relative_to(root).as_posix()
                if path.is_file() and key in index and key not in wanted:  # only files it downloaded
                    path.unlink()
                    index.pop(key, None)
                    removed += 1
    _write_atomic(root / INDEX, json.dumps(index, sort_keys=True).encode())
    return MirrorResult(downloaded=downloaded, kept=kept, removed=removed)
