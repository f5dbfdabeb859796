"""What the tools, tests and benchmarks read off an SQS queue (moto's, in process or as a server)."""

from __future__ import annotations

from typing import Any

DRAIN_MAX_RECEIVES = 10_000
"""A queue drained is read at most this many times (100,000 messages, far more than any test or demo parks): a
function that kept sending could not hang the caller."""


def drained(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message in the queue, with its attributes, each deleted once received (a second call does not see it)."""
    messages: list[dict[str, Any]] = []
    for _ in range(DRAIN_MAX_RECEIVES):
        batch = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=30
        ).get("Messages", [])
        if not batch:
            break
        messages.extend(dict(message) for message in batch)
        for message in batch:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return messages


def queue_is_empty(sqs: Any, queue_url: str) -> bool:
    """Whether the queue holds nothing: no message visible, in flight or delayed."""
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    counts = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return all(int(count) == 0 for count in counts.values())
