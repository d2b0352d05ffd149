"""What `fab doctor` read from AWS, as plain data: checks.py judges it without any I/O.

A read that failed is a Problem (its one-line reason) in place of the value, so one refused call (an IAM
permission the deployer lacks) shows up on its own line instead of stopping the preflight.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from deploytool.aws.autoscaling import AsgInfo
from deploytool.aws.iam import RoleInfo
from deploytool.aws.kms import KeyInfo
from deploytool.aws.s3_bucket import Encryption
from deploytool.aws.sts import CallerIdentity
from deploytool.rollout.setup import SetupPlan


@dataclass(frozen=True)
class Problem:
    """A read that failed: why, in one line (an AwsError's text)."""

    reason: str


@dataclass(frozen=True)
class Probe:
    """The probe object doctor writes under the prefix and deletes at once (the one write it makes)."""

    key: str
    written: Problem | None = None  # None: written
    deleted: Problem | None = None  # None: deleted (or never written)
    version_id: str | None = None


@dataclass(frozen=True)
class BucketFacts:
    name: str
    exists: Literal["yes", "missing", "denied"] | Problem
    region: str | Problem | None = None  # the reads below only when the bucket exists
    versioning: str | Problem | None = None
    encryption: Encryption | Problem | None = None
    encryption_read: bool = False  # encryption None means "no default" only when it was read
    missing_key: Literal["404", "403", "exists"] | Problem | None = None
    probe: Probe | None = None


@dataclass(frozen=True)
class KmsFacts:
    key_id: str
    key: KeyInfo | Problem | None  # None: no such key
    generate: Problem | None = None  # None: GenerateDataKey (dry run) would succeed


@dataclass(frozen=True)
class CodeDeployFacts:
    application: str
    plan: SetupPlan | Problem  # `fab setup`'s plan, read-only; a SetupConflict is a Problem
    groups: Mapping[str, Mapping[str, Any]] | Problem  # our deployment groups that exist, by name
    # every deployment group (of any application) that sits on a fleet ASG: asg -> ["app/group", ...]
    on_asg: Mapping[str, tuple[str, ...]] | Problem
    role_arn: str  # the service role the groups use (else the fleet's)
    role: RoleInfo | Problem | None  # None: no such role


@dataclass(frozen=True)
class QueueFacts:
    name: str
    found: tuple[str, Mapping[str, str]] | Problem | None  # (url, attributes); None: no such queue


@dataclass(frozen=True)
class AthenaFacts:
    database: str
    database_exists: bool | Problem
    tables: Mapping[str, bool | Problem] = field(default_factory=dict)


@dataclass(frozen=True)
class Facts:
    target: str
    region: str
    botocore_version: str
    botocore_problem: str | None
    identity: CallerIdentity | Problem
    # everything below is read only when the credentials work (None otherwise)
    bucket: BucketFacts | None = None
    kms: KmsFacts | None = None
    codedeploy: CodeDeployFacts | None = None
    asgs: Mapping[str, AsgInfo] | Problem | None = None
    hooks: Mapping[str, Mapping[str, str] | Problem] = field(default_factory=dict)  # asg -> hook name -> transition
    queues: tuple[QueueFacts, ...] = ()
    athena: AthenaFacts | None = None
