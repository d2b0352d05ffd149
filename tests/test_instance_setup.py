"""The hooks' set-up on an instance: their budgets against the appspec's timeouts, app.user (runas) in an
install dir the agent made as root, and bytecode left by a release redeployed under the same version.

The runas tests need root (they run the hooks as `nobody`, whose login shell is nologin: the sandbox runs a
hook directly, where the agent's `su nobody -c` would fail, and says so in a warning)."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml

from deploytool.sandbox.appspec import parse_appspec
from deploytool.sandbox.install import install
from deploytool.sandbox.instance import Instance as SandboxInstance
from deploytool_instance.drain import QUIT_GRACE_S
from deploytool_instance.settings import load_settings
from deploytool_instance.start import StartBudget, remove_bytecode, worker_environment
from deploytool_instance.validate import VALIDATE_BUDGET_S
from tests.hooktools import (
    PYTHON,
    Instance,
    ProcessReaper,
    app_context,
    delete_broker_queues,
    group_settings,
    render_bundle,
    uid,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="running a hook as another user needs root")


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory another user can traverse (pytest's tmp_path is root's alone)."""
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="deploytool-runas-") as name:
        os.chmod(name, 0o755)
        yield Path(name)


def hooks_of(bundle: Path) -> dict[str, int]:
    """Each hook's timeout as the bundle's appspec.yml says."""
    spec = yaml.safe_load((bundle / "appspec.yml").read_text())
    return {event: scripts[0]["timeout"] for event, scripts in spec["hooks"].items()}


def set_hook_timeout(bundle: Path, event: str, seconds: int) -> None:
    """What a bundle rendered with that hook timeout carries: the appspec's timeout and fleet.json's."""
    appspec = bundle / "appspec.yml"
    spec = yaml.safe_load(appspec.read_text())
    spec["hooks"][event][0]["timeout"] = seconds
    appspec.write_text(yaml.safe_dump(spec, sort_keys=False))
    fleet_file = bundle / "deploytool" / "fleet.json"
    fleet = json.loads(fleet_file.read_text())
    fleet.setdefault("hooks", {})[event] = seconds
    fleet_file.write_text(json.dumps(fleet))


# --- budgets --------------------------------------------------------------------------------------------


def test_fleet_json_gives_each_hook_the_timeout_its_appspec_has(tmp_path: Path) -> None:
    groups = [group_settings("email", ["email"], drain_timeout=900), group_settings("video", ["video"])]
    bundle = render_bundle(tmp_path / "bundle", app_context(), groups, "v1")
    fleet = json.loads((bundle / "deploytool" / "fleet.json").read_text())
    assert (
        fleet["hooks"] == hooks_of(bundle) == {"ApplicationStop": 960, "ApplicationStart": 300, "ValidateService": 300}
    )


@pytest.mark.parametrize("drain_timeout", [1, 10, 60, 120, 600, 3540])
def test_every_wait_of_each_hook_adds_up_within_its_timeout(tmp_path: Path, drain_timeout: int) -> None:
    bundle = render_bundle(
        tmp_path / "bundle", app_context(), [group_settings("email", ["email"], drain_timeout=drain_timeout)], "v1"
    )
    timeouts = hooks_of(bundle)
    settings = load_settings(bundle, {"DEPLOYMENT_GROUP_NAME": "email"})
    # ApplicationStart: a worker ApplicationStop left running (warm drain, then SIGQUIT and its grace), then
    # the new worker's start-up; the budget is the timeout less the margin to report a failure
    start = StartBudget.of(settings.hook_budget("ApplicationStart"), settings.drain_timeout)
    assert start.drain_s + start.quit_grace_s + start.ready_min_s <= start.total_s < timeouts["ApplicationStart"]
    assert start.drain_s == min(drain_timeout, 120) and start.ready_min_s == 60 and start.quit_grace_s == 45
    # ValidateService: its wait for the broker and the canary
    assert VALIDATE_BUDGET_S <= settings.hook_budget("ValidateService") < timeouts["ValidateService"]
    # ApplicationStop: drain_timeout, then SIGQUIT's grace
    assert drain_timeout + QUIT_GRACE_S <= settings.hook_budget("ApplicationStop") < timeouts["ApplicationStop"]


