"""appspec.yml validation: what the agent accepts, and one clear line for what it (or we) refuse."""

from __future__ import annotations

import pytest

from deploytool.sandbox.appspec import Permission, Script, parse_appspec
from deploytool.sandbox.errors import AppSpecError

HEAD = "version: 0.0\nos: linux\n"


def test_a_full_appspec_parses() -> None:
    spec = parse_appspec(
        HEAD
        + "files:\n  - source: /\n    destination: /opt/app/releases/v1\n"
        + "file_exists_behavior: OVERWRITE\n"
        + "permissions:\n  - object: /opt/app\n    pattern: '*.sh'\n    except: [skip.sh]\n    mode: 755\n"
        + "    owner: app\n    type: [file]\n"
        + "hooks:\n  ApplicationStop:\n    - location: hooks/stop.sh\n      timeout: 900\n      runas: app\n"
        + "  ValidateService:\n    - location: hooks/validate.sh\n",
    )
    assert spec.files[0].source == "/" and spec.files[0].destination == "/opt/app/releases/v1"
    assert spec.file_exists_behavior == "OVERWRITE"
    assert spec.permissions == (
        Permission(object="/opt/app", pattern="*.sh", excepts=("skip.sh",), types=("file",), owner="app", mode=0o755),
    )
    assert spec.scripts("ApplicationStop") == (Script("hooks/stop.sh", 900, "app"),)
    assert spec.scripts("ValidateService") == (Script("hooks/validate.sh", 3600, None),)  # the agent's default
    assert spec.scripts("BeforeInstall") == ()
    assert spec.warnings == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "version: 1.0\nos: linux\n",
            "appspec.yml: version: got 1.0; the only AppSpec version for EC2/On-Premises is 0.0",
        ),
        ("version: '0.0'\nos: linux\n", "appspec.yml: version: got '0.0'; the only AppSpec version"),
        ("version: 0.0\nos: windows\n", "appspec.yml: os: got 'windows'; allowed: linux"),
        (HEAD + "hook:\n  BeforeInstall: []\n", "appspec.yml: hook: unknown key (did you mean 'hooks'?)"),
        (
            HEAD + "hooks:\n  AfterInstal:\n    - location: a.sh\n",
            "appspec.yml: hooks.AfterInstal: unknown lifecycle event (did you mean 'AfterInstall'?)",
        ),
        (
            HEAD + "hooks:\n  Install:\n    - location: a.sh\n",
            "appspec.yml: hooks.Install: Install is run by the agent itself and takes no scripts",
        ),
        (
            HEAD + "hooks:\n  BeforeInstall:\n    - timeout: 10\n",
            "appspec.yml: hooks.BeforeInstall[0].location: a script with no location value",
        ),
        (
            HEAD + "hooks:\n  BeforeInstall:\n    - location: a.sh\n      timeout: 0\n",
            "appspec.yml: hooks.BeforeInstall[0].timeout: got 0; an invalid timeout value",
        ),
        (
            HEAD + "hooks:\n  BeforeInstall:\n    - location: a.sh\n      timeout: soon\n",
            "appspec.yml: hooks.BeforeInstall[0].timeout: got 'soon'; allowed: a whole number of seconds",
        ),
        (
            HEAD + "files:\n  - source: app\n    destination: opt/app\n",
            "appspec.yml: files[0].destination: got 'opt/app'; allowed: an absolute path",
        ),
        (HEAD + "files:\n  - source: app\n", "appspec.yml: files[0].destination: got None"),
        (
            HEAD + "file_exists_behavior: CLOBBER\n",
            "appspec.yml: file_exists_behavior: got 'CLOBBER'; allowed: DISALLOW, OVERWRITE, RETAIN",
        ),
        (
            HEAD + "permissions:\n  - mode: 644\n",
            "appspec.yml: permissions[0].object: a permission listed in the application specification file",
        ),
        (
            HEAD + "permissions:\n  - object: /opt/app\n    mode: 999\n",
            "appspec.yml: permissions[0].mode: got 999; allowed: up to four octal digits",
        ),
        (
            HEAD + "permissions:\n  - object: /opt/app\n    type: [socket]\n",
            "appspec.yml: permissions[0].type: got 'socket'; allowed: file, directory",
        ),
        ("version: 0.0\nos: linux\nhooks: [\n", "appspec.yml: malformed YAML"),
    ],
)
def test_bad_appspecs_are_one_clear_line(text: str, message: str) -> None:
    with pytest.raises(AppSpecError) as caught:
        parse_appspec(text)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_warnings_for_what_the_sandbox_cannot_honour() -> None:
    spec = parse_appspec(
        HEAD
        + "permissions:\n  - object: /opt/app\n    acls: ['u:app:rw']\n"
        + "hooks:\n  BeforeBlockTraffic:\n    - location: a.sh\n"
        + "  ApplicationStop:\n    - location: a.sh\n      timeout: 3000\n    - location: b.sh\n      timeout: 1000\n"
    )
    assert any("BeforeBlockTraffic: runs only with a load balancer" in w for w in spec.warnings)
    assert any("timeouts add up to 4000 s" in w for w in spec.warnings)
    assert any("permissions[0]: acls not applied in the sandbox" in w for w in spec.warnings)
