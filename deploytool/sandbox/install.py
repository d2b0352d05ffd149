"""The Install event, as the CodeDeploy agent does it.

Contract: `install(...)` first removes what the group's previous install created (the agent's
`<group-id>-cleanup` file in deployment-instructions/), then copies the revision's `files` to
their destinations (mapped under the instance root), then applies `permissions` to what it
installed. fileExistsBehavior decides for a file that is already there but was not installed by
the previous deployment: DISALLOW fails the event before anything is copied, OVERWRITE replaces
it, RETAIN keeps it. Every file and directory created is recorded in the new cleanup file as it
is made, so the next install removes exactly those.

Symlinks, as the released agent (1.x, installer.rb) treats them: a symlink to a directory is
followed, so the destination gets a real directory with a copy of its content (a link back to one of
its own ancestors is refused: the agent would recurse until it fails); any other symlink is
recreated as the same symlink.

Permissions, as the agent's install instructions apply them: an `object` that this install copied
as a file gets the permission itself (type must include file; then `pattern` must be `**` and
`except` empty). An `object` that is a directory (existing, or made by this install) passes the
permission to what this install copied (type file) or made (type directory) strictly below it; the
object itself is never included, and `pattern` / `except` (globs with `*` only) match a path's name
relative to the object, so anything but `**` reaches direct children only. A path that two
permissions reach is an error, as on the agent. Owners and groups need root to change; symlinks are
left as they are; `acls` and `context` are not applied (the appspec parser warns).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from deploytool.sandbox.appspec import AppSpec, FileExistsBehavior, Permission
from deploytool.sandbox.errors import SandboxError
from deploytool.sandbox.instance import Instance


@dataclass
class InstallPlan:
    mkdirs: list[Path] = field(default_factory=list)
    copies: list[tuple[Path, Path]] = field(default_factory=list)
    retained: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class InstallResult:
    copied: int
    retained: int
    directories: int
    removed: int


def _cleanup_file(instance: Instance, group_id: str) -> Path:
    return instance.instructions_dir / f"{group_id}-cleanup"


def remove_previous(instance: Instance, group_id: str) -> int:
    """Remove what the group's previous install created (files, then directories left empty)."""
    record = _cleanup_file(instance, group_id)
    if not record.exists():
        return 0
    removed = 0
    for line in reversed(record.read_text().splitlines()):
        if not line.strip():
            continue
        path = instance.path(line)
        if path.is_symlink() or path.is_file():
            path.unlink()
            removed += 1
        elif path.is_dir():
            try:
                path.rmdir()  # only when empty: files the app wrote there stay
            except OSError:
                pass
    record.unlink()
    return removed


def plan_install(archive: Path, spec: AppSpec, instance: Instance, behavior: FileExistsBehavior) -> InstallPlan:
    plan = InstallPlan()
    planned_dirs: set[Path] = set()

    def mkdir(path: Path) -> None:
        missing: list[Path] = []
        probe = path
        while probe != instance.root and not probe.exists() and probe not in planned_dirs:
            missing.insert(0, probe)
            probe = probe.parent
        for directory in missing:
            planned_dirs.add(directory)
            plan.mkdirs.append(directory)

    def copy(source: Path, destination: Path) -> None:
        if destination.is_dir() and not destination.is_symlink():
            raise SandboxError(f"cannot install {instance.shown(destination)}: a directory is in the way")
        if destination.exists() or destination.is_symlink():
            if behavior == "DISALLOW":
                raise SandboxError(
                    "The deployment failed because a specified file already exists at this location: "
                    f"{instance.shown(destination)} (fileExistsBehavior DISALLOW; use OVERWRITE or RETAIN, or "
                    "remove it)"
                )
            if behavior == "RETAIN":
                plan.retained.append(destination)
                return
        plan.copies.append((source, destination))

    def walk(source: Path, destination: Path, above: tuple[Path, ...]) -> None:
        # Like the agent's File.directory?, is_dir() follows symlinks: a linked directory is copied.
        real = source.resolve()
        if real in above:
            raise SandboxError(
                f"files: {source.relative_to(archive)} links to a directory that contains it: the agent copies "
                "the content of a directory symlink and would never finish (remove the link from the bundle)"
            )
        mkdir(destination)
        for entry in sorted(source.iterdir()):
            target = destination / entry.name
            if entry.is_dir():
                walk(entry, target, (*above, real))
            else:
                copy(entry, target)

    for mapping in spec.files:
        source = archive / mapping.source.lstrip("/")
        destination = instance.path(mapping.destination)
        if not (source.exists() or source.is_symlink()):
            raise SandboxError(f"files: source {mapping.source!r} is not in the revision")
        if source.is_dir():
            walk(source, destination, ())
        else:
            mkdir(destination)
            copy(source, destination / source.name)
    return plan


