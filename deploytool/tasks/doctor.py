"""`fab doctor`: the read-only preflight of a codedeploy target (deploytool.doctor)."""

from __future__ import annotations

from invoke.context import Context

from deploytool import options, targets
from deploytool.cli import cli_task, fleet_from, make_console

# A preflight answers in seconds: a few retries, not the rollout's twelve adaptive ones (a call that keeps
# failing is reported on its line).
PREFLIGHT_RETRY = {"mode": "standard", "max_attempts": 3}


@cli_task(
    help={
        "fleet": "fleet file (default deploy.toml)",
        "target": "codedeploy target from the fleet file (default: its default target)",
        "json": "print the checks as one JSON document",
        "read_only": "do not write the probe object under the prefix (bucket-write is then not checked)",
        "database": "Athena (Glue) database to look for (default $DEPLOYTOOL_ATHENA_DATABASE, else deploytool)",
        "debug": "show tracebacks",
    }
)
def doctor(
    c: Context,
    fleet: str | None = None,
    target: str | None = None,
    json: bool = False,
    read_only: bool = False,
    database: str | None = None,
    debug: bool = False,
) -> None:
    """Preflight: credentials, botocore, bucket, KMS key, CodeDeploy groups, ASGs, queues, Athena (exit 1 on a fail)."""
    from deploytool.config import CodeDeployTarget
    from deploytool.doctor.command import run_doctor

    database = options.athena_database(database)
    loaded = fleet_from(fleet)
    name = options.codedeploy_target(loaded, target, "doctor")
    chosen = targets.target(loaded, name).config
    assert isinstance(chosen, CodeDeployTarget)  # options.codedeploy_target refused any other
    settings = targets.settings_for(loaded, name, engine="athena", database=database)
    run_doctor(
        loaded,
        name,
        chosen,
        targets.codedeploy_session(loaded, retries=PREFLIGHT_RETRY),
        make_console(ci=json),
        athena_database=settings.database,
        as_json=json,
        read_only=read_only,
    )
