"""The oldest botocore deploytool works with, and the one-line message when an older one is installed.

CreateDeployment's `ec2DeploymentOptions` exists in botocore's codedeploy model from 1.43.115 and
`deploymentMode` from 1.43.82: with an older botocore every `fab deploy` would die in parameter
validation before a request is sent. pyproject.toml's floor (boto3/botocore >= MIN_BOTOCORE) keeps pip
from installing an older one; this check catches an environment that has one anyway (`--no-deps`, a
pinned CI image), and `fab doctor` reports it.
"""

from __future__ import annotations

import botocore

from deploytool.errors import UsageError

MIN_BOTOCORE: tuple[int, int, int] = (1, 43, 115)


def parse_version(text: str) -> tuple[int, ...]:
    """'1.43.115' -> (1, 43, 115); trailing non-numeric parts (rc, dev) are ignored."""
    parts: list[int] = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def botocore_problem(installed: str | None = None) -> str | None:
    """None when the installed botocore is new enough, else one line saying what to do."""
    version = installed if installed is not None else botocore.__version__
    if parse_version(version) >= MIN_BOTOCORE:
        return None
    floor = ".".join(map(str, MIN_BOTOCORE))
    return (
        f"botocore {version} is too old for deploytool (needs >= {floor}: CreateDeployment's "
        f"ec2DeploymentOptions and deploymentMode); run: pip install 'boto3>={floor}' 'botocore>={floor}'"
    )


def botocore_version() -> str:
    """The installed botocore's version (what botocore_problem judges when given nothing)."""
    return str(botocore.__version__)


def require_botocore() -> None:
    """Refuse (UsageError, exit 2: one line) to talk to a target with a botocore older than the floor.

    Called where a command first makes the AwsSession of a real or sandbox target (deploytool.targets.connect,
    `fab publish`, `fab setup`, the sandbox's start), before any AWS call, so an old botocore is named instead
    of failing CreateDeployment's parameter validation with a traceback."""
    problem = botocore_problem(botocore.__version__)
    if problem is not None:
        raise UsageError(problem)
