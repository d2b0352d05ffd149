"""The lifecycle runner against the CodeDeploy agent's behaviour, with real hook subprocesses."""

from __future__ import annotations

import os
import pwd
import shutil
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pytest

from deploytool.aws.s3 import S3Gateway
from deploytool.aws.session import AwsSession
from deploytool.model import Revision
from deploytool.sandbox.instance import Instance
from deploytool.sandbox.procs import pid_alive
from deploytool.sandbox.runner import DeploymentSpec, LifecycleRunner, Timing
from tests.sandbox_helpers import FAST, appspec, aws, kill_if_alive, sh, upload, write_bundle

__all__ = ["aws"]  # the fixture

pytestmark = pytest.mark.slow  # every test runs hook scripts as real processes

GROUP_ID = "0b7c4a4e-1111-4222-8333-944455556666"
JOURNAL = 'echo "$LIFECYCLE_EVENT {tag} $DEPLOYMENT_ID" >> "$DEPLOYTOOL_INSTANCE_ROOT/journal"'
EVENTS = ("ApplicationStop", "BeforeInstall", "AfterInstall", "ApplicationStart", "ValidateService")


def revision(version: str) -> Revision:
    return Revision(bucket="b", key=f"k/{version}.tgz", etag="abc123", version=version, sha256="0" * 64)


def journal_bundle(tmp_path: Path, tag: str, *, extra: dict[str, str] | None = None) -> Path:
    files = {f"hooks/{e}.sh": sh(JOURNAL.format(tag=tag)) for e in EVENTS}
    files["hooks/env.sh"] = sh(
        'env | sort > "$DEPLOYTOOL_INSTANCE_ROOT/env.$LIFECYCLE_EVENT"\n' + JOURNAL.format(tag=tag)
    )
    files["app/version.txt"] = tag
    hooks: dict[str, str] = {e: f"hooks/{e}.sh" for e in EVENTS}
    hooks["ValidateService"] = "hooks/env.sh"
    files["appspec.yml"] = appspec(hooks, files="files:\n  - source: app\n    destination: /opt/fixture/app")
    files.update(extra or {})
    return write_bundle(tmp_path / f"{tag}.tgz", files)


def deploy(instance: Instance, bundle: Path, did: str, version: str, **kw: object) -> object:
    spec = DeploymentSpec(
        did,
        "fixture-app",
        "email",
        GROUP_ID,
        revision=revision(version),
        bundle_file=bundle,
        **kw,  # type: ignore[arg-type]
    )
    return LifecycleRunner(instance, timing=FAST).run(spec)


@pytest.fixture
def instance(tmp_path: Path) -> Instance:
    return Instance("email", "i-0123456789abcdef0", tmp_path / "i-0123456789abcdef0")


def journal(instance: Instance) -> list[str]:
    path = instance.root / "journal"
    return path.read_text().splitlines() if path.exists() else []


def test_events_run_in_the_agents_order_and_apply_stop_is_skipped_on_first_install(
    tmp_path: Path, instance: Instance
) -> None:
    result = deploy(instance, journal_bundle(tmp_path, "v1"), "d-AAAAAAAA1", "v1")
    assert result.status == "Succeeded"
    assert [e.event for e in result.events] == [
        "ApplicationStop",
        "DownloadBundle",
        "BeforeInstall",
        "Install",
        "AfterInstall",
        "ApplicationStart",
        "ValidateService",
    ]
    assert result.events[0].status == "Skipped"
    assert journal(instance) == [
        "BeforeInstall v1 d-AAAAAAAA1",
        "AfterInstall v1 d-AAAAAAAA1",
        "ApplicationStart v1 d-AAAAAAAA1",
        "ValidateService v1 d-AAAAAAAA1",
    ]
    assert (instance.root / "opt/fixture/app/version.txt").read_text() == "v1"
    archive = instance.root / "deployment-root" / GROUP_ID / "d-AAAAAAAA1" / "deployment-archive"
    assert (archive / "appspec.yml").is_file()
    for event in ("BeforeInstall", "ValidateService"):
        log = instance.root / "logs/d-AAAAAAAA1" / f"{event}.log"
        assert f"LifecycleEvent - {event}" in log.read_text()
    assert '"status": "Succeeded"' in (instance.root / "logs/d-AAAAAAAA1/summary.json").read_text()


