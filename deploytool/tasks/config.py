"""Tasks on the fleet file: check it (and write a starting one: init)."""

from __future__ import annotations

from invoke.context import Context

from deploytool.cli import cli_task, fleet_from, make_console
from deploytool.report import fleet_table, restart_line


@cli_task(help={"fleet": "fleet file (default deploy.toml)", "debug": "show tracebacks"})
def check(c: Context, fleet: str | None = None, debug: bool = False) -> None:
    """Validate the fleet file and print it as a table."""
    loaded = fleet_from(fleet)
    console = make_console()
    console.print(fleet_table(loaded))
    line = restart_line(loaded)
    if line:
        console.print(line, markup=False, highlight=False)
    for warning in loaded.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    needs = loaded.app.user_requirements()
    if needs:
        console.print(f"note: {needs}", markup=False)
    console.print(f"{loaded.path}: ok ({len(loaded.groups)} groups, targets: {', '.join(loaded.targets)})")


@cli_task(
    help={
        "celery_app": "your Celery app, package.module:app (required)",
        "name": "app name in the fleet file (default: from the app's package)",
        "bucket": "S3 bucket for the bundles (default <name>-deploy-artifacts)",
        "asg_prefix": "prefix of each group's Auto Scaling group name (default <name>-)",
        "source": "directory holding the app's package (default: found from --celery-app)",
        "debug": "show tracebacks",
    }
)
def init(
    c: Context,
    celery_app: str | None = None,
    name: str | None = None,
    bucket: str | None = None,
    asg_prefix: str | None = None,
    source: str | None = None,
    debug: bool = False,
) -> None:
    """Write a starting deploy.toml, fabfile.py and .deployignore here (never overwrites a file)."""
    from pathlib import Path

    from deploytool import options
    from deploytool.errors import UsageError
    from deploytool.scaffold import Answers, init_repository

    app = options.text("--celery-app", celery_app)
    if app is None:
        raise UsageError("init needs --celery-app package.module:app (your Celery app)")
    answers = Answers(
        app,
        name=options.text("--name", name),
        bucket=options.text("--bucket", bucket),
        asg_prefix=options.text("--asg-prefix", asg_prefix),
        source=options.text("--source", source),
    )
    console = make_console()
    done = init_repository(Path.cwd(), answers)
    console.print(f"groups: {', '.join(done.queues)} ({done.note})", markup=False, highlight=False)
    for path in done.written:
        console.print(f"wrote {path}", markup=False, highlight=False)
    console.print(
        "next: edit deploy.toml (bucket, ASG names, role ARN), then `fab check`", markup=False, highlight=False
    )
