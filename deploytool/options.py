"""The fab tasks' option values, checked before a task touches a sandbox, AWS or the disk.

Contract: each function takes an option's value as invoke hands it over (a string, an int for an
integer option, or None when the option was left out) and returns the value to use, or raises
UsageError (exit 2) with one line naming the option, the value and what is allowed. A value given
empty or blank is an error, never "the default": a CI script whose variable is empty must not
deploy the whole fleet. Checks that need nothing but the value run first; none of them starts or
attaches to anything. (invoke's own parse errors, an unknown option or a non-integer, are turned
into one line and exit 2 by deploytool.cli.)
"""

from __future__ import annotations

import difflib
import re
import shutil
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from deploytool.config import Fleet
from deploytool.errors import UsageError
from deploytool.rollout.summary import check_json_out
from deploytool.version import validate_version

_RELEASE_ID = re.compile(r"^(\d{8}T\d{6}Z)-(.+)$")
MAX_SHOWN = 80


def shown(value: object) -> str:
    """repr of a value for an error line, cut so that a 10,000-character value stays one readable line."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else f"{text[: MAX_SHOWN - 3]}...'"


def did_you_mean(value: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _given(option: str, value: str | None) -> str | None:
    if value is not None and not str(value).strip():
        raise UsageError(f"{option} {shown(value)} is empty: give a value, or leave {option} out for its default")
    return value


def choice(option: str, value: str | None, allowed: Sequence[str]) -> str | None:
    if _given(option, value) is None:
        return None
    if value not in allowed:
        raise UsageError(
            f"{option} {shown(value)} is not allowed{did_you_mean(str(value), allowed)}; allowed: {', '.join(allowed)}"
        )
    return value


def integer(option: str, value: int | str, *, low: int, high: int | None = None) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < low or (high is not None and number > high):
        allowed = f"a whole number from {low} to {high}" if high is not None else f"a whole number, {low} or more"
        raise UsageError(f"{option} {shown(value)} is not allowed; allowed: {allowed}")
    return number


def target(fleet: Fleet, value: str | None) -> str:
    """The target's name: the one given, or the fleet's default target."""
    if _given("--target", value) is None:
        return fleet.target(None)[0]
    if value not in fleet.targets:
        names = list(fleet.targets)
        raise UsageError(
            f"--target {shown(value)}: no such target in {fleet.path}{did_you_mean(str(value), names)}; "
            f"allowed: {', '.join(names)}"
        )
    return str(value)


def codedeploy_target(fleet: Fleet, value: str | None, task: str) -> str:
    """The target's name (as `target`), refused unless it is a codedeploy target (`fab doctor`)."""
    name = target(fleet, value)
    kinds = {n: getattr(t, "backend", "") for n, t in fleet.targets.items()}
    if kinds[name] != "codedeploy":
        allowed = [n for n, kind in kinds.items() if kind == "codedeploy"]
        which = f"--target {shown(name)}" if value is not None else f"the default target {shown(name)}"
        raise UsageError(
            f"{which} is a local sandbox: `fab {task}` checks a codedeploy target's AWS set-up; give --target "
            f"{' or '.join(allowed) or '<name> of a codedeploy target (the fleet file has none)'}"
        )
    return name


def athena_database(value: str | None) -> str | None:
    """An Athena (Glue) database name: what `fab athena-ddl` accepts."""
    return pattern("--database", value, r"[a-z0-9_]{1,255}", "lowercase letters, digits and _ (at most 255)")


def names(option: str, value: str | None, allowed: Sequence[str], *, what: str, where: str = "") -> list[str] | None:
    """The names of a comma-separated option, each one of `allowed`; None only when the option was left out."""
    if _given(option, value) is None:
        return None
    found = [part.strip() for part in str(value).split(",") if part.strip()]
    if not found:
        raise UsageError(
            f"{option} {shown(value)} names no {what}: give comma-separated names of "
            f"{', '.join(allowed)}, or leave {option} out for its default"
        )
    for name in found:
        if name not in allowed:
            raise UsageError(
                f"{option} {shown(value)}: no {what} named {shown(name)}{where}"
                f"{did_you_mean(name, allowed)}; allowed: {', '.join(allowed)}"
            )
    return found


def group_names(fleet: Fleet, value: str | None, option: str = "--groups") -> list[str] | None:
    """The groups of --groups; None (every group) only when the option was left out, never when it is empty."""
    return names(option, value, [g.name for g in fleet.groups], what="group", where=f" in {fleet.path}")


