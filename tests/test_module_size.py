"""No module over 500 lines in deploytool/ or the hook package (scripts/deploytool_instance/), issue 10.

A module past the limit is split by what its parts hold (deploytool/config/ and deploytool/sandbox/deployment.py
are examples), not trimmed by squeezing lines. Lines are counted as `wc -l` counts them. Reads files only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

MAX_LINES = 500
REPO = Path(__file__).resolve().parent.parent
ROOTS = ("deploytool", "scripts/deploytool_instance")


def too_long(root: Path, limit: int = MAX_LINES) -> list[str]:
    """`path: N lines` for every .py file below `root` with more than `limit` lines, by path."""
    found = []
    for path in sorted(root.rglob("*.py")):
        count = path.read_bytes().count(b"\n")
        if count > limit:
            found.append(f"{path.relative_to(REPO)}: {count} lines")
    return found


@pytest.mark.parametrize("root", ROOTS)
def test_no_module_is_over_500_lines(root: str) -> None:
    base = REPO / root
    assert any(base.rglob("*.py")), f"{root}: no Python modules found; was the package moved?"
    offenders = too_long(base)
    assert not offenders, f"over {MAX_LINES} lines (split by what the parts hold): " + "; ".join(offenders)


def test_a_module_over_the_limit_is_named_with_its_count() -> None:
    root = REPO / "deploytool"
    longest = max(root.rglob("*.py"), key=lambda p: p.read_bytes().count(b"\n"))
    count = longest.read_bytes().count(b"\n")
    assert too_long(root, limit=count) == []
    assert f"{longest.relative_to(REPO)}: {count} lines" in too_long(root, limit=count - 1)
