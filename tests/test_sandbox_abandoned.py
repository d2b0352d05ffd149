"""`kill -9` of `fab deploy` on the sandbox target: its deployments ran inside that process, so nothing runs them
any more.
`fab status` calls them Abandoned (not Created or InProgress forever) and says how to resume; `fab deploy` of the same
version is refused while the killed process's release lease is live, and while it is stale until `--break-lease` takes
it over (in the release record); it then deploys those groups again and completes. Real subprocesses of fab on a running
sandbox (`fab sandbox-up`), with small hooks that sleep in ApplicationStart so the kill lands mid-rollout."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from deploytool.config import load_fleet
from deploytool.model import lease_key, manifest_key
from deploytool.rollout.lease import STALE_S
from deploytool.sandbox.procs import wait_gone
from deploytool.sandbox.session import read_sandbox_info
from tests.conftest import ROOT
from tests.sandbox_helpers import (
    SANDBOX_FLEET,  # email AllAtOnce, video OneAtATime, 2 instances each
    kill_if_alive,
    started_pids,
)

pytestmark = pytest.mark.slow


def slow_hooks(tmp_path: Path) -> Path:
    """The sandbox fixture hooks (tests/fixtures/sandbox_scripts), ApplicationStart taking 2 s."""
    hooks = tmp_path / "hooks"
    shutil.copytree(ROOT / "tests/fixtures/sandbox_scripts", hooks)
    start = hooks / "application_start.sh.j2"
    start.write_text(start.read_text().replace("set -e\n", "set -e\nsleep 2\n", 1))
    return hooks


def sandbox_s3(tmp_path: Path) -> tuple[Any, str, str]:
    """boto3 S3 on the sandbox's moto server, the bucket, and the key of the sandbox target's lease."""
    fleet = load_fleet(tmp_path / "deploy.toml")
    info = read_sandbox_info(tmp_path / ".sandbox")
    assert info is not None
    s3 = boto3.client(
        "s3",
        endpoint_url=info["endpoint"],
        region_name=info["region"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return s3, fleet.artifacts.bucket, lease_key(fleet.artifacts.prefix, fleet.app.name, "sandbox")


def age_lease(tmp_path: Path, *, seconds: float) -> None:
    """Rewrite the lease's renewed_at `seconds` in the past: what its holder's death looks like that much later."""
    s3, bucket, key = sandbox_s3(tmp_path)
    body = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    then = datetime.now(UTC) - timedelta(seconds=seconds)
    body["renewed_at"] = then.strftime("%Y-%m-%dT%H:%M:%SZ")
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(body).encode())


def release_record(tmp_path: Path, rid: str) -> dict[str, Any]:
    s3, bucket, _ = sandbox_s3(tmp_path)
    fleet = load_fleet(tmp_path / "deploy.toml")
    key = manifest_key(fleet.artifacts.prefix, fleet.app.name, rid)
    return dict(json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


def in_application_start(root: Path) -> list[Path]:
    return list(root.glob("instances/*/i-*/logs/d-*/ApplicationStart.log"))


def test_status_after_kill_9_of_deploy_says_abandoned_and_the_same_deploy_resumes(tmp_path: Path) -> None:
    (tmp_path / "deploy.toml").write_text(SANDBOX_FLEET)
    shutil.copytree(ROOT / "sample_app", tmp_path / "sample_app", ignore=shutil.ignore_patterns("__pycache__"))
    root = tmp_path / ".sandbox"
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    env.update(PYTHONPATH=str(ROOT), CI="1", DEPLOYTOOL_TEST_HOOKS=str(slow_hooks(tmp_path)))

    def command(*args: str) -> list[str]:
        return [sys.executable, str(ROOT / "tests/fab_with_hooks.py"), *args, "--fleet", str(tmp_path / "deploy.toml")]

    def fab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command(*args), cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)

    up = fab("sandbox-up")
    pids: list[int] = []
    killed: subprocess.Popen[str] | None = None
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        killed = subprocess.Popen(
            command("deploy", "--version", "1.0.0"),
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while not in_application_start(root) and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert in_application_start(root), "no deployment reached ApplicationStart"
        time.sleep(0.3)  # in ApplicationStart's 2 s sleep
        killed.send_signal(signal.SIGKILL)
        output = killed.communicate(timeout=30)[0]
        assert killed.returncode == -signal.SIGKILL, output
        pids = started_pids(root)

        shown = fab("status", "--json")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        data = json.loads(shown.stdout)
        gone = f"the process that ran it (pid {killed.pid} on host {socket.gethostname()}) is gone"
        groups = {g["group"]: g for g in data["release"]["groups"]}
        abandoned = [(n, g["deployment_id"]) for n, g in groups.items() if g["status"] == "Abandoned"]
        assert {group for group, _d in abandoned} == {"email", "video"}, data
        for name, _d in abandoned:
            assert groups[name]["abandoned_reason"] == gone, groups[name]
        release_id = data["release"]["release_id"]
        assert re.fullmatch(r"\S+-1\.0\.0", release_id), data
        assert (data["release"]["version"], data["release"]["mode"], data["release"]["target"]) == (
            "1.0.0",
            "deploy",
            "sandbox",
        )
        # the killed deploy still holds the target's release lease, live
        assert data["lease"]["holder"].endswith(f"@{socket.gethostname()}"), data["lease"]
        assert (data["lease"]["pid"], data["lease"]["command"], data["lease"]["release_id"]) == (
            killed.pid,
            "deploy",
            release_id,
        )
        assert data["lease"]["stale"] is False, data["lease"]

        status = fab("status")  # the text itself: the abandoned lines' wording with the resume hint
        assert status.returncode == 0, status.stdout + status.stderr
        for group, deployment in abandoned:
            assert (
                f"{group}: {deployment} is abandoned: {gone}: `fab deploy --version 1.0.0` resumes the release; "
                "`fab sandbox-down` stops what it left"
            ) in status.stdout, status.stdout

        # the next deploy is refused, naming the lease's holder
        lease = re.compile(
            rf"\S+@{re.escape(socket.gethostname())} \(pid {killed.pid}\) holds the release lease of target 'sandbox': "
            rf"`deploy` release {re.escape(release_id)} since \S+, renewed \d+s ago, (live|STALE)"
        )
        refused = fab("deploy", "--version", "1.0.0")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert (found := lease.search(refused.stderr)) and found.group(1) == "live", refused.stderr
        assert "--wait waits until it is free" in refused.stderr
        early = fab("deploy", "--version", "1.0.0", "--break-lease")  # not stale yet: not taken over
        assert early.returncode == 1 and "only takes over a lease not renewed for 120s" in early.stderr, early.stderr
        age_lease(tmp_path, seconds=STALE_S + 1)  # as if the 120 s had passed (nobody renews it)
        stale = fab("deploy", "--version", "1.0.0")
        assert stale.returncode == 1, stale.stdout + stale.stderr
        assert (found := lease.search(stale.stderr)) and found.group(1) == "STALE", stale.stderr
        assert "--break-lease takes it over" in stale.stderr

        again = fab("deploy", "--version", "1.0.0", "--break-lease", "--json-out", str(tmp_path / "result.json"))
        assert again.returncode == 0, again.stdout + again.stderr
        assert "lease: broke the stale lease of " in again.stdout and f"(pid {killed.pid}, `deploy`" in again.stdout
        broken = release_record(tmp_path, release_id)["lease_broken"]
        assert broken["broken"]["pid"] == killed.pid and broken["broken"]["release_id"] == release_id
        assert json.loads(fab("status", "--json").stdout)["lease"] is None
        result = json.loads((tmp_path / "result.json").read_text())
        assert (result["release_id"], result["succeeded"]) == (release_id, True)  # resumed, and done
        assert result["outcomes"] == {"succeeded": 2}, result
        resumed = {g["group"]: g["deployment_id"] for g in result["groups"]}
        assert resumed.keys() == {"email", "video"} and set(resumed.values()).isdisjoint(d for _g, d in abandoned)
        versions = {p.read_text().strip() for p in root.glob("instances/*/i-*/opt/acme-workers/run/VERSION")}
        assert versions == {"1.0.0"} and len(list(root.glob("instances/*/i-*"))) == 4
        done = json.loads(fab("status", "--json").stdout)["release"]
        assert done["release_id"] == release_id, done
        assert {(g["group"], g["status"], g["outcome"]) for g in done["groups"]} == {
            ("email", "Succeeded", "succeeded"),
            ("video", "Succeeded", "succeeded"),
        }, done
    finally:
        if killed is not None and killed.poll() is None:
            killed.kill()
            killed.wait()
        down = fab("sandbox-down")
        pids = sorted(set(pids + started_pids(root)))
        left = wait_gone(pids, 10)
        for pid in left:
            kill_if_alive(pid)
    assert down.returncode == 0, down.stderr
    assert left == [], "sandbox-down left processes behind"
