"""Tasks that say what a fleet needs in AWS: the IAM policies of its roles (iam-policy), its CloudFormation (infra)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from invoke.context import Context

from deploytool import options, targets
from deploytool.cli import cli_task, fleet_from
from deploytool.config import CodeDeployTarget, Fleet
from deploytool.errors import UsageError

if TYPE_CHECKING:
    from deploytool.iam import Scope

_ACCOUNT = (r"\d{12}", "a 12-digit AWS account id")
_DATABASE = (r"[a-z0-9_]{1,255}", "1-255 lowercase letters, digits and _")
_WORKGROUP = (r"[A-Za-z0-9._-]{1,128}", "1-128 letters, digits, '.', '_', '-'")

AWS_HELP = {
    "fleet": "fleet file (default deploy.toml)",
    "target": "a codedeploy target (default: the fleet's first codedeploy target)",
    "account": "12-digit AWS account id (default: the account of the target's service_role_arn)",
    "database": "Athena database (default deploytool, or DEPLOYTOOL_ATHENA_DATABASE)",
    "no_sqs": "the workers' broker is not SQS: no SQS statements for the instances",
    "debug": "show tracebacks",
}


def codedeploy_target(fleet: Fleet, value: str | None) -> tuple[str, CodeDeployTarget]:
    """The --target given (a codedeploy one), else the fleet's first codedeploy target."""
    if options.text("--target", value) is not None:
        name = options.target(fleet, value)
        config = fleet.targets[name]
        if not isinstance(config, CodeDeployTarget):
            raise UsageError(f"--target {name!r} is a local sandbox: IAM policies are for codedeploy targets")
        return name, config
    for name, config in fleet.targets.items():
        if isinstance(config, CodeDeployTarget):
            return name, config
    raise UsageError(f'{fleet.path}: no codedeploy target: IAM policies and infra are for AWS (backend = "codedeploy")')


def fleet_scope(
    fleet: Fleet,
    target: str | None,
    *,
    account: str | None,
    database: str | None,
    workgroup: str | None,
    sqs: bool,
) -> Scope:
    """The iam.Scope of a codedeploy target, with the Athena names `fab reconcile` would use."""
    from deploytool.iam import scope_for

    name, config = codedeploy_target(fleet, target)
    settings = targets.settings_for(
        fleet,
        name,
        engine="athena",
        database=options.pattern("--database", database, *_DATABASE),
        workgroup=options.pattern("--workgroup", workgroup, *_WORKGROUP),
    )
    return scope_for(
        fleet,
        config,
        database=settings.database,
        workgroup=settings.workgroup,
        output_location=str(settings.output_location),
        account=options.pattern("--account", account, *_ACCOUNT),
        sqs=sqs,
    )


@cli_task(
    help={
        "role": "deployer, instance, codedeploy-service or athena-reader (required)",
        "trust": "print the role's trust (assume-role) policy instead of its permissions",
        **AWS_HELP,
        "workgroup": "Athena workgroup (default primary, or DEPLOYTOOL_ATHENA_WORKGROUP)",
    }
)
def iam_policy(
    c: Context,
    role: str | None = None,
    fleet: str | None = None,
    target: str | None = None,
    trust: bool = False,
    account: str | None = None,
    database: str | None = None,
    workgroup: str | None = None,
    no_sqs: bool = False,
    debug: bool = False,
) -> None:
    """Print a least-privilege IAM policy (JSON) of one role for this fleet; notes go to stderr."""
    from deploytool import iam

    chosen = options.choice("--role", role, iam.ROLES)
    if chosen is None:
        raise UsageError(f"iam-policy needs --role; allowed: {', '.join(iam.ROLES)}")
    loaded = fleet_from(fleet)
    scope = fleet_scope(loaded, target, account=account, database=database, workgroup=workgroup, sqs=not no_sqs)
    document = iam.trust(chosen, scope) if trust else iam.policy(chosen, scope)
    if document is None:
        raise UsageError(f"--role {chosen} has no trust policy: it is a policy to attach to your dashboard's own role")
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    for note in iam.notes(chosen, scope):
        print(f"note: {note}", file=sys.stderr)


INFRA_WORKGROUP = "deploytool"


@cli_task(
    help={
        "out": "where to write the template (default infra/cloudformation.yaml next to the fleet file; - for stdout)",
        "force": "overwrite an existing template that differs",
        **AWS_HELP,
        "workgroup": f"the Athena workgroup to create (default {INFRA_WORKGROUP}, or DEPLOYTOOL_ATHENA_WORKGROUP)",
    }
)
def infra(
    c: Context,
    fleet: str | None = None,
    target: str | None = None,
    out: str | None = None,
    force: bool = False,
    account: str | None = None,
    database: str | None = None,
    workgroup: str | None = None,
    no_sqs: bool = False,
    debug: bool = False,
) -> None:
    """Write the fleet's CloudFormation template: bucket, bucket policy, IAM roles, Glue database, Athena workgroup."""
    import os
    from pathlib import Path

    from deploytool.cli import make_console
    from deploytool.infra import GENERATED_MARK, render, template

    loaded = fleet_from(fleet)
    path = options.text("--out", out)
    chosen = options.pattern("--workgroup", workgroup, *_WORKGROUP)
    chosen = chosen or os.environ.get("DEPLOYTOOL_ATHENA_WORKGROUP") or INFRA_WORKGROUP
    if chosen == "primary":
        raise UsageError(
            "--workgroup 'primary' exists in every account and cannot be created: give another name "
            f"(default {INFRA_WORKGROUP}), and the same to `fab reconcile` (DEPLOYTOOL_ATHENA_WORKGROUP)"
        )
    scope = fleet_scope(loaded, target, account=account, database=database, workgroup=chosen, sqs=not no_sqs)
    text = render(template(scope))
    if path == "-":
        sys.stdout.write(text)
        return
    dest = Path(path) if path else loaded.root / "infra" / "cloudformation.yaml"
    console = make_console()
    try:
        current = dest.read_text() if dest.is_file() else None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--out {str(dest)!r}: cannot read it ({exc})") from None
    if current == text:
        console.print(f"{dest}: up to date", markup=False, highlight=False)
        return
    if current is not None and GENERATED_MARK not in current:
        raise UsageError(
            f"refusing to replace {dest}: it was not written by `fab infra` (no {GENERATED_MARK!r} in it), "
            "also with --force; give --out a new file, or move it away"
        )
    if current is not None and not force:
        raise UsageError(
            f"{dest} exists and differs from what {loaded.path.name} gives: run `fab infra --force` to replace it "
            "(edits made by hand are lost), or --out another file"
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.write_text(text)
        tmp.replace(dest)
    except OSError as exc:
        raise UsageError(f"--out {str(dest)!r}: cannot write it ({exc.strerror or exc})") from None
    console.print(f"wrote {dest}", markup=False, highlight=False)
    console.print(
        f"next: aws cloudformation deploy --template-file {dest} --stack-name {loaded.app.name}-deploytool "
        f"--capabilities CAPABILITY_NAMED_IAM; set DEPLOYTOOL_ATHENA_WORKGROUP={scope.workgroup}; "
        "then fab athena-ddl --apply and fab setup",
        markup=False,
        highlight=False,
    )
