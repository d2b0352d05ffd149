"""`fab hooks`: run lifecycle events of a bundle on one sandbox instance, to debug a hook.

Contract: `run_events(...)` works on the sandbox on disk (after `fab sandbox-up`, or what a
`fab sandbox` run left): it picks the instance (by id, else the first of the group, else the
first of all), and runs the named events through the same LifecycleRunner as a deployment, under
a new deployment id. With a local bundle file the events run on that bundle (DownloadBundle, which
unpacks it, is added in front when an event needs the new revision); without one they run the
scripts of the revision last installed on the instance (CodeDeploy's restart). Returns the
instance and the runner's result; the per-event logs are in the instance's logs/<deployment-id>/.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

from deploytool.config import Fleet
from deploytool.errors import UsageError
from deploytool.rollout.backend import LIFECYCLE_EVENTS
from deploytool.sandbox.appspec import FileExistsBehavior
from deploytool.sandbox.deployment import new_deployment_id
from deploytool.sandbox.instance import Instance
from deploytool.sandbox.runner import DeploymentSpec, InstanceResult, LifecycleRunner, Timing
from deploytool.sandbox.session import local_target, sandbox_root
from deploytool.sandbox.state import SandboxState

NEEDS_NEW_REVISION = ("BeforeInstall", "Install", "AfterInstall", "ApplicationStart", "ValidateService")


def check_events(events: Sequence[str]) -> list[str]:
    for event in events:
        if event not in LIFECYCLE_EVENTS:
            close = difflib.get_close_matches(event, LIFECYCLE_EVENTS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"--event {event!r}: not a lifecycle event{hint}; allowed: {', '.join(LIFECYCLE_EVENTS)}")
    return sorted(set(events), key=LIFECYCLE_EVENTS.index)


def pick_instance(root: Path, *, instance_id: str | None, group: str | None) -> Instance:
    found = [Instance(d.parent.name, d.name, d) for d in sorted((root / "instances").glob("*/i-*")) if d.is_dir()]
    if not found:
        raise UsageError(f"no sandbox instances under {root}: run `fab sandbox-up` (or `fab sandbox`) first")
    if instance_id:
        chosen = [i for i in found if i.instance_id == instance_id]
    elif group:
        chosen = [i for i in found if i.group == group]
    else:
        chosen = found
    if not chosen:
        wanted = f"instance {instance_id!r}" if instance_id else f"group {group!r}"
        listed = ", ".join(f"{i.group}/{i.instance_id}" for i in found)
        raise UsageError(f"no sandbox {wanted}; the sandbox has {listed}")
    return chosen[0]


def run_events(
    fleet: Fleet,
    events: Sequence[str],
    *,
    target: str | None = None,
    instance_id: str | None = None,
    group: str | None = None,
    bundle: Path | None = None,
    file_exists_behavior: FileExistsBehavior = "DISALLOW",
    timing: Timing | None = None,
) -> tuple[Instance, InstanceResult]:
    chosen = check_events(events)
    _, local = local_target(fleet, target)
    root = sandbox_root(fleet, local)
    instance = pick_instance(root, instance_id=instance_id, group=group)
    if bundle is not None:
        if not bundle.is_file():
            raise UsageError(f"--bundle {bundle}: no such file")
        if "DownloadBundle" not in chosen and any(e in NEEDS_NEW_REVISION for e in chosen):
            chosen = check_events([*chosen, "DownloadBundle"])
    elif {"DownloadBundle", "Install"} & set(chosen):
        raise UsageError("DownloadBundle and Install need a bundle: pass --bundle PATH (e.g. from `fab build`)")
    state = SandboxState(root / "state", fleet.app.name)
    spec = DeploymentSpec(
        deployment_id=new_deployment_id(),
        application_name=fleet.app.name,
        group_name=instance.group,
        group_id=state.group_id(instance.group),
        revision=None,
        bundle_file=bundle.resolve() if bundle else None,
        mode="deploy" if bundle else "restart",
        file_exists_behavior=file_exists_behavior,
    )
    runner = LifecycleRunner(instance, timing=timing or Timing())
    return instance, runner.run(spec, events=chosen)
