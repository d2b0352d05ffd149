"""The instance policy of `fab iam-policy` allows what the workers do on SQS: kombu's SQS transport (the one
Celery's worker and ValidateService's canary use) declares, sends to, receives from, acknowledges and requeues
on each group's queue and on an instance's canary queue, on moto; moto's recorder sees kombu's own boto3
calls, and each must be allowed by the instance policy, and fails without any action the policy lists."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection
from moto import mock_aws
from moto.moto_api import recorder

from deploytool import iam
from deploytool.config import CodeDeployTarget, load_fleet
from tests.iam_eval import Call, Facts, denied, moto_calls, policy_actions, requests, used_actions, without_action

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "123456789012"  # moto's and the sample fleet's


@pytest.fixture
def instance_policy(tmp_path: Path) -> dict[str, object]:
    text = (ROOT / "deploy.toml").read_text().replace('queues = ["reports"]', 'queues = ["reports", "reports.slow"]')
    (tmp_path / "deploy.toml").write_text(text)
    shutil.copytree(ROOT / "sample_app", tmp_path / "sample_app")
    fleet = load_fleet(tmp_path / "deploy.toml")
    target = fleet.targets["production"]
    assert isinstance(target, CodeDeployTarget)
    scope = iam.scope_for(fleet, target, database="d", workgroup="w", output_location="s3://b/p/")
    return iam.policy("instance", scope)


@pytest.fixture
def aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.chdir(tmp_path)  # moto's recorder writes ./moto_recording
    with mock_aws():
        yield


def kombu_calls(queues: list[str]) -> list[Call]:
    """The SQS calls kombu makes for `work` on these queues, as moto's recorder saw them."""
    recorder.reset_recording()
    recorder.start_recording()
    try:
        work(queues)
    finally:
        recorder.stop_recording()
    calls = moto_calls(recorder.download_recording())
    recorder.reset_recording()
    return calls


def work(queues: list[str]) -> None:
    """What a worker and ValidateService do through kombu on each queue: declare it (creating it when missing),
    send, receive, acknowledge, and give a message back (a requeue: the visibility set to 0)."""
    with Connection("sqs://", transport_options={"region": "us-east-1", "visibility_timeout": 1800}) as conn:
        for name in queues:
            queue = conn.SimpleQueue(name)
            queue.put({"task": name})
            queue.put({"task": name})
            queue.get(timeout=5).ack()
            queue.get(timeout=5).requeue()
            queue.close()


def test_kombu_on_the_fleets_queues_is_allowed_by_the_instance_policy(
    instance_policy: dict[str, object], aws: None
) -> None:
    recording = kombu_calls(["email", "reports", "reports.slow", "video", "deploytool-canary-ip-10-0-0-1"])
    assert {c.operation for c in recording} >= {
        "ListQueues",
        "CreateQueue",
        "GetQueueAttributes",
        "SendMessage",
        "ReceiveMessage",
        "DeleteMessage",
        "ChangeMessageVisibility",
    }
    assert any(c.params.get("QueueName") == "reports-slow" for c in recording)  # kombu's name for reports.slow
    facts = Facts("us-east-1", ACCOUNT)
    wanted = requests(recording, facts)
    assert denied(instance_policy, wanted) == []
    sqs_actions = {a for a in policy_actions(instance_policy) if a.startswith("sqs:")}
    used = used_actions(wanted)
    assert sqs_actions == used
    for action in sorted(used):
        assert denied(without_action(instance_policy, action), wanted), action


def test_another_apps_queue_is_denied(instance_policy: dict[str, object], aws: None) -> None:
    found = denied(instance_policy, requests(kombu_calls(["billing"]), Facts("us-east-1", ACCOUNT)))
    assert found and all(":billing" in line for line in found)
