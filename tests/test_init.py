"""`deploytool init` as a user runs it in their repository: the three files, queues read from the Celery app,
a default when the app cannot be imported, and nothing overwritten. The command runs in this process (the
Program behind the console script); the app is imported in a child Python, as always."""

from __future__ import annotations

import io
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from deploytool.config import load_fleet
from deploytool.main import program
from deploytool.scaffold import DEPLOYIGNORE, FABFILE

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = "acme_workers.celery_app:app"


def init(repo: Path, *args: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.chdir(repo)
    out, err = io.StringIO(), io.StringIO()
    code: int = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            program.run(["deploytool", "init", *args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "sample_app", tmp_path / "sample_app", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_groups_come_from_the_apps_task_routes(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = init(repo, "--celery-app", SAMPLE, "--bucket", "my-bucket", monkeypatch=monkeypatch)
    assert (code, err) == (0, "")
    assert "groups: video, email, reports (queues from acme_workers.celery_app:app's task routes)" in out
    fleet = load_fleet(repo / "deploy.toml")  # what `fab check` loads: the written file is valid as it is
    assert [(g.name, g.asg, list(g.queues)) for g in fleet.groups] == [
        ("video", "acme-workers-video", ["video"]),
        ("email", "acme-workers-email", ["email"]),
        ("reports", "acme-workers-reports", ["reports"]),
    ]
    assert (fleet.app.name, fleet.app.celery_app, fleet.artifacts.bucket) == ("acme-workers", SAMPLE, "my-bucket")
    assert fleet.source_dir == repo / "sample_app"
    assert (repo / "fabfile.py").read_text() == FABFILE == (ROOT / "fabfile.py").read_text()
    assert (repo / "sample_app" / ".deployignore").read_text() == DEPLOYIGNORE


def test_an_app_that_cannot_be_imported_gets_one_group_on_the_default_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('no broker settings')\nfrom celery import Celery\n")
    code, out, err = init(tmp_path, "--celery-app", "broken:app", "--name", "billing", monkeypatch=monkeypatch)
    assert (code, err) == (0, "")
    assert (
        "groups: celery (could not import broken:app: RuntimeError: no broker settings; one group on Celery's "
        "default queue 'celery')"
    ) in out
    fleet = load_fleet(tmp_path / "deploy.toml")
    assert [(g.name, g.asg, list(g.queues)) for g in fleet.groups] == [("celery", "billing-celery", ["celery"])]
    assert fleet.source_dir == tmp_path and (tmp_path / ".deployignore").is_file()


@pytest.mark.parametrize("existing", ["deploy.toml", "fabfile.py", "sample_app/.deployignore"])
def test_an_existing_file_is_never_overwritten_and_nothing_is_written(
    repo: Path, existing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (repo / existing).write_text("mine\n")
    code, out, err = init(repo, "--celery-app", SAMPLE, monkeypatch=monkeypatch)
    assert code == 2 and out == ""
    assert err == (
        f"error: {existing} already exists in {repo}: init writes only new files, and wrote none "
        "(move them away, or edit them)\n"
    )
    assert (repo / existing).read_text() == "mine\n"
    written = {"deploy.toml", "fabfile.py", "sample_app/.deployignore"} - {existing}
    assert not [name for name in written if (repo / name).exists()]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        ([], "error: init needs --celery-app package.module:app (your Celery app)"),
        (
            ["--celery-app", "acme_workers.celery_app"],
            "error: --celery-app 'acme_workers.celery_app' is not allowed; allowed: package.module:app (Python names)",
        ),
        (
            ["--celery-app", SAMPLE, "--name", "Acme"],
            "error: --name 'Acme' is not allowed; allowed: lowercase letters, digits, '-' (at most 63)",
        ),
        (
            ["--celery-app", SAMPLE, "--source", "../elsewhere"],
            "error: --source '../elsewhere' is not allowed; allowed: a directory inside {repo}",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    repo: Path, args: list[str], line: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = init(repo, *args, monkeypatch=monkeypatch)
    assert (code, err) == (2, line.format(repo=repo) + "\n")
    assert sorted(p.name for p in repo.iterdir()) == ["sample_app"]
    assert not (repo / "sample_app" / ".deployignore").exists()
