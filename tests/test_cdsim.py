"""The CodeDeploy simulator itself: requests validated by botocore, batches per config, events, limits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ParamValidationError

from deploytool.rollout.backend import LIFECYCLE_EVENTS
from deploytool.rollout.clock import SimulatedClock
from tests.cdsim import CodeDeploySim, install

ROLE = "arn:aws:iam::123456789012:role/CodeDeploy"
REV = {"revisionType": "S3", "s3Location": {"bucket": "b", "key": "p/app/v1/x.tgz", "bundleType": "tgz", "eTag": "e1"}}


def even(seconds: float) -> Any:
    return lambda group, instance, mode: [(e, seconds / 7) for e in LIFECYCLE_EVENTS]


@pytest.fixture
def sim() -> CodeDeploySim:
    return CodeDeploySim(
        SimulatedClock(),
        fleet={"asg-9": [f"i-{n}" for n in range(9)], "asg-1": ["i-solo"]},
        durations=even(70),
        start_delay_s=0,
    )


@pytest.fixture
def client(sim: CodeDeploySim) -> Iterator[Any]:
    session = boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    install(sim, session)
    client = session.client("codedeploy")
    client.create_application(applicationName="app")
    yield client


def group(client: Any, config: str, asg: str = "asg-9", name: str = "g") -> None:
    client.create_deployment_group(
        applicationName="app",
        deploymentGroupName=name,
        serviceRoleArn=ROLE,
        autoScalingGroups=[asg],
        deploymentConfigName=config,
    )


def in_flight_over_time(client: Any, sim: CodeDeploySim, deployment_id: str) -> list[int]:
    seen = []
    while True:
        info = client.get_deployment(deploymentId=deployment_id)["deploymentInfo"]
        if info["status"] in ("Succeeded", "Failed", "Stopped"):
            return seen
        seen.append(info["deploymentOverview"]["InProgress"])
        sim.clock.sleep(60)  # an instance's time on a first install: 70 s less ApplicationStop's 10


@pytest.mark.parametrize(
    "config, hosts, batches",
    [
        ("CodeDeployDefault.AllAtOnce", None, [9]),
        ("CodeDeployDefault.HalfAtATime", None, [4, 4, 1]),
        ("CodeDeployDefault.OneAtATime", None, [1] * 9),
        ("custom-hosts-6", {"type": "HOST_COUNT", "value": 6}, [3, 3, 3]),  # the API reference's example
        ("custom-percent-40", {"type": "FLEET_PERCENT", "value": 40}, [5, 4]),  # ceil(3.6) = 4 healthy: 5 at a time
    ],
)
def test_instances_go_in_batches_per_deployment_config(
    client: Any, sim: CodeDeploySim, config: str, hosts: dict[str, Any] | None, batches: list[int]
) -> None:
    if hosts:
        client.create_deployment_config(deploymentConfigName=config, minimumHealthyHosts=hosts)
    group(client, config)
    deployment_id = client.create_deployment(applicationName="app", deploymentGroupName="g", revision=REV)[
        "deploymentId"
    ]
    assert in_flight_over_time(client, sim, deployment_id) == batches
    assert client.get_deployment(deploymentId=deployment_id)["deploymentInfo"]["status"] == "Succeeded"


def test_a_minimum_at_or_above_the_fleet_fails_at_once(client: Any, sim: CodeDeploySim) -> None:
    client.create_deployment_config(deploymentConfigName="c", minimumHealthyHosts={"type": "HOST_COUNT", "value": 9})
    group(client, "c")
    deployment_id = client.create_deployment(applicationName="app", deploymentGroupName="g", revision=REV)[
        "deploymentId"
    ]
    info = client.get_deployment(deploymentId=deployment_id)["deploymentInfo"]
    assert info["status"] == "Failed" and info["errorInformation"]["code"] == "HEALTH_CONSTRAINTS_INVALID"


def test_botocore_validates_requests_before_the_simulator_sees_them(client: Any, sim: CodeDeploySim) -> None:
    before = sum(sim.calls.values())
    with pytest.raises(ParamValidationError):
        client.create_deployment(applicationName="app", deploymentGroupName="g", revision={"revisionType": 5})
    assert sum(sim.calls.values()) == before


def test_lifecycle_events_in_agent_order_and_no_application_stop_on_first_install(
    client: Any, sim: CodeDeploySim
) -> None:
    group(client, "CodeDeployDefault.AllAtOnce", asg="asg-1")
    first = client.create_deployment(applicationName="app", deploymentGroupName="g", revision=REV)["deploymentId"]
    sim.clock.sleep(35)
    target = client.batch_get_deployment_targets(deploymentId=first, targetIds=["i-solo"])["deploymentTargets"][0]
    events = target["instanceTarget"]["lifecycleEvents"]
    assert [e["lifecycleEventName"] for e in events] == list(LIFECYCLE_EVENTS)
    assert [e["status"] for e in events] == [
        "Skipped",
        "Succeeded",
        "Succeeded",
        "Succeeded",
        "InProgress",
        "Pending",
        "Pending",
    ]
    sim.clock.sleep(100)
    second = client.create_deployment(applicationName="app", deploymentGroupName="g", revision=REV)["deploymentId"]
    sim.clock.sleep(5)
    target = client.batch_get_deployment_targets(deploymentId=second, targetIds=["i-solo"])["deploymentTargets"][0]
    assert target["instanceTarget"]["lifecycleEvents"][0]["status"] == "InProgress"  # ApplicationStop runs now


def test_service_limits(client: Any, sim: CodeDeploySim) -> None:
    group(client, "CodeDeployDefault.OneAtATime")
    first = client.create_deployment(applicationName="app", deploymentGroupName="g", revision=REV)["deploymentId"]
    with pytest.raises(ClientError, match="DeploymentLimitExceededException"):
        client.create_deployment(applicationName="app", deploymentGroupName="g", revision=REV)
    with pytest.raises(ClientError, match="BatchLimitExceededException"):
        client.batch_get_deployments(deploymentIds=[first] * 26)
    client.stop_deployment(deploymentId=first, autoRollbackEnabled=False)
    sim.clock.sleep(70)  # the instance in flight ends its event: the stop is done
    with pytest.raises(ClientError, match="DeploymentAlreadyCompletedException"):
        client.stop_deployment(deploymentId=first)
    info = client.get_deployment(deploymentId=first)["deploymentInfo"]
    assert info["status"] == "Stopped" and info["deploymentOverview"]["Skipped"] == 8


def test_get_deployment_config_reports_one_at_a_time_as_most_concurrency(client: Any) -> None:
    """The API reference: GetDeploymentConfig gives CodeDeployDefault.OneAtATime the type MOST_CONCURRENCY,
    value 1 (a type no CreateDeploymentConfig may use)."""
    info = client.get_deployment_config(deploymentConfigName="CodeDeployDefault.OneAtATime")["deploymentConfigInfo"]
    assert info["minimumHealthyHosts"] == {"type": "MOST_CONCURRENCY", "value": 1}
    assert info["computePlatform"] == "Server"
    with pytest.raises(ClientError, match="InvalidMinimumHealthyHostValueException"):
        client.create_deployment_config(
            deploymentConfigName="c", minimumHealthyHosts={"type": "MOST_CONCURRENCY", "value": 1}
        )


def test_a_group_without_instances_fails_its_deployment_with_no_instances(client: Any, sim: CodeDeploySim) -> None:
    sim._fleet = {**dict(sim._fleet), "asg-empty": []}  # type: ignore[arg-type]
    group(client, "CodeDeployDefault.OneAtATime", asg="asg-empty")
    client.update_deployment_group(
        applicationName="app",
        currentDeploymentGroupName="g",
        autoRollbackConfiguration={"enabled": True, "events": ["DEPLOYMENT_FAILURE"]},
    )
    deployment_id = client.create_deployment(applicationName="app", deploymentGroupName="g", revision=REV)[
        "deploymentId"
    ]  # CreateDeployment itself is accepted
    info = client.get_deployment(deploymentId=deployment_id)["deploymentInfo"]
    assert info["status"] == "Failed"
    assert info["errorInformation"]["code"] == "NO_INSTANCES"
    assert info["errorInformation"]["message"].startswith("The deployment failed because no instances were found")
    assert sum(info["deploymentOverview"].values()) == 0
    assert "rollbackDeploymentId" not in (info.get("rollbackInfo") or {})  # no instance was touched


def test_stop_deployment_is_pending_until_the_instances_in_flight_end_their_event(
    client: Any, sim: CodeDeploySim
) -> None:
    group(client, "CodeDeployDefault.HalfAtATime")
    first = client.create_deployment(applicationName="app", deploymentGroupName="g", revision=REV)["deploymentId"]
    sim.clock.sleep(55)  # a first install: 6 events of 10 s; the 4 in flight are in ValidateService (50..60 s)
    answer = client.stop_deployment(deploymentId=first, autoRollbackEnabled=False)
    assert answer["status"] == "Pending"
    info = client.get_deployment(deploymentId=first)["deploymentInfo"]
    assert info["status"] == "InProgress" and info["deploymentOverview"]["InProgress"] == 4
    assert client.stop_deployment(deploymentId=first)["status"] == "Pending"  # asked again: still stopping
    sim.clock.sleep(5)  # ValidateService ends at 60 s
    info = client.get_deployment(deploymentId=first)["deploymentInfo"]
    assert info["status"] == "Stopped" and info["errorInformation"]["code"] == "MANUAL_STOP"
    assert (info["deploymentOverview"]["Failed"], info["deploymentOverview"]["Skipped"]) == (4, 5)
    target = client.batch_get_deployment_targets(deploymentId=first, targetIds=["i-0"])["deploymentTargets"][0]
    statuses = [e["status"] for e in target["instanceTarget"]["lifecycleEvents"]]
    assert statuses[-1] == "Failed" and statuses[-2] == "Succeeded"  # its current event ran to its end


def test_stop_deployment_with_nothing_in_flight_succeeds_at_once(client: Any, sim: CodeDeploySim) -> None:
    sim.start_delay_s = 10
    group(client, "CodeDeployDefault.OneAtATime")
    first = client.create_deployment(applicationName="app", deploymentGroupName="g", revision=REV)["deploymentId"]
    assert client.stop_deployment(deploymentId=first, autoRollbackEnabled=False)["status"] == "Succeeded"
    assert client.get_deployment(deploymentId=first)["deploymentInfo"]["status"] == "Stopped"


@pytest.mark.slow
def test_throttling_share_is_exact_and_counted(sim: CodeDeploySim, client: Any) -> None:
    sim.throttle_rate = 0.5
    sim.calls.clear()
    for _ in range(10):
        client.list_deployment_configs()
    assert sim.throttled["ListDeploymentConfigs"] == sim.calls["ListDeploymentConfigs"] // 2
    assert sim.calls["ListDeploymentConfigs"] > 10  # the throttled ones were retried by botocore


def test_application_stop_fails_only_where_a_previous_revision_is_and_can_be_ignored(
    client: Any, sim: CodeDeploySim
) -> None:
    group(client, "CodeDeployDefault.AllAtOnce", asg="asg-1")
    sim.inject_failure("i-solo", "ApplicationStop", error_code="ScriptMissing")

    def run(**extra: Any) -> dict[str, Any]:
        did = client.create_deployment(applicationName="app", deploymentGroupName="g", revision=REV, **extra)
        sim.clock.sleep(200)
        info = client.get_deployment(deploymentId=did["deploymentId"])["deploymentInfo"]
        target = client.batch_get_deployment_targets(deploymentId=info["deploymentId"], targetIds=["i-solo"])
        return {"info": info, "events": target["deploymentTargets"][0]["instanceTarget"]["lifecycleEvents"]}

    first = run()  # a first install has no ApplicationStop: nothing to fail
    assert first["info"]["status"] == "Succeeded" and first["events"][0]["status"] == "Skipped"
    second = run()
    assert second["info"]["status"] == "Failed"
    stop = second["events"][0]
    assert (stop["status"], stop["diagnostics"]["errorCode"]) == ("Failed", "ScriptMissing")
    assert (
        stop["diagnostics"]["message"]
        == "Script does not exist at specified location: deploytool/hooks/applicationstop.sh"
    )
    assert {e["status"] for e in second["events"][1:]} == {"Skipped"}
    third = run(ignoreApplicationStopFailures=True)
    assert third["info"]["status"] == "Succeeded" and third["info"]["ignoreApplicationStopFailures"] is True
    assert [e["status"] for e in third["events"]] == ["Failed"] + ["Succeeded"] * 6  # it went on


def deploy_to_end(client: Any, sim: CodeDeploySim, key: str) -> dict[str, Any]:
    rev = {"revisionType": "S3", "s3Location": {**REV["s3Location"], "key": key}}
    deployment_id = client.create_deployment(applicationName="app", deploymentGroupName="g", revision=rev)[
        "deploymentId"
    ]
    while (info := client.get_deployment(deploymentId=deployment_id)["deploymentInfo"])["status"] not in (
        "Succeeded",
        "Failed",
        "Stopped",
    ):
        sim.clock.sleep(10)
    return dict(info)


def in_progress(client: Any, deployment_id: str) -> list[str]:
    ids = client.list_deployment_targets(deploymentId=deployment_id, targetFilters={"TargetStatus": ["InProgress"]})
    return list(ids["targetIds"])


def test_failed_instances_are_deployed_first_next_time_and_do_not_count_toward_the_minimum(
    client: Any, sim: CodeDeploySim
) -> None:
    """HOST_COUNT 6 of 9: three at a time. i-7 and i-8 fail the first deployment (7 successes: it succeeds); in the
    next one they are unhealthy: they start first, and with only 7 healthy instances one healthy one joins them."""
    client.create_deployment_config(
        deploymentConfigName="hosts-6", minimumHealthyHosts={"type": "HOST_COUNT", "value": 6}, computePlatform="Server"
    )
    group(client, "hosts-6")
    for iid in ("i-7", "i-8"):
        sim.inject_failure(iid)
    first = deploy_to_end(client, sim, "p/app/v1/x.tgz")
    assert (first["status"], first["deploymentOverview"]["Failed"]) == ("Succeeded", 2)
    sim.failures.clear()
    rev = {"revisionType": "S3", "s3Location": {**REV["s3Location"], "key": "p/app/v2/x.tgz"}}
    second = client.create_deployment(applicationName="app", deploymentGroupName="g", revision=rev)["deploymentId"]
    sim.clock.sleep(5)
    assert sorted(in_progress(client, second)) == ["i-0", "i-7", "i-8"]
    while client.get_deployment(deploymentId=second)["deploymentInfo"]["status"] != "Succeeded":
        sim.clock.sleep(10)
    assert {sim.instance_health[f"i-{n}"] for n in range(9)} == {"Healthy"}


def test_a_failed_last_instance_goes_first_next_time_and_its_failure_fails_one_at_a_time(
    client: Any, sim: CodeDeploySim
) -> None:
    """OneAtATime: a failure of the last instance still succeeds; next time that instance is unhealthy, goes first,
    and failing again leaves 8 healthy, not above the minimum of 8: the deployment fails, the rest Skipped."""
    group(client, "CodeDeployDefault.OneAtATime")
    sim.inject_failure("i-8")
    first = deploy_to_end(client, sim, "p/app/v1/x.tgz")
    assert (first["status"], first["deploymentOverview"]["Succeeded"]) == ("Succeeded", 8)
    second = deploy_to_end(client, sim, "p/app/v2/x.tgz")
    assert second["status"] == "Failed" and second["errorInformation"]["code"] == "HEALTH_CONSTRAINTS"
    overview = second["deploymentOverview"]
    assert (overview["Failed"], overview["Succeeded"], overview["Skipped"]) == (1, 0, 8)


def test_a_second_deployment_while_one_is_active_is_refused_as_codedeploy_does(client: Any, sim: CodeDeploySim) -> None:
    group(client, "CodeDeployDefault.AllAtOnce")
    first = client.create_deployment(applicationName="app", deploymentGroupName="g", revision=REV)["deploymentId"]
    with pytest.raises(ClientError) as refused:
        client.create_deployment(applicationName="app", deploymentGroupName="g", revision=REV)
    error = refused.value.response["Error"]
    assert error["Code"] == "DeploymentLimitExceededException"
    assert error["Message"] == f"The Deployment Group 'g' already has an active Deployment '{first}'"
    sim.clock.sleep(100)  # the first one ends: the group takes the next
    assert client.get_deployment(deploymentId=first)["deploymentInfo"]["status"] == "Succeeded"
    client.create_deployment(applicationName="app", deploymentGroupName="g", revision=REV)
