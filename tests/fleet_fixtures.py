"""A small fleet and app tree for bundle/publish tests, and the fixture hook templates."""

from __future__ import annotations

from pathlib import Path

from deploytool.config import Fleet, load_fleet
from deploytool.render import Templates

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_SCRIPTS = Path(__file__).resolve().parent / "fixtures" / "scripts"
TEMPLATES = Templates(ROOT / "appspec" / "appspec.yml.j2", FIXTURE_SCRIPTS)

FLEET = """\
[app]
name = "acme"
source = "src"
celery_app = "acme.app:app"

[artifacts]
bucket = "acme-artifacts"
prefix = "builds/dt"
{artifacts}
[defaults]
task_time_limit = 300
visibility_timeout = 1800

[[groups]]
name = "email"
asg = "asg-email"
queues = ["email"]
wave = 0

[[groups]]
name = "video"
asg = "asg-video"
queues = ["video", "video-hd"]
drain_timeout = 900
task_time_limit = 900
visibility_timeout = 1200
strategy = {{ min_healthy_percent = 50 }}

[targets.sandbox]
backend = "local"
"""

APP_FILES = {
    "acme/__init__.py": "",
    "acme/app.py": "from celery import Celery\n\napp = Celery('acme')\n",
    "acme/tasks.py": "def send(to):\n    return to\n" * 50,
    "README.md": "# acme\n",
    "bin/run.sh": "#!/bin/sh\necho run\n",
}


def write_app(source: Path) -> None:
    for name, text in APP_FILES.items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (source / "bin" / "run.sh").chmod(0o755)


def make_fleet(root: Path, *, artifacts: str = "") -> Fleet:
    """A fleet file at root/deploy.toml whose app source is root/src (written too)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "deploy.toml").write_text(FLEET.format(artifacts=artifacts))
    write_app(root / "src")
    return load_fleet(root / "deploy.toml")
