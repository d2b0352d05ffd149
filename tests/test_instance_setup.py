"""The hooks' budgets against the appspec's timeouts: every wait of a hook fits in its timeout."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from deploytool_instance.drain import QUIT_GRACE_S
from deploytool_instance.settings import load_settings
from deploytool_instance.start import StartBudget
from deploytool_instance.validate import VALIDATE_BUDGET_S
from tests.hooktools import (
    PYTHON,
    Instance,
    ProcessReaper,
    app_context,
    group_settings,
    render_bundle,
)


@pytest.fixture
def reaper() -> Iterator[ProcessReaper]:
    reaper = ProcessReaper()
    try:
        yield reaper
    finally:
        reaper.stop_all()


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
