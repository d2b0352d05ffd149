"""Helpers for the sandbox tests: fixture bundles (a tgz with an appspec.yml and tiny shell hooks), the fixture
hook templates for real bundles,
the fixture app for tests/builders.py's fleets, S3 revisions in moto (mock_aws), and a provisioned local backend."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
from moto import mock_aws

from deploytool.aws.local import local_session
from deploytool.aws.s3 import S3Gateway
from deploytool.aws.session import AwsSession
from deploytool.config import Fleet, load_fleet
from deploytool.model import Revision
from deploytool.render import TOOL_ROOT, Templates
from deploytool.sandbox.backend import LocalBackend
from deploytool.sandbox.fleet import Broker, SandboxFleet
from deploytool.sandbox.procs import PidRecord, pid_alive, read_pidfile, wait_gone
from deploytool.sandbox.runner import Timing
from deploytool.sandbox.session import SandboxSession, stop_sandbox
from deploytool.sandbox.state import SandboxState
from tests.builders import BUCKET

# The appspec as shipped, with the small fixture hooks (no Celery worker: they flip `current`, write run/VERSION
# and a journal line; ValidateService fails where the instance root holds `fail-validate`).
FIXTURE_TEMPLATES = Templates(TOOL_ROOT / "appspec" / "appspec.yml.j2", TOOL_ROOT / "tests/fixtures/sandbox_scripts")
REGION = "us-east-1"
FAST = Timing(event_limit_s=3600, kill_grace_s=1.0)
# The fixture hooks' app (they write under /opt/fixture): make_fleet(..., app=FIXTURE_APP, targets=sandbox_target(...)).
FIXTURE_APP = {"name": "fixture-app", "source": "app", "celery_app": "fixture:app", "install_dir": "/opt/fixture"}


def write_bundle(path: Path, files: Mapping[str, str | bytes]) -> Path:
    """A .tgz with these files; *.sh files are executable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, content in sorted(files.items()):
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def sh(body: str) -> str:
    return "#!/bin/sh\n" + body.strip() + "\n"


def appspec(
    hooks: Mapping[str, str | tuple[str, int] | tuple[str, int, str]], *, files: str = "", extra: str = ""
) -> str:
    """An appspec.yml; each hook is a location, or (location, timeout) or (location, timeout, runas)."""
    lines = ["version: 0.0", "os: linux"]
    if files:
        lines.append(files.rstrip())
    if extra:
        lines.append(extra.rstrip())
    lines.append("hooks:")
    for event, spec in hooks.items():
        location, timeout, runas = (spec, 30, None) if isinstance(spec, str) else (*spec, None)[:3]
        lines.append(f"  {event}:")
        lines.append(f"    - location: {location}")
        lines.append(f"      timeout: {timeout}")
        if runas:
            lines.append(f"      runas: {runas}")
    return "\n".join(lines) + "\n"


def upload(s3: S3Gateway, bundle: Path, version: str) -> Revision:
    key = f"bundles/{version}/{bundle.name}"
    info = s3.put_bytes(BUCKET, key, bundle.read_bytes())
    return Revision(bucket=BUCKET, key=key, etag=info.etag.strip('"'), version=version, sha256="0" * 64)


@pytest.fixture
def aws() -> Iterator[AwsSession]:
    with mock_aws():
        session = local_session(region=REGION, endpoint_url=None)
        S3Gateway(session).create_bucket(BUCKET, REGION)
        yield session


def make_backend(fleet: Fleet, aws: AwsSession, root: Path, timing: Timing = FAST) -> LocalBackend:
    _, target = fleet.target("sandbox")
    sizes = {g.name: target.instance_count(g.name) for g in fleet.groups}  # type: ignore[union-attr]
    sandbox = SandboxFleet(
        fleet, root=root / "instances", aws=aws, broker=Broker("redis://127.0.0.1:6379/15"), sizes=sizes
    )
    sandbox.provision()
    return LocalBackend(
        sandbox,
        SandboxState(root / "state", fleet.app.name),
        s3=S3Gateway(aws),
        app=fleet.app,
        timing=timing,
        worker_stop_grace_s=1.0,
    )


def fleet_copy(tmp_path: Path) -> Path:
    """The sample fleet file beside a link to the sample app, outside git (versions are given, or fab sandbox's)."""
    shutil.copy(TOOL_ROOT / "deploy.toml", tmp_path / "deploy.toml")
    (tmp_path / "sample_app").symlink_to(TOOL_ROOT / "sample_app")
    return tmp_path / "deploy.toml"


def fab_cli(fleet_file: Path, timeout: float = 180) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`fab TASK ... --fleet FILE` as a user runs it: a subprocess from the tool's root, CI output, no step summary."""
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}

    def fab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fabric", *args, "--fleet", str(fleet_file)],
            cwd=TOOL_ROOT, capture_output=True, text=True, timeout=timeout,
            env={**env, "PYTHONPATH": str(TOOL_ROOT), "CI": "1"},
        )  # fmt: skip

    return fab


def started_pids(root: Path) -> list[int]:
    """Every pid a sandbox under `root` recorded, and its workers' (by their pidfiles)."""
    pids = [pid for pid, _kind in PidRecord(root / "run/pids.txt").pids()]
    pids += [p for f in root.glob("instances/*/*/opt/*/run/worker.pid") if (p := read_pidfile(f))]
    return pids


def kill_if_alive(pid: int) -> None:
    if pid_alive(pid):
        os.kill(pid, 9)


# A two-group fleet on the local target, the sample app beside it (`sandbox_up`).
SANDBOX_FLEET = """\
[app]
name = "acme-workers"
source = "sample_app"
celery_app = "acme_workers.celery_app:app"

[artifacts]
bucket = "acme-deploy-artifacts"
prefix = "deploytool"

[[groups]]
name = "email"
asg = "acme-email-workers"
queues = ["email"]
strategy = "AllAtOnce"  # CodeDeploy calls it a success with one instance up: the deployment goes on

[[groups]]
name = "video"
asg = "acme-video-workers"
queues = ["video"]
strategy = "OneAtATime"

[targets.sandbox]
backend = "local"
instances_per_group = 2
"""


@contextmanager
def sandbox_up(tmp_path: Path) -> Iterator[SandboxSession]:
    """A running sandbox of SANDBOX_FLEET, as `fab sandbox-up` leaves one (its session detached: its processes
    outlive the `with` of the session), stopped at the end as `fab sandbox-down` stops it."""
    (tmp_path / "deploy.toml").write_text(SANDBOX_FLEET)
    shutil.copytree(TOOL_ROOT / "sample_app", tmp_path / "sample_app", ignore=shutil.ignore_patterns("__pycache__"))
    session = SandboxSession(load_fleet(tmp_path / "deploy.toml"), worker_stop_grace_s=1, handle_signals=False)
    with session:
        session.detach()
    assert session.moto is not None
    moto_pid = session.moto.process.pid
    try:
        yield session
    finally:
        stop_sandbox(session.root, session.config.app, grace_s=1)
        assert wait_gone([moto_pid], 5) == []
        kill_if_alive(moto_pid)
