"""What the wheel is made of, checked without building it (tests/test_installed.py builds and installs it)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

from deploytool.resources import DATA_DIRS, resource_root
from deploytool.scaffold import FABFILE

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_under_deploytool_is_listed_for_the_wheel() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = set(find_packages(str(ROOT), include=["deploytool", "deploytool.*"]))
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - found == {f"deploytool._data.{name}" for name in DATA_DIRS}


def test_the_data_packages_map_to_the_top_level_directories_whole() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert setuptools["package-dir"] == {f"deploytool._data.{name}": name for name in DATA_DIRS}
    assert setuptools["package-data"] == {f"deploytool._data.{name}": ["**/*"] for name in DATA_DIRS}
    assert PYPROJECT["project"]["scripts"] == {"deploytool": "deploytool.main:program.run"}


def test_a_checkout_reads_its_own_directories() -> None:
    assert resource_root() == ROOT


def test_the_repositorys_fabfile_is_the_two_lines_the_readme_shows() -> None:
    assert (ROOT / "fabfile.py").read_text() == FABFILE
    assert f"```python\n{FABFILE}```" in (ROOT / "README.md").read_text()


def test_a_hook_is_executable_when_it_starts_with_a_shebang_whatever_its_mode(tmp_path: Path) -> None:
    """A wheel keeps no mode on scripts/*.py (setuptools copies package modules without it), so the bundle
    cannot take the executable bit from the file mode and still be the same bytes from an install."""
    from deploytool.render import _script_files

    (tmp_path / "launcher.py").write_text("#!/usr/bin/env python3\n")
    (tmp_path / "launcher.py").chmod(0o644)
    (tmp_path / "notes.txt").write_text("not a script\n")
    (tmp_path / "notes.txt").chmod(0o755)
    assert [(name, executable) for name, _, executable in _script_files(tmp_path)] == [
        ("launcher.py", True),
        ("notes.txt", False),
    ]
