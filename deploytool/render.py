"""Bundle stage, part 1: render appspec.yml and the hook scripts from their jinja2 templates.

Contract (the bundle's layout: deploytool.bundle): `render_templates(fleet, version, commit, templates)`
returns, in memory, every file of the bundle that comes from a template directory:
- `appspec.yml` from templates.appspec;
- for each file under templates.scripts: `NAME.j2` rendered to `deploytool/hooks/NAME`, any other
  file copied as it is; executable (0755) exactly when it starts with `#!` (not from its file mode, which a
  wheel install drops from .py files: an installed deploytool builds the same bytes as a checkout);
  `systemd/worker.service.j2` is rendered once per group to `deploytool/hooks/systemd/<group>.service`
  with `group` in the context, `systemd/watcher.service.j2` (the interruption watcher) to
  `deploytool/hooks/systemd/<group>-watch.service`, and `systemd/worker@.service.j2` (one unit per release
  copy) to `deploytool/hooks/systemd/<group>@.service` for each group with restart = "handoff".
Rendering is strict (StrictUndefined): an undefined name, a syntax error or a failing filter is a
BundleError naming the template file and line. `check_appspec` then validates the rendered appspec
against the finished bundle (YAML, version 0.0, os linux, every hook location present).
"""

from __future__ import annotations

import os
import posixpath
import traceback
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from deploytool.config import Fleet
from deploytool.errors import BundleError
from deploytool.ignore import DEFAULT_EXCLUDES, IgnoreRules
from deploytool.resources import resource_root

TOOL_ROOT = resource_root()
HOOKS_DIR = "deploytool/hooks"
APPSPEC = "appspec.yml"
GROUP_TEMPLATE = "systemd/worker.service.j2"
WATCHER_TEMPLATE = "systemd/watcher.service.j2"  # per group too, as <group>-watch.service
RELEASE_TEMPLATE = "systemd/worker@.service.j2"  # per group with restart = "handoff", as <group>@.service
START_TIMEOUT = 300
VALIDATE_TIMEOUT = 300
EVENT_LIMIT = 3600  # CodeDeploy: all scripts of one lifecycle event together
# In-place EC2 deployments: the events that may have scripts (DownloadBundle and Install may not).
HOOK_EVENTS = (
    "ApplicationStop",
    "BeforeInstall",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
    "BeforeBlockTraffic",
    "AfterBlockTraffic",
    "BeforeAllowTraffic",
    "AfterAllowTraffic",
)
_SKIP = IgnoreRules((*DEFAULT_EXCLUDES, ".gitkeep"))


@dataclass(frozen=True)
class Templates:
    """Where the templates live (parameters, so tests can render fixture trees)."""

    appspec: Path
    scripts: Path

    @classmethod
    def default(cls) -> Templates:
        """deploytool's own appspec/ and scripts/, beside the deploytool package."""
        return cls(TOOL_ROOT / "appspec" / "appspec.yml.j2", TOOL_ROOT / "scripts")


@dataclass(frozen=True)
class RenderedFile:
    arcname: str
    data: bytes
    executable: bool = False


def template_context(fleet: Fleet, version: str, commit: str | None) -> dict[str, Any]:
    """What every template sees (the names the templates under appspec/ and scripts/ use)."""
    app = fleet.app
    return {
        "app": {
            "name": app.name,
            "celery_app": app.celery_app,
            "install_dir": app.install_path,
            "python": app.python_path,
            "env_file": app.env_path,
            "user": app.user,
        },
        "version": version,
        "commit": commit or "",
        "groups": [g.worker_settings() for g in fleet.groups],
        "stop_timeout": min(EVENT_LIMIT, max(g.drain_timeout for g in fleet.groups) + 60),
        "start_timeout": START_TIMEOUT,
        "validate_timeout": VALIDATE_TIMEOUT,
        # appspec permissions: install_dir itself is matched as a child of its parent (the agent applies a
        # permission to what it creates strictly below `object`, a pattern other than ** to direct children)
        "install_parent": posixpath.dirname(app.install_path.rstrip("/")) or "/",
        "install_name": posixpath.basename(app.install_path.rstrip("/")),
    }


def hook_timeouts(context: Mapping[str, Any]) -> dict[str, int]:
    """Each hook's appspec timeout, as fleet.json gives it to the instance (its budgets derive from them)."""
    return {
        "ApplicationStop": context["stop_timeout"],
        "ApplicationStart": context["start_timeout"],
        "ValidateService": context["validate_timeout"],
    }


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _template_error(exc: Exception, path: Path) -> BundleError:
    """One line: file:line: what went wrong. jinja2 rewrites tracebacks to point into templates."""
    line: int | None = None
    where = path
    if isinstance(exc, jinja2.TemplateSyntaxError):
        line = exc.lineno
        where = Path(exc.filename) if exc.filename else path
        message = exc.message or str(exc)
    else:
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if frame.filename.endswith(".j2"):
                line, where = frame.lineno, Path(frame.filename)
                break
        message = str(exc)
    first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    at = f"{_shown(where)}:{line}" if line else _shown(where)
    return BundleError(f"{at}: template error: {first}")


