"""The Install event, as the CodeDeploy agent does it.

Contract: `install(...)` first removes what the group's previous install created (the agent's
`<group-id>-cleanup` file in deployment-instructions/), then copies the revision's `files` to
their destinations (mapped under the instance root), then applies `permissions` to what it
installed. fileExistsBehavior decides for a file that is already there but was not installed by
the previous deployment: DISALLOW fails the event before anything is copied, OVERWRITE replaces
it, RETAIN keeps it. Every file and directory created is recorded in the new cleanup file as it
is made, so the next install removes exactly those. Symlinks in the revision are installed as
symlinks. `pattern` and `except` of a permission match file names (shell globs; `**` is all).
"""

from __future__ import annotations

import fnmatch
import grp
import json
import os
import pwd
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

    def walk(source: Path, destination: Path) -> None:
        mkdir(destination)
        for entry in sorted(source.iterdir()):
            target = destination / entry.name
            if entry.is_dir() and not entry.is_symlink():
                walk(entry, target)
            else:
                copy(entry, target)

    for mapping in spec.files:
        source = archive / mapping.source.lstrip("/")
        destination = instance.path(mapping.destination)
        if not (source.exists() or source.is_symlink()):
            raise SandboxError(f"files: source {mapping.source!r} is not in the revision")
        if source.is_dir() and not source.is_symlink():
            walk(source, destination)
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
    installed = set(plan.mkdirs) | {d for _, d in plan.copies}
    for index, permission in enumerate(spec.permissions):
        _apply_permission(index, permission, instance, installed)
    return InstallResult(len(plan.copies), len(plan.retained), len(plan.mkdirs), removed)


def _matches(path: Path, permission: Permission) -> bool:
    kind = "directory" if path.is_dir() and not path.is_symlink() else "file"
    if kind not in permission.types:
        return False
    name = path.name
    if permission.pattern != "**" and not fnmatch.fnmatchcase(name, permission.pattern):
        return False
    return not any(fnmatch.fnmatchcase(name, pattern) for pattern in permission.excepts)


def _uid(name: str | None) -> int:
    return -1 if name is None else pwd.getpwnam(name).pw_uid


def _gid(name: str | None) -> int:
    return -1 if name is None else grp.getgrnam(name).gr_gid


def _apply_permission(index: int, permission: Permission, instance: Instance, installed: set[Path]) -> None:
    target = instance.path(permission.object)
    if target in installed and not target.is_dir():
        matches = [target] if "file" in permission.types else []
    elif target.is_dir():
        matches = sorted(p for p in installed if target in p.parents and _matches(p, permission))
    else:
        return
    for path in matches:
        if path.is_symlink():
            continue
        try:
            if permission.mode is not None:
                path.chmod(permission.mode)
            if permission.owner or permission.group:
                os.chown(path, _uid(permission.owner), _gid(permission.group), follow_symlinks=False)
        except (OSError, LookupError) as exc:
            raise SandboxError(
                f"permissions[{index}]: cannot set owner/group/mode on {instance.shown(path)}: {exc} "
                "(setting another owner needs root)"
            ) from exc
