"""Stage reconcile/fix: redeploy the expected revision to the drifted instances only.

Contract: `plan_fix` turns a report into one DeployRequest per group with drift: the revision of the
release the report expects (read from its manifest, P/A/releases/dt=<day>/<release_id>.json), and
`target_instances` = that group's drifted and untagged instances. Groups in sync get no request.
It never redeploys a release whose outcome for the group is not `succeeded` (only possible with
`--release`: otherwise the expected release is the group's last good one): UsageError (exit 2), one
line naming each such group, before anything is deployed.
How a backend honours target_instances: the sandbox deploys to exactly those instances; CodeDeploy
(whose targetInstances parameter is for blue/green only) gets updateOutdatedInstancesOnly and itself
picks every instance of the group not on that revision: the drifted ones, plus any other outdated
instance; an instance whose tag is wrong but that CodeDeploy counts as up to date is not redeployed,
and the reconcile after the fix reports it again. `apply_fix` runs the requests through the injected
runner (deploytool.reconcile.fix_runner: the rollout orchestrator, which sequences them), then tags
the instances that succeeded like any deployment. The caller reconciles again afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from deploytool.config import Fleet
from deploytool.errors import AwsError, UsageError
from deploytool.model import ReleaseManifest, manifest_key
from deploytool.reconcile.report import ReconcileReport, outcome_text
from deploytool.rollout.backend import Backend, DeployRequest
from deploytool.rollout.tags import FinishedDeployment, TagResult, TagWriter, tag_deployments


class ManifestReader(Protocol):
    def get_bytes(self, bucket: str, key: str) -> bytes | None: ...


class FixRunner(Protocol):
    def __call__(self, requests: Sequence[DeployRequest]) -> Sequence[FinishedDeployment]:
        """Run these deployments (through the orchestrator); the ones that finished, by group."""
        ...


@dataclass(frozen=True)
class FixPlan:
    requests: tuple[DeployRequest, ...]
    skipped: tuple[str, ...] = ()  # why a drifted group gets no request

    @property
    def instances(self) -> int:
        return sum(len(r.target_instances or ()) for r in self.requests)


@dataclass(frozen=True)
class FixOutcome:
    plan: FixPlan
    finished: tuple[FinishedDeployment, ...]
    tags: TagResult


def load_manifest(s3: ManifestReader, bucket: str, prefix: str, app: str, release_id: str) -> ReleaseManifest:
    key = manifest_key(prefix, app, release_id)
    body = s3.get_bytes(bucket, key)
    if body is None:
        raise AwsError(f"release manifest s3://{bucket}/{key} not found: cannot redeploy release {release_id}")
    data = json.loads(body)
    if not isinstance(data, dict):
        raise AwsError(f"release manifest s3://{bucket}/{key} is not a JSON object")
    return ReleaseManifest.from_dict(data)


def plan_fix(report: ReconcileReport, fleet: Fleet, manifests: Mapping[str, ReleaseManifest]) -> FixPlan:
    refused = [
        f"{g.group} (release {g.release_id} {outcome_text(g.expected_outcome)} there)"
        for g in report.groups
        if g.problems and g.release_id is not None and g.expected_outcome != "succeeded"
    ]
    if refused:
        raise UsageError(
            f"--fix: refusing to redeploy a release that did not succeed for the group: {'; '.join(refused)}; "
            "without --release each group's last good release is expected"
        )
    requests: list[DeployRequest] = []
    skipped: list[str] = []
    for group in report.groups:
        if not group.problems or group.expected_version is None or group.release_id is None:
            continue
        manifest = manifests.get(group.release_id)
        if manifest is None:
            skipped.append(f"{group.group}: no manifest for release {group.release_id}")
            continue
        revision = manifest.revision
        if revision.version != group.expected_version:
            skipped.append(
                f"{group.group}: release {group.release_id} is {revision.version}, expected {group.expected_version}"
            )
            continue
        requests.append(
            DeployRequest(
                group=fleet.group(group.group),
                revision=revision,
                release_id=group.release_id,
                description=f"deploytool reconcile --fix: {len(group.problems)} drifted instance(s)",
                target_instances=tuple(sorted(i.instance_id for i in group.problems)),
            )
        )
    return FixPlan(requests=tuple(requests), skipped=tuple(skipped))


def apply_fix(plan: FixPlan, runner: FixRunner, *, ec2: TagWriter, backend: Backend) -> FixOutcome:
    finished = tuple(runner(plan.requests)) if plan.requests else ()
    return FixOutcome(plan=plan, finished=finished, tags=tag_deployments(ec2, backend, finished))
