#!/usr/bin/env python3
"""Benchmark: deploytool's build + publish against GNU `tar -czf` + `aws s3 cp`, in the same run.

    python bench/build.py [--files 5000] [--mib 100] [--runs 3]

Generates an app tree (text sources and incompressible binaries) under bench/.work/, starts its own
moto server on a free loopback port, and times, taking the median of --runs runs each:
- ours: build_bundle + publish (HEAD, upload through the transfer manager, release manifest);
- baseline: `tar -czf` of the same tree + `aws s3 cp --endpoint-url` to the same server;
- republish: build + publish again of the unchanged version (the bundle is already in S3).
reupload_bytes counts the bytes sent for the bundle object during the republishes (from the
Content-Length of every request to its key; the same count over the first publishes, which must equal
the bundle size, is printed as upload_bytes_per_first_publish); reproducible says every build gave the
same sha256.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import venv
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402

from deploytool.aws.session import AwsSession  # noqa: E402
from deploytool.bundle import BundleResult, build_bundle  # noqa: E402
from deploytool.config import Fleet, load_fleet  # noqa: E402
from deploytool.owned import MARKER, fresh_owned, make_owned, remove_owned  # noqa: E402
from deploytool.publish import publish  # noqa: E402
from deploytool.render import Templates  # noqa: E402
from deploytool.sandbox.motoserver import MotoServer  # noqa: E402
from deploytool.version import SourceVersion  # noqa: E402

WORK = ROOT / "bench" / ".work"
BUCKET = "bench-artifacts"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
SOURCE = SourceVersion("2024.01.01-bench00", "0" * 40, False)
BINARY_SHARE = 0.5  # half the bytes are incompressible
FLEET = f"""\
[app]
name = "bench"
source = "app"
celery_app = "bench.app:app"

[artifacts]
bucket = "{BUCKET}"

[[groups]]
name = "work"
asg = "bench-work"
queues = ["work"]

[targets.sandbox]
backend = "local"
"""


def generate(tree: Path, files: int, total: int) -> None:
    """A deterministic app tree: ~1 in 25 files is a binary blob, the rest Python-like text."""
    stamp = tree / ".bench-stamp"
    wanted = f"{files} {total}"
    if stamp.exists() and stamp.read_text() == wanted:
        return
    fresh_owned(tree, "bench/build.py's generated app tree")
    rng = random.Random(20240101)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 12))) for _ in range(4000)]
    binaries = max(1, files // 25)
    texts = files - binaries
    text_size = int(total * (1 - BINARY_SHARE)) // texts
    binary_size = int(total * BINARY_SHARE) // binaries
    for index in range(files):
        folder = tree / f"pkg{index % 40:02d}" / f"mod{index % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        if index % 25 == 0:
            (folder / f"blob{index:05d}.bin").write_bytes(rng.randbytes(binary_size))
            continue
        lines, size = [], 0
        while size < text_size:
            indent = "    " * rng.randint(0, 3)
            line = indent + " ".join(rng.choices(words, k=rng.randint(3, 10))) + "\n"
            lines.append(line)
            size += len(line)
        (folder / f"file{index:05d}.py").write_text("".join(lines))
    stamp.write_text(wanted)


def tree_size(tree: Path) -> tuple[int, int]:
    count = size = 0
    for path in tree.rglob("*"):
        if path.is_file() and path.name not in (".bench-stamp", MARKER):
            count += 1
            size += path.stat().st_size
    return count, size


@contextmanager
def moto_server() -> Iterator[str]:
    """The sandbox's own moto server manager: a free loopback port, stopped (by its pid) on exit."""
    server = MotoServer(log_path=WORK / "moto.log", pidfile=WORK / "moto.pid").start()
    try:
        yield server.url
    finally:
        server.stop()


def awscli() -> list[str]:
    """A working `aws` command: the one on PATH, else one installed in its own venv under bench/.work/."""
    found = shutil.which("aws")
    if found and subprocess.run([found, "--version"], capture_output=True).returncode == 0:
        return [found]
    env_dir = WORK / "awscli-venv"
    aws = env_dir / "bin" / "aws"
    if not aws.exists():
        venv.EnvBuilder(with_pip=True).create(env_dir)
        subprocess.run([env_dir / "bin" / "python", "-m", "pip", "install", "-q", "awscli"], check=True)
    return [str(aws)]


