"""Stage 3, bundle: one reproducible .tgz per release that serves every group (its layout: this docstring).

Contract: `build_bundle(fleet, source, out_dir)` writes `<out_dir>/<app>-<version>.tgz` (atomically:
a temp file renamed into place) and returns a BundleResult. The archive holds
- `app/...`: the app source (fleet app.source) minus DEFAULT_EXCLUDES and its `.deployignore`;
  symlinks stay symlinks, and one pointing outside the source tree, or to a directory that contains it
  (the agent copies a directory symlink's content: it would recurse forever), is a BundleError naming it;
- `appspec.yml` and `deploytool/hooks/...`: rendered by deploytool.render; every hook location in the
  appspec must be in the bundle and is made executable;
- `deploytool/fleet.json`: the app settings, every group's worker settings and each hook's appspec
  timeout (the hooks fit their waits into it), and where the interruption watcher records a notice (the
  artifacts bucket, prefix, region, KMS key and expected owner);
- `deploytool/manifest.json` (last): version, commit, builder and the sha256 of every other file.
The bytes depend only on those contents (see deploytool.targz): no build time, user, umask or mtime.
The build time is returned in the result (the release manifest records it).
`build_release(fleet, version=..., allow_dirty=...)` first names the release from git (deploytool.version:
YYYY.MM.DD-<shortsha>, a dirty tree refused unless allowed) and builds into dist/ beside the fleet file.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from deploytool import __version__
from deploytool.config import Fleet
from deploytool.contract import registered_tasks
from deploytool.errors import BundleError
from deploytool.ignore import IgnoreRules
from deploytool.render import (
    APPSPEC,
    RenderedFile,
    Templates,
    check_appspec,
    hook_timeouts,
    render_templates,
    template_context,
)
from deploytool.targz import DEFAULT_LEVEL, ReproducibleTarGz
from deploytool.version import SourceVersion, source_version

DIST_DIR = "dist"  # default output directory, beside the fleet file
APP_DIR = "app"
FLEET_JSON = "deploytool/fleet.json"
MANIFEST_JSON = "deploytool/manifest.json"
BUILDER = f"deploytool {__version__}"


@dataclass(frozen=True)
class BundleResult:
    path: Path
    size: int
    file_count: int  # files and symlinks (directories not counted)
    sha256: str  # of the .tgz: its S3 key and integrity check
    version: str
    commit: str | None
    built_at: datetime
    tasks: dict[str, list[str]] = field(default_factory=dict)  # the app's task contract (deploytool.contract)


@dataclass(frozen=True)
class _Entry:
    arcname: str
    kind: Literal["dir", "file", "link", "data"]
    path: Path | None = None
    data: bytes = b""
    target: str = ""
    executable: bool = False


def bundle_name(app: str, version: str) -> str:
    return f"{app}-{version}.tgz"


def _link_entry(root: Path, path: Path, relpath: str) -> _Entry:
    """A symlink, kept as one. It must resolve inside the tree (following any links on the way) and
    be relative: an absolute one would point into the build machine's file system. On the instance the
    agent recreates a link to a file but copies the content of a linked directory, so a link to a
    directory that contains the link itself would be copied forever."""
    target = os.readlink(path)
    resolved = Path(os.path.realpath(path))
    if os.path.isabs(target) or (resolved != root and root not in resolved.parents):
        raise BundleError(
            f"symlink {path} -> {target} points outside the app source: it would dangle on the instance "
            "(make it relative and inside the tree, or exclude it in .deployignore)"
        )
    parent = Path(os.path.realpath(path.parent))
    if resolved.is_dir() and (resolved == parent or resolved in parent.parents):
        raise BundleError(
            f"symlink {path} -> {target} points to a directory that contains it: the CodeDeploy agent copies "
            "the content of a directory symlink and would never finish (remove it, or exclude it in .deployignore)"
        )
    return _Entry(f"{APP_DIR}/{relpath}", "link", path, target=target)


def walk_source(root: Path, rules: IgnoreRules, *, skip: frozenset[Path] = frozenset()) -> list[_Entry]:
    """The app source as bundle entries (under app/), excluded paths and `skip` left out."""
    found: list[_Entry] = []

    def visit(directory: Path, prefix: str) -> None:
        with os.scandir(directory) as scan:
            items = sorted(scan, key=lambda item: item.name)
        for item in items:
            path, relpath = Path(item.path), prefix + item.name
            is_dir = item.is_dir(follow_symlinks=False)
            if rules.ignored(relpath, is_dir) or path in skip:
                continue
            if item.is_symlink():
                found.append(_link_entry(real_root, path, relpath))
            elif is_dir:
                found.append(_Entry(f"{APP_DIR}/{relpath}", "dir"))
                visit(path, relpath + "/")
            elif item.is_file(follow_symlinks=False):
                executable = bool(item.stat(follow_symlinks=False).st_mode & 0o111)
                found.append(_Entry(f"{APP_DIR}/{relpath}", "file", path, executable=executable))
            else:
                raise BundleError(f"{path}: not a file, directory or symlink; exclude it in .deployignore")

    if not root.is_dir():
        raise BundleError(f"app source {root} is not a directory (app.source in the fleet file)")
    real_root = Path(os.path.realpath(root))
    visit(root, "")
    return found


def fleet_json(fleet: Fleet, version: str, commit: str | None) -> bytes:
    context = template_context(fleet, version, commit)
    data = {
        "app": context["app"],
        "version": version,
        "commit": commit,
        "groups": {g.name: g.worker_settings() for g in fleet.groups},
        "hooks": hook_timeouts(context),
        "records": {  # where the interruption watcher records a notice (deploytool_instance.s3put)
            "bucket": fleet.artifacts.bucket,
            "prefix": fleet.artifacts.prefix,
            "region": fleet.aws.region,
            "kms_key_id": fleet.artifacts.kms_key_id,
            "expected_bucket_owner": fleet.artifacts.expected_bucket_owner,
        },
    }
    return (json.dumps(data, indent=2) + "\n").encode()


def _sort_key(arcname: str) -> list[str]:
    return arcname.split("/")


def _layout(rendered: list[RenderedFile], source: list[_Entry], fleet_json: bytes) -> list[_Entry]:
    """Every entry but the manifest, with the directories that hold them, in archive order."""
    entries = {APP_DIR: _Entry(APP_DIR, "dir")} | {e.arcname: e for e in source}
    for item in rendered:
        entries[item.arcname] = _Entry(item.arcname, "data", data=item.data, executable=item.executable)
    entries[FLEET_JSON] = _Entry(FLEET_JSON, "data", data=fleet_json)
    for arcname in list(entries):
        parent = posixpath.dirname(arcname)
        while parent and parent not in entries:
            entries[parent] = _Entry(parent, "dir")
            parent = posixpath.dirname(parent)
    return [entries[name] for name in sorted(entries, key=_sort_key)]


def _manifest(version: str, commit: str | None, files: dict[str, str], links: dict[str, str]) -> bytes:
    data: dict[str, Any] = {
        "builder": BUILDER,
        "commit": commit,
        "files": files,
        "symlinks": links,
        "version": version,
    }
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


def _write(out: Path, entries: list[_Entry], hooks: set[str], source: SourceVersion, level: int) -> tuple[int, str]:
    files: dict[str, str] = {}
    links: dict[str, str] = {}
    with out.open("wb") as stream, ReproducibleTarGz(stream, level=level) as tgz:
        for e in entries:
            executable = e.executable or e.arcname in hooks
            if e.kind == "dir":
                tgz.add_dir(e.arcname)
            elif e.kind == "link":
                tgz.add_symlink(e.arcname, e.target)
                links[e.arcname] = e.target
            elif e.kind == "file" and e.path is not None:
                files[e.arcname] = tgz.add_file(e.arcname, e.path, executable=executable)
            else:
                files[e.arcname] = tgz.add_bytes(e.arcname, e.data, executable=executable)
        tgz.add_bytes(MANIFEST_JSON, _manifest(source.version, source.commit, files, links))
        return tgz.close()


def build_bundle(
    fleet: Fleet,
    source: SourceVersion,
    out_dir: Path,
    *,
    templates: Templates | None = None,
    level: int = DEFAULT_LEVEL,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BundleResult:
    built_at = now()
    rendered = render_templates(fleet, source.version, source.commit, templates or Templates.default())
    root = fleet.source_dir
    out_dir = out_dir.resolve()
    rules = IgnoreRules().with_deployignore(root)
    app_files = walk_source(root, rules, skip=frozenset({out_dir}))
    entries = _layout(rendered, app_files, fleet_json(fleet, source.version, source.commit))
    present = {e.arcname for e in entries if e.kind != "dir"}
    appspec = next(item for item in rendered if item.arcname == APPSPEC)
    hooks = set(check_appspec(appspec.data, present))

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BundleError(
            f"cannot create the output directory {out_dir} ({exc.strerror or exc}); allowed: a "
            "writable directory, or a path to create one"
        ) from None
    final = out_dir / bundle_name(fleet.app.name, source.version)
    temp = out_dir / f".{final.name}.{os.getpid()}.tmp"
    try:
        size, sha256 = _write(temp, entries, hooks, source, level)
        os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)
    tasks = registered_tasks(_python_sources(app_files))
    return BundleResult(final, size, len(present) + 1, sha256, source.version, source.commit, built_at, tasks)


def _python_sources(entries: list[_Entry]) -> list[tuple[str, str]]:
    """The app's .py files as (path under app/, text), for its task contract."""
    found = []
    for entry in entries:
        if entry.kind == "file" and entry.path is not None and entry.arcname.endswith(".py"):
            relpath = entry.arcname.removeprefix(f"{APP_DIR}/")
            found.append((relpath, entry.path.read_text(encoding="utf-8", errors="replace")))
    return found


def build_release(
    fleet: Fleet,
    *,
    version: str | None = None,
    allow_dirty: bool = False,
    out_dir: Path | None = None,
    templates: Templates | None = None,
) -> BundleResult:
    """Name the release from git (or `version`), refusing a dirty tree unless allowed, and build it."""
    source = source_version(fleet.root, explicit=version, allow_dirty=allow_dirty)
    return build_bundle(fleet, source, out_dir or fleet.root / DIST_DIR, templates=templates)
