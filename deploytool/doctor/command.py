"""What `fab doctor` runs once the target's session exists: gather, judge, print, verdict.

Contract: `run_doctor` prints one line per check (status, name, what was found; unless ok, `fix:` and what
to do), or with as_json one JSON document {target, ok, checks: [{name, status, message, fix}]}, through the
injected console, and returns the checks; it raises DoctorFailed (exit 1, one line on stderr) when any
check failed. warn never fails.
"""

from __future__ import annotations

import json

from rich.console import Console

from deploytool.aws.session import AwsSession
from deploytool.config import CodeDeployTarget, Fleet
from deploytool.doctor.checks import Check, checks
from deploytool.doctor.gather import Gateways, gather
from deploytool.errors import DeployToolError


class DoctorFailed(DeployToolError):
    """At least one preflight check failed: exit 1."""


def line(check: Check, width: int = 0) -> str:
    """`status name message`, and `; fix: ...` unless ok; the name padded to `width` (the longest name)."""
    fix = f"; fix: {check.fix}" if check.fix and check.status != "ok" else ""
    return f"{check.status:<5} {check.name:<{width}} {check.message}{fix}"


def run_doctor(
    fleet: Fleet,
    target_name: str,
    target: CodeDeployTarget,
    session: AwsSession,
    console: Console,
    *,
    athena_database: str,
    as_json: bool = False,
    read_only: bool = False,
) -> list[Check]:
    facts = gather(
        fleet,
        target_name,
        target,
        Gateways.on(session, fleet),
        region=session.region,
        athena_database=athena_database,
        write_probe=not read_only,
    )
    found = checks(fleet, target, facts)
    failed = [c for c in found if c.status == "fail"]
    if as_json:
        document = {"target": target_name, "ok": not failed, "checks": [c.to_dict() for c in found]}
        console.print(json.dumps(document, indent=2), markup=False, highlight=False, soft_wrap=True)
    else:
        width = max(len(c.name) for c in found)
        for check in found:
            console.print(line(check, width), markup=False, highlight=False, soft_wrap=True)
    if failed:
        names = ", ".join(c.name for c in failed)
        raise DoctorFailed(f"doctor: {len(failed)} of {len(found)} check(s) failed on target {target_name}: {names}")
    return found
