"""The one fleet builder of the tests: a validated Fleet from a few arguments, through deploytool's own
parse_fleet (the checks `fab` runs on a deploy.toml), with defaults for what a test does not care about.

    make_fleet(["email", {"name": "video", "strategy": "OneAtATime", "wave": 1}])

A group is a name or a [[groups]] table; each gets `asg = "asg-<name>"` (or the `asg` pattern's) and
`queues = ["<name>"]` unless it says otherwise. `app`, `artifacts` are merged over the acme-workers app
and its bucket; `targets` replaces the default target, production on CodeDeploy (not a local one: a local
target sizes the groups, and the fleet file then refuses a minimum of healthy hosts not below that size).
`root` is the directory the fleet file is said to be in: relative paths (the app source, a sandbox root)
resolve there. Nothing is written; `write_app` lays out a small app source tree where a test builds
bundles from one.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deploytool.config import CodeDeployTarget, Fleet, load_fleet, parse_fleet
from deploytool.iam import Scope, scope_for
from deploytool.render import Templates

ROOT = Path(__file__).resolve().parent.parent
ROLE = "arn:aws:iam::123456789012:role/CodeDeployServiceRole"
BUCKET = "acme-deploy-artifacts"
APP: Mapping[str, Any] = {"name": "acme-workers", "celery_app": "acme_workers.celery_app:app"}
PRODUCTION: Mapping[str, Any] = {"backend": "codedeploy", "application": "acme-workers", "service_role_arn": ROLE}
NOWHERE = Path("/nonexistent")

# The appspec as shipped, with tiny fixture hooks instead of the real ones (bundle and publish tests).
FIXTURE_SCRIPTS = Path(__file__).resolve().parent / "fixtures" / "scripts"
TEMPLATES = Templates(ROOT / "appspec" / "appspec.yml.j2", FIXTURE_SCRIPTS)


def make_fleet(
    groups: Sequence[str | Mapping[str, Any]] = ("email",),
    *,
    root: Path = NOWHERE,
    app: Mapping[str, Any] | None = None,
    artifacts: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    targets: Mapping[str, Mapping[str, Any]] | None = None,
    asg: str = "asg-{}",
) -> Fleet:
    tables = [{"name": g} if isinstance(g, str) else dict(g) for g in groups]
    data: dict[str, Any] = {
        "app": {**APP, **(app or {})},
        "artifacts": {"bucket": BUCKET, **(artifacts or {})},
        "groups": [{"asg": asg.format(t["name"]), "queues": [t["name"]], **t} for t in tables],
        "targets": dict(targets) if targets is not None else {"production": PRODUCTION},
    }
    if defaults is not None:
        data["defaults"] = dict(defaults)
    return parse_fleet(data, root / "deploy.toml")


def sandbox_target(instances: Mapping[str, int], root: str = "sb") -> dict[str, Mapping[str, Any]]:
    """`targets` for a fleet with only the local target: these instances per group, under root/."""
    return {"sandbox": {"backend": "local", "instances": dict(instances), "root": root}}


# The two-group fleet the bundle and publish tests build from source: `acme` from src/, every worker setting.
ACME_APP: Mapping[str, Any] = {"name": "acme", "source": "src", "celery_app": "acme.app:app"}
ACME_DEFAULTS: Mapping[str, Any] = {"task_time_limit": 300, "visibility_timeout": 1800}
ACME_GROUPS: Sequence[Mapping[str, Any]] = (
    {"name": "email", "wave": 0},
    {
        "name": "video",
        "queues": ["video", "video-hd"],
        "drain_timeout": 900,
        "task_time_limit": 900,
        "visibility_timeout": 1200,
        "strategy": {"min_healthy_percent": 50},
    },
)

APP_FILES = {
    "acme/__init__.py": "",
    "acme/app.py": "from celery import Celery\n\napp = Celery('acme')\n",
    "acme/tasks.py": "def send(to):\n    return to\n" * 50,
    "README.md": "# acme\n",
    "bin/run.sh": "#!/bin/sh\necho run\n",
}


def acme_fleet(
    root: Path, *, app: Mapping[str, Any] | None = None, artifacts: Mapping[str, Any] | None = None
) -> Fleet:
    """The acme fleet as if at root/deploy.toml (its app source root/src: see write_app)."""
    return make_fleet(
        ACME_GROUPS,
        root=root,
        app={**ACME_APP, **(app or {})},
        artifacts={"bucket": "acme-artifacts", "prefix": "builds/dt", **(artifacts or {})},
        defaults=ACME_DEFAULTS,
        targets={"sandbox": {"backend": "local"}},
    )


def write_app(source: Path) -> None:
    """A small app source tree (APP_FILES) at `source`."""
    for name, text in APP_FILES.items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (source / "bin" / "run.sh").chmod(0o755)


def sample_fleet(root: Path, edit: str = "") -> Fleet:
    """The repository's own deploy.toml and sample_app copied to `root` (`edit`: lines added after its prefix)."""
    text = (ROOT / "deploy.toml").read_text()
    if edit:
        text = text.replace('prefix = "deploytool"', f'prefix = "deploytool"\n{edit}')
    root.mkdir(parents=True, exist_ok=True)
    (root / "deploy.toml").write_text(text)
    shutil.copytree(ROOT / "sample_app", root / "sample_app", ignore=shutil.ignore_patterns("__pycache__"))
    return load_fleet(root / "deploy.toml")


def production_scope(fleet: Fleet, *, workgroup: str, **kwargs: Any) -> Scope:
    """What `fab iam-policy` / `fab infra` scope the fleet's production target to (deploytool.iam.scope_for)."""
    target = fleet.targets["production"]
    assert isinstance(target, CodeDeployTarget)
    args: dict[str, Any] = {
        "database": "deploytool",
        "workgroup": workgroup,
        "output_location": f"s3://{fleet.artifacts.bucket}/deploytool/athena-results/",
        **kwargs,
    }
    return scope_for(fleet, target, **args)