def test_a_short_hook_timeout_shrinks_every_wait_to_fit() -> None:
    budget = StartBudget.of(27.0, 600.0)  # a 30 s timeout less its 3 s report margin
    assert (budget.drain_s, budget.quit_grace_s, budget.ready_min_s) == (13.5, 4.5, 9.0)


def stubborn_worker(node: Instance, reaper: ProcessReaper) -> subprocess.Popen[bytes]:
    """A process the hooks take for a worker of an earlier release that ApplicationStop did not drain: it
    ignores SIGTERM (a warm shutdown that never ends) and exits on SIGQUIT."""
    script = node.install_dir / "releases" / "v0" / "deploytool" / "hooks" / "celery_worker.py"
    script.parent.mkdir(parents=True)
    script.write_text(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGQUIT, lambda *_: sys.exit(0))\n"
        "print('up', flush=True)\n"
        "while True:\n    time.sleep(0.05)\n"
    )
    process = subprocess.Popen([PYTHON, "-u", str(script), node.group], stdout=subprocess.PIPE, start_new_session=True)
    reaper.add_child(process)
    assert process.stdout is not None and process.stdout.readline() == b"up\n"
    node.pidfile.parent.mkdir(parents=True, exist_ok=True)
    node.pidfile.write_text(f"{process.pid}\n")
    return process


@pytest.mark.slow
def test_start_ends_itself_within_its_timeout_after_draining_a_leftover_worker(
    tmp_path: Path, reaper: ProcessReaper
) -> None:
    """A 30 s ApplicationStart: draining the leftover worker (10 s, SIGTERM ignored, then SIGQUIT) and waiting
    for a new worker that never gets ready (no broker) must end the hook itself, with its one line, before
    the runner (the agent) kills it on its timeout. Fixed budgets (120 + 45 + 240 s) did not fit 300 s."""
    app = app_context()
    bundle = render_bundle(tmp_path / "bundle", app, [group_settings("email", ["email"], drain_timeout=10)], "v1")
    set_hook_timeout(bundle, "ApplicationStart", 30)
    node = Instance(root=tmp_path / "i-0", instance_id="i-0", group="email", app=app, reaper=reaper)
    node.write_env("redis://127.0.0.1:1/0", None, tmp_path / "ledger")  # nothing listens: never ready
    node.install(bundle)
    leftover = stubborn_worker(node, reaper)
    run = node.run_hook(bundle, "ApplicationStart", 30, "d-BUDGET001")
    assert leftover.wait(timeout=5) == 0  # SIGQUIT once the drain budget was spent
    assert run.returncode == 1, f"{run.message}\n{run.output}"  # not None: the runner did not have to stop it
    assert run.seconds < 30
    assert "draining it now within 10s (+4s after SIGQUIT)" in run.output
    assert "error: worker not ready within" in run.output
    assert "Traceback" not in run.output


@pytest.mark.slow
def test_start_on_systemd_ends_itself_within_its_timeout_when_systemctl_hangs(
    tmp_path: Path, reaper: ProcessReaper
) -> None:
    """The unit's install, daemon-reload, enable and restart share the hook's budget (60 s each before)."""
    app = app_context()
    bundle = render_bundle(tmp_path / "bundle", app, [group_settings("email", ["email"])], "v1")
    set_hook_timeout(bundle, "ApplicationStart", 20)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text("#!/bin/sh\nexec sleep 600\n")  # a systemd that never answers
    (bin_dir / "systemctl").chmod(0o755)
    node = Instance(root=tmp_path / "i-0", instance_id="i-0", group="email", app=app, reaper=reaper)
    node.process_manager, node.path_prefix = "systemd", f"{bin_dir}:"
    node.write_env("redis://127.0.0.1:1/0", None, tmp_path / "ledger")
    node.install(bundle)
    run = node.run_hook(bundle, "ApplicationStart", 20, "d-SYSTEMD01")
    assert run.returncode == 1, f"{run.message}\n{run.output}"  # not None: the runner did not have to stop it
    assert run.seconds < 20
    assert "error: systemctl daemon-reload: " in run.output and "timed out" in run.output


