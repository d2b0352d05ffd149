"""The expected version is each group's last GOOD release: athena/reconcile.sql on DuckDB over a moto fleet and
release manifests in moto S3, through `run_reconcile` as `fab reconcile [--json] [--fix]` runs it.

A release whose outcome for a group is failed, rolled back, stopped, not started or still running is never
what that group is expected to run; the report says which release that was; `--fix` never redeploys it."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from deploytool.config import Fleet
from deploytool.errors import DriftFound, UsageError
from deploytool.model import Revision
from deploytool.reconcile.command import run_reconcile
from deploytool.reconcile.report import ReconcileReport
from deploytool.rollout.backend import DeployRequest
from deploytool.rollout.tags import FinishedDeployment, tag_deployments
from deploytool.targets import settings_for
from tests.builders import make_fleet
from tests.fakes import FakeBackend
from tests.reconcile_support import APP, BUCKET, PREFIX, TARGETS, MotoFleet, fake_backend, fix_runner, mocked_aws

V1, V2, V3 = "20240506T080000Z-v1", "20240506T083000Z-v2", "20240506T084500Z-v3"


@pytest.fixture
def mf(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoFleet]:
    with mocked_aws(monkeypatch) as session:
        yield MotoFleet(session)


def three_groups(mf: MotoFleet, tmp_path: Path) -> Fleet:
    fleet = make_fleet(["email", "video", "reports"], root=tmp_path, targets=TARGETS, asg="acme-{}-workers")
    for group, size in zip(fleet.groups, (2, 2, 1), strict=True):
        mf.create_group(group, size)
    return fleet


def release(
    mf: MotoFleet, fleet: Fleet, release_id: str, outcomes: Mapping[str, str | None] | None = None, **manifest: Any
) -> None:
    """A release as the rollout leaves it: the manifest with each group's outcome (default succeeded), and the
    version tags on the instances of the groups it succeeded for (a failed or rolled-back group keeps its old
    tags and revision). An outcome of None writes none (a manifest from before the field) and tags the group."""
    version = release_id.split("-", 1)[1]
    mf.write_release(release_id, version, fleet.groups, outcomes=outcomes, **manifest)
    backend = fake_backend(mf)
    finished = []
    for group in fleet.groups:
        if (outcomes or {}).get(group.name, "succeeded") not in ("succeeded", None):  # None: tagged, as it was
            continue
        revision = Revision(BUCKET, f"{PREFIX}/{APP}/{version}/x.tgz", '"e"', version, "0" * 64)
        deployment_id = backend.start(DeployRequest(group=group, revision=revision, release_id=release_id))
        finished.append(FinishedDeployment(group.name, deployment_id, version, release_id, mf.clock.wall()))
    tag_deployments(mf.ec2, backend, finished)
    mf.clock.advance(600)


def fab_reconcile(
    mf: MotoFleet,
    fleet: Fleet,
    tmp_path: Path,
    *,
    release: str = "",
    fix: FakeBackend | None = None,
) -> tuple[int, dict[str, Any], str, ReconcileReport | None]:
    """`fab reconcile --json [--release R] [--fix]`: (exit code, the JSON printed, the step summary, report)."""
    summary = tmp_path / "summary.md"
    summary.write_text("")
    settings = settings_for(fleet, "sandbox", mirror=str(tmp_path / "mirror"), release=release)
    out = StringIO()
    code, report = 0, None
    try:
        report = run_reconcile(
            fleet,
            settings,
            mf.services(),
            Console(file=out, width=300),
            as_json=True,
            env={"GITHUB_STEP_SUMMARY": str(summary)},
            fix=fix is not None,
            runner=fix_runner(fix) if fix else None,
            backend=fix,
        )
    except DriftFound as exc:
        code = exc.exit_code
    return code, json.loads(out.getvalue()), summary.read_text(), report


def groups_of(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["group"]: g for g in data["groups"]}


def test_a_failed_rolled_back_release_is_not_expected_and_the_report_names_it(mf: MotoFleet, tmp_path: Path) -> None:
    fleet = three_groups(mf, tmp_path)
    release(mf, fleet, V1)
    release(mf, fleet, V2, {"email": "rolled_back", "video": "rolled_back", "reports": "failed"})

    code, data, summary, report = fab_reconcile(mf, fleet, tmp_path)
    assert code == 0 and data["drift"] is False and data["status"] == "ok"
    by_group = groups_of(data)
    for name, said in (("email", "failed (rolled back)"), ("video", "failed (rolled back)"), ("reports", "failed")):
        g = by_group[name]
        assert (g["status"], g["expected_version"], g["release_id"]) == ("ok", "v1", V1)
        assert (g["latest_release_id"], g["expected_outcome"]) == (V2, "succeeded")
        assert g["remark"] == f"latest release {V2} {said}; expected = last good release {V1}"
        assert f"> {name}: latest release {V2} {said}; expected = last good release {V1}" in summary
    assert data["verdict"] == "every instance runs its expected version"
    assert report is not None and not report.has_drift


def test_outcomes_count_per_group(mf: MotoFleet, tmp_path: Path) -> None:
    """v2 succeeded for email only (video rolled back, reports never started): email is expected on v2, the
    others on v1. v3 then stops in video and is still running in email: it is expected nowhere."""
    fleet = three_groups(mf, tmp_path)
    release(mf, fleet, V1)
    release(mf, fleet, V2, {"email": "succeeded", "video": "rolled_back", "reports": "not_started"})
    release(mf, fleet, V3, {"email": "pending", "video": "stopped", "reports": "not_started"})

    code, data, _, _ = fab_reconcile(mf, fleet, tmp_path)
    assert code == 0, data
    by_group = groups_of(data)
    assert {n: (g["expected_version"], g["on_expected"], g["status"]) for n, g in by_group.items()} == {
        "email": ("v2", 2, "ok"),
        "video": ("v1", 2, "ok"),
        "reports": ("v1", 1, "ok"),
    }
    assert by_group["email"]["remark"] == (
        f"latest release {V3} has not finished (running, detached or interrupted); expected = last good release {V2}"
    )
    assert by_group["video"]["remark"] == f"latest release {V3} was stopped; expected = last good release {V1}"
    assert by_group["reports"]["remark"] == (
        f"latest release {V3} never started for this group; expected = last good release {V1}"
    )


def test_fix_after_a_failed_release_redeploys_the_last_good_revision_never_the_failed_one(
    mf: MotoFleet, tmp_path: Path
) -> None:
    fleet = three_groups(mf, tmp_path)
    release(mf, fleet, V1)
    release(mf, fleet, V2, {"email": "rolled_back", "video": "succeeded", "reports": "failed"})
    (launched,) = mf.scale(fleet.group("email"), 3)  # a replacement, untagged: email drifts

    backend = fake_backend(mf)
    code, data, _, report = fab_reconcile(mf, fleet, tmp_path, fix=backend)
    assert code == 0 and report is not None and not report.has_drift
    assert data["fix"]["requests"] == [{"group": "email", "release_id": V1, "instances": [launched]}]
    (request,) = backend.starts
    assert request.revision is not None and request.revision.version == "v1" and request.release_id == V1
    assert groups_of(data)["email"]["on_expected"] == 3


def test_fix_refuses_a_release_given_that_failed_for_the_group(mf: MotoFleet, tmp_path: Path) -> None:
    """`--release V2` still means "check against V2", and says V2 failed; `--fix` refuses to deploy it."""
    fleet = three_groups(mf, tmp_path)
    release(mf, fleet, V1)
    release(mf, fleet, V2, {"email": "rolled_back", "video": "succeeded", "reports": "failed"})

    code, data, _, _ = fab_reconcile(mf, fleet, tmp_path, release=V2)
    assert code == 3 and data["release"] == V2
    by_group = groups_of(data)
    assert (by_group["email"]["expected_version"], by_group["email"]["drifted"][0]["version"]) == ("v2", "v1")
    assert by_group["email"]["remark"] == f"release {V2} failed (rolled back) for this group"
    assert by_group["video"]["remark"] is None and by_group["video"]["status"] == "ok"

    backend = fake_backend(mf)
    with pytest.raises(UsageError) as refused:
        fab_reconcile(mf, fleet, tmp_path, release=V2, fix=backend)
    assert refused.value.exit_code == 2
    assert str(refused.value) == (
        f"--fix: refusing to redeploy a release that did not succeed for the group: email (release {V2} failed "
        f"(rolled back) there); reports (release {V2} failed there); without --release each group's last good "
        "release is expected"
    )
    assert backend.starts == []  # nothing was deployed


def test_no_release_at_all_is_nothing_to_check_not_every_instance_on_its_version(mf: MotoFleet, tmp_path: Path) -> None:
    fleet = three_groups(mf, tmp_path)
    code, data, summary, _ = fab_reconcile(mf, fleet, tmp_path)
    assert code == 0 and data["status"] == "nothing-to-check"
    assert data["verdict"] == "nothing to check: no release has succeeded on target sandbox yet"
    assert "every instance" not in json.dumps(data) + summary
    assert "**nothing to check: no release has succeeded on target sandbox yet**" in summary
    assert groups_of(data)["email"]["remark"] == "no release has deployed this group on target sandbox"

    release(mf, fleet, V1, {"email": "failed", "video": "succeeded", "reports": "failed"})
    code, data, _, _ = fab_reconcile(mf, fleet, tmp_path)
    assert code == 0 and data["status"] == "ok"
    assert data["verdict"] == (
        "every instance runs its expected version in video; not checked: "
        "email (no release has succeeded for it), reports (no release has succeeded for it)"
    )
    assert groups_of(data)["email"]["remark"] == (
        f"no release has succeeded for this group on target sandbox yet; latest release {V1} failed"
    )


def test_manifests_without_outcomes_count_by_their_recorded_deployment(mf: MotoFleet, tmp_path: Path) -> None:
    """Manifests written before `groups[].outcome`: a group counts as succeeded when its recorded deployment
    Succeeded; Failed is failed; with no deployment recorded the outcome is unknown, and not expected."""
    fleet = three_groups(mf, tmp_path)
    legacy = dict.fromkeys(("email", "video", "reports"), None)
    release(
        mf,
        fleet,
        V1,
        legacy,
        deployments={
            name: {"deployment_id": f"d-{name}", "status": "Succeeded", "rollback_deployment_id": None}
            for name in ("email", "video", "reports")
        },
    )
    mf.write_release(
        V2,
        "v2",
        fleet.groups,
        outcomes=legacy,
        deployments={"email": {"deployment_id": "d-e2", "status": "Failed", "rollback_deployment_id": "d-e3"}},
    )

    code, data, _, _ = fab_reconcile(mf, fleet, tmp_path)
    assert code == 0, data
    by_group = groups_of(data)
    assert {n: (g["expected_version"], g["latest_outcome"]) for n, g in by_group.items()} == {
        "email": ("v1", "failed"),
        "video": ("v1", None),
        "reports": ("v1", None),
    }
    assert (
        by_group["video"]["remark"] == f"latest release {V2} has no recorded outcome; expected = last good release {V1}"
    )


def test_the_terminal_report_says_which_release_failed_and_what_was_checked(mf: MotoFleet, tmp_path: Path) -> None:
    fleet = three_groups(mf, tmp_path)
    settings = settings_for(fleet, "sandbox", mirror=str(tmp_path / "mirror"))
    out = StringIO()
    run_reconcile(fleet, settings, mf.services(), Console(file=out, width=300), env={})
    assert "nothing to check: no release has succeeded on target sandbox yet" in out.getvalue()
    assert "every instance" not in out.getvalue()

    release(mf, fleet, V1)
    release(mf, fleet, V2, {"video": "rolled_back"})
    out = StringIO()
    run_reconcile(fleet, settings, mf.services(), Console(file=out, width=300), env={})
    lines = out.getvalue().splitlines()
    assert f"video: latest release {V2} failed (rolled back); expected = last good release {V1}" in lines
    assert lines[-1] == "every instance runs its expected version"