def test_hook_environment_is_the_agents_plus_the_sandbox_extras(
    tmp_path: Path, instance: Instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://developer-shell/9")
    deploy(instance, journal_bundle(tmp_path, "v1"), "d-AAAAAAAA1", "v1")
    env = dict(line.split("=", 1) for line in (instance.root / "env.ValidateService").read_text().splitlines())
    assert {
        k: env[k]
        for k in (
            "LIFECYCLE_EVENT",
            "DEPLOYMENT_ID",
            "APPLICATION_NAME",
            "DEPLOYMENT_GROUP_NAME",
            "DEPLOYMENT_GROUP_ID",
            "BUNDLE_BUCKET",
            "BUNDLE_KEY",
            "BUNDLE_ETAG",
            "DEPLOYTOOL_INSTANCE_ROOT",
            "DEPLOYTOOL_PROCESS_MANAGER",
            "DEPLOYTOOL_INSTANCE_ID",
        )
    } == {
        "LIFECYCLE_EVENT": "ValidateService",
        "DEPLOYMENT_ID": "d-AAAAAAAA1",
        "APPLICATION_NAME": "fixture-app",
        "DEPLOYMENT_GROUP_NAME": "email",
        "DEPLOYMENT_GROUP_ID": GROUP_ID,
        "BUNDLE_BUCKET": "b",
        "BUNDLE_KEY": "k/v1.tgz",
        "BUNDLE_ETAG": "abc123",
        "DEPLOYTOOL_INSTANCE_ROOT": str(instance.root),
        "DEPLOYTOOL_PROCESS_MANAGER": "direct",
        "DEPLOYTOOL_INSTANCE_ID": "i-0123456789abcdef0",
    }
    assert Path(env["DEPLOYTOOL_PYTHON"]).name.startswith("python")
    assert "BUNDLE_VERSION" not in env  # no S3 object version: the agent leaves it unset
    assert "CELERY_BROKER_URL" not in env  # hooks see the agent's environment, not the developer's shell


def test_application_stop_runs_the_previous_revisions_scripts(tmp_path: Path, instance: Instance) -> None:
    deploy(instance, journal_bundle(tmp_path, "v1"), "d-AAAAAAAA1", "v1")
    result = deploy(instance, journal_bundle(tmp_path, "v2"), "d-BBBBBBBB2", "v2")
    assert result.status == "Succeeded"
    second = [line for line in journal(instance) if line.endswith("d-BBBBBBBB2")]
    assert second[0] == "ApplicationStop v1 d-BBBBBBBB2"  # the old revision's script, the new deployment's id
    assert second[1:] == [f"{e} v2 d-BBBBBBBB2" for e in EVENTS[1:]]
    assert (instance.root / "opt/fixture/app/version.txt").read_text() == "v2"


def test_a_failing_event_stops_the_deployment_with_the_agents_message_and_log_tail(
    tmp_path: Path, instance: Instance
) -> None:
    bundle = journal_bundle(
        tmp_path, "v1", extra={"hooks/AfterInstall.sh": sh("echo migrating; echo boom >&2; exit 3")}
    )
    result = deploy(instance, bundle, "d-AAAAAAAA1", "v1")
    assert result.status == "Failed"
    assert result.failed_event == "AfterInstall"
    assert result.message == "Script at specified location: hooks/AfterInstall.sh failed with exit code 3"
    assert "[stdout]migrating" in result.log_tail and "[stderr]boom" in result.log_tail
    assert [e.event for e in result.events][-1] == "AfterInstall"
    assert "ApplicationStart v1" not in "\n".join(journal(instance))


def test_a_script_past_its_timeout_has_its_whole_process_group_terminated(tmp_path: Path, instance: Instance) -> None:
    script = sh('sleep 60 &\necho $! > "$DEPLOYTOOL_INSTANCE_ROOT/child.pid"\nsleep 60')
    bundle = journal_bundle(tmp_path, "v1", extra={"hooks/ApplicationStart.sh": script})
    bundle = write_bundle(
        tmp_path / "t.tgz",
        {
            "hooks/ApplicationStart.sh": script,
            "appspec.yml": appspec({"ApplicationStart": ("hooks/ApplicationStart.sh", 1)}),
        },
    )
    started = time.monotonic()
    result = deploy(instance, bundle, "d-AAAAAAAA1", "v1")
    child = int((instance.root / "child.pid").read_text())
    try:
        assert time.monotonic() - started < 20
        assert result.status == "Failed" and result.failed_event == "ApplicationStart"
        assert (
            result.message == "Script at specified location: hooks/ApplicationStart.sh failed to complete in 1 seconds"
        )
        assert not pid_alive(child), "the script's background child survived the timeout"
        log = (instance.root / "logs/d-AAAAAAAA1/ApplicationStart.log").read_text()
        assert "sent SIGTERM to the script's process group" in log
        assert "SIGKILL" not in log
    finally:
        kill_if_alive(child)


def test_a_process_group_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path, instance: Instance) -> None:
    script = sh("trap '' TERM\nsleep 60 &\necho $! > \"$DEPLOYTOOL_INSTANCE_ROOT/child.pid\"\nwait")
    bundle = write_bundle(
        tmp_path / "t.tgz",
        {
            "hooks/start.sh": script,
            "appspec.yml": appspec({"ApplicationStart": ("hooks/start.sh", 1)}),
        },
    )
    result = deploy(instance, bundle, "d-AAAAAAAA1", "v1")
    child = int((instance.root / "child.pid").read_text())
    try:
        assert result.status == "Failed"
        assert not pid_alive(child)
        log = (instance.root / "logs/d-AAAAAAAA1/ApplicationStart.log").read_text()
        assert "ignored SIGTERM for 1 s: sent SIGKILL" in log
    finally:
        kill_if_alive(child)