def install(
    archive: Path, spec: AppSpec, instance: Instance, *, group_id: str, behavior: FileExistsBehavior
) -> InstallResult:
    removed = remove_previous(instance, group_id)
    plan = plan_install(archive, spec, instance, behavior)
    instance.instructions_dir.mkdir(parents=True, exist_ok=True)
    (instance.instructions_dir / f"{group_id}-install.json").write_text(
        json.dumps(
            {
                "mkdir": [instance.shown(d) for d in plan.mkdirs],
                "copy": [[str(s.relative_to(archive)), instance.shown(d)] for s, d in plan.copies],
                "retain": [instance.shown(p) for p in plan.retained],
            },
            indent=1,
        )
    )
    with _cleanup_file(instance, group_id).open("w") as record:
        for directory in plan.mkdirs:
            directory.mkdir()
            record.write(instance.shown(directory) + "\n")
            record.flush()
        for source, destination in plan.copies:
            if destination.is_symlink() or destination.exists():
                destination.unlink()
            if source.is_symlink():
                destination.symlink_to(os.readlink(source))
            else:
                shutil.copy2(source, destination)
            record.write(instance.shown(destination) + "\n")
            record.flush()
    for path, (index, permission) in _permission_targets(spec, instance, plan).items():
        _apply_permission(index, permission, instance, path)
    return InstallResult(len(plan.copies), len(plan.retained), len(plan.mkdirs), removed)


def _simple_glob(name: str, pattern: str) -> bool:
    """The agent's matches_simple_glob: `*` is any run of characters, everything else is literal, and a
    name with a `/` in it (deeper than a direct child) never matches."""
    if "/" in name:
        return False
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), name, re.DOTALL) is not None


def _below(path: Path, obj: Path) -> str | None:
    """`path` relative to `obj` when strictly below it, else None."""
    return path.relative_to(obj).as_posix() if obj in path.parents else None


def _reaches(path: Path, obj: Path, permission: Permission) -> bool:
    """The agent's matches_pattern? and not matches_except?."""
    relative = _below(path, obj)
    if relative is None:
        return False
    if permission.pattern != "**" and not _simple_glob(relative, permission.pattern):
        return False
    return not any(_simple_glob(relative, item) for item in permission.excepts)


def _permission_targets(spec: AppSpec, instance: Instance, plan: InstallPlan) -> dict[Path, tuple[int, Permission]]:
    """Every installed path a permission reaches, with that permission (the agent's install instructions)."""
    copied = [destination for _, destination in plan.copies]
    made = set(plan.mkdirs)
    targets: dict[Path, tuple[int, Permission]] = {}
    for index, permission in enumerate(spec.permissions):
        obj = instance.path(permission.object)
        if obj in copied:
            if "file" not in permission.types:
                continue
            if permission.pattern != "**" or permission.excepts:
                raise SandboxError(
                    f"permissions[{index}]: object {permission.object} is a file: its pattern must be ** and "
                    "except empty (the agent rejects a file pattern applied to a file)"
                )
            reached = [obj]
        elif obj in made or (obj.is_dir() and not obj.is_symlink()):
            reached = [p for p in copied if "file" in permission.types and _reaches(p, obj, permission)]
            reached += [p for p in plan.mkdirs if "directory" in permission.types and _reaches(p, obj, permission)]
        else:
            continue
        for path in reached:
            if path in targets:
                raise SandboxError(
                    f"permissions[{index}]: the permissions setting for {instance.shown(path)} is specified more "
                    f"than once (also by permissions[{targets[path][0]}]); the agent fails the deployment"
                )
            targets[path] = (index, permission)
    return targets


def _uid(name: str | None) -> int:
    return -1 if name is None else pwd.getpwnam(name).pw_uid


def _gid(name: str | None) -> int:
    return -1 if name is None else grp.getgrnam(name).gr_gid


def _apply_permission(index: int, permission: Permission, instance: Instance, path: Path) -> None:
    if path.is_symlink():
        return
    try:
        if permission.mode is not None:
            path.chmod(permission.mode)
        if permission.owner or permission.group:
            os.chown(path, _uid(permission.owner), _gid(permission.group), follow_symlinks=False)
    except KeyError as exc:
        raise SandboxError(
            f"permissions[{index}]: no such user or group on this machine: {exc.args[0] if exc.args else exc}"
        ) from exc
    except OSError as exc:
        raise SandboxError(
            f"permissions[{index}]: cannot set owner/group/mode on {instance.shown(path)}: {exc.strerror or exc} "
            "(setting another owner needs root)"
        ) from exc
