"""The sandbox's Install event against the CodeDeploy agent's installer (aws-codedeploy-agent 1.x,
installer.rb and install_instruction.rb): symlinks, and which paths `permissions` reach. In process: no
hook runs."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
import yaml

from deploytool.render import Templates, render_templates
from deploytool.sandbox.appspec import parse_appspec
from deploytool.sandbox.errors import SandboxError
from deploytool.sandbox.install import install
from deploytool.sandbox.instance import Instance
from tests.builders import make_fleet
from tests.hooktools import app_context, fleet_table, group_settings

HEAD = "version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: /opt/fx/releases/v1\n"
GROUP_ID = "dg-install"


@pytest.fixture
def instance(tmp_path: Path) -> Instance:
    return Instance("email", "i-0install", tmp_path / "i-0install")


def archive(tmp_path: Path, files: dict[str, str], appspec: str = HEAD) -> Path:
    root = tmp_path / "archive"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "appspec.yml").write_text(appspec)
    return root


def run_install(root: Path, instance: Instance) -> Path:
    spec = parse_appspec((root / "appspec.yml").read_text())
    install(root, spec, instance, group_id=GROUP_ID, behavior="OVERWRITE")
    return instance.path("/opt/fx/releases/v1")


# --- symlinks -----------------------------------------------------------------------------------------


def test_a_directory_symlink_is_installed_as_a_copy_of_its_content_and_a_file_symlink_as_a_link(
    tmp_path: Path, instance: Instance
) -> None:
    root = archive(tmp_path, {"app/lib/real/mod.py": "X = 1\n", "app/settings.conf": "a\n"})
    (root / "app/lib/linked").symlink_to("real", target_is_directory=True)
    (root / "app/current.conf").symlink_to("settings.conf")
    release = run_install(root, instance)
    linked = release / "app/lib/linked"
    assert linked.is_dir() and not linked.is_symlink()  # the agent follows it (File.directory?) and copies
    assert (linked / "mod.py").read_text() == "X = 1\n"
    assert (release / "app/current.conf").is_symlink()  # a file link is recreated as the same link
    assert os.readlink(release / "app/current.conf") == "settings.conf"
    # what was copied through the link is the install's, so the next install removes it
    cleanup = (instance.instructions_dir / f"{GROUP_ID}-cleanup").read_text().splitlines()
    assert "/opt/fx/releases/v1/app/lib/linked/mod.py" in cleanup


def test_a_directory_symlink_to_its_own_ancestor_is_refused_before_anything_is_copied(
    tmp_path: Path, instance: Instance
) -> None:
    root = archive(tmp_path, {"app/pkg/mod.py": "X = 1\n"})
    (root / "app/pkg/again").symlink_to("..", target_is_directory=True)
    with pytest.raises(SandboxError, match=r"files: app/pkg/again links to a directory that contains it"):
        run_install(root, instance)
    assert not instance.path("/opt/fx").exists()


# --- permissions: what the agent's permissions reach ------------------------------------------------------


def test_a_pattern_reaches_direct_children_of_the_object_only_and_never_the_object(
    tmp_path: Path, instance: Instance
) -> None:
    root = archive(
        tmp_path,
        {"run.sh": "x\n", "skip.sh": "x\n", "sub/deep.sh": "x\n", "sub/keep.txt": "x\n"},
        HEAD
        + "permissions:\n  - object: /opt/fx/releases/v1\n    pattern: '*.sh'\n    except: [skip*]\n"
        + "    mode: 700\n  - object: /opt/fx/releases/v1/sub\n    type: [directory]\n    mode: 750\n",
    )
    release = run_install(root, instance)
    mode = {name: (release / name).stat().st_mode & 0o777 for name in ("run.sh", "skip.sh", "sub/deep.sh", "sub")}
    # *.sh matches run.sh (a direct child); sub/deep.sh is deeper, skip.sh is excepted; `sub` itself is the
    # second permission's object, which never includes the object (and it has no directories under it)
    assert mode == {"run.sh": 0o700, "skip.sh": 0o644, "sub/deep.sh": 0o644, "sub": 0o755}


def test_a_path_two_permissions_reach_fails_the_install_as_on_the_agent(tmp_path: Path, instance: Instance) -> None:
    root = archive(
        tmp_path,
        {"run.sh": "x\n"},
        HEAD + "permissions:\n  - object: /opt/fx/releases/v1\n    mode: 700\n"
        "  - object: /opt/fx/releases/v1/run.sh\n    mode: 755\n",
    )
    with pytest.raises(
        SandboxError, match=r"permissions\[1\]: the permissions setting for .*/run.sh is specified more"
    ):
        run_install(root, instance)


def test_a_file_object_with_a_pattern_is_refused_as_on_the_agent(tmp_path: Path, instance: Instance) -> None:
    root = archive(
        tmp_path,
        {"run.sh": "x\n"},
        HEAD + "permissions:\n  - object: /opt/fx/releases/v1/run.sh\n    pattern: '*.sh'\n    mode: 700\n",
    )
    with pytest.raises(SandboxError, match=r"permissions\[0\]: object .*run.sh is a file: its pattern must be \*\*"):
        run_install(root, instance)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a path to another user needs root")
def test_the_rendered_appspec_gives_app_user_the_install_dir_the_first_install_creates(
    tmp_path: Path, instance: Instance
) -> None:
    """deploytool's own appspec with app.user: the install dir (made by this install, as root) becomes the
    user's; the releases and their files stay root's; an install dir that existed already is left alone."""
    user = pwd.getpwnam("nobody")
    app = app_context(install_dir="/srv/apps/fx", user="nobody")
    rendered = render_templates(
        make_fleet([fleet_table(group_settings("email", ["email"]))], app=fleet_table(app)),
        "v1",
        None,
        Templates.default(),
    )
    text = rendered[0].data.decode()
    root = archive(tmp_path, {"app/mod.py": "X = 1\n"}, text)
    spec = parse_appspec(text)
    install(root, spec, instance, group_id=GROUP_ID, behavior="OVERWRITE")
    owner = {
        path: instance.path(path).stat().st_uid
        for path in ("/srv/apps", "/srv/apps/fx", "/srv/apps/fx/releases", "/srv/apps/fx/releases/v1/app/mod.py")
    }
    assert owner == {
        "/srv/apps": 0,
        "/srv/apps/fx": user.pw_uid,
        "/srv/apps/fx/releases": 0,
        "/srv/apps/fx/releases/v1/app/mod.py": 0,
    }
    assert yaml.safe_load(text)["permissions"] == [
        {"object": "/srv/apps", "pattern": "fx", "type": ["directory"], "owner": "nobody"}
    ]

    other = Instance("email", "i-0made", tmp_path / "i-0made")
    other.path("/srv/apps/fx").mkdir(parents=True)  # made by root before the first deployment
    install(root, spec, other, group_id=GROUP_ID, behavior="OVERWRITE")
    assert other.path("/srv/apps/fx").stat().st_uid == 0  # the agent does not touch what it did not create