def test_a_background_process_holding_the_scripts_output_fails_the_event_as_on_the_agent(
    tmp_path: Path, instance: Instance
) -> None:
    holds = sh('sleep 60 &\necho $! > "$DEPLOYTOOL_INSTANCE_ROOT/held.pid"\nexit 0')
    bundle = write_bundle(
        tmp_path / "t.tgz",
        {
            "hooks/start.sh": holds,
            "appspec.yml": appspec({"ApplicationStart": ("hooks/start.sh", 1)}),
        },
    )
    result = deploy(instance, bundle, "d-AAAAAAAA1", "v1")
    held = int((instance.root / "held.pid").read_text())
    try:
        assert result.status == "Failed"
        assert "exited with code 0, but a process it started kept the script's stdout/stderr open" in result.message
        assert not pid_alive(held)
    finally:
        kill_if_alive(held)


def test_a_background_process_with_redirected_output_keeps_running(tmp_path: Path, instance: Instance) -> None:
    starts = sh('sleep 60 >/dev/null 2>&1 </dev/null &\necho $! > "$DEPLOYTOOL_INSTANCE_ROOT/worker.pid"')
    bundle = write_bundle(
        tmp_path / "t.tgz",
        {
            "hooks/start.sh": starts,
            "appspec.yml": appspec({"ApplicationStart": ("hooks/start.sh", 5)}),
        },
    )
    result = deploy(instance, bundle, "d-AAAAAAAA1", "v1")
    worker = int((instance.root / "worker.pid").read_text())
    try:
        assert result.status == "Succeeded"
        assert pid_alive(worker)
    finally:
        kill_if_alive(worker)


def test_abort_ends_a_running_script_at_once(tmp_path: Path, instance: Instance) -> None:
    bundle = write_bundle(
        tmp_path / "t.tgz",
        {
            "hooks/slow.sh": sh("sleep 60"),
            "appspec.yml": appspec({"BeforeInstall": ("hooks/slow.sh", 600)}),
        },
    )
    abort = threading.Event()
    runner = LifecycleRunner(instance, timing=Timing(kill_grace_s=1), abort=abort)
    spec = DeploymentSpec("d-AAAAAAAA1", "fixture-app", "email", GROUP_ID, bundle_file=bundle)
    threading.Timer(0.5, abort.set).start()
    started = time.monotonic()
    result = runner.run(spec)
    assert time.monotonic() - started < 10
    assert result.status == "Failed" and result.failed_event == "BeforeInstall"
    assert "the sandbox is shutting down" in result.message


def test_event_limit_caps_the_scripts_of_one_event(tmp_path: Path, instance: Instance) -> None:
    bundle = write_bundle(
        tmp_path / "t.tgz",
        {
            "hooks/a.sh": sh("sleep 0.6"),
            "hooks/b.sh": sh("sleep 0.6"),
            "appspec.yml": "version: 0.0\nos: linux\nhooks:\n  BeforeInstall:\n"
            "    - location: hooks/a.sh\n      timeout: 30\n    - location: hooks/b.sh\n      timeout: 30\n",
        },
    )
    runner = LifecycleRunner(instance, timing=Timing(event_limit_s=1.0, kill_grace_s=1))
    result = runner.run(DeploymentSpec("d-AAAAAAAA1", "fixture-app", "email", GROUP_ID, bundle_file=bundle))
    assert result.status == "Failed" and result.failed_event == "BeforeInstall"
    assert "hooks/b.sh" in result.message