def _environment(directory: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _render(env: jinja2.Environment, name: str, path: Path, context: Mapping[str, Any]) -> bytes:
    try:
        return env.get_template(name).render(context).encode("utf-8")
    except jinja2.TemplateNotFound as exc:
        raise BundleError(f"{_shown(path)}: template not found") from exc
    except Exception as exc:  # any error inside a template is the template's
        raise _template_error(exc, path) from exc


def _script_files(scripts: Path) -> list[tuple[str, Path, bool]]:
    """(relative name, path, executable) of every file under scripts/, sorted; symlinks refused."""
    found: list[tuple[str, Path, bool]] = []
    for directory, dirs, files in os.walk(scripts):
        rel_dir = Path(directory).relative_to(scripts).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        dirs[:] = sorted(d for d in dirs if not _SKIP.ignored(prefix + d, True))
        for name in sorted(files):
            path = Path(directory) / name
            if _SKIP.ignored(prefix + name, False):
                continue
            if path.is_symlink() or not path.is_file():
                raise BundleError(f"{_shown(path)}: hook scripts must be regular files")
            found.append((prefix + name, path, _starts_with_shebang(path)))
    return found


def _starts_with_shebang(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(2) == b"#!"


def render_templates(fleet: Fleet, version: str, commit: str | None, templates: Templates) -> list[RenderedFile]:
    context = template_context(fleet, version, commit)
    if not templates.appspec.is_file():
        raise BundleError(f"{_shown(templates.appspec)}: appspec template not found")
    appspec_env = _environment(templates.appspec.parent)
    rendered = [RenderedFile(APPSPEC, _render(appspec_env, templates.appspec.name, templates.appspec, context))]
    if not templates.scripts.is_dir():
        raise BundleError(f"{_shown(templates.scripts)}: hook scripts directory not found")
    env = _environment(templates.scripts)
    for name, path, executable in _script_files(templates.scripts):
        if name in (GROUP_TEMPLATE, WATCHER_TEMPLATE, RELEASE_TEMPLATE):
            suffix = {WATCHER_TEMPLATE: "-watch", RELEASE_TEMPLATE: "@"}.get(name, "")
            for group in context["groups"]:
                if name == RELEASE_TEMPLATE and group.get("restart") != "handoff":
                    continue
                data = _render(env, name, path, {**context, "group": group})
                rendered.append(RenderedFile(f"{HOOKS_DIR}/systemd/{group['name']}{suffix}.service", data, executable))
        elif name.endswith(".j2"):
            rendered.append(RenderedFile(f"{HOOKS_DIR}/{name[:-3]}", _render(env, name, path, context), executable))
        else:
            rendered.append(RenderedFile(f"{HOOKS_DIR}/{name}", path.read_bytes(), executable))
    return rendered


def check_appspec(text: bytes, entries: Collection[str], *, origin: str = APPSPEC) -> tuple[str, ...]:
    """Validate a rendered appspec against the bundle's entries; returns its hook locations."""

    def bad(message: str) -> BundleError:
        return BundleError(f"{origin}: {message}")

    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise bad(f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from exc
    if not isinstance(spec, dict):
        raise bad("must be a YAML mapping")
    if spec.get("version") not in (0.0, "0.0"):
        raise bad(f"version must be 0.0, got {spec.get('version')!r}")
    if spec.get("os") != "linux":
        raise bad(f"os must be linux, got {spec.get('os')!r}")
    for index, item in enumerate(spec.get("files") or []):
        if not (
            isinstance(item, dict)
            and isinstance(item.get("source"), str)
            and str(item.get("destination", "")).startswith("/")
        ):
            raise bad(f"files[{index}] needs a source and an absolute destination, got {item!r}")
    hooks = spec.get("hooks") or {}
    if not isinstance(hooks, dict):
        raise bad("hooks must be a mapping of lifecycle events to scripts")
    locations: list[str] = []
    for event, scripts in hooks.items():
        if event not in HOOK_EVENTS:
            raise bad(f"hooks.{event}: not a lifecycle event that runs scripts; allowed: {', '.join(HOOK_EVENTS)}")
        total = 0
        for index, script in enumerate(scripts or []):
            where = f"hooks.{event}[{index}]"
            location = script.get("location") if isinstance(script, dict) else None
            if not isinstance(location, str) or location.startswith("/"):
                raise bad(f"{where}.location must be a path inside the bundle, got {location!r}")
            if location not in entries:
                raise bad(f"{where}.location: {location} is not in the bundle")
            timeout = script.get("timeout", EVENT_LIMIT)
            if not isinstance(timeout, int) or not 1 <= timeout <= EVENT_LIMIT:
                raise bad(f"{where}.timeout must be 1-{EVENT_LIMIT} seconds, got {timeout!r}")
            total += timeout
            locations.append(location)
        if total > EVENT_LIMIT:
            raise bad(f"hooks.{event}: timeouts add up to {total} s; CodeDeploy allows {EVENT_LIMIT} s per event")
    return tuple(locations)
