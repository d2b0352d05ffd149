"""The FixRunner `fab reconcile --fix` deploys through: the rollout orchestrator, on the target's backend.

Contract: `orchestrated_runner(services, target)` returns a FixRunner (deploytool.reconcile.fix). Given
the fix's DeployRequests it builds one rollout plan per release the requests redeploy (usually one):
that release's id and revision, the requests' groups in their waves, and `target_instances` = each
group's drifted instances. Each plan runs through the Orchestrator with the rollout's progress display
and Ctrl-C handling of every rollout (deploytool.rollout.wiring), the group's own strategy and the
stop-wave failure policy; it writes no release record (a fix is not a release). The backend decides
how target_instances are deployed: CodeDeploy sends updateOutdatedInstancesOnly and picks the
instances not on the revision itself; the sandbox deploys to exactly those instances.
It returns a FinishedDeployment for every group whose deployment ended (succeeded, failed or stopped,
with its rollback if it had one), for apply_fix to tag; groups never started are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from deploytool.model import Revision
from deploytool.reconcile.fix import FixRunner
from deploytool.rollout.backend import DeployRequest
from deploytool.rollout.plan import RolloutOptions, rollout_plan
from deploytool.rollout.tags import FinishedDeployment
from deploytool.rollout.wiring import Output, Services, run_rollout

ENDED = ("succeeded", "failed", "stopped")


def orchestrated_runner(
    services: Services,
    target: str,
    *,
    options: RolloutOptions | None = None,
    output: Output | None = None,
) -> FixRunner:
    def run(requests: Sequence[DeployRequest]) -> Sequence[FinishedDeployment]:
        by_release: dict[tuple[str, Revision], list[DeployRequest]] = {}
        for request in requests:
            if request.revision is None:
                raise ValueError(f"a fix redeploys a revision; the request for {request.group.name} has none")
            by_release.setdefault((request.release_id, request.revision), []).append(request)
        finished: list[FinishedDeployment] = []
        for (release_id, revision), batch in by_release.items():
            plan = rollout_plan(
                release_id=release_id,
                version=revision.version,
                target=target,
                groups=[r.group for r in batch],
                revision=revision,
                options=options,
                target_instances={r.group.name: r.target_instances for r in batch if r.target_instances},
            )
            plan = replace(plan, description=f"deploytool reconcile --fix {release_id}")
            result = run_rollout(plan, services, output or Output())  # no manifest: a fix is not a release
            finished += [
                FinishedDeployment(
                    g.group,
                    g.deployment_id,
                    revision.version,
                    release_id,
                    services.now(),
                    rollback_deployment_id=g.rollback_deployment_id,
                )
                for g in result.groups
                if g.deployment_id and g.outcome in ENDED
            ]
        return finished

    return run