def test_missing_script_and_invalid_appspec_fail_with_clear_messages(tmp_path: Path, instance: Instance) -> None:
    missing = write_bundle(tmp_path / "m.tgz", {"appspec.yml": appspec({"BeforeInstall": "hooks/nope.sh"})})
    result = deploy(instance, missing, "d-AAAAAAAA1", "v1")
    assert result.message == "Script does not exist at specified location: hooks/nope.sh"
    typo = write_bundle(tmp_path / "t.tgz", {"appspec.yml": appspec({"AfterInstal": "hooks/x.sh"})})
    result = deploy(instance, typo, "d-AAAAAAAA2", "v1")
    assert result.failed_event == "BeforeInstall"
    assert "hooks.AfterInstal: unknown lifecycle event (did you mean 'AfterInstall'?)" in result.message


# --- Install: fileExistsBehavior and the previous install's cleanup -----------------------------------

FILES = "files:\n  - source: app\n    destination: /opt/fixture/app"


def files_bundle(tmp_path: Path, tag: str, behavior: str | None = None) -> Path:
    extra = f"file_exists_behavior: {behavior}" if behavior else ""
    return write_bundle(
        tmp_path / f"{tag}-{behavior}.tgz",
        {
            "app/settings.conf": f"setting from {tag}\n",
            "app/code.py": f"VERSION = {tag!r}\n",
            "appspec.yml": f"version: 0.0\nos: linux\n{FILES}\n{extra}\n",
        },
    )


def preexisting(instance: Instance) -> Path:
    path = instance.root / "opt/fixture/app/settings.conf"
    path.parent.mkdir(parents=True)
    path.write_text("edited by hand on the instance\n")
    return path


def test_disallow_fails_on_a_file_not_installed_by_the_previous_deployment(tmp_path: Path, instance: Instance) -> None:
    local = preexisting(instance)
    result = deploy(instance, files_bundle(tmp_path, "v1"), "d-AAAAAAAA1", "v1")
    assert result.status == "Failed" and result.failed_event == "Install"
    assert "a specified file already exists at this location: /opt/fixture/app/settings.conf" in result.message
    assert local.read_text() == "edited by hand on the instance\n"
    assert not (instance.root / "opt/fixture/app/code.py").exists()  # nothing copied


def test_overwrite_replaces_the_existing_file(tmp_path: Path, instance: Instance) -> None:
    local = preexisting(instance)
    result = deploy(instance, files_bundle(tmp_path, "v1"), "d-AAAAAAAA1", "v1", file_exists_behavior="OVERWRITE")
    assert result.status == "Succeeded"
    assert local.read_text() == "setting from v1\n"


def test_retain_keeps_the_existing_file_and_installs_the_rest(tmp_path: Path, instance: Instance) -> None:
    local = preexisting(instance)
    result = deploy(instance, files_bundle(tmp_path, "v1"), "d-AAAAAAAA1", "v1", file_exists_behavior="RETAIN")
    assert result.status == "Succeeded"
    assert local.read_text() == "edited by hand on the instance\n"
    assert (instance.root / "opt/fixture/app/code.py").read_text() == "VERSION = 'v1'\n"


def test_appspec_file_exists_behavior_wins_over_the_deployments(tmp_path: Path, instance: Instance) -> None:
    local = preexisting(instance)
    result = deploy(instance, files_bundle(tmp_path, "v1", "OVERWRITE"), "d-AAAAAAAA1", "v1")
    assert result.status == "Succeeded"
    assert local.read_text() == "setting from v1\n"


def test_files_of_the_previous_install_are_replaced_even_with_disallow(tmp_path: Path, instance: Instance) -> None:
    assert deploy(instance, files_bundle(tmp_path, "v1"), "d-AAAAAAAA1", "v1").status == "Succeeded"
    v2 = write_bundle(
        tmp_path / "v2.tgz",
        {
            "app/settings.conf": "setting from v2\n",
            "appspec.yml": f"version: 0.0\nos: linux\n{FILES}\n",
        },
    )
    result = deploy(instance, v2, "d-BBBBBBBB2", "v2")
    assert result.status == "Succeeded"
    app = instance.root / "opt/fixture/app"
    assert (app / "settings.conf").read_text() == "setting from v2\n"
    assert not (app / "code.py").exists()  # v1 installed it, v2 does not ship it: removed like the agent does


