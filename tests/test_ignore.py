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
        (".git", True, True),
        ("sub/.git", False, True),
        ("pkg/__pycache__", True, True),
        ("m.pyc", False, True),
        (".env", False, True),
        ("deep/.env.local", False, True),
        ("certs/key.pem", False, True),
        ("build", True, True),
        ("x/build", True, False),
        ("build", False, False),
        ("docs/a/b/c.md", False, True),
        ("docs/c.md", False, True),
        ("z/docs/c.md", False, False),
        ("q.log", False, True),
        ("keep.log", False, False),
        ("s/keep.log", False, False),
        ("s/data", True, True),
        ("s/data", False, False),
        ("a/b/c", False, True),
        ("a/b/d/c", False, False),
        ("ay.txt", False, True),
        ("xy.txt", False, False),
        ("app.py", False, False),
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


@pytest.mark.parametrize(
    ("patterns", "path", "is_dir", "ignored"),
    [
        # Re-including a directory does not re-include what an earlier pattern excludes inside it (git: `*.pem`
        # still excludes config/key.pem after `!config/`): no key or .env file ships because of a negation.
        (["!config/"], "config", True, False),
        (["!config/"], "config/key.pem", False, True),
        (["!config/"], "config/.env", False, True),
        # The whitelist idiom: exclude everything, keep every directory, re-include the .py files.
        (["*", "!*/", "!*.py"], "pkg", True, False),
        (["*", "!*/", "!*.py"], "pkg/sub", True, False),
        (["*", "!*/", "!*.py"], "pkg/sub/a.py", False, False),
        (["*", "!*/", "!*.py"], "pkg/sub/notes.txt", False, True),
    ],
)
def test_negations_follow_git(patterns: list[str], path: str, is_dir: bool, ignored: bool) -> None:
    rules = IgnoreRules().extended(patterns, origin=".deployignore")
    assert rules.ignored(path, is_dir) is ignored
