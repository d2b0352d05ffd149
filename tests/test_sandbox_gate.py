"""The health gate on the running sandbox, as a user runs it (`fab` subprocesses): real Celery workers publish
their task outcomes to the moto server's CloudWatch; a release whose `send_email` fails half the time (the sample
app's failure switch) but passes validation is halted after its first wave (by a look during the bake, before the
bake is over) and that wave's group is rolled back, the later waves never start, and the reconcile afterwards
expects (and finds) the previous release."""

from __future__ import annotations

import json
import re
import shutil
import threading
from pathlib import Path

import pytest

from deploytool.sandbox.procs import pid_alive
from tests.conftest import ROOT
from tests.hooktools import Load
from tests.sandbox_helpers import fab_cli, kill_if_alive, started_pids

pytestmark = pytest.mark.slow


def test_a_bad_release_is_halted_after_its_first_wave_and_rolled_back(tmp_path: Path) -> None:
    shutil.copy(ROOT / "deploy.toml", tmp_path / "deploy.toml")
    shutil.copytree(ROOT / "sample_app", tmp_path / "sample_app", ignore=shutil.ignore_patterns("__pycache__"))
    fleet_file = tmp_path / "deploy.toml"
    root = tmp_path / ".sandbox"
    fab = fab_cli(fleet_file, timeout=400)

    up = fab("sandbox-up")
    pids: list[int] = []
    stop = threading.Event()
    try:
        assert up.returncode == 0, up.stderr
        first = fab("deploy", "--version", "1.0.0")
        pids = started_pids(root)
        assert first.returncode == 0, first.stdout + first.stderr
        info = json.loads((root / "run" / "sandbox.json").read_text())
        load = Load(str(info["broker"]), dict(info.get("broker_transport_options") or {}), tmp_path / "ledger")

        def steady() -> None:
            while not stop.wait(0.2):
                load.send("send_email", "email", 0.01)

        sender = threading.Thread(target=steady, daemon=True)
        sender.start()
        stop.wait(15)  # v1 handles some: the baseline
        init = tmp_path / "sample_app" / "acme_workers" / "__init__.py"
        init.write_text(init.read_text().replace("FAILING: dict[str, float] = {}", 'FAILING = {"send_email": 0.5}'))
        bad = fab("deploy", "--version", "2.0.0", "--bake", "25", "--json-out", str(tmp_path / "result.json"))
        pids += started_pids(root)
        out = bad.stdout + bad.stderr
        assert bad.returncode == 1, out
        # half of send_email failing shows long before the bake is over: a look during it halts
        assert re.search(r"health gate after wave 0 \(25 s bake, halted early at \d+ s\): halt", out), out
        assert re.search(r"email/acme_workers\.tasks\.send_email: halt: \d+/\d+ failed", out), out
        assert "health gate halted release" in out and "rolling back email" in out, out
        result = json.loads((tmp_path / "result.json").read_text())
        assert result["gate"]["halted"] and result["gate"]["checks"][0]["decision"] == "halt"
        assert result["gate"]["checks"][0]["early"] and result["gate"]["checks"][0]["took_s"] < 25
        outcomes = {g["group"]: g["outcome"] for g in result["groups"]}
        assert outcomes == {"email": "succeeded", "reports": "not-started", "video": "not-started"}, outcomes

        reconciled = fab("reconcile", "--json")
        report = json.loads(reconciled.stdout)
        email = next(g for g in report["groups"] if g["group"] == "email")
        assert email["expected_version"] == "1.0.0" and email["on_expected"] == email["instances"] == 2, email
        assert reconciled.returncode == 0, reconciled.stdout
    finally:
        stop.set()
        down = fab("sandbox-down")
        alive = [p for p in pids if pid_alive(p)]
        for pid in alive:
            kill_if_alive(pid)
    assert down.returncode == 0, down.stderr
    assert alive == []