def test_permissions_apply_to_installed_files(tmp_path: Path, instance: Instance) -> None:
    bundle = write_bundle(
        tmp_path / "p.tgz",
        {
            "app/settings.conf": "x\n",
            "app/code.py": "y\n",
            "appspec.yml": f"version: 0.0\nos: linux\n{FILES}\npermissions:\n"
            "  - object: /opt/fixture/app\n    pattern: '*.conf'\n    mode: 600\n    type: [file]\n",
        },
    )
    assert deploy(instance, bundle, "d-AAAAAAAA1", "v1").status == "Succeeded"
    app = instance.root / "opt/fixture/app"
    assert (app / "settings.conf").stat().st_mode & 0o777 == 0o600
    assert (app / "code.py").stat().st_mode & 0o777 == 0o644


# --- runas ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="running a script as another user needs root")
def test_runas_runs_the_script_as_that_user(tmp_path: Path) -> None:
    user = "nobody"
    pwd.getpwnam(user)
    with tempfile.TemporaryDirectory(dir="/tmp") as shared:
        os.chmod(shared, 0o777)
        instance = Instance("email", "i-0123456789abcdef0", Path(shared) / "i-0123456789abcdef0")
        bundle = write_bundle(
            tmp_path / "r.tgz",
            {
                "hooks/who.sh": sh(f'id -un > {shared}/who; echo "$HOME" > {shared}/home'),
                "appspec.yml": appspec({"ApplicationStart": ("hooks/who.sh", 10, user)}),
            },
        )
        result = deploy(instance, bundle, "d-AAAAAAAA1", "v1")
        assert result.status == "Succeeded", result.diagnostics
        assert Path(shared, "who").read_text().strip() == user
        assert Path(shared, "home").read_text().strip() == pwd.getpwnam(user).pw_dir


def test_runas_an_unknown_user_fails_clearly(tmp_path: Path, instance: Instance) -> None:
    bundle = write_bundle(
        tmp_path / "r.tgz",
        {
            "hooks/who.sh": sh("id -un"),
            "appspec.yml": appspec({"ApplicationStart": ("hooks/who.sh", 10, "no-such-user")}),
        },
    )
    result = deploy(instance, bundle, "d-AAAAAAAA1", "v1")
    assert result.message == "runas user 'no-such-user' does not exist on this machine"


# --- DownloadBundle from S3 and restart --------------------------------------------------------------------


def test_download_bundle_gets_the_revision_from_s3_and_checks_its_etag(
    tmp_path: Path, instance: Instance, aws: AwsSession
) -> None:
    s3 = S3Gateway(aws)
    rev = upload(s3, journal_bundle(tmp_path, "v1"), "v1")
    runner = LifecycleRunner(instance, s3=s3, timing=FAST)
    ok = runner.run(DeploymentSpec("d-AAAAAAAA1", "fixture-app", "email", GROUP_ID, revision=rev))
    assert ok.status == "Succeeded"
    assert (instance.root / "deployment-root" / GROUP_ID / "d-AAAAAAAA1" / "bundle.tar").is_file()
    stale = Revision(rev.bucket, rev.key, "0" * 32, "v1", rev.sha256)
    bad = runner.run(DeploymentSpec("d-BBBBBBBB2", "fixture-app", "email", GROUP_ID, revision=stale))
    assert bad.failed_event == "DownloadBundle"
    assert bad.message.startswith(f"Expected deployment artifact bundle etag {'0' * 32} but was actually")


def test_restart_reruns_stop_start_validate_of_the_installed_revision(tmp_path: Path, instance: Instance) -> None:
    deploy(instance, journal_bundle(tmp_path, "v1"), "d-AAAAAAAA1", "v1")
    spec = DeploymentSpec("d-CCCCCCCC3", "fixture-app", "email", GROUP_ID, revision=revision("v1"), mode="restart")
    result = LifecycleRunner(instance, timing=FAST).run(spec)
    assert result.status == "Succeeded"
    assert [e.event for e in result.events] == ["ApplicationStop", "ApplicationStart", "ValidateService"]
    assert [line for line in journal(instance) if line.endswith("d-CCCCCCCC3")] == [
        "ApplicationStop v1 d-CCCCCCCC3",
        "ApplicationStart v1 d-CCCCCCCC3",
        "ValidateService v1 d-CCCCCCCC3",
    ]
    assert not (instance.root / "deployment-root" / GROUP_ID / "d-CCCCCCCC3" / "bundle.tar").exists()


