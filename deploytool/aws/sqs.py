"""SQS gateway: queue depths (the sandbox's broker is moto's SQS; Celery itself talks to it via kombu)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from deploytool.aws.session import AwsSession, describe_aws_error, error_code


def sqs_queue_name(queue: str) -> str:
    """The SQS name kombu gives a Celery queue: '.' becomes '-' (a '.fifo' suffix stays), no prefix."""
    if queue.endswith(".fifo"):
        return queue[: -len(".fifo")].replace(".", "-") + ".fifo"
    return queue.replace(".", "-")


@dataclass(frozen=True)
class QueueDepth:
    visible: int  # waiting to be received
    in_flight: int  # received and not deleted yet (running, or held until the visibility timeout)


class SqsGateway:
    def __init__(self, session: AwsSession) -> None:
        self.client = session.client("sqs")

    def depths(self, names: Sequence[str]) -> dict[str, QueueDepth]:
        """Approximate depths of the named queues that exist (missing ones are left out)."""
        out: dict[str, QueueDepth] = {}
        for name in names:
            try:
                url = self.client.get_queue_url(QueueName=name)["QueueUrl"]
                attrs = self.client.get_queue_attributes(
                    QueueUrl=url,
                    AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                )["Attributes"]
            except ClientError as exc:
                if error_code(exc) in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
                    continue
                raise describe_aws_error(exc, f"SQS queue {name}") from exc
            except BotoCoreError as exc:
                raise describe_aws_error(exc, f"SQS queue {name}") from exc
            out[name] = QueueDepth(
                int(attrs.get("ApproximateNumberOfMessages", 0)),
                int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
            )
        return out

    def attributes(self, name: str, attribute_names: Sequence[str]) -> tuple[str, dict[str, str]] | None:
        """(queue URL, the named attributes) of a queue, or None when no queue has that name."""
        try:
            url = str(self.client.get_queue_url(QueueName=name)["QueueUrl"])
            attrs = self.client.get_queue_attributes(QueueUrl=url, AttributeNames=list(attribute_names))
        except ClientError as exc:
            if error_code(exc) in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
                return None
            raise describe_aws_error(exc, f"SQS queue {name}") from exc
        except BotoCoreError as exc:
            raise describe_aws_error(exc, f"SQS queue {name}") from exc
        return url, {str(k): str(v) for k, v in attrs.get("Attributes", {}).items()}
