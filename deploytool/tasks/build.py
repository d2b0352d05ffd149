"""Tasks that make the release: build the bundle, publish it to S3 with its release manifest."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from invoke.context import Context
from rich.console import Console

from deploytool import options, targets
from deploytool.aws.session import AwsSession
from deploytool.aws.versions import require_botocore
from deploytool.bundle import BundleResult, build_release
from deploytool.cli import cli_task, fleet_from, make_console
from deploytool.config import Fleet
from deploytool.errors import UsageError
from deploytool.publish import creator
from deploytool.publish import publish as publish_bundle

_BUILD_HELP = {
    "fleet": "fleet file (default deploy.toml)",
    "version": "release version (default YYYY.MM.DD-<shortsha> of the git commit)",
    "allow_dirty": "build from uncommitted changes (the version then ends in -dirty)",
    "out": "output directory (default dist/ beside the fleet file)",
    "debug": "show tracebacks",
    "json": "print one JSON object on stdout instead of the table (for scripts and CI)",
}


def _build_options(fleet: str | None, version: str | None, out: str | None) -> tuple[Fleet, str | None, Path | None]:
    return fleet_from(fleet), options.version("--version", version), options.out_dir(out)


def _built(loaded: Fleet, version: str | None, allow_dirty: bool, out_dir: Path | None) -> BundleResult:
    return build_release(loaded, version=version, allow_dirty=allow_dirty, out_dir=out_dir)


def _show(console: Console, rows: list[tuple[str, str]], data: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
        return
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        console.print(f"{label.ljust(width)}  {value}", markup=False, highlight=False, soft_wrap=True)


@cli_task(help=_BUILD_HELP)
def build(
    c: Context,
    fleet: str | None = None,
    version: str | None = None,
    allow_dirty: bool = False,
    out: str | None = None,
    json: bool = False,
    debug: bool = False,
) -> None:
    """Build the release bundle (.tgz) and print its path, size, file count and sha256."""
    loaded, version, out_dir = _build_options(fleet, version, out)
    result = _built(loaded, version, allow_dirty, out_dir)
    _show(
        make_console(),
        [
            ("bundle", str(result.path)),
            (
                "size",
                f"{result.size} bytes ({result.size / 1024:.1f} KiB)"
                if result.size < 1048576
                else f"{result.size} bytes ({result.size / 1048576:.1f} MiB)",
            ),
            ("files", str(result.file_count)),
            ("sha256", result.sha256),
            ("version", f"{result.version} (commit {result.commit or 'none'})"),
        ],
        {
            "bundle": str(result.path),
            "size": result.size,
            "files": result.file_count,
            "sha256": result.sha256,
            "version": result.version,
            "commit": result.commit,
        },
        as_json=json,
    )


@cli_task(
    help={
        **_BUILD_HELP,
        "target": "target from the fleet file (default: its default target)",
        "endpoint_url": "S3-compatible endpoint (a moto server, MinIO...) instead of AWS",
    }
)
def publish(
    c: Context,
    fleet: str | None = None,
    target: str | None = None,
    version: str | None = None,
    allow_dirty: bool = False,
    out: str | None = None,
    endpoint_url: str | None = None,
    json: bool = False,
    debug: bool = False,
) -> None:
    """Build the bundle, upload it to S3 once (content-addressed) and write the release manifest."""
    loaded, version, out_dir = _build_options(fleet, version, out)
    name = options.target(loaded, target)
    endpoint_url = options.url("--endpoint-url", endpoint_url)
    if targets.target(loaded, name).kind == "local" and not endpoint_url:
        raise UsageError(
            f"target {name!r} is the local sandbox: its S3 is the sandbox's moto server, which `fab sandbox` "
            "starts; pass --endpoint-url to publish to another S3-compatible endpoint"
        )
    require_botocore()
    bundle = _built(loaded, version, allow_dirty, out_dir)
    session = AwsSession(region=loaded.aws.region, profile=loaded.aws.profile, endpoint_url=endpoint_url)
    result = publish_bundle(bundle, loaded, session, target=name, created_by=creator())
    _show(
        make_console(),
        [
            ("bundle", f"{result.bundle_uri} ({'uploaded' if result.uploaded else 'already in S3: nothing uploaded'})"),
            ("etag", result.etag),
            ("sha256", result.sha256),
            ("version", result.version),
            ("release", result.release_id),
            ("manifest", f"s3://{result.bucket}/{result.manifest_key}"),
        ],
        {
            "bundle": result.bundle_uri,
            "uploaded": result.uploaded,
            "etag": result.etag,
            "sha256": result.sha256,
            "version": result.version,
            "commit": result.commit,
            "release_id": result.release_id,
            "manifest": f"s3://{result.bucket}/{result.manifest_key}",
            "object_version": result.object_version,
        },
        as_json=json,
    )
