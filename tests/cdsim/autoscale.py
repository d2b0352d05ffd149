"""The fleet moves: scale an ASG out and in during a simulated release (moto's Auto Scaling + the simulator's
clock), with the deployments CodeDeploy starts of its own (../shared/reference/fleet-dynamics.md):

- scale-out: moto launches the instances; each one gets a launch deployment (creator `autoscaling`) of the
  group's last successful revision and counts InService for the simulator (is in the group's next deployments)
  only once it succeeded; a failed launch deployment terminates the instance, as the ASG's lifecycle hook
  does. A group that never had a successful deployment gets no launch deployment: the instance is in service.
- an instance launched while a deployment of another revision runs in its group gets the old revision; when
  the group has no active deployment any more and the group's outdatedInstancesStrategy is UPDATE (the
  default), a follow-on deployment (creator `CodeDeployAutoUpdate`) of the group's new last successful
  revision goes to every such instance still off it.
- scale-in: with the group's terminationHookEnabled, a termination deployment (creator
  `autoscalingTermination`, ApplicationStop only) runs first and the instance terminates when it ends;
  without, the instance terminates at once.

Each of these is a real deployment of the simulator: ListDeployments / BatchGetDeployments show it with its
creator, and while it runs CreateDeployment on the group fails (DeploymentLimitExceededException).
Simulator choices (no source says): CodeDeploy's own deployments use CodeDeployDefault.OneAtATime, and start
`sim.start_delay_s` after the event, like any other.

    scaler = Autoscaler(env.sim, env.boto.client("autoscaling"))
    [new] = scaler.scale_out("asg-video")     # at the simulated clock's now
    scaler.scale_in("asg-video", instance_id)
"""

from __future__ import annotations

from typing import Any

from tests.cdsim.model import Deployment, DeploymentGroup
from tests.cdsim.sim import CodeDeploySim, revision_key

LAUNCH, FOLLOW_ON, TERMINATION = "autoscaling", "CodeDeployAutoUpdate", "autoscalingTermination"
OWN_CONFIG = "CodeDeployDefault.OneAtATime"


class Autoscaler:
    def __init__(self, sim: CodeDeploySim, autoscaling: Any) -> None:
        self.sim = sim
        self.autoscaling = autoscaling
        self.outdated: dict[tuple[str, str], set[str]] = {}  # group key -> instances launched on an old revision
        self.terminated: list[str] = []
        self.launches: dict[str, str] = {}  # launch deployment id -> instance
        self.terminations: dict[str, str] = {}  # termination deployment id -> instance
        sim.after_end = self._after_end

    # -- the hooks tests call ----------------------------------------------------------------

    def scale_out(self, asg: str, count: int = 1) -> list[str]:
        """Add `count` instances to `asg` now; returns their ids."""
        with self.sim.lock:
            self.sim.advance()
            before = set(self._all(asg))
            size = len(before) + count
            self.autoscaling.update_auto_scaling_group(
                AutoScalingGroupName=asg, MaxSize=max(size, self._asg(asg)["MaxSize"]), DesiredCapacity=size
            )
            new = sorted(set(self._all(asg)) - before)
            group = self._group_of(asg)
            for instance_id in new:
                if group is not None:
                    self._launched(group, instance_id)
            return new

    def scale_in(self, asg: str, instance_id: str) -> str | None:
        """Take `instance_id` out of `asg` now; returns the termination deployment's id, if the hook is on."""
        with self.sim.lock:
            self.sim.advance()
            group = self._group_of(asg)
            if group is None or not group.settings.get("terminationHookEnabled"):
                self._terminate(instance_id)
                return None
            self.sim.terminating.add(instance_id)
            d = self.sim.create(
                group,
                group.target_revision,
                creator=TERMINATION,
                at=self.sim.now(),
                description=f"Termination of {instance_id} (scale-in of {asg})",
                request={},
                instance_ids=[instance_id],
                config_name=OWN_CONFIG,
                mode="TERMINATION",
            )
            self.terminations[d.deployment_id] = instance_id
            return d.deployment_id

    # -- CodeDeploy's side ---------------------------------------------------------------------

    def _launched(self, group: DeploymentGroup, instance_id: str) -> None:
        if group.target_revision is None:
            return  # nothing ever succeeded in the group: no launch deployment
        active = [d for d in self.sim.active_in(group) if d.revision is not None]
        if any(revision_key(d.revision or {}) != revision_key(group.target_revision) for d in active):
            self.outdated.setdefault((group.app, group.name), set()).add(instance_id)
        self.sim.launching.add(instance_id)
        d = self.sim.create(
            group,
            group.target_revision,
            creator=LAUNCH,
            at=self.sim.now(),
            description=f"Launch of {instance_id}",
            request={},
            instance_ids=[instance_id],
            config_name=OWN_CONFIG,
        )
        self.launches[d.deployment_id] = instance_id

    def _after_end(self, d: Deployment, group: DeploymentGroup, t: float) -> None:
        if d.deployment_id in self.launches:
            instance_id = self.launches[d.deployment_id]
            self.sim.launching.discard(instance_id)
            if d.status != "Succeeded":
                self._terminate(instance_id)
        if d.deployment_id in self.terminations:
            instance_id = self.terminations[d.deployment_id]
            self.sim.terminating.discard(instance_id)
            self._terminate(instance_id)
        self._follow_on(group, t)

    def _follow_on(self, group: DeploymentGroup, t: float) -> None:
        key = (group.app, group.name)
        waiting = self.outdated.get(key)
        if not waiting or self.sim.active_in(group) or group.target_revision is None:
            return
        if group.settings.get("outdatedInstancesStrategy", "UPDATE") != "UPDATE":
            self.outdated.pop(key)
            return
        target = revision_key(group.target_revision)
        stale = sorted(
            i
            for i in waiting
            if i not in self.terminated and i not in self.sim.launching and self.sim.instance_revision.get(i) != target
        )
        self.outdated.pop(key)
        if stale:
            self.sim.create(
                group,
                group.target_revision,
                creator=FOLLOW_ON,
                at=t,
                description="Follow-on deployment to instances launched during a deployment",
                request={"updateOutdatedInstancesOnly": True},
                instance_ids=stale,
                config_name=OWN_CONFIG,
            )

    # -- moto ------------------------------------------------------------------------------------

    def _asg(self, asg: str) -> dict[str, Any]:
        found: dict[str, Any] = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[asg])[
            "AutoScalingGroups"
        ][0]
        return found

    def _all(self, asg: str) -> list[str]:
        return [i["InstanceId"] for i in self._asg(asg)["Instances"]]

    def _group_of(self, asg: str) -> DeploymentGroup | None:
        return next((g for g in self.sim.groups.values() if asg in g.asgs), None)

    def _terminate(self, instance_id: str) -> None:
        found = self.autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])["AutoScalingInstances"]
        if found:
            asg = found[0]["AutoScalingGroupName"]
            self.autoscaling.update_auto_scaling_group(AutoScalingGroupName=asg, MinSize=0)
            self.autoscaling.terminate_instance_in_auto_scaling_group(
                InstanceId=instance_id, ShouldDecrementDesiredCapacity=True
            )
        self.terminated.append(instance_id)
