"""The hook scripts without a broker: settings, environment file, worker configuration, the rendered
templates (shell entry points, systemd unit) and the hooks' behaviour when no worker runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jinja2
import pytest

from deploytool_instance import launcher as worker
from deploytool_instance.base import HookError
from deploytool_instance.brokers import Broker
from deploytool_instance.brokers.sqs import canary_queue
from deploytool_instance.settings import load_settings, read_env_file
from tests.hooktools import (
    SCRIPTS,
    Instance,
    ProcessReaper,
    app_context,
    group_settings,
    render_bundle,
    render_file,
    template_context,
)


@pytest.fixture
def reaper() -> Any:
    reaper = ProcessReaper()
    try:
        yield reaper
    finally:
        reaper.stop_all()


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    app = app_context()
    groups = [group_settings("email", ["email"]), group_settings("video", ["video"], drain_timeout=900)]
    return render_bundle(tmp_path / "bundle", app, groups, "v1")


@pytest.fixture
def instance(tmp_path: Path, reaper: ProcessReaper) -> Instance:
    node = Instance(root=tmp_path / "i-0", instance_id="i-0", group="email", app=app_context(), reaper=reaper)
    node.write_env("redis://127.0.0.1:1/0", None, tmp_path / "ledger")
    return node


# --- settings --------------------------------------------------------------------------------------


def test_settings_pick_the_group_named_by_the_deployment_group(bundle: Path) -> None:
    settings = load_settings(bundle, {"DEPLOYMENT_GROUP_NAME": "video", "DEPLOYTOOL_INSTANCE_ROOT": "/x"})
    assert settings.queues == ["video"]
    assert settings.drain_timeout == 900
    assert settings.release_dir == Path("/x/opt/acme-workers/releases/v1")
    assert settings.env_file == Path("/x/etc/acme-workers/worker.env")
    assert settings.unit_name == "acme-workers-video.service"


def test_unknown_group_is_bad_input_naming_the_allowed_ones(bundle: Path) -> None:
    with pytest.raises(HookError) as caught:
        load_settings(bundle, {"DEPLOYMENT_GROUP_NAME": "reprots"})
    assert caught.value.code == 2
    assert "no group named 'reprots'" in str(caught.value)
    assert "allowed: email, video" in str(caught.value)


def test_missing_deployment_group_name_is_bad_input(bundle: Path) -> None:
    with pytest.raises(HookError, match="DEPLOYMENT_GROUP_NAME is not set"):
        load_settings(bundle, {})


def test_env_file_reads_like_systemd(tmp_path: Path) -> None:
    env = tmp_path / "worker.env"
    env.write_text(
        '# comment\n\nCELERY_BROKER_URL=redis://h:6379/1\nexport A=\'x y\'\nB="{\\"k\\": 1}"\n; other comment\n'
    )
    assert read_env_file(env) == {"CELERY_BROKER_URL": "redis://h:6379/1", "A": "x y", "B": '{\\"k\\": 1}'}
    env.write_text("CELERY_BROKER_URL=x\nnot a pair\n")
    with pytest.raises(HookError, match=r"worker.env:2: expected KEY=VALUE"):
        read_env_file(env)
    with pytest.raises(HookError, match="environment file not found; it must set CELERY_BROKER_URL"):
        read_env_file(tmp_path / "missing.env")


def test_broker_transport_options_merge_env_json_with_the_visibility_timeout() -> None:
    env = {"CELERY_BROKER_URL": "sqs://", "CELERY_BROKER_TRANSPORT_OPTIONS": '{"region": "eu-west-1"}'}
    broker = Broker.from_env(env, 1800, "env")
    assert broker.transport_options == {"region": "eu-west-1", "visibility_timeout": 1800}
    with pytest.raises(HookError, match="must be a JSON object"):
        Broker.from_env({"CELERY_BROKER_URL": "x", "CELERY_BROKER_TRANSPORT_OPTIONS": "[1]"}, None, "env")
    with pytest.raises(HookError, match="CELERY_BROKER_URL is not set"):
        Broker.from_env({}, None, "env")


# --- the worker's configuration -------------------------------------------------------------------


def test_worker_conf_carries_every_group_setting() -> None:
    group = group_settings(
        "video",
        ["video"],
        concurrency=3,
        prefetch_multiplier=2,
        acks_late=True,
        max_tasks_per_child=50,
        task_time_limit=900,
        task_soft_time_limit=840,
        visibility_timeout=1200,
    )
    broker = Broker.from_env({"CELERY_BROKER_URL": "redis://h/1"}, group["visibility_timeout"], "env")
    conf = worker.worker_conf(group, broker, {"fanout_prefix": True})
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 2
    assert conf["worker_max_tasks_per_child"] == 50
    assert (conf["task_time_limit"], conf["task_soft_time_limit"]) == (900, 840)
    assert conf["broker_transport_options"] == {"fanout_prefix": True, "visibility_timeout": 1200}
    argv = worker.worker_argv(group, "celery@video.i-1", ["video"], Path("/l/worker.log"))
    assert argv[:5] == ["worker", "--hostname", "celery@video.i-1", "--queues", "video"]
    assert argv[argv.index("--concurrency") + 1] == "3"
    assert "--autoscale" not in argv


def test_autoscale_replaces_concurrency() -> None:
    group = group_settings("email", ["email", "bulk"], autoscale=[8, 2])
    argv = worker.worker_argv(group, "celery@email.i-1", ["email", "bulk"], Path("/l"))
    assert argv[argv.index("--autoscale") + 1] == "8,2"
    assert argv[argv.index("--queues") + 1] == "email,bulk"
    assert "--concurrency" not in argv


def test_canary_queue_is_a_valid_sqs_name_per_instance() -> None:
    assert canary_queue("celery@video.i-0abc") == "deploytool-canary-video-i-0abc"
    long = canary_queue("celery@" + "g" * 100 + ".i-1")
    assert len(long) == 80
    assert long != canary_queue("celery@" + "g" * 100 + ".i-2")


# --- templates -------------------------------------------------------------------------------------


def test_templates_fail_on_a_missing_variable() -> None:
    with pytest.raises(jinja2.UndefinedError):
        render_file(SCRIPTS / "application_stop.sh.j2", {"version": "v1"})
    with pytest.raises(jinja2.UndefinedError):
        context = template_context(app_context(), [group_settings("e", ["e"])], "v1")
        render_file(SCRIPTS / "systemd" / "worker.service.j2", context)


@pytest.mark.parametrize(
    ("script", "command"),
    [("application_stop.sh", "drain"), ("application_start.sh", "start"), ("validate_service.sh", "validate")],
)
def test_entry_points_exec_the_apps_python_on_the_hook_program(bundle: Path, script: str, command: str) -> None:
    path = bundle / "deploytool" / "hooks" / script
    assert os.access(path, os.X_OK)
    assert subprocess.run(["sh", "-n", str(path)], check=False).returncode == 0
    last = path.read_text().strip().splitlines()[-1]
    python = "${DEPLOYTOOL_PYTHON:-/opt/acme-workers/venv/bin/python}"
    assert last == f'exec "{python}" -u "$(dirname "$0")/celery_hooks.py" {command}'


def unit_lines(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def test_systemd_unit_stops_with_sigterm_after_the_drain_budget_and_execs_the_worker(bundle: Path) -> None:
    unit = (bundle / "deploytool" / "hooks" / "systemd" / "video.service").read_text()
    lines = unit_lines(unit)
    assert lines["KillSignal"] == "SIGTERM"
    assert lines["KillMode"] == "mixed"
    assert int(lines["TimeoutStopSec"]) > 900
    assert lines["FinalKillSignal"] == "SIGQUIT"
    assert lines["Restart"] == "on-failure"
    assert lines["EnvironmentFile"] == "/etc/acme-workers/worker.env"
    assert lines["WorkingDirectory"] == "/opt/acme-workers/current/app"
    exec_start = lines["ExecStart"].split()
    assert exec_start == [
        "/opt/acme-workers/venv/bin/python",
        "/opt/acme-workers/current/deploytool/hooks/celery_worker.py",
        "video",
    ]
    assert "User" not in lines
    assert "sh -c" not in unit and "bash" not in unit


def test_systemd_unit_runs_as_the_app_user_when_set(tmp_path: Path) -> None:
    app = app_context(user="acme")
    bundle = render_bundle(tmp_path / "b", app, [group_settings("email", ["email"])], "v1")
    lines = unit_lines((bundle / "deploytool" / "hooks" / "systemd" / "email.service").read_text())
    assert lines["User"] == "acme"
    assert int(lines["TimeoutStopSec"]) > 10


def test_bundle_fleet_json_holds_the_groups_worker_settings(bundle: Path) -> None:
    fleet = json.loads((bundle / "deploytool" / "fleet.json").read_text())
    assert set(fleet["groups"]) == {"email", "video"}
    assert fleet["groups"]["video"]["drain_timeout"] == 900
    assert fleet["version"] == "v1"


# --- hooks with no worker (what the agent sees on a first install or after a crash) ----------------


@pytest.mark.slow
def test_drain_with_no_worker_running_succeeds(bundle: Path, instance: Instance) -> None:
    run = instance.run_hook(bundle, "ApplicationStop", 30, "d-NOWORKER1")
    assert run.returncode == 0, run.output
    assert "no worker running (no pidfile at" in run.output


@pytest.mark.slow
def test_drain_with_a_stale_pidfile_succeeds(bundle: Path, instance: Instance) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    instance.pidfile.parent.mkdir(parents=True)
    instance.pidfile.write_text(f"{gone.pid}\n")
    run = instance.run_hook(bundle, "ApplicationStop", 30, "d-STALEPID1")
    assert run.returncode == 0, run.output
    assert f"pid {gone.pid} from" in run.output and "stale pidfile" in run.output


@pytest.mark.slow
def test_drain_leaves_a_reused_pid_alone(bundle: Path, instance: Instance) -> None:
    instance.pidfile.parent.mkdir(parents=True)
    instance.pidfile.write_text(f"{os.getpid()}\n")
    run = instance.run_hook(bundle, "ApplicationStop", 30, "d-REUSEDPID")
    assert run.returncode == 0, run.output
    assert "is not a worker of" in run.output


@pytest.mark.slow
def test_unknown_deployment_group_fails_with_one_clear_line(bundle: Path, instance: Instance) -> None:
    instance.group = "nope"
    run = instance.run_hook(bundle, "ApplicationStop", 30, "d-BADGROUP1")
    assert run.returncode == 2
    assert "no group named 'nope' (DEPLOYMENT_GROUP_NAME); allowed: email, video" in run.output
    assert "Traceback" not in run.output


@pytest.mark.slow
def test_validate_without_a_worker_says_it_is_not_running(bundle: Path, instance: Instance) -> None:
    run = instance.run_hook(bundle, "ValidateService", 30, "d-NOTRUNNIN")
    assert run.returncode == 1
    assert "worker is not running: no pidfile at" in run.output


@pytest.mark.slow
def test_start_before_install_names_the_missing_release(bundle: Path, instance: Instance) -> None:
    run = instance.run_hook(bundle, "ApplicationStart", 30, "d-NOINSTALL")
    assert run.returncode == 1
    assert "releases/v1: the new release is not installed" in run.output


@pytest.mark.slow
def test_start_without_env_file_says_what_it_needs(bundle: Path, instance: Instance) -> None:
    instance.env_file.unlink()
    instance.install(bundle)
    run = instance.run_hook(bundle, "ApplicationStart", 30, "d-NOENVFILE")
    assert run.returncode == 1
    assert "worker.env: environment file not found; it must set CELERY_BROKER_URL" in run.output


def test_a_worker_that_cannot_start_fails_start_with_its_log(tmp_path: Path, reaper: ProcessReaper) -> None:
    app = {**app_context(), "celery_app": "acme_workers.nowhere:app"}
    broken = render_bundle(tmp_path / "broken", app, [group_settings("email", ["email"])], "v9")
    node = Instance(root=tmp_path / "i-9", instance_id="i-9", group="email", app=app, reaper=reaper)
    node.write_env("redis://127.0.0.1:1/0", None, tmp_path / "ledger")
    node.install(broken)
    run = node.run_hook(broken, "ApplicationStart", 60, "d-BROKEN001")
    assert run.returncode == 1
    assert "exited during start-up" in run.output
    assert "No module named 'acme_workers.nowhere'" in run.output


# --- the worker's prompt shutdown ------------------------------------------------------------------

PROMPT_PROBE = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from deploytool_instance.launcher import PromptShutdown
prompt = PromptShutdown()
print(",".join(prompt.install()))
import billiard.pool
child = os.fork()
if child == 0:  # a pool child forked before shutdown: it must see the flag the main process sets later
    until = time.monotonic() + 10
    while not prompt.stopping and time.monotonic() < until:
        time.sleep(0.01)
    started = time.monotonic()
    billiard.pool.time.sleep(30)  # what a pool child sleeps before it exits (1 s), asked for 30 s here
    os._exit(0 if prompt.stopping and time.monotonic() - started < 5 else 1)
time.sleep(0.2)
prompt.begin()
_, status = os.waitpid(child, 0)
print("child", os.waitstatus_to_exitcode(status))
"""


def test_prompt_shutdown_patches_the_pool_modules_and_reaches_forked_children() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROMPT_PROBE, str(SCRIPTS)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    patched, child = done.stdout.strip().splitlines()
    assert set(patched.split(",")) == {
        "billiard.pool.time",
        "celery.concurrency.prefork.time",
        "celery.concurrency.asynpool.time",
        "celery.concurrency.asynpool.sleep",
    }
    assert child == "child 0"
