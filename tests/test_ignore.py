"""The .deployignore rules: gitignore's meaning for the patterns a deploy needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploytool.errors import BundleError
from deploytool.ignore import IgnoreRules

RULES = IgnoreRules().extended(
    ["# comment", "", "/build/", "docs/**/*.md", "*.log", "!keep.log", "data/", "a/*/c", "[!x]y.txt"],
    origin=".deployignore",
)


@pytest.mark.parametrize(
    ("path", "is_dir", "ignored"),
    [
        (".git", True, True), ("sub/.git", False, True), ("pkg/__pycache__", True, True), ("m.pyc", False, True),
        (".env", False, True), ("deep/.env.local", False, True), ("certs/key.pem", False, True),
        ("build", True, True), ("x/build", True, False), ("build", False, False),
        ("docs/a/b/c.md", False, True), ("docs/c.md", False, True), ("z/docs/c.md", False, False),
        ("q.log", False, True), ("keep.log", False, False), ("s/keep.log", False, False),
        ("s/data", True, True), ("s/data", False, False),
        ("a/b/c", False, True), ("a/b/d/c", False, False),
        ("ay.txt", False, True), ("xy.txt", False, False), ("app.py", False, False),
    ],
)
def test_patterns(path: str, is_dir: bool, ignored: bool) -> None:
    assert RULES.ignored(path, is_dir) is ignored


def test_deployignore_is_read_from_the_source_root(tmp_path: Path) -> None:
    assert IgnoreRules().with_deployignore(tmp_path).ignored("a.log", False) is False
    (tmp_path / ".deployignore").write_text("*.log\n")
    assert IgnoreRules().with_deployignore(tmp_path).ignored("a.log", False) is True


def test_a_pattern_that_matches_nothing_names_its_line(tmp_path: Path) -> None:
    (tmp_path / ".deployignore").write_text("*.log\n/\n")
    with pytest.raises(BundleError) as caught:
        IgnoreRules().with_deployignore(tmp_path)
    assert str(caught.value) == f"{tmp_path / '.deployignore'}:2: pattern '/' matches nothing"
