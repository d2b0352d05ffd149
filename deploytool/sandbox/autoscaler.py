"""The sandbox's autoscaler: its ASGs scale out and in through the moto Auto Scaling API while a release runs.

Contract (../shared/reference/fleet-dynamics.md, as tests/cdsim/autoscale.py does it for the simulator):
- `scale_out(group, n)`: the ASG's desired capacity grows by n (moto launches the instances); each new instance
  gets a launch deployment (creator `autoscaling`) of the group's last successful revision, run by the lifecycle
  runner (LocalBackend.sync). While it runs the group takes no user deployment (the orchestrator's coexist logic
  waits for it). A group with no successful revision yet: the instance just joins, no launch deployment.
- `scale_in(group, instance_id=None)` (None: the newest live instance no deployment runs on now): with the
  termination hook on, a termination deployment (creator `autoscalingTermination`, ApplicationStop only: the
  drain) runs, then the instance is terminated in its ASG (`wait=False`, as the churn does: in the background,
  so the next scale action need not wait for a drain); with it off, the instance's worker process group and its
  interruption watcher are sent SIGKILL at once (a spot power-off, deploytool.sandbox.faults.power_off: only what
  the sandbox started, by their pidfiles) and the instance is terminated.
- It reads and starts deployments through LocalBackend's public methods only (group_deployments,
  instance_results, installed_version, sync, start_own, wait).
- `follow_on()`: outdatedInstancesStrategy UPDATE for the instances it launched (see there); `churn` runs it
  every `follow_on_every_s` on a second thread.
- `churn(every_s, ...)`: a background thread that every `every_s` scales a group (chosen by a seeded RNG) out or
  in by one, the two alternating, keeping each group within [min_size, max_size]; `stop()` ends it; `actions`
  records what it did, each with the group's own deployment in flight then (`during`); `halt()` ends the scale
  actions at once and leaves the follow-ons running (`fab sandbox --churn` halts when the release's last wave ends:
  an instance launched after the release's last look is the next release's).
Every action is recorded (`actions`, `summary()`); the launch deployment ids in `launches`.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from deploytool.config import Group
from deploytool.rollout.backend import DeploymentSnapshot, DeployRequest
from deploytool.sandbox.backend import LocalBackend
from deploytool.sandbox.clock import SYSTEM_CLOCK, Clock
from deploytool.sandbox.errors import SandboxError
from deploytool.sandbox.faults import power_off
from deploytool.sandbox.instance import Instance

TERMINATION = "autoscalingTermination"
FOLLOW_ON = "CodeDeployAutoUpdate"


@dataclass(frozen=True)
class Action:
    at: float
    kind: str  # "scale_out" | "scale_in"
    group: str
    instance_id: str
    deployment_id: str = ""  # the launch or termination deployment, when one ran
    killed_pid: int | None = None  # scale-in without the termination hook: the worker SIGKILLed
    during: str = ""  # the group's own deployment (a release, rollback, restart) in flight then, if any


@dataclass
class Autoscaler:
    backend: LocalBackend
    termination_hook: bool = True
    clock: Clock = SYSTEM_CLOCK
    wait_s: float = 120.0  # a termination deployment's bound
    actions: list[Action] = field(default_factory=list)
    launches: list[str] = field(default_factory=list)
    follow_ons: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _halted: threading.Event = field(default_factory=threading.Event)  # halt(): the scale loop ends
    _thread: threading.Thread | None = None
    _watcher: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _out_next: bool = True  # churn: the direction of the next step
    _terminations: list[threading.Thread] = field(default_factory=list)  # scale-ins waiting for their deployment
    _leaving: set[str] = field(default_factory=set)  # instances scaled in and not terminated yet

    def _group(self, name: str) -> Group:
        return self.backend.fleet.config.group(name)

    def size(self, group: str) -> int:
        return len(self.backend.fleet.instances(self._group(group)))

    def running(self, group: str | None = None) -> list[DeploymentSnapshot]:
        """The deployments in flight (of `group`, or of every group of the fleet)."""
        names = [group] if group is not None else [g.name for g in self.backend.fleet.config.groups]
        return [d for name in names for d in self.backend.group_deployments(self._group(name), active_only=True)]

    def busy(self) -> set[str]:
        """Instances a deployment of this backend is running on now: not chosen for a scale-in (a termination
        deployment would run beside the other one on the same instance)."""
        return {
            p.instance_id
            for d in self.running()
            for p in self.backend.instance_results(d.deployment_id)
            if p.status in ("Pending", "InProgress")
        }

    def deploying(self, group: str) -> str:
        """The group's own deployment (created by a user: a release, rollback or restart) in flight, or ""."""
        return next((d.deployment_id for d in self.running(group) if d.creator == "user"), "")

    def idle(self, group: str) -> list[str]:
        busy = self.busy() | self._leaving
        return [i.instance_id for i in self.backend.fleet.instances(self._group(group)) if i.instance_id not in busy]

    def asg_max(self, group: str) -> int:
        g = self._group(group)
        return self.backend.fleet.asgs.describe_groups([g.asg])[g.asg].maximum

    def scale_out(self, group: str, n: int = 1) -> list[str]:
        """Add n instances to the group's ASG; returns the new instance ids (their launch deployments: `launches`)."""
        g = self._group(group)
        with self._lock:
            during = self.deploying(group)
            before = {i.instance_id for i in self.backend.fleet.instances(g)}
            info = self.backend.fleet.asgs.describe_groups([g.asg])[g.asg]
            self.backend.fleet.asgs.set_desired_capacity(g.asg, info.desired + n)
            launched = self.backend.sync()
            new = sorted({i.instance_id for i in self.backend.fleet.instances(g)} - before)
            by_instance = {}
            for did in launched:
                for progress in self.backend.instance_results(did):
                    by_instance[progress.instance_id] = did
            self.launches += launched
            for iid in new:
                self.actions.append(
                    Action(self.clock.now(), "scale_out", group, iid, by_instance.get(iid, ""), None, during)
                )
        return new

    def scale_in(self, group: str, instance_id: str | None = None, *, wait: bool = True) -> Action:
        """`wait=False` (the churn): return once the termination deployment started; a thread terminates the
        instance when it ends (`stop` and `settle` wait for those threads), as the ASG does after its hook."""
        g = self._group(group)
        with self._lock:
            live = [i for i in self.backend.fleet.instances(g)]
            if not live:
                raise SandboxError(f"group {group}: no instance to scale in")
            if instance_id is None:
                idle = self.idle(group)
                if not idle:
                    raise SandboxError(f"group {group}: every instance is being deployed to: none to scale in now")
                instance_id = idle[-1]
            instance = next((i for i in live if i.instance_id == instance_id), None)
            if instance is None:
                raise SandboxError(f"group {group}: {instance_id} is not one of its live instances")
            deployment_id, killed, during = "", None, self.deploying(group)
            if self.termination_hook and self.backend.state.last_successful(group) is not None:
                request = DeployRequest(
                    g, None, release_id="", mode="restart", description="Auto Scaling termination", auto_rollback=False
                )
                deployment_id = self.backend.start_own(request, creator=TERMINATION, instances=[instance])
            elif not self.termination_hook:
                killed = power_off(instance, self.backend.app, self.clock)
            action = Action(self.clock.now(), "scale_in", group, instance.instance_id, deployment_id, killed, during)
            self.actions.append(action)
            if deployment_id:
                self._leaving.add(instance.instance_id)
        if not deployment_id:
            self.backend.fleet.terminate(instance, decrement=True)
        elif wait:
            self._terminate_after(instance, deployment_id)
        else:
            thread = threading.Thread(
                target=self._terminate_after, args=(instance, deployment_id), name=f"terminate-{instance_id}"
            )
            self._terminations.append(thread)
            thread.start()
        return action

    def _terminate_after(self, instance: Instance, deployment_id: str) -> None:
        """The ASG terminates the instance once its termination deployment (the lifecycle hook) ended."""
        try:
            self.backend.wait(deployment_id, self.wait_s)
        finally:
            self.backend.fleet.terminate(instance, decrement=True)
            self._leaving.discard(instance.instance_id)

    def follow_on(self) -> str | None:
        """CodeDeploy's outdatedInstancesStrategy UPDATE: once a group has no deployment in flight, the instances this
        autoscaler launched that run another version than the group's last successful revision (launched while a
        deployment of a new revision ran: their launch deployment installed the previous one) get a follow-on
        deployment (creator `CodeDeployAutoUpdate`) of it. Returns the first one started, if any."""
        started: list[str] = []
        with self._lock:
            for group in sorted({a.group for a in self.actions if a.kind == "scale_out"}):
                last = self.backend.state.last_successful(group)
                if last is None or self._in_flight(group):
                    continue
                g = self._group(group)
                launched = {a.instance_id for a in self.actions if a.kind == "scale_out" and a.group == group}
                stale = [
                    i
                    for i in self.backend.fleet.instances(g)
                    if i.instance_id in launched
                    and i.instance_id not in self._leaving
                    and self.backend.installed_version(i) not in (None, last[1].version)
                ]
                if stale:
                    request = DeployRequest(
                        g,
                        last[1],
                        release_id="",
                        description="Follow-on deployment to instances launched during a deployment",
                        auto_rollback=False,
                    )
                    started.append(self.backend.start_own(request, creator=FOLLOW_ON, instances=stale))
            self.follow_ons += started
        return started[0] if started else None

    def settle(self, timeout_s: float = 300.0) -> list[str]:
        """After the churn: wait for every deployment of the backend to end, then start the follow-ons still due and
        wait for them too. Returns the follow-on ids started here."""
        started: list[str] = []
        deadline = self.clock.now() + timeout_s
        while True:
            for did in [d.deployment_id for d in self.running()]:
                self.backend.wait(did, max(1.0, deadline - self.clock.now()))
            for thread in list(self._terminations):
                thread.join(max(1.0, deadline - self.clock.now()))
            follow = self.follow_on()
            if follow is None:
                return started
            started.append(follow)

    def _in_flight(self, group: str) -> bool:
        return bool(self.running(group))

    # --- churn ----------------------------------------------------------------------------------

    def step(self, rng: random.Random, bounds: Mapping[str, tuple[int, int]]) -> Action | list[str] | None:
        """One churn step: scale-outs and scale-ins alternate, so a release sees as many of each; the group is chosen
        by `rng` among those that can move that way (out: below its max; in: above its min, with an instance no
        deployment runs on). When none can, the other way; when neither, nothing."""
        for out in (self._out_next, not self._out_next):
            able = [
                g
                for g in sorted(bounds)
                if (self.size(g) < bounds[g][1] if out else self.size(g) > bounds[g][0] and bool(self.idle(g)))
            ]
            if able:
                group = rng.choice(able)
                self._out_next = not out
                return self.scale_out(group, 1) if out else self.scale_in(group, wait=False)
        return None

    def churn(
        self,
        every_s: float,
        *,
        seed: int = 0,
        bounds: Mapping[str, tuple[int, int]],
        on_error: Callable[[Exception], None] = lambda _: None,
        follow_on_every_s: float | None = 0.5,
    ) -> None:
        """Start the background loop: every `every_s`, one `step`. Bounds: group -> (min, max) instances."""
        for group, (low, high) in bounds.items():
            if not 0 <= low <= high or high < 1:
                raise SandboxError(
                    f"churn bounds of group {group}: need 0 <= min <= max and max >= 1, got {low}, {high}"
                )
        for group, (_low, high) in bounds.items():
            top = self.asg_max(group)
            if high > top:
                raise SandboxError(f"churn bounds of group {group}: max {high} is above its ASG's MaxSize {top}")
        rng = random.Random(seed)

        def loop() -> None:
            while not (self._stop.is_set() or self._halted.is_set()):
                self.clock.sleep(every_s)
                if self._stop.is_set() or self._halted.is_set():
                    break
                try:
                    self.step(rng, bounds)
                except Exception as exc:  # a churn step must not end the loop silently: say it, go on
                    on_error(exc)

        def follow_ons(every: float) -> None:
            while not self._stop.wait(every):
                try:
                    self.follow_on()
                except Exception as exc:
                    on_error(exc)

        self._stop.clear()
        self._halted.clear()
        self._thread = threading.Thread(target=loop, name="sandbox-churn", daemon=True)
        self._thread.start()
        if follow_on_every_s is not None:
            self._watcher = threading.Thread(
                target=follow_ons, args=(follow_on_every_s,), name="sandbox-follow-on", daemon=True
            )
            self._watcher.start()

    def halt(self) -> None:
        """No more scale actions (at once, without waiting); follow-ons still start until `stop`."""
        self._halted.set()

    def stop(self, timeout_s: float = 180.0) -> None:
        self._stop.set()
        for thread in (self._thread, self._watcher, *self._terminations):
            if thread is not None:
                thread.join(timeout_s)

    def summary(self) -> dict[str, int]:
        return {
            "scale_out": sum(1 for a in self.actions if a.kind == "scale_out"),
            "scale_in": sum(1 for a in self.actions if a.kind == "scale_in"),
            "launch_deployments": len(self.launches),
            "followon_deployments": len(self.follow_ons),
            "termination_deployments": sum(1 for a in self.actions if a.kind == "scale_in" and a.deployment_id),
            "killed": sum(1 for a in self.actions if a.killed_pid is not None),
            "scale_out_while_deploying": sum(1 for a in self.actions if a.kind == "scale_out" and a.during),
            "scale_in_while_deploying": sum(1 for a in self.actions if a.kind == "scale_in" and a.during),
        }
