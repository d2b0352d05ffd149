"""`fab sandbox-interrupt` on a running sandbox, as the README runs it (subprocesses of fab): `fab sandbox-up`,
`fab deploy`, a spot notice to one instance and a kill of another, `fab sandbox-down`; with the real hook scripts,
the interruption watchers ApplicationStart starts, the sandbox's fake IMDS and real Celery workers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import boto3
import pytest

from deploytool.config import load_fleet
from deploytool.sandbox.procs import pid_alive, read_pidfile, wait_gone
from tests.hooktools import wait_for
from tests.sandbox_helpers import fab_cli, fleet_copy, kill_if_alive, started_pids

pytestmark = pytest.mark.slow


def test_a_spot_notice_and_a_kill_through_fab_sandbox_interrupt(tmp_path: Path) -> None:
    fleet_file = fleet_copy(tmp_path)
    fleet = load_fleet(fleet_file)
    root = tmp_path / ".sandbox"
    fab = fab_cli(fleet_file)

    def run_file(instance: str, name: str) -> Path:
        found = list(root.glob(f"instances/*/{instance}"))
        assert len(found) == 1, found
        return found[0] / fleet.app.install_path.lstrip("/") / "run" / name

    up = fab("sandbox-up")
    pids: list[int] = []
    try:
        assert up.returncode == 0, up.stderr
        email = re.search(r"^email: (i-\w+), (i-\w+)$", up.stdout, re.M)
        assert email, up.stdout
        noticed, killed = email.group(1), email.group(2)
        deployed = fab("deploy", "--version", "1.0.0")
        pids = started_pids(root)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        watchers = {i: read_pidfile(run_file(i, "watcher.pid")) for i in (noticed, killed)}
        assert all(p and pid_alive(p) for p in watchers.values()), watchers
        pids += [p for p in watchers.values() if p]

        # --live: every worker is heard on the release its instance is tagged with (telemetry on moto's CloudWatch).
        def live() -> tuple[int, dict[str, str]]:
            done = fab("reconcile", "--live", "--json")
            found = json.loads(done.stdout)["live"]["instances"] if done.stdout.strip() else []
            return done.returncode, {i["instance_id"]: i["finding"] for i in found}

        assert wait_for(lambda: live() == (0, {i: "ok" for i in live()[1]}) and len(live()[1]) == 6, 60), live()
        info = json.loads((root / "run" / "sandbox.json").read_text())
        ec2 = boto3.client("ec2", endpoint_url=info["endpoint"], region_name=info["region"],
                           aws_access_key_id="k", aws_secret_access_key="s")  # fmt: skip
        ec2.create_tags(Resources=[killed], Tags=[{"Key": "deploytool:version", "Value": "9.9.9"}])
        code, findings = live()
        assert code == 3 and findings[killed] == "other release", findings  # tagged 9.9.9, its worker runs 1.0.0
        ec2.create_tags(Resources=[killed], Tags=[{"Key": "deploytool:version", "Value": "1.0.0"}])

        wrong = fab("sandbox-interrupt", "--instance", "i-nope", "--notice", "spot")
        assert wrong.returncode == 2 and "--instance i-nope: no such instance" in wrong.stderr, wrong.stderr
        assert noticed in wrong.stderr  # it names the ones there are

        worker = read_pidfile(run_file(noticed, "worker.pid"))
        posted = fab("sandbox-interrupt", "--instance", noticed, "--notice", "spot", "--seconds", "60")
        assert posted.returncode == 0, posted.stderr
        assert f"{noticed}: spot interruption at " in posted.stdout
        assert f"its watcher (pid {watchers[noticed]}) answers within 5 s" in posted.stdout
        record_file = run_file(noticed, "interruption.json")
        assert wait_for(record_file.exists, 30), posted.stdout
        record = json.loads(record_file.read_text())
        # An idle worker: it stops taking tasks and shuts down warm at once, long before the deadline.
        assert (record["kind"], record["policy"], record["outcome"], record["interrupted"]) == (
            "spot", "drain", "drained", [],
        )  # fmt: skip
        assert record["deadline_at"] - record["noticed_at"] > 30
        assert worker is not None and wait_gone([worker], 10) == []
        assert wait_for(lambda: not pid_alive(watchers[noticed] or 0), 10)  # its work done, the watcher exits

        # The watcher recorded the notice in the sandbox's bucket: reconcile lists it (the instance is still in
        # its ASG here: the sandbox does not power it off).
        reconciled = fab("reconcile", "--json")
        assert reconciled.returncode in (0, 3), reconciled.stderr
        report = json.loads(reconciled.stdout)
        assert [(i["instance_id"], i["group"], i["kind"], i["outcome"]) for i in report["interruptions"]] == [
            (noticed, "email", "spot", "drained")
        ], report["interruptions"]

        other = read_pidfile(run_file(killed, "worker.pid"))
        gone = fab("sandbox-interrupt", "--instance", killed, "--kill")
        assert gone.returncode == 0, gone.stderr
        assert f"{killed}: killed (SIGKILL: worker pid {other}, and its watcher)" in gone.stdout
        assert other is not None and not pid_alive(other) and not pid_alive(watchers[killed] or 0)
        assert not run_file(killed, "interruption.json").exists()  # a power-off leaves no word
        unheard = fab("sandbox-interrupt", "--instance", killed, "--notice", "rebalance")
        assert unheard.returncode == 0, unheard.stderr
        assert "no interruption watcher runs there (ApplicationStart starts one): nothing will answer it" in (
            unheard.stdout
        )
    finally:
        down = fab("sandbox-down")
        assert down.returncode == 0, down.stderr
        imds_left = (root / "run" / "imds.pid").exists()
        alive = [p for p in pids if pid_alive(p)]
        for pid in alive:
            kill_if_alive(pid)
    assert not imds_left  # sandbox-down stopped the fake IMDS (and removed its pidfile)
    assert alive == []  # the fake IMDS, the workers and the watchers: sandbox-down stopped every one
