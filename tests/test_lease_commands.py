"""The release lease through the commands (deploytool.rollout.commands, the reconcile fix runner) on the CodeDeploy
simulator with moto S3 and a simulated clock: two concurrent releases, the second refused with the holder's line;
rollback, restart and reconcile --fix refused too; --wait waits then proceeds; --break-lease of a stale lease is
in the release record; Ctrl-C releases the lease; a holder whose lease was taken over starts no new wave."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from deploytool.reconcile.fix_runner import orchestrated_runner
from deploytool.rollout import commands
from deploytool.rollout.backend import DeployRequest
from deploytool.rollout.clock import SimulatedClock
from deploytool.rollout.events import Event, GroupStarted, WaveFinished
from deploytool.rollout.lease import STALE_S, LeaseHeld, LeaseStore, Taken, acquire, who
from deploytool.rollout.plan import RolloutOptions
from deploytool.rollout.wiring import LeaseOptions, Output
from tests.rollout_helpers import CtrlC, World, sample_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with sample_world(tmp_path) as w:
        # wall-clock time moves with the simulated clock, so the lease's renewals and staleness do too
        w.services.now = lambda: w.moment[0] + timedelta(seconds=w.env.clock.now())
        w.services.lease = LeaseOptions("deploy")
        yield w


def leases(world: World) -> LeaseStore:
    store = world.services.store
    return LeaseStore(store.s3, bucket=store.bucket, prefix=store.prefix, app=store.app)


def hold(world: World, who: str = "ci@runner-7") -> Taken:
    """Someone else (another process) holds the production lease."""
    return acquire(
        leases(world),
        target="production",
        release_id="20250501T115000Z-other",
        command="deploy",
        now=world.services.now,
        clock=world.env.clock,
        say=lambda line: None,
        holder=who,
        pid=4242,
    )


def deploy_now(world: World, version: str) -> Any:
    """`fab deploy` now (World.deploy starts 5 minutes later, which would make a held lease stale)."""
    world.moment[0] -= timedelta(minutes=5)
    return world.deploy(version)


def current(world: World) -> Any:
    found = leases(world).read("production")
    return None if found is None else found[0]


class During:
    """Runs `action` once, when the first group of the release has started (the lease is held then)."""

    def __init__(self, action: Any) -> None:
        self.action, self.done, self.got = action, False, None

    def publish(self, event: Event) -> None:
        if isinstance(event, GroupStarted) and not self.done:
            self.done = True
            try:
                self.action()
            except Exception as exc:  # what the second command raised is the subject
                self.got = exc


def test_a_second_deploy_while_the_first_runs_is_refused_with_the_holders_line(world: World) -> None:
    second = During(lambda: deploy_now(world, "2025.05.01-second"))
    world.services.extra_reporters.append(second)
    result = world.deploy("2025.05.01-first")
    assert result is not None and result.succeeded  # the first release is not disturbed
    assert isinstance(second.got, LeaseHeld) and second.got.exit_code == 1
    line = str(second.got)
    assert "\n" not in line
    assert f"holds the release lease of target 'production': `deploy` release {result.release_id}" in line
    assert "live" in line and "--wait" in line
    assert current(world) is None  # released at the end
    # the refused release started nothing: every deployment on the simulator is of the first release
    assert all("second" not in str(d.revision) for d in world.env.sim.deployments.values())
    assert any("first" in str(d.revision) for d in world.env.sim.deployments.values())


def test_rollback_restart_and_reconcile_fix_are_refused_while_a_release_holds_the_lease(world: World) -> None:
    first = world.deploy("2025.05.01-one")
    assert first is not None and first.succeeded
    hold(world)
    fleet, groups, services = world.fleet, world.fleet.groups, world.services
    with pytest.raises(LeaseHeld, match=r"ci@runner-7 \(pid 4242\) holds the release lease"):
        commands.restart(fleet, "production", groups, RolloutOptions(), services, Output(ci=True))
    with pytest.raises(LeaseHeld, match=r"ci@runner-7 \(pid 4242\)"):
        world.deploy("2025.05.01-two")
    # rollback needs an earlier good version: release two under a free lease, then hold it again
    leases(world).delete("production", leases(world).read("production")[1])  # type: ignore[index]
    assert (two := world.deploy("2025.05.01-two")) is not None and two.succeeded
    hold(world)
    started = len(world.env.sim.deployments)
    with pytest.raises(LeaseHeld, match=r"ci@runner-7"):
        commands.rollback(fleet, "production", groups, RolloutOptions(), services, Output(ci=True), to_version=None)
    fix = orchestrated_runner(replace(services, lease=LeaseOptions("reconcile --fix")), "production")
    request = DeployRequest(groups[0], world.services.store.load(first.release_id).revision, first.release_id)
    with pytest.raises(LeaseHeld, match=r"ci@runner-7"):
        fix([request])
    assert len(world.env.sim.deployments) == started  # nothing was started by the refused commands
    assert current(world).holder == "ci@runner-7"  # the holder's lease is untouched


def test_wait_waits_for_the_lease_then_proceeds(world: World) -> None:
    other = hold(world)
    sim = world.env.clock

    class Frees(SimulatedClock):
        """The services' clock (the simulator's): the other release ends 60 s into the wait."""

        def now(self) -> float:
            return sim.now()

        def sleep(self, seconds: float) -> None:
            sim.sleep(seconds)
            if sim.now() - t0 >= 60 and not other.lease.released:
                other.lease.release()

    t0 = sim.now()
    world.services.clock = Frees()
    world.services.lease = LeaseOptions("deploy", wait=True)
    result = world.deploy("2025.05.01-waited")
    assert result is not None and result.succeeded
    out = world.out.getvalue()
    assert "waiting for the release lease (0s of at most 3600s): ci@runner-7 (pid 4242)" in out
    assert other.lease.released and current(world) is None


def test_break_lease_takes_over_a_stale_lease_and_the_record_says_so(world: World) -> None:
    hold(world)
    world.env.clock.advance(STALE_S / 2)
    world.services.lease = LeaseOptions("deploy", break_lease=True)
    with pytest.raises(LeaseHeld, match="only takes over a lease not renewed for 120s"):
        deploy_now(world, "2025.05.01-broke")
    world.env.clock.advance(STALE_S)
    world.services.lease = LeaseOptions("deploy")
    with pytest.raises(LeaseHeld, match=r"STALE \(not renewed for \d+s; --break-lease takes it over\)"):
        deploy_now(world, "2025.05.01-broke")
    world.services.lease = LeaseOptions("deploy", break_lease=True)
    result = deploy_now(world, "2025.05.01-broke")
    assert result is not None and result.succeeded
    assert "lease: broke the stale lease of ci@runner-7 (pid 4242, `deploy`" in world.out.getvalue()
    record = world.services.store.load(result.release_id).extra["lease_broken"]
    assert record["broken"]["holder"] == "ci@runner-7" and record["broken"]["pid"] == 4242
    assert record["by"] == who() and record["at"]
    assert current(world) is None


@pytest.mark.parametrize("on_interrupt", ["ask", "raise"])
def test_ctrl_c_releases_the_lease(world: World, on_interrupt: str) -> None:
    world.services.on_interrupt = on_interrupt  # type: ignore[assignment]
    seen: list[Any] = []
    world.services.extra_reporters.append(During(lambda: seen.append(current(world))))
    world.services.extra_reporters.append(CtrlC())
    if on_interrupt == "raise":
        with pytest.raises(KeyboardInterrupt):
            world.deploy("2025.05.01-ctrlc")
    else:
        result = world.deploy("2025.05.01-ctrlc")  # no terminal: Ctrl-C detaches
        assert result is not None and result.detached
    assert seen and seen[0] is not None  # held while it ran
    assert current(world) is None  # and released on Ctrl-C


def test_a_holder_whose_lease_is_taken_over_starts_no_new_wave_and_says_so(world: World) -> None:
    first_wave: list[int] = []

    def take_over(event: Event) -> None:
        if isinstance(event, WaveFinished) and not first_wave:
            first_wave.append(event.wave)
            found = leases(world).read("production")
            assert found is not None
            # someone broke it (as --break-lease would): the holder's next If-Match renewal fails
            leases(world).replace(replace(found[0], holder="mallory@elsewhere"), found[1])

    class Hook:
        def publish(self, event: Event) -> None:
            take_over(event)

    world.services.extra_reporters.append(Hook())
    result = world.deploy("2025.05.01-lost")
    assert result is not None and not result.succeeded
    assert {g.wave for g in result.groups if g.outcome == "succeeded"} == set(first_wave)
    assert {g.outcome for g in result.groups if g.wave != first_wave[0]} == {"not-started"}
    assert "lease lost: mallory@elsewhere" in world.out.getvalue()
    assert current(world).holder == "mallory@elsewhere"  # not deleted at the end: it is not ours


def test_status_shows_the_lease(world: World) -> None:
    assert world.deploy("2025.05.01-st") is not None
    line = commands.lease_line("production", world.services)
    assert line == "release lease of target 'production': free"
    hold(world)
    world.env.clock.advance(STALE_S + 5)
    commands.status(world.fleet, "production", world.services, None)
    out = world.out.getvalue()
    assert "ci@runner-7 (pid 4242) holds the release lease of target 'production': `deploy` release " in out
    assert "STALE (not renewed for 125s" in out
