"""The fence around the instance-side package: what ships in the bundle imports without deploytool or its
dependencies, in a fresh interpreter, on its own.

Each check imports every module of deploytool/hooks/deploytool_instance (and the two entry points beside
it) from a rendered bundle, in `python -I -B` (no PYTHONPATH, no cwd, no user site, no .pyc written) whose sys.meta_path
starts with a blocker that refuses deploytool, pydantic, boto3, botocore, rich, jinja2, fabric and invoke.
The venv's site-packages stay on the path (celery/kombu are the app's there), so the editable deploytool
would be importable without the blocker; sys.modules is checked afterwards as well, and anything of
those already loaded at start-up is dropped first, so a cached module cannot slip through unnoticed.
The static half of the fence is the import-linter contract and ruff's TID251 in pyproject.toml.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.hooktools import SCRIPTS, app_context, group_settings, render_bundle

BANNED = ("deploytool", "pydantic", "boto3", "botocore", "rich", "jinja2", "fabric", "invoke")
PACKAGE = "deploytool_instance"
ENTRY_POINTS = ("celery_hooks.py", "celery_worker.py")

PROBE = r"""
import importlib, importlib.abc, json, pkgutil, runpy, sys
hooks_dir, package, banned = sys.argv[1], sys.argv[2], tuple(sys.argv[3].split(","))
top = lambda name: name.partition(".")[0]
preloaded = sorted(n for n in sys.modules if top(n) in banned)
for name in preloaded:
    del sys.modules[name]
refused = []

class Fence(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if top(name) in banned:
            refused.append(name)
            raise ImportError(f"fence: {name} may not be imported on an instance")
        return None

sys.meta_path.insert(0, Fence())
sys.path.insert(0, hooks_dir)
imported, failed = [], {}
root = importlib.import_module(package)
names = [package] + [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]
for name in names:
    try:
        importlib.import_module(name)
        imported.append(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
for script in sys.argv[4:]:
    try:
        runpy.run_path(f"{hooks_dir}/{script}", run_name="fence")
        imported.append(script)
    except Exception as exc:
        failed[script] = f"{type(exc).__name__}: {exc}"
loaded = sorted(n for n in sys.modules if top(n) in banned)
print(json.dumps({"imported": imported, "failed": failed, "refused": refused, "loaded": loaded,
                  "preloaded": preloaded}))
"""


def fence(hooks_dir: Path) -> dict[str, Any]:
    """Import everything under `hooks_dir` in a fresh, isolated interpreter behind the blocker."""
    done = subprocess.run(
        [sys.executable, "-I", "-B", "-c", PROBE, str(hooks_dir), PACKAGE, ",".join(BANNED), *ENTRY_POINTS],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def module_names(package_dir: Path) -> set[str]:
    """Every module of the package, from its files (so a new module cannot be skipped)."""
    names = set()
    for path in package_dir.rglob("*.py"):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.fixture(scope="module")
def hooks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = render_bundle(
        tmp_path_factory.mktemp("fence") / "bundle", app_context(), [group_settings("email", ["email"])], "v1"
    )
    return bundle / "deploytool" / "hooks"


def test_every_module_of_the_shipped_package_imports_without_the_tool_or_its_dependencies(hooks_dir: Path) -> None:
    report = fence(hooks_dir)
    assert report["failed"] == {}
    assert report["refused"] == [] and report["loaded"] == []
    assert set(report["imported"]) == module_names(SCRIPTS / PACKAGE) | set(ENTRY_POINTS)
    assert not list((hooks_dir / PACKAGE).rglob("__pycache__"))  # nothing but the sources ships


def broken_copy(hooks_dir: Path, tmp_path: Path, module: str, line: str) -> Path:
    copy = tmp_path / "hooks"
    shutil.copytree(hooks_dir, copy)
    path = copy / PACKAGE / module
    path.write_text(path.read_text() + f"\n{line}\n")
    return copy


@pytest.mark.parametrize(
    ("module", "line", "name"),
    [
        ("layout.py", "import deploytool  # noqa: F401", "deploytool_instance.layout"),
        ("brokers/remote.py", "from deploytool.config import Fleet  # noqa: F401", "deploytool_instance.brokers"),
        ("drain.py", "import importlib; importlib.import_module('pyd' + 'antic')", "deploytool_instance.drain"),
        ("launcher.py", "import botocore.session  # noqa: F401", "deploytool_instance.launcher"),
    ],
)
def test_the_fence_fails_when_a_module_imports_the_tool_or_a_dependency(
    hooks_dir: Path, tmp_path: Path, module: str, line: str, name: str
) -> None:
    report = fence(broken_copy(hooks_dir, tmp_path, module, line))
    assert name in report["failed"]
    assert "fence:" in report["failed"][name] and "may not be imported on an instance" in report["failed"][name]
    assert report["refused"]


def test_the_fence_sees_an_import_the_module_catches(hooks_dir: Path, tmp_path: Path) -> None:
    """An optional import (try/except ImportError) would pass on a laptop with the tool installed and take
    another path on the instance: the fence reports the attempt, not only failures."""
    line = "try:\n    import rich  # noqa: F401\nexcept ImportError:\n    rich = None"
    report = fence(broken_copy(hooks_dir, tmp_path, "settings.py", line))
    assert report["failed"] == {}
    assert report["refused"] == ["rich"]