# --- app.user (runas) -----------------------------------------------------------------------------------


@pytest.mark.slow
@needs_root
def test_hooks_as_app_user_in_an_install_dir_root_made_fail_in_one_line(shared: Path, reaper: ProcessReaper) -> None:
    app = app_context(user="nobody")
    bundle = render_bundle(shared / "bundle", app, [group_settings("email", ["email"])], "v1")
    node = Instance(root=shared / "i-0", instance_id="i-0", group="email", app=app, reaper=reaper)
    node.write_env("redis://127.0.0.1:1/0", None, shared / "ledger")
    node.install_dir.mkdir(parents=True)  # made by root before the first deployment: the agent leaves it so
    runs = node.deploy(bundle)
    start = runs[-1]
    assert (start.event, start.returncode) == ("ApplicationStart", 1), start.output
    assert "Traceback" not in start.output
    errors = [line for line in start.output.splitlines() if " error: " in line]
    assert len(errors) == 1
    assert f"{node.install_dir}/run: Permission denied: the hooks run as user nobody" in errors[0]
    assert f"run `chown nobody: {node.install_dir}` once on the instance" in errors[0]
    assert "warning: runas 'nobody': the login shell /usr/sbin/nologin runs no commands" in start.output


def python_works_for(user: str) -> str:
    """Why the hooks' Python cannot run Celery as `user` here, or "" (a venv copied from a Python under a
    private home falls back to another libpython for other users)."""
    entry = pwd.getpwnam(user)
    done = subprocess.run(
        [PYTHON, "-c", "import sys, celery, redis; print(sys.version_info[:3] >= (3, 11, 3) or sys.version)"],
        user=entry.pw_uid,
        group=entry.pw_gid,
        cwd="/",
        capture_output=True,
        text=True,
    )
    return "" if done.returncode == 0 and done.stdout.strip() == "True" else (done.stderr or done.stdout)[-200:]


@pytest.mark.slow
@needs_root
def test_the_first_install_gives_app_user_its_install_dir_and_start_sets_up_as_it(
    shared: Path, reaper: ProcessReaper
) -> None:
    app = app_context(user="nobody")
    bundle = render_bundle(shared / "bundle", app, [group_settings("email", ["email"])], "v1")
    set_hook_timeout(bundle, "ApplicationStart", 20)  # no broker: the worker never gets ready
    node = Instance(root=shared / "i-0", instance_id="i-0", group="email", app=app, reaper=reaper)
    node.write_env("redis://127.0.0.1:1/0", None, shared / "ledger")
    start = node.deploy(bundle)[-1]
    assert start.event == "ApplicationStart" and "Permission denied" not in start.output, start.output
    assert "error: worker not ready within" in start.output or "exited during start-up" in start.output
    nobody = pwd.getpwnam("nobody").pw_uid
    owners = {
        name: (node.install_dir / name).lstat().st_uid
        for name in (".", "releases", "releases/v1/app", "run", "run/node-name", "log", "current")
    }
    assert owners == {
        ".": nobody,  # the appspec's permissions, applied by the install that created it
        "releases": 0,  # the releases stay root's
        "releases/v1/app": 0,
        "run": nobody,  # what the hook, as nobody, made
        "run/node-name": nobody,
        "log": nobody,
        "current": nobody,
    }
    assert os.readlink(node.install_dir / "current") == "releases/v1"


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.xdist_group("redis-db12")
@needs_root
def test_every_hook_runs_as_app_user_after_the_first_install(
    shared: Path, reaper: ProcessReaper, redis_url: str
) -> None:
    problem = python_works_for("nobody")
    if problem:
        pytest.skip(
            f"the hooks' Python ({PYTHON}) cannot run Celery as nobody here: {problem.strip().splitlines()[-1]}"
        )
    parts = urlsplit(redis_url)
    url = urlunsplit((parts.scheme, parts.netloc, "/12", parts.query, parts.fragment))
    queue = f"runas-{uid()}"
    app = app_context(user="nobody")
    bundle = render_bundle(shared / "bundle", app, [group_settings("email", [queue])], "v1")
    node = Instance(root=shared / "i-0", instance_id=f"i-{uid()}", group="email", app=app, reaper=reaper)
    node.write_env(url, None, shared / "ledger")
    try:
        runs = node.deploy(bundle)
        assert [(run.event, run.returncode) for run in runs] == [("ApplicationStart", 0), ("ValidateService", 0)], runs[
            -1
        ].output
        pid = node.worker_pid()
        assert pid is not None and os.stat(f"/proc/{pid}").st_uid == pwd.getpwnam("nobody").pw_uid
    finally:
        delete_broker_queues(url, [queue, "_kombu.binding_deadlines"])