def test_old_archives_are_pruned_to_five_keeping_the_installed_one(tmp_path: Path, instance: Instance) -> None:
    bundle = journal_bundle(tmp_path, "v1")
    for n in range(7):
        assert deploy(instance, bundle, f"d-AAAAAAAA{n}", "v1").status == "Succeeded"
    kept = sorted(p.name for p in (instance.root / "deployment-root" / GROUP_ID).iterdir())
    assert len(kept) == 5 and "d-AAAAAAAA6" in kept


# --- ApplicationStop of the previous revision: failing, missing, gone, ignored ----------------------------------


def stop_bundle(tmp_path: Path, tag: str, stop: str | None) -> Path:
    """A journal bundle whose ApplicationStop script is `stop` (None: listed in the appspec, absent)."""
    bundle = journal_bundle(tmp_path, tag, extra={"hooks/ApplicationStop.sh": sh(stop or "true")})
    if stop is None:
        with tarfile.open(bundle) as tar:
            files = {
                m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers()
                if m.isfile() and m.name != "hooks/ApplicationStop.sh"
            }
        bundle = write_bundle(bundle, files)
    return bundle


@pytest.mark.parametrize(
    ("stop", "message"),
    [
        ("echo draining; exit 7", "Script at specified location: hooks/ApplicationStop.sh failed with exit code 7"),
        (None, "Script does not exist at specified location: hooks/ApplicationStop.sh"),
    ],
    ids=["failing", "listed-but-missing"],
)
def test_the_previous_revisions_failing_or_missing_stop_script_fails_the_next_deployment_at_application_stop(
    tmp_path: Path, instance: Instance, stop: str | None, message: str
) -> None:
    first = deploy(instance, stop_bundle(tmp_path, "v1", stop), "d-AAAAAAAA1", "v1")
    assert first.status == "Succeeded" and first.events[0].status == "Skipped"  # a first install has no stop
    result = deploy(instance, journal_bundle(tmp_path, "v2"), "d-BBBBBBBB2", "v2")
    assert (result.status, result.failed_event, result.message) == ("Failed", "ApplicationStop", message)
    assert [e.event for e in result.events] == ["ApplicationStop"]  # nothing after it ran
    assert (instance.root / "opt/fixture/app/version.txt").read_text() == "v1"


def test_a_recorded_revision_whose_archive_is_gone_fails_application_stop_as_on_the_agent(
    tmp_path: Path, instance: Instance
) -> None:
    """The agent's last-successful-install record names the revision; it reads that archive's appspec, so an
    archive deleted from disk fails ApplicationStop (it is no first install: it is not skipped)."""
    deploy(instance, journal_bundle(tmp_path, "v1"), "d-AAAAAAAA1", "v1")
    shutil.rmtree(instance.root / "deployment-root" / GROUP_ID / "d-AAAAAAAA1")
    result = deploy(instance, journal_bundle(tmp_path, "v2"), "d-BBBBBBBB2", "v2")
    assert (result.status, result.failed_event) == ("Failed", "ApplicationStop")
    assert result.message.startswith("The CodeDeploy agent did not find an AppSpec file within the unpacked revision")
    assert f"deployment-root/{GROUP_ID}/d-AAAAAAAA1/deployment-archive/appspec.yml" in result.message


def test_ignoring_stop_failures_goes_on_past_application_stop_with_a_warning(
    tmp_path: Path, instance: Instance
) -> None:
    deploy(instance, stop_bundle(tmp_path, "v1", "exit 7"), "d-AAAAAAAA1", "v1")
    result = deploy(
        instance, journal_bundle(tmp_path, "v2"), "d-BBBBBBBB2", "v2", ignore_application_stop_failures=True
    )
    assert result.status == "Succeeded" and result.failed_event is None
    assert (result.events[0].event, result.events[0].status) == ("ApplicationStop", "Failed")
    assert result.warnings == (
        f"{instance.instance_id}: ApplicationStop failed and was ignored (ignoreApplicationStopFailures): "
        "Script at specified location: hooks/ApplicationStop.sh failed with exit code 7; the previous revision's "
        "worker may still run",
    )
    assert (instance.root / "opt/fixture/app/version.txt").read_text() == "v2"
    clean = deploy(instance, journal_bundle(tmp_path, "v3"), "d-CCCCCCCC3", "v3", ignore_application_stop_failures=True)
    assert clean.status == "Succeeded" and clean.warnings == ()  # v2's stop script works: nothing to warn of
