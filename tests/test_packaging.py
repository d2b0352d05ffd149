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
