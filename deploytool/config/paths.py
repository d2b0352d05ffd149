"""The fleet file's paths against the disk: the app source and the local targets' roots.

Contract: `check_paths` looks at the paths (following symlinks) and creates, changes or deletes nothing;
ConfigError names the key (app.source, targets.NAME.root), what is there and what is allowed.
"""

from __future__ import annotations

import os
from pathlib import Path

from deploytool.config.messages import key_path
from deploytool.config.models import ROOT_ALLOWED, Fleet, LocalTarget
from deploytool.errors import ConfigError


def _resolved(base: Path, value: str) -> Path | None:
    """`value` below `base`, symlinks followed; None when the OS cannot make a path of it."""
    try:
        return (base / value).resolve()
    except (OSError, ValueError, RuntimeError):
        return None


def check_paths(fleet: Fleet, shown: str) -> None:
    """The fleet's paths against the disk (ConfigError if not as allowed).

    [app].source must be an existing directory inside the fleet file's directory as written (that
    directory itself is allowed; a symlink there may lead elsewhere, as the sandbox run's work tree
    allows): bundles and the sandbox run take the app from there. A local
    target's root must lead (through symlinks too) to a place inside that directory, not the directory
    itself, and not to a file.
    """
    base = fleet.root
    source = _resolved(base, fleet.app.source)
    problem = None
    if source is None or not Path(os.path.normpath(base / fleet.app.source)).is_relative_to(base):
        problem = f"is outside the fleet file's directory {base}"
    elif not source.is_dir():
        problem = "does not exist" if not os.path.lexists(source) else "is not a directory"
    if problem:
        raise ConfigError(
            f"got {fleet.app.source!r}, which {problem}; allowed: the app's directory, relative to the fleet "
            "file's directory and inside it",
            path=shown,
            key="app.source",
        )
    for name, target in fleet.targets.items():
        if not isinstance(target, LocalTarget):
            continue
        root = _resolved(base, target.root)
        if root is None or root == base or not root.is_relative_to(base):
            where = f"it leads to {root}" if root is not None else "it is no usable path"
            raise ConfigError(
                f"got {target.root!r}, but {where}; {ROOT_ALLOWED}", path=shown, key=key_path(["targets", name, "root"])
            )
        if os.path.lexists(root) and not root.is_dir():
            raise ConfigError(
                f"got {target.root!r}, which is a file, not a directory; {ROOT_ALLOWED}",
                path=shown,
                key=key_path(["targets", name, "root"]),
            )
