"""deploytool as a user installs it: the wheel built from this tree, installed (not editable) into a fresh venv,
then `fab` and `deploytool` run in another repository, the sample app's, whose fabfile.py is the two-line import.

The fresh venv is made with `python -m venv --without-pip`; a .pth file puts the test venv's site-packages after
its own, so the dependencies (fabric, boto3, ...) resolve without a download, and pip installs the wheel into it
with --no-deps. Each run checks that deploytool is imported from the new venv, and that this source tree is not
on sys.path. A second install with `pip install --target` is checked the same way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from deploytool.scaffold import FABFILE
from tests.fab_repo import ROOT
from tests.gitrepo import git, init_repo

pytestmark = pytest.mark.slow

DATA_DIRS = ("appspec", "scripts", "athena")
# Printed by the installed Python: where deploytool and its data come from, and whether this tree is on sys.path.
WHERE = (
    "import sys, deploytool, deploytool.render as r; "
    "print(deploytool.__file__); print(r.Templates.default().scripts); "
    f"print(any(p and __import__('os').path.realpath(p) == {str(ROOT)!r} for p in sys.path))"
)


def run(cmd: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DEPLOYTOOL_", "AWS_", "PYTHON", "VIRTUAL_ENV")) and k != "CI"
    }
    environ.update({"COLUMNS": "200", **(env or {})})
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, env=environ, timeout=300)


def listed(directory: str) -> list[str]:
    """The files git lists under `directory` of this tree (tracked, and untracked but not ignored)."""
    out = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z", "--", directory],
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted(name for name in out.split("\0") if name and (ROOT / name).is_file())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel pip builds from a copy of this tree (building writes build/ and *.egg-info beside the sources)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    for name in listed("."):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    done = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "dist", source], cwd=tmp)
    assert done.returncode == 0, done.stderr
    (built,) = (tmp / "dist").glob("deploytool-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (not editable); dependencies from the test venv through a .pth."""
    target = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True)
    python = target / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    done = run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel], cwd=target)
    assert done.returncode == 0, done.stderr
    return target


@pytest.fixture(scope="module")
def app_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample app copied out of this tree, with this tree's deploy.toml and the two-line fabfile, committed."""
    repo = tmp_path_factory.mktemp("app")
    shutil.copytree(ROOT / "sample_app", repo / "sample_app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "deploy.toml", repo / "deploy.toml")
    (repo / "fabfile.py").write_text(FABFILE)
    (repo / ".gitignore").write_text("dist/\n__pycache__/\n")
    init_repo(repo)
    return repo


def fab(venv: Path, repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`fab` of the venv (fabric's own entry point, run by the venv's Python)."""
    return run([venv / "bin" / "python", "-m", "fabric", *args], cwd=repo)


def test_the_wheel_holds_every_template_hook_source_and_query(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    for directory in DATA_DIRS:
        expected = listed(directory)
        assert expected, directory
        assert {f"deploytool/_data/{name}" for name in expected} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert "deploytool/tasks/__init__.py" in names and "deploytool/main.py" in names
    assert not [n for n in names if n.startswith(("share/", "fabfile")) or ".data/data/" in n]
    assert "deploytool = deploytool.main:program.run" in entry_points


def test_the_installed_copy_runs_not_this_tree(venv: Path, app_repo: Path) -> None:
    done = run([venv / "bin" / "python", "-c", WHERE], cwd=app_repo)
    assert done.returncode == 0, done.stderr
    module, scripts, on_path = done.stdout.splitlines()
    site = venv.resolve()
    assert Path(module).resolve().is_relative_to(site), module
    assert Path(scripts).resolve() == Path(module).resolve().parent / "_data" / "scripts"
    assert on_path == "False"


def test_fab_and_deploytool_check_in_an_app_repository(venv: Path, app_repo: Path) -> None:
    for done in (fab(venv, app_repo, "check"), run([venv / "bin" / "deploytool", "check"], cwd=app_repo)):
        assert done.returncode == 0, done.stderr
        assert "ok (3 groups, targets: sandbox, production)" in done.stdout
    listing = run([venv / "bin" / "deploytool", "--list"], cwd=app_repo)
    assert listing.returncode == 0, listing.stderr
    assert fab(venv, app_repo, "--list").stdout.splitlines()[1:] == listing.stdout.splitlines()[1:]


def test_deploytool_parse_errors_are_one_line(venv: Path, app_repo: Path) -> None:
    done = run([venv / "bin" / "deploytool", "deploy", "--max-parallel", "x"], cwd=app_repo)
    assert (done.returncode, done.stderr) == (
        2,
        "error: --max-parallel 'x' is not allowed; allowed: a whole number; see `deploytool --help deploy`\n",
    )


def test_fab_build_in_an_app_repository(venv: Path, app_repo: Path, tmp_path: Path) -> None:
    done = fab(venv, app_repo, "build")
    assert done.returncode == 0, done.stderr
    bundle = Path(next(line.split(None, 1)[1] for line in done.stdout.splitlines() if line.startswith("bundle")))
    assert bundle.parent == app_repo / "dist"
    with tarfile.open(bundle) as archive:
        names = archive.getnames()
    hooks = {name.removesuffix(".j2") for name in listed("scripts") if name.count("/") == 1}
    expected = {
        "appspec.yml",
        "deploytool/fleet.json",
        "deploytool/manifest.json",
        *(f"deploytool/hooks/{name.removeprefix('scripts/')}" for name in hooks),
    }
    assert expected <= set(names), expected - set(names)
    assert "app/acme_workers/celery_app.py" in names
    assert git(app_repo, "status", "--porcelain") == ""
    # byte for byte the bundle this source tree builds from the same commit: the installed data is the source's
    here = run(
        [Path(sys.executable).with_name("fab"), "build", "--out", tmp_path], cwd=app_repo, env={"PYTHONPATH": str(ROOT)}
    )
    assert here.returncode == 0, here.stderr
    assert (tmp_path / bundle.name).read_bytes() == bundle.read_bytes()


def test_deploytool_init_then_fab_check(venv: Path, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "sample_app", tmp_path / "sample_app", ignore=shutil.ignore_patterns("__pycache__"))
    done = run([venv / "bin" / "deploytool", "init", "--celery-app", "acme_workers.celery_app:app"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "groups: video, email, reports" in done.stdout
    assert (tmp_path / "fabfile.py").read_text() == FABFILE
    checked = fab(venv, tmp_path, "check")
    assert checked.returncode == 0, checked.stderr
    assert "ok (3 groups, targets: sandbox, production)" in checked.stdout


def test_pip_install_target(wheel: Path, venv: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    done = run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, wheel], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    where = run([venv / "bin" / "python", "-c", WHERE], cwd=tmp_path, env={"PYTHONPATH": str(target)})
    assert where.returncode == 0, where.stderr
    module, scripts, on_path = where.stdout.splitlines()
    assert Path(module).resolve() == (target / "deploytool" / "__init__.py").resolve()
    assert Path(scripts).resolve() == (target / "deploytool" / "_data" / "scripts").resolve()
    assert on_path == "False"
    assert (Path(scripts) / "systemd" / "worker.service.j2").is_file()