# --- bytecode ---------------------------------------------------------------------------------------------


def archive_of(tmp_path: Path, name: str, source: str) -> Path:
    """A revision holding app/mod.py, its mtime fixed the way every deploytool bundle fixes it."""
    root = tmp_path / name
    module = root / "app" / "mod.py"
    module.parent.mkdir(parents=True)
    module.write_text(source)
    os.utime(module, (946684800, 946684800))  # 2000-01-01, as deploytool.targz writes every entry
    (root / "appspec.yml").write_text(
        "version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: /opt/acme-workers/releases/v1\n"
    )
    return root


def import_as_worker(env: dict[str, Any], app_dir: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", "import mod; print(mod.X)"], cwd=app_dir, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_version_redeployed_with_other_content_runs_the_new_content(tmp_path: Path) -> None:
    """v1 installed, its worker started (with the environment `start` gives it), then v1 again with another
    module of the same size (a rebuilt `-dirty` or a reused --version): the worker must import the new one."""
    bundle = render_bundle(tmp_path / "bundle", app_context(), [group_settings("email", ["email"])], "v1")
    instance = SandboxInstance("email", "i-0", tmp_path / "i-0")
    environ = {"DEPLOYMENT_GROUP_NAME": "email", "DEPLOYTOOL_INSTANCE_ROOT": str(instance.root), "PATH": "/usr/bin"}
    settings = load_settings(bundle, environ)
    for name, source in (("first", "X = 1\n"), ("second", "X = 2\n")):
        revision = archive_of(tmp_path, name, source)
        install(
            revision,
            parse_appspec((revision / "appspec.yml").read_text()),
            instance,
            group_id="dg",
            behavior="OVERWRITE",
        )
        app_dir = settings.release_dir / "app"
        assert import_as_worker(worker_environment(settings, {}), app_dir) == source[-2]
    assert not (settings.release_dir / "app" / "__pycache__").exists()


def test_start_clears_the_bytecode_an_older_worker_left_in_the_release(tmp_path: Path) -> None:
    instance = SandboxInstance("email", "i-0", tmp_path / "i-0")
    first = archive_of(tmp_path, "first", "X = 1\n")
    install(first, parse_appspec((first / "appspec.yml").read_text()), instance, group_id="dg", behavior="OVERWRITE")
    release = instance.path("/opt/acme-workers/releases/v1")
    old_env = {"PATH": "/usr/bin", "PYTHONPATH": str(release / "app")}  # a worker of an older deploytool
    assert import_as_worker(old_env, release / "app") == "1"
    assert (release / "app" / "__pycache__").is_dir()
    second = archive_of(tmp_path, "second", "X = 2\n")
    install(second, parse_appspec((second / "appspec.yml").read_text()), instance, group_id="dg", behavior="OVERWRITE")
    assert import_as_worker(old_env, release / "app") == "1"  # the hazard: the stale .pyc wins
    assert remove_bytecode(release) == (1, [])
    assert import_as_worker({**old_env, "PYTHONDONTWRITEBYTECODE": "1"}, release / "app") == "2"


def test_the_systemd_unit_runs_the_worker_without_writing_bytecode(tmp_path: Path) -> None:
    bundle = render_bundle(tmp_path / "bundle", app_context(), [group_settings("email", ["email"])], "v1")
    unit = (bundle / "deploytool" / "hooks" / "systemd" / "email.service").read_text().splitlines()
    assert "Environment=PYTHONDONTWRITEBYTECODE=1" in unit