def group_name(fleet: Fleet, value: str | None) -> str | None:
    """The one group of --group (fab hooks)."""
    chosen = group_names(fleet, value, "--group")
    if chosen is not None and len(chosen) != 1:
        raise UsageError(f"--group {shown(value)}: one group only; allowed: {', '.join(g.name for g in fleet.groups)}")
    return chosen[0] if chosen else None


def version(option: str, value: str | None) -> str | None:
    if _given(option, value) is None:
        return None
    return validate_version(str(value), what=option)


def release_id(option: str, value: str | None) -> str | None:
    if _given(option, value) is None:
        return None
    match = _RELEASE_ID.fullmatch(str(value))
    ok = match is not None
    if match is not None:
        try:
            datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ")
            validate_version(match.group(2))
        except ValueError:
            ok = False
    if not ok:
        raise UsageError(
            f"{option} {shown(value)} is not a release id; allowed: <yyyymmddThhmmssZ>-<version>, "
            "as `fab deploy` and `fab status` print them"
        )
    return str(value)


def _unusable(option: str, value: object, exc: OSError) -> UsageError:
    return UsageError(f"{option} {shown(value)}: cannot use this path ({exc.strerror or exc})")


def json_out(value: str | None) -> str | None:
    if _given("--json-out", value) is None:
        return None
    try:
        check_json_out(Path(str(value)))
    except OSError as exc:  # e.g. a name too long to look up
        raise _unusable("--json-out", value, exc) from None
    return str(value)


def out_dir(value: str | None) -> Path | None:
    """An output directory that exists or can be created (tried: a directory made and removed again)."""
    if _given("--out", value) is None:
        return None
    path = Path(str(value))
    try:
        exists, is_dir = path.exists(), path.is_dir()
        parent = path if is_dir else next(p for p in path.absolute().parents if p.exists())
    except OSError as exc:
        raise _unusable("--out", value, exc) from None
    if exists and not is_dir:
        raise UsageError(f"--out {shown(value)} is not a directory; allowed: a directory, or a path to create one")
    try:
        if not parent.is_dir():
            raise NotADirectoryError(f"{parent} is a file")
        shutil.rmtree(tempfile.mkdtemp(prefix=".deploytool-out.", dir=parent))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(
            f"--out {shown(value)}: cannot create a directory under {parent} ({reason}); allowed: a "
            "writable directory, or a path to create one"
        ) from None
    return path


def existing_file(option: str, value: str | None) -> Path | None:
    if _given(option, value) is None:
        return None
    path = Path(str(value))
    try:
        found = path.is_file()
    except OSError as exc:
        raise _unusable(option, value, exc) from None
    if not found:
        raise UsageError(f"{option} {shown(value)}: no such file")
    return path


def pattern(option: str, value: str | None, regex: str, allowed: str) -> str | None:
    if _given(option, value) is None:
        return None
    if not re.fullmatch(regex, str(value)):
        raise UsageError(f"{option} {shown(value)} is not allowed; allowed: {allowed}")
    return str(value)


def url(option: str, value: str | None) -> str | None:
    if _given(option, value) is None:
        return None
    try:
        parsed = urlsplit(str(value))
        ok = parsed.scheme in ("http", "https") and bool(parsed.hostname) and parsed.port != 0
    except ValueError:  # a bad port or IPv6 address
        ok = False
    if not ok or any(c.isspace() for c in str(value)):
        raise UsageError(f"{option} {shown(value)} is not allowed; allowed: an http:// or https:// URL")
    return str(value)


def text(option: str, value: str | None) -> str | None:
    """A free-form value (an id, a URL): anything but empty."""
    return _given(option, value)


def lease_flags(wait: bool, break_lease: bool, *, dry_run: bool = False, fix: bool = True) -> tuple[bool, bool]:
    """--wait and --break-lease (the release lease, deploytool.rollout.lease): one of them at most, and only on
    a run that takes the lease (not a --dry-run; on `fab reconcile`, only with --fix)."""
    given = [name for name, on in (("--wait", wait), ("--break-lease", break_lease)) if on]
    if len(given) == 2:
        raise UsageError(
            "--wait and --break-lease: choose one (--wait waits until the lease is free, --break-lease takes over "
            "a stale one at once)"
        )
    if given and dry_run:
        raise UsageError(f"{given[0]} with --dry-run: a dry run takes no release lease; leave {given[0]} out")
    if given and not fix:
        raise UsageError(f"{given[0]} is for `fab reconcile --fix` (only the fix deploys); add --fix or leave it out")
    return bool(wait), bool(break_lease)
