"""Bundles: reproducible to the byte, the right files in, the wrong ones out, clear errors."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from deploytool.bundle import BundleResult, build_bundle
from deploytool.config import Fleet
from deploytool.errors import BundleError
from deploytool.render import Templates
from deploytool.version import SourceVersion
from tests.builders import APP_FILES, FIXTURE_SCRIPTS, TEMPLATES, acme_fleet, write_app
from tests.conftest import file_size_limit

SOURCE = SourceVersion("2024.03.05-abc1234", "abc1234" + "0" * 33, False)


def build(fleet: Fleet, out: Path, templates: Templates = TEMPLATES, **kw: object) -> BundleResult:
    return build_bundle(fleet, SOURCE, out, templates=templates, **kw)  # type: ignore[arg-type]


def members(result: BundleResult) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(result.path) as tar:
        return {m.name: m for m in tar.getmembers()}


def read(result: BundleResult, name: str) -> bytes:
    with tarfile.open(result.path) as tar:
        extracted = tar.extractfile(name)
        assert extracted is not None
        return extracted.read()


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    write_app(tmp_path / "repo" / "src")
    return acme_fleet(tmp_path / "repo")


def test_layout_per_contract(fleet: Fleet, tmp_path: Path) -> None:
    result = build(fleet, tmp_path / "out")
    names = list(members(result))
    assert names == sorted(names, key=lambda n: n.split("/"))
    assert names[-1] == "deploytool/manifest.json"
    assert set(names) == {
        "app",
        "app/README.md",
        "app/acme",
        "app/acme/__init__.py",
        "app/acme/app.py",
        "app/acme/tasks.py",
        "app/bin",
        "app/bin/run.sh",
        "appspec.yml",
        "deploytool",
        "deploytool/fleet.json",
        "deploytool/hooks",
        "deploytool/hooks/application_start.sh",
        "deploytool/hooks/application_stop.sh",
        "deploytool/hooks/celery_hooks.py",
        "deploytool/hooks/systemd",
        "deploytool/hooks/systemd/email.service",
        "deploytool/hooks/systemd/video.service",
        "deploytool/hooks/validate_service.sh",
        "deploytool/manifest.json",
    }
    assert result.path == tmp_path / "out" / "acme-2024.03.05-abc1234.tgz"
    assert result.file_count == 14  # 5 app files, appspec, fleet.json, 4 hooks, 2 units, manifest
    assert result.size == result.path.stat().st_size
    assert result.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert (result.version, result.commit) == (SOURCE.version, SOURCE.commit)


def test_appspec_hooks_and_group_settings(fleet: Fleet, tmp_path: Path) -> None:
    result = build(fleet, tmp_path / "out")
    spec = yaml.safe_load(read(result, "appspec.yml"))
    assert spec["version"] == 0.0 and spec["os"] == "linux"
    assert spec["files"] == [{"source": "/", "destination": "/opt/acme/releases/2024.03.05-abc1234"}]
    assert spec["file_exists_behavior"] == "OVERWRITE"
    assert spec["hooks"] == {
        "ApplicationStop": [{"location": "deploytool/hooks/application_stop.sh", "timeout": 960}],
        "ApplicationStart": [{"location": "deploytool/hooks/application_start.sh", "timeout": 300}],
        "ValidateService": [{"location": "deploytool/hooks/validate_service.sh", "timeout": 300}],
    }
    info = members(result)
    for hook in spec["hooks"].values():
        assert info[hook[0]["location"]].mode == 0o755
    assert read(result, "deploytool/hooks/application_stop.sh").decode().splitlines()[2] == (
        'exec /opt/acme/venv/bin/python "$(dirname "$0")/celery_hooks.py" stop --budget 900'
    )
    unit = read(result, "deploytool/hooks/systemd/video.service").decode()
    assert "Description=acme worker for group video (video,video-hd)" in unit
    assert "TimeoutStopSec=960" in unit
    settings = json.loads(read(result, "deploytool/fleet.json"))
    assert settings["version"] == SOURCE.version and settings["commit"] == SOURCE.commit
    assert list(settings["groups"]) == ["email", "video"]
    assert settings["groups"]["video"] == fleet.group("video").worker_settings()
    assert settings["app"]["celery_app"] == "acme.app:app"


def test_runas_only_when_app_user_is_set(tmp_path: Path) -> None:
    write_app(tmp_path / "repo" / "src")
    fleet = acme_fleet(tmp_path / "repo", app={"user": "acme"})
    spec = yaml.safe_load(read(build(fleet, tmp_path / "out"), "appspec.yml"))
    assert {hook[0]["runas"] for hook in spec["hooks"].values()} == {"acme"}


def test_modes_owners_and_times_are_normalised(fleet: Fleet, tmp_path: Path) -> None:
    (fleet.source_dir / "acme" / "app.py").chmod(0o600)
    os.utime(fleet.source_dir / "README.md", (1, 1))
    info = members(build(fleet, tmp_path / "out"))
    assert {m.mtime for m in info.values()} == {946684800}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in info.values()} == {(0, 0, "root", "root")}
    assert info["app/acme/app.py"].mode == 0o644
    assert info["app/bin/run.sh"].mode == 0o755
    assert info["app/acme"].mode == 0o755 and info["app/acme"].isdir()


def test_gzip_header_has_no_name_and_no_time(fleet: Fleet, tmp_path: Path) -> None:
    head = build(fleet, tmp_path / "out").path.read_bytes()[:10]
    assert head[:3] == b"\x1f\x8b\x08"
    assert head[3] == 0  # no FNAME, no FEXTRA, no FCOMMENT
    assert head[4:8] == b"\0\0\0\0"  # mtime


def copy_tree_differently(src: Path, dst: Path, mtime: int) -> None:
    """Copy src to dst as a checkout under the current umask would: entries created in reverse order
    (another readdir order), modes from the umask (executables keep only their owner's x bit), other
    mtimes."""
    for path in sorted(src.rglob("*"), reverse=True):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)  # a new file: mode 0666 less the umask
            if os.access(path, os.X_OK):
                target.chmod(target.stat().st_mode | 0o100)
        os.utime(target, (mtime, mtime))


def test_two_builds_from_different_copies_are_byte_identical(tmp_path: Path) -> None:
    write_app(tmp_path / "one" / "src")
    first = acme_fleet(tmp_path / "one")
    (first.source_dir / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (first.source_dir / "acme" / "link.py").symlink_to("app.py")
    second_root = tmp_path / "two"
    second_root.mkdir()
    old = os.umask(0o077)  # the second copy is made under another umask
    try:
        copy_tree_differently(first.source_dir, second_root / "src", mtime=1_000_000_000)
        (second_root / "src" / "acme" / "link.py").unlink()
        (second_root / "src" / "acme" / "link.py").symlink_to("app.py")
    finally:
        os.umask(old)
    assert (second_root / "src" / "README.md").stat().st_mode & 0o777 == 0o600
    assert (second_root / "src" / "bin" / "run.sh").stat().st_mode & 0o777 == 0o700
    second = acme_fleet(second_root)
    a = build(first, tmp_path / "out-a", now=lambda: datetime(2024, 1, 1, tzinfo=UTC))
    b = build(second, tmp_path / "out-b", now=lambda: datetime(2025, 6, 1, tzinfo=UTC))
    assert a.sha256 == b.sha256
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.built_at != b.built_at


def test_excludes_and_deployignore(fleet: Fleet, tmp_path: Path) -> None:
    src = fleet.source_dir
    for name in (
        ".git/config",
        "acme/__pycache__/app.cpython-311.pyc",
        "acme/old.pyc",
        ".env",
        ".env.local",
        "acme/.envrc",
        "certs/key.pem",
        "logs/a.log",
        "logs/keep.log",
        "notes.log",
        "docs/x.md",
    ):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text("secret")
    (src / ".deployignore").write_text("# local junk\n*.log\n!keep.log\ndocs/\n")
    names = set(members(build(fleet, tmp_path / "out")))
    kept = {n for n in names if n.startswith("app/")}
    assert kept == {"app/" + n for n in APP_FILES} | {
        "app/acme",
        "app/bin",
        "app/.deployignore",
        "app/certs",
        "app/logs",
        "app/logs/keep.log",
    }


def test_symlinks_stay_symlinks(fleet: Fleet, tmp_path: Path) -> None:
    (fleet.source_dir / "current.py").symlink_to("acme/app.py")
    (fleet.source_dir / "pkg").symlink_to("acme", target_is_directory=True)
    (fleet.source_dir / "dangling").symlink_to("missing.txt")
    info = members(build(fleet, tmp_path / "out"))
    assert info["app/current.py"].issym() and info["app/current.py"].linkname == "acme/app.py"
    assert info["app/pkg"].issym() and info["app/pkg"].linkname == "acme"
    assert info["app/dangling"].issym()
    assert not any(name.startswith("app/pkg/") for name in info)


@pytest.mark.parametrize("target", ["../../etc/passwd", "/etc/passwd", "../acme/../../outside"])
def test_a_link_out_of_the_tree_is_an_error(fleet: Fleet, tmp_path: Path, target: str) -> None:
    (fleet.source_dir / "acme" / "bad").symlink_to(target)
    with pytest.raises(BundleError) as caught:
        build(fleet, tmp_path / "out")
    assert str(caught.value) == (
        f"symlink {fleet.source_dir / 'acme' / 'bad'} -> {target} points outside the app source: it would "
        "dangle on the instance (make it relative and inside the tree, or exclude it in .deployignore)"
    )
    assert not (tmp_path / "out").exists()  # refused while the tree is read: nothing was written


@pytest.mark.parametrize(("where", "target"), [("here", "."), ("acme/up", ".."), ("acme/loop", "../acme")])
def test_a_link_to_a_directory_that_contains_it_is_an_error(
    fleet: Fleet, tmp_path: Path, where: str, target: str
) -> None:
    """The agent copies the content of a directory symlink (installer.rb follows it): this one never ends."""
    (fleet.source_dir / where).symlink_to(target, target_is_directory=True)
    with pytest.raises(BundleError) as caught:
        build(fleet, tmp_path / "out")
    assert str(caught.value) == (
        f"symlink {fleet.source_dir / where} -> {target} points to a directory that contains it: the CodeDeploy "
        "agent copies the content of a directory symlink and would never finish (remove it, or exclude it in "
        ".deployignore)"
    )


def test_a_build_that_fails_while_writing_leaves_nothing_partial(fleet: Fleet, tmp_path: Path) -> None:
    (fleet.source_dir / "blob.bin").write_bytes(random.Random(0).randbytes(4 << 20))  # does not compress
    first = build(fleet, tmp_path / "out")
    before = first.path.read_bytes()
    assert len(before) > 4 << 20
    (fleet.source_dir / "blob.bin").write_bytes(random.Random(1).randbytes(4 << 20))
    with pytest.raises(BundleError) as caught, file_size_limit(1 << 20):  # the disk fills up after 1 MiB
        build(fleet, tmp_path / "out")
    assert str(caught.value) == "writing the bundle failed: [Errno 27] File too large"
    assert [p.name for p in (tmp_path / "out").iterdir()] == [first.path.name]  # no partial or temp file
    assert first.path.read_bytes() == before  # the bundle built before is untouched


def test_a_link_escaping_through_another_link_is_an_error(fleet: Fleet, tmp_path: Path) -> None:
    (fleet.source_dir / "here").symlink_to(".")  # harmless by itself
    (fleet.source_dir / "acme" / "bad").symlink_to("../here/..")  # looks inside, resolves to src/..
    with pytest.raises(BundleError, match=r"^symlink .*/acme/bad -> \.\./here/\.\. points outside the app source"):
        build(fleet, tmp_path / "out")


def broken_scripts(tmp_path: Path, name: str, text: str) -> Templates:
    scripts = tmp_path / "scripts"
    shutil.copytree(FIXTURE_SCRIPTS, scripts)
    (scripts / name).write_text(text)
    return Templates(TEMPLATES.appspec, scripts)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("#!/bin/sh\n# ok\necho {{ app.nme }}\n", 3, "'dict object' has no attribute 'nme'"),
        ("#!/bin/sh\n\n\necho {{ versoin }}\n", 4, "'versoin' is undefined"),
        ("#!/bin/sh\n\necho {{ version | }}\n", 3, "expected token 'name', got 'end of print statement'"),
    ],
)
def test_a_template_error_names_the_template_and_line(
    fleet: Fleet, tmp_path: Path, text: str, line: int, message: str
) -> None:
    templates = broken_scripts(tmp_path, "application_start.sh.j2", text)
    with pytest.raises(BundleError) as caught:
        build(fleet, tmp_path / "out", templates)
    assert str(caught.value) == f"{templates.scripts / 'application_start.sh.j2'}:{line}: template error: {message}"


def test_a_hook_missing_from_the_bundle_is_an_error(fleet: Fleet, tmp_path: Path) -> None:
    templates = broken_scripts(tmp_path, "celery_hooks.py", "")
    (templates.scripts / "validate_service.sh.j2").unlink()
    with pytest.raises(BundleError) as caught:
        build(fleet, tmp_path / "out", templates)
    assert str(caught.value) == (
        "appspec.yml: hooks.ValidateService[0].location: deploytool/hooks/validate_service.sh is not in the bundle"
    )


def test_a_bad_appspec_is_an_error(fleet: Fleet, tmp_path: Path) -> None:
    appspec = tmp_path / "appspec.yml.j2"
    appspec.write_text(TEMPLATES.appspec.read_text().replace("os: linux", "os: windows"))
    with pytest.raises(BundleError, match=r"^appspec.yml: os must be linux, got 'windows'$"):
        build(fleet, tmp_path / "out", Templates(appspec, FIXTURE_SCRIPTS))
    appspec.write_text("version: 0.0\nos: linux\nhooks: [\n")
    with pytest.raises(BundleError, match=r"^appspec.yml: not valid YAML at line 4: "):
        build(fleet, tmp_path / "out", Templates(appspec, FIXTURE_SCRIPTS))


def test_manifest_hashes_every_other_file(fleet: Fleet, tmp_path: Path) -> None:
    (fleet.source_dir / "current.py").symlink_to("acme/app.py")
    result = build(fleet, tmp_path / "out")
    manifest = json.loads(read(result, "deploytool/manifest.json"))
    assert manifest["version"] == SOURCE.version and manifest["commit"] == SOURCE.commit
    assert manifest["builder"] == "deploytool 0.1.0"
    assert "built" not in json.dumps(manifest).replace("builder", "")
    with tarfile.open(result.path) as tar:
        regular = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    del regular["deploytool/manifest.json"]
    assert manifest["files"] == {name: hashlib.sha256(data).hexdigest() for name, data in regular.items()}
    assert manifest["symlinks"] == {"app/current.py": "acme/app.py"}


def test_gnu_tar_and_gzip_read_it(fleet: Fleet, tmp_path: Path) -> None:
    result = build(fleet, tmp_path / "out")
    listing = subprocess.run(["tar", "-tzf", str(result.path)], capture_output=True, text=True, check=True)
    assert listing.stderr == ""
    assert "deploytool/hooks/application_stop.sh" in listing.stdout.splitlines()
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["tar", "-xzf", str(result.path), "-C", str(dest)], check=True)
    assert (dest / "app" / "acme" / "app.py").read_text() == APP_FILES["acme/app.py"]
    assert os.access(dest / "deploytool" / "hooks" / "application_start.sh", os.X_OK)
    assert len(gzip.decompress(result.path.read_bytes())) % 10240 == 0
    with tarfile.open(fileobj=io.BytesIO(result.path.read_bytes()), mode="r|gz") as stream:
        assert sum(1 for _ in stream) == len(members(result))


def test_the_output_directory_inside_the_source_is_not_bundled(fleet: Fleet) -> None:
    first = build(fleet, fleet.source_dir / "dist")
    second = build(fleet, fleet.source_dir / "dist")
    assert not any(name.startswith("app/dist") for name in members(second))
    assert first.sha256 == second.sha256
    assert [p.name for p in (fleet.source_dir / "dist").iterdir()] == ["acme-2024.03.05-abc1234.tgz"]


def test_missing_app_source_is_an_error(fleet: Fleet, tmp_path: Path) -> None:
    shutil.rmtree(fleet.source_dir)
    with pytest.raises(BundleError, match=r"^app source .*/src is not a directory \(app.source in the fleet file\)$"):
        build(fleet, tmp_path / "out")
