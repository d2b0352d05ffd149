"""dev.py's floor run installs exactly pyproject.toml's boto3/botocore floors (read from it, never from the lock)
and everything else at the lock's versions; a floor it cannot read is one clear line, not a guess."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deploytool.aws.versions import MIN_BOTOCORE
from dev import FLOOR_TESTS, floor_constraints, floor_requirements, requirement_name

ROOT = Path(__file__).resolve().parent.parent
FLOOR = ".".join(map(str, MIN_BOTOCORE))


def copy(tmp_path: Path, old: str = "", new: str = "") -> Path:
    (tmp_path / "requirements").mkdir()
    shutil.copy(ROOT / "requirements" / "dev.lock", tmp_path / "requirements" / "dev.lock")
    text = (ROOT / "pyproject.toml").read_text()
    assert old in text
    (tmp_path / "pyproject.toml").write_text(text.replace(old, new))
    return tmp_path


def test_the_floor_venv_pins_the_floors_and_takes_the_test_tools_from_the_extras() -> None:
    wanted = floor_requirements(ROOT)
    assert wanted[:2] == [f"boto3=={FLOOR}", f"botocore=={FLOOR}"]
    names = [requirement_name(r) for r in wanted]
    assert names.count("boto3") == 1 and names.count("botocore") == 1  # no second, unpinned boto3
    assert {"fabric", "pydantic", "duckdb", "moto", "pytest", "pytest-timeout", "pytest-xdist"} <= set(names)
    assert "celery" not in names and "mypy" not in names  # the floor venv is small


def test_a_raised_floor_is_what_the_floor_venv_gets(tmp_path: Path) -> None:
    root = copy(tmp_path, '"botocore>=1.43.115"', '"botocore>=1.44.0"')
    assert floor_requirements(root)[:2] == [f"boto3=={FLOOR}", "botocore==1.44.0"]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            '"boto3>=1.43.115"',
            '"boto3>=1.43.115,<2"',
            "'boto3>=1.43.115,<2': the floor run needs exactly 'boto3>=X.Y.Z'",
        ),
        ('    "botocore>=1.43.115",\n', "", "no '>=' floor for botocore in [project] dependencies"),
    ],
)
def test_a_floor_it_cannot_read_is_one_line(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        floor_requirements(copy(tmp_path, old, new))
    assert message in str(stopped.value) and str(stopped.value).startswith("pyproject.toml: ")


def test_the_constraints_are_the_lock_without_boto3_botocore_s3transfer() -> None:
    pins = [line for line in floor_constraints(ROOT).splitlines() if "==" in line]
    names = {requirement_name(line) for line in pins}
    assert not names & {"boto3", "botocore", "s3transfer"}
    assert {"moto", "pytest", "pydantic", "boto3-stubs"} <= names  # the rest, at the lock's versions
    lock = (ROOT / "requirements" / "dev.lock").read_text().splitlines()
    assert len(pins) == len([line for line in lock if "==" in line]) - 3


def test_the_floor_tests_exist() -> None:
    assert all((ROOT / test).is_file() for test in FLOOR_TESTS)
