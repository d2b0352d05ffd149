"""The lifecycle of one deployment on one sandbox instance, compatible with the CodeDeploy agent.

Contract: `LifecycleRunner.run(spec)` runs the events in the agent's order and returns an
InstanceResult (never raises for a failing deployment; the first failing event ends it):

- ApplicationStop: the scripts of the revision the group last installed on this instance (the
  agent's `<group-id>_last_successful_install` record), from that revision's archive; skipped on
  the first deployment to the instance (no record). As on the agent, a failing or missing stop script, and a
  recorded revision whose archive is gone (the agent cannot read its appspec), fail the instance here unless
  the deployment ignores ApplicationStop failures (ignoreApplicationStopFailures): then the next events run
  and the InstanceResult carries a warning saying so.
- DownloadBundle: GET of the S3 revision through deploytool.aws.s3 (ETag checked), unpacked into
  `deployment-root/<group-id>/<deployment-id>/deployment-archive`; the group keeps its last 5
  archives, never removing the last installed one.
- BeforeInstall, AfterInstall, ApplicationStart, ValidateService: the new revision's scripts.
- Install: see install.py; the last-successful-install record then points at this deployment.

mode "restart" (CodeDeploy's deploymentMode RESTART) runs ApplicationStop, ApplicationStart and
ValidateService from the last installed revision, without download. Each script gets its own
timeout, and all scripts of one event share the agent's 3600 s (`Timing.event_limit_s`). Logs:
`logs/<deployment-id>/<event>.log` and `summary.json` per deployment, `logs/deployments.log` across
deployments. The hook environment is the agent's (plus the sandbox extras: `LifecycleRunner.hook_env`)
over a minimal base (PATH, locale, HOME), as a daemonised agent has.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import tarfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from deploytool.aws.s3 import S3Gateway
from deploytool.errors import DeployToolError
from deploytool.model import Revision
from deploytool.rollout.backend import LIFECYCLE_EVENTS
from deploytool.sandbox.appspec import AppSpec, FileExistsBehavior, load_appspec
from deploytool.sandbox.clock import SYSTEM_CLOCK, Clock
from deploytool.sandbox.errors import SandboxError
from deploytool.sandbox.install import install
from deploytool.sandbox.instance import Instance
from deploytool.sandbox.procs import PidRecord
from deploytool.sandbox.scripts import EventLog, run_script

RESTART_EVENTS: tuple[str, ...] = ("ApplicationStop", "ApplicationStart", "ValidateService")
ARCHIVES_TO_RETAIN = 5
BASE_ENV = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "HOME", "USER", "LOGNAME")

EventStatus = Literal["Succeeded", "Failed", "Skipped"]


@dataclass(frozen=True)
class Timing:
    event_limit_s: float = 3600.0  # all scripts of one lifecycle event together (the agent's limit)
    kill_grace_s: float = 10.0  # after SIGTERM of a timed-out script's group, before SIGKILL


DEFAULT_TIMING = Timing()


@dataclass(frozen=True)
class DeploymentSpec:
    deployment_id: str
    application_name: str
    group_name: str
    group_id: str
    revision: Revision | None = None
    bundle_file: Path | None = None  # a local bundle instead of the S3 revision (fab hooks)
    mode: Literal["deploy", "restart"] = "deploy"
    file_exists_behavior: FileExistsBehavior = "DISALLOW"
    ignore_application_stop_failures: bool = False


@dataclass(frozen=True)
class EventResult:
    event: str
    status: EventStatus
    duration_s: float = 0.0
    message: str = ""


@dataclass(frozen=True)
class InstanceResult:
    instance_id: str
    deployment_id: str
    status: Literal["Succeeded", "Failed"]
    events: tuple[EventResult, ...] = ()
    failed_event: str | None = None
    message: str = ""
    log_tail: str = ""
    warnings: tuple[str, ...] = ()  # e.g. an ApplicationStop failure the deployment ignored

    @property
    def diagnostics(self) -> str:
        tail = self.log_tail.strip()
        return f"{self.message}\n{tail}" if tail else self.message


@dataclass
class _Context:
    spec: DeploymentSpec
    root: Path  # deployment-root/<group-id>/<deployment-id>
    appspecs: dict[Path, AppSpec] = field(default_factory=dict)

    @property
    def archive(self) -> Path:
        return self.root / "deployment-archive"


class LifecycleRunner:
    def __init__(
        self,
        instance: Instance,
        *,
        s3: S3Gateway | None = None,
        python: str = sys.executable,
        timing: Timing = DEFAULT_TIMING,
        clock: Clock = SYSTEM_CLOCK,
        record: PidRecord | None = None,
        abort: threading.Event | None = None,
    ) -> None:
        self.instance = instance
        self.s3 = s3
        self.python = python
        self.timing = timing
        self.clock = clock
        self.record = record
        self.abort = abort

    # --- the agent's records on this instance ---------------------------------------------------

    def _last_install_record(self, group_id: str) -> Path:
        return self.instance.instructions_dir / f"{group_id}_last_successful_install"

    def recorded_install(self, group_id: str) -> Path | None:
        """The deployment root the agent's last-successful-install record names, whether or not it still exists."""
        try:
            shown = self._last_install_record(group_id).read_text().strip()
        except OSError:
            return None
        return self.instance.path(shown) if shown else None

    def last_installed(self, group_id: str) -> Path | None:
        """The deployment root of the revision this group last installed here, if any (and still on disk)."""
        root = self.recorded_install(group_id)
        return root if root is not None and (root / "deployment-archive").is_dir() else None

    def last_installed_revision(self, group_id: str) -> dict[str, str] | None:
        root = self.last_installed(group_id)
        try:
            return dict(json.loads((root / "revision.json").read_text())) if root else None
        except (OSError, ValueError):
            return None

    # --- running ---------------------------------------------------------------------------------

    def run(
        self,
        spec: DeploymentSpec,
        *,
        events: Sequence[str] | None = None,
        on_event: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> InstanceResult:
        """Run the deployment's events here. `stop` (StopDeployment) is honoured between events;
        the runner's `abort` (the sandbox shutting down) also ends a running script."""
        chosen = tuple(events or (RESTART_EVENTS if spec.mode == "restart" else LIFECYCLE_EVENTS))
        ctx = _Context(spec, self.instance.deployment_root / spec.group_id / spec.deployment_id)
        logs = self.instance.logs_dir(spec.deployment_id)
        results: list[EventResult] = []
        failed: EventResult | None = None
        tail = ""
        warnings: list[str] = []
        for event in chosen:
            if on_event is not None:
                on_event(event)
            log = EventLog(logs / f"{event}.log")
            log.write(f"LifecycleEvent - {event} ({spec.deployment_id} on {self.instance.instance_id})")
            started = self.clock.now()
            try:
                if self.abort is not None and self.abort.is_set():
                    raise SandboxError("stopped: the sandbox is shutting down")
                if stop is not None and stop.is_set():
                    raise SandboxError("stopped: the deployment was stopped")
                status, message = self._event(event, ctx, log)
            except (DeployToolError, OSError, tarfile.TarError) as exc:
                status, message = "Failed", str(exc)
                log.write(f"[deploytool] {message}")
            finally:
                log.close()
            result = EventResult(event, status, round(self.clock.now() - started, 3), message)
            results.append(result)
            if status == "Failed":
                if event == "ApplicationStop" and spec.ignore_application_stop_failures:
                    warnings.append(
                        f"{self.instance.instance_id}: ApplicationStop failed and was ignored "
                        f"(ignoreApplicationStopFailures): {message}; the previous revision's worker may still run"
                    )
                    continue
                failed, tail = result, log.tail()
                break
        outcome = InstanceResult(
            self.instance.instance_id,
            spec.deployment_id,
            "Failed" if failed else "Succeeded",
            tuple(results),
            failed.event if failed else None,
            failed.message if failed else "",
            tail,
            tuple(warnings),
        )
        self._write_summary(spec, outcome, logs)
        return outcome

    def _event(self, event: str, ctx: _Context, log: EventLog) -> tuple[EventStatus, str]:
        if event == "ApplicationStop":
            previous = self.last_installed(ctx.spec.group_id)
            if ctx.spec.mode == "deploy" and ctx.archive.is_dir():
                previous = ctx.root
            if previous is None:
                recorded = self.recorded_install(ctx.spec.group_id)
                if recorded is not None:  # the agent reads the recorded revision's appspec, which is gone
                    where = self.instance.shown(recorded / "deployment-archive")
                    raise SandboxError(
                        "The CodeDeploy agent did not find an AppSpec file within the unpacked revision directory "
                        f'at revision-relative path "appspec.yml". The revision was unpacked to directory "{where}", '
                        f'and the AppSpec file was expected but not found at path "{where}/appspec.yml"'
                    )
                log.write("[deploytool] no revision installed on this instance yet: ApplicationStop skipped")
                return "Skipped", "first deployment to this instance: no previous revision"
            log.write(f"[deploytool] running the scripts of {self.instance.shown(previous)}")
            return self._scripts(event, ctx, previous / "deployment-archive", log)
        if event == "DownloadBundle":
            return self._download(ctx, log)
        archive = ctx.archive
        if ctx.spec.mode == "restart":
            installed = self.last_installed(ctx.spec.group_id)
            if installed is None:
                raise SandboxError("restart: no revision of this group is installed on this instance")
            archive = installed / "deployment-archive"
        if event == "Install":
            return self._install(ctx, log)
        return self._scripts(event, ctx, archive, log)

    def _appspec(self, ctx: _Context, archive: Path, log: EventLog) -> AppSpec:
        if archive not in ctx.appspecs:
            spec = load_appspec(archive)
            for warning in spec.warnings:
                log.write(f"[deploytool] warning: {warning}")
            ctx.appspecs[archive] = spec
        return ctx.appspecs[archive]

    def _scripts(self, event: str, ctx: _Context, archive: Path, log: EventLog) -> tuple[EventStatus, str]:
        scripts = self._appspec(ctx, archive, log).scripts(event)
        if not scripts:
            log.write("[deploytool] no scripts for this event")
            return "Succeeded", ""
        env = self.hook_env(event, ctx.spec)
        started = self.clock.now()
        for script in scripts:
            left = self.timing.event_limit_s - (self.clock.now() - started)
            if left <= 0:
                limit = self.timing.event_limit_s
                message = f"the scripts of {event} used up the {limit:g} s the agent allows one event"
                log.write(f"[deploytool] {message}")
                return "Failed", message
            outcome = run_script(
                archive / script.location.lstrip("/"),
                location=script.location,
                timeout_s=min(float(script.timeout_s), left),
                env=env,
                cwd=self.instance.root,
                log=log,
                runas=script.runas,
                kill_grace_s=self.timing.kill_grace_s,
                clock=self.clock,
                abort=self.abort,
                on_spawn=functools.partial(self._spawned, event=event, location=script.location),
            )
            if not outcome.ok:
                return "Failed", outcome.message
        return "Succeeded", ""

    def _spawned(self, pid: int, *, event: str, location: str) -> None:
        if self.record is not None:
            self.record.add(pid, "hook", f"{self.instance.instance_id} {event} {location}")

    def hook_env(self, event: str, spec: DeploymentSpec) -> dict[str, str]:
        env = {key: os.environ[key] for key in BASE_ENV if key in os.environ}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env.update(
            LIFECYCLE_EVENT=event,
            DEPLOYMENT_ID=spec.deployment_id,
            APPLICATION_NAME=spec.application_name,
            DEPLOYMENT_GROUP_NAME=spec.group_name,
            DEPLOYMENT_GROUP_ID=spec.group_id,
        )
        if spec.revision is not None:
            env.update(
                BUNDLE_BUCKET=spec.revision.bucket,
                BUNDLE_KEY=spec.revision.key,
                BUNDLE_ETAG=spec.revision.etag.strip('"'),
            )
            if spec.revision.object_version:  # the agent leaves it unset for unversioned objects
                env["BUNDLE_VERSION"] = spec.revision.object_version
        env.update(
            DEPLOYTOOL_INSTANCE_ROOT=str(self.instance.root),
            DEPLOYTOOL_PYTHON=self.python,
            DEPLOYTOOL_PROCESS_MANAGER="direct",
            DEPLOYTOOL_INSTANCE_ID=self.instance.instance_id,
        )
        return env

    # --- the agent's own events --------------------------------------------------------------------

    def _download(self, ctx: _Context, log: EventLog) -> tuple[EventStatus, str]:
        spec = ctx.spec
        self._cleanup_old_archives(spec.group_id, keep_also=ctx.root)
        ctx.root.mkdir(parents=True, exist_ok=True)
        bundle = ctx.root / "bundle.tar"
        if spec.bundle_file is not None:
            log.write(f"[deploytool] using the local bundle {spec.bundle_file}")
            shutil.copyfile(spec.bundle_file, bundle)
        else:
            self._get_s3(spec, bundle, log)
        shutil.rmtree(ctx.archive, ignore_errors=True)
        with tarfile.open(bundle, "r:*") as tar:
            tar.extractall(ctx.archive, filter="data")
        if spec.revision is not None:
            (ctx.root / "revision.json").write_text(json.dumps(asdict(spec.revision), indent=1, sort_keys=True))
        log.write(f"[deploytool] unpacked into {self.instance.shown(ctx.archive)}")
        return "Succeeded", ""

    def _get_s3(self, spec: DeploymentSpec, bundle: Path, log: EventLog) -> None:
        revision = spec.revision
        if revision is None or self.s3 is None:
            raise SandboxError("DownloadBundle: the deployment has no S3 revision")
        if revision.bundle_type not in ("tgz", "tar"):
            raise SandboxError(f"DownloadBundle: bundle type {revision.bundle_type!r}; the sandbox unpacks tgz and tar")
        log.write(f"[deploytool] downloading {revision.uri} (etag {revision.etag})")
        info = self.s3.head(revision.bucket, revision.key)
        if info is None:
            raise SandboxError(f"DownloadBundle: {revision.uri} does not exist")
        if info.etag.strip('"') != revision.etag.strip('"'):
            raise SandboxError(f"Expected deployment artifact bundle etag {revision.etag} but was actually {info.etag}")
        body = self.s3.get_bytes(revision.bucket, revision.key)
        if body is None:
            raise SandboxError(f"DownloadBundle: {revision.uri} disappeared during the download")
        bundle.write_bytes(body)
        log.write(f"[deploytool] downloaded {len(body)} bytes")

    def _cleanup_old_archives(self, group_id: str, *, keep_also: Path) -> None:
        group_dir = self.instance.deployment_root / group_id
        if not group_dir.is_dir():
            return
        archives = [p for p in group_dir.iterdir() if p.is_dir() and p != keep_also]
        extra = len(archives) + 1 - ARCHIVES_TO_RETAIN
        if extra <= 0:
            return
        last = self.last_installed(group_id)
        candidates = sorted((p for p in archives if p != last), key=lambda p: p.stat().st_mtime)
        for old in candidates[:extra]:
            shutil.rmtree(old, ignore_errors=True)

    def _install(self, ctx: _Context, log: EventLog) -> tuple[EventStatus, str]:
        spec = self._appspec(ctx, ctx.archive, log)
        behavior = spec.file_exists_behavior or ctx.spec.file_exists_behavior
        log.write(f"[deploytool] fileExistsBehavior {behavior}")
        result = install(ctx.archive, spec, self.instance, group_id=ctx.spec.group_id, behavior=behavior)
        log.write(
            f"[deploytool] removed {result.removed} files of the previous install; copied {result.copied} files, "
            f"made {result.directories} directories, kept {result.retained} existing files"
        )
        record = self._last_install_record(ctx.spec.group_id)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(self.instance.shown(ctx.root) + "\n")
        return "Succeeded", ""

    def _write_summary(self, spec: DeploymentSpec, outcome: InstanceResult, logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        summary = {
            "instance_id": outcome.instance_id,
            "group": spec.group_name,
            "deployment_id": spec.deployment_id,
            "mode": spec.mode,
            "version": spec.revision.version if spec.revision else None,
            "status": outcome.status,
            "failed_event": outcome.failed_event,
            "message": outcome.message,
            "events": [asdict(e) for e in outcome.events],
        }
        (logs / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        line = (
            f"{datetime.now(UTC).isoformat(timespec='seconds')} {spec.deployment_id} {outcome.status} "
            f"{summary['version'] or '-'} {outcome.failed_event or '-'} {outcome.message}".rstrip()
        )
        with (logs.parent / "deployments.log").open("a") as out:
            out.write(line + "\n")