def templates() -> Templates:
    scripts = ROOT / "scripts"
    if not (scripts / "application_stop.sh.j2").exists():  # before the real hooks are merged
        scripts = ROOT / "tests" / "fixtures" / "scripts"
    return Templates(ROOT / "appspec" / "appspec.yml.j2", scripts)


class ByteCounter:
    """Bytes sent for one S3 key, from each request's Content-Length (botocore's before-send)."""

    def __init__(self) -> None:
        self.key = ""
        self.sent = 0

    def __call__(self, request: Any, **_: Any) -> None:
        if self.key and self.key in request.url:
            self.sent += int(request.headers.get("Content-Length", 0) or 0)


def ours(fleet: Fleet, endpoint: str, out: Path, counter: ByteCounter) -> tuple[BundleResult, bool]:
    """Build and publish; returns the bundle and whether it was uploaded."""
    boto = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    boto.events.register("before-send.s3", counter)
    session = AwsSession(region="us-east-1", endpoint_url=endpoint, boto_session=boto)
    bundle = build_bundle(fleet, SOURCE, out, templates=templates())
    counter.key = f"{bundle.sha256}.tgz"
    return bundle, publish(bundle, fleet, session, target="sandbox", created_by="bench").uploaded


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = action()
    return time.perf_counter() - start, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    project = WORK / "project"
    generate(project / "app", args.files, args.mib * 1024 * 1024)
    (project / "deploy.toml").write_text(FLEET)
    fleet = load_fleet(project / "deploy.toml")
    files, size = tree_size(project / "app")
    aws = awscli()
    os.environ.update(CREDS)
    out = make_owned(WORK / f"out-{os.getpid()}", "bench/build.py's bundles")
    try:
        with moto_server() as endpoint:
            s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
            s3.create_bucket(Bucket=BUCKET)

            def clear() -> None:
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
                    for item in page.get("Contents", []):
                        s3.delete_object(Bucket=BUCKET, Key=item["Key"])

            def baseline() -> None:
                archive = out / "baseline.tgz"
                subprocess.run(["tar", "-czf", str(archive), "-C", str(project / "app"), "."], check=True)
                subprocess.run(
                    [
                        *aws,
                        "s3",
                        "cp",
                        str(archive),
                        f"s3://{BUCKET}/baseline/app.tgz",
                        "--endpoint-url",
                        endpoint,
                        "--only-show-errors",
                    ],
                    check=True,
                )

            ours_times, base_times, again_times, shas = [], [], [], set()
            first, again = ByteCounter(), ByteCounter()
            for _ in range(args.runs):
                clear()
                seconds, (bundle, uploaded) = timed(lambda: ours(fleet, endpoint, out, first))
                assert uploaded, "the first publish of a run must upload"
                ours_times.append(seconds)
                shas.add(bundle.sha256)
                seconds, (repeat, uploaded) = timed(lambda: ours(fleet, endpoint, out, again))
                assert not uploaded, "the republish must find the bundle in S3"
                again_times.append(seconds)
                shas.add(repeat.sha256)
                clear()
                base_times.append(timed(baseline)[0])
            tar_gz_bytes = (out / "baseline.tgz").stat().st_size
    finally:
        remove_owned(out)

    ours_s, base_s = statistics.median(ours_times), statistics.median(base_times)
    print(
        json.dumps(
            {
                "files": files,
                "bytes": size,
                "ours_s": round(ours_s, 3),
                "tar_gzip_cli_s": round(base_s, 3),
                "ratio": round(ours_s / base_s, 3),
                "reproducible": len(shas) == 1,
                "reupload_bytes": again.sent,
                "republish_s": round(statistics.median(again_times), 3),
                "bundle_bytes": bundle.size,
                "upload_bytes_per_first_publish": first.sent // args.runs,
                "tar_gz_bytes": tar_gz_bytes,
                "runs": args.runs,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
