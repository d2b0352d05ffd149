"""The tagging reporter on a backend that is not CodeDeploy (the in-memory FakeBackend of tests/fakes.py),
run by the real orchestrator on a simulated clock, with EC2 replaced at its seam by an in-memory tag store."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from deploytool.aws.ec2 import InstanceInfo
from deploytool.model import Revision
from deploytool.rollout.orchestrator import Orchestrator
from deploytool.rollout.plan import rollout_plan
from deploytool.rollout.tagger import DeploymentTagger
from tests.builders import make_fleet
from tests.fakes import FakeBackend, FakeClock, Script

FLEET = make_fleet(
    [{"name": "ok", "wave": 0}, {"name": "partial", "strategy": "AllAtOnce", "wave": 0}, {"name": "rolled", "wave": 0}]
)
WHEN = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


class MemoryTags:
    """EC2's tags, in memory: CreateTags merges, DescribeInstances reads them back."""

    def __init__(self) -> None:
        self.tags: dict[str, dict[str, str]] = {}
        self.calls: list[tuple[tuple[str, ...], dict[str, str]]] = []

    def create_tags(self, instance_ids: Iterable[str], tags: Mapping[str, str]) -> int:
        ids = tuple(sorted(instance_ids))
        self.calls.append((ids, dict(tags)))
        for i in ids:
            self.tags.setdefault(i, {}).update(tags)
        return 1

    def describe_instances(self, instance_ids: Sequence[str]) -> list[InstanceInfo]:
        return [InstanceInfo(i, "us-east-1a", "running", None, "on-demand", self.tags.get(i, {})) for i in instance_ids]


def run(mode: str = "deploy") -> tuple[MemoryTags, DeploymentTagger, list[str]]:
    clock = FakeClock()
    backend = FakeBackend(
        clock,
        scripts={
            "ok": Script(instances=3),
            "partial": Script(instances=3, fail=1, fail_status="Succeeded"),  # what CodeDeploy calls a success
            "rolled": Script(instances=2, fail=1, rollback_s=30),
        },
    )
    ec2, said = MemoryTags(), []
    tagger = DeploymentTagger(ec2, backend, now=lambda: WHEN, say=said.append)
    revision = Revision("b", "k/v2/x.tgz", '"e"', "v2", "x")
    plan = rollout_plan(
        release_id="20250501T120000Z-v2",
        version="v2",
        target="production",
        groups=FLEET.groups,
        revision=revision if mode == "deploy" else None,
        mode=mode,
    )  # type: ignore[arg-type]
    result = Orchestrator(backend, plan, reporter=tagger, clock=clock).run()
    assert {g.group: g.outcome for g in result.groups} == {"ok": "succeeded", "partial": "failed", "rolled": "failed"}
    return ec2, tagger, said


def test_any_backend_succeeded_instances_are_tagged_failed_and_rolled_back_ones_are_not() -> None:
    ec2, tagger, said = run()
    expected = {
        "deploytool:version": "v2",
        "deploytool:release": "20250501T120000Z-v2",
        "deploytool:deployed-at": "2025-05-01T12:00:00Z",
    }
    assert ec2.tags == {i: expected for i in ("i-ok-0", "i-ok-1", "i-ok-2", "i-partial-1", "i-partial-2")}
    assert tagger.tagged == {"ok": ("i-ok-0", "i-ok-1", "i-ok-2"), "partial": ("i-partial-1", "i-partial-2")}
    assert len(ec2.calls) == 2 and tagger.calls == 2  # one per tagged group; the rolled-back group needs none
    assert said == [
        "tags: ok: 3 instance(s) tagged deploytool:version=v2",
        "tags: partial: 2 instance(s) tagged deploytool:version=v2",
    ]


def test_a_restart_changes_no_version_and_tags_nothing() -> None:
    ec2, tagger, said = run(mode="restart")
    assert ec2.calls == [] and tagger.count == 0 and said == []
