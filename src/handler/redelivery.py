"""What becomes of a queue message that is not simply acknowledged: parked in the dead-letter queue with its reason,
or hidden for a backoff that grows with its receive count (docs/failure-handling.md, "A ZEGO outage").
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from handler import aws_clients, settings
from handler.deadline import Deadline
from handler.errors import OutOfTime
from handler.observability import MetricName, emit, logger

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import ChangeMessageVisibilityBatchRequestEntryTypeDef, MessageAttributeValueTypeDef

DETAIL_MAX_CHARACTERS = 1000
PARK_SECONDS_NEEDED = 1.0
BACKOFF_FIRST_SECONDS = 60
BACKOFF_MAX_SECONDS = 600
"""A message ZEGO failed is back after 1, 2, 4, 8, then every 10 minutes (docs/failure-handling.md, "A ZEGO outage")."""
BACKOFF_JITTER = 0.2
"""Each wait is cut by up to a fifth at random, so messages failed together do not all come back together."""


def receive_count(record: SQSRecord) -> int | None:
    """SQS's ApproximateReceiveCount; None when the record has no attributes (a hand-made event)."""
    value = (record.raw_event.get("attributes") or {}).get("ApproximateReceiveCount")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def source_message_id(record: SQSRecord) -> str:
    """The id of the message as first sent: deferrals keep it, so one kickout can be followed through them."""
    attribute = record.message_attributes["SourceMessageId"]
    return attribute.string_value if attribute is not None and attribute.string_value else record.message_id


def park_or_say_why(record: SQSRecord, reason: str, detail: str, deadline: Deadline) -> None:
    """Park the message; when that fails, its own line and metric (ParkingFailed), and SQS keeps the message."""
    try:
        park(record, reason, detail, deadline)
    except Exception as error:
        emit(MetricName.PARKING_FAILED, 1)
        logger.error(
            "parking failed: the message stays in the queue",
            extra={
                "message_id": record.message_id,
                "reason": reason,
                "error": f"{type(error).__name__}: {str(error)[:DETAIL_MAX_CHARACTERS]}",
            },
        )
        raise


def park(record: SQSRecord, reason: str, detail: str, deadline: Deadline) -> None:
    """Copy the message, body unchanged, to the dead-letter queue; raises (so SQS keeps it) when that fails."""
    if not deadline.allows(PARK_SECONDS_NEEDED):
        # Killed mid-park, the batch would come back whole and parked messages be parked again: report it instead.
        raise OutOfTime("no time left in this invocation to park the message")
    dlq_url = settings.current().dlq_url
    if dlq_url is None:
        raise settings.ConfigurationError(
            "invalid configuration: KICKOUT_DLQ_URL: is not set (needed to park messages)"
        )
    attributes: dict[str, MessageAttributeValueTypeDef] = {
        "KickoutFailure": {"DataType": "String", "StringValue": reason},
        "KickoutDetail": {"DataType": "String", "StringValue": _printable(detail)[:DETAIL_MAX_CHARACTERS] or reason},
        "SourceMessageId": {"DataType": "String", "StringValue": source_message_id(record)},
    }
    aws_clients.sqs().send_message(QueueUrl=dlq_url, MessageBody=record.body, MessageAttributes=attributes)
    logger.warning("message parked", extra={"message_id": record.message_id, "reason": reason})


def backoff_seconds(receives: int | None, jitter: Callable[[], float] = random.random) -> int:
    """How long a message ZEGO failed stays hidden after its `receives`-th receive: doubling from 1 to 10 minutes."""
    doublings = min(max(1, receives or 1), 16) - 1
    nominal = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS << doublings)
    return round(nominal * (1 - BACKOFF_JITTER * jitter()))


def hide(records: Sequence[SQSRecord], deadline: Deadline) -> None:
    """Hide each message for its backoff (by its receive count), by ChangeMessageVisibility.

    When SQS refuses, the message simply comes back after the queue's visibility timeout.
    """
    by_queue: dict[str, list[ChangeMessageVisibilityBatchRequestEntryTypeDef]] = defaultdict(list)
    for record in records:
        by_queue[record.event_source_arn].append(
            {
                "Id": str(len(by_queue[record.event_source_arn])),
                "ReceiptHandle": record.receipt_handle,
                "VisibilityTimeout": backoff_seconds(receive_count(record)),
            }
        )
    if not by_queue or not deadline.allows(PARK_SECONDS_NEEDED):
        return
    for queue_arn, entries in by_queue.items():
        try:
            answer = aws_clients.sqs().change_message_visibility_batch(QueueUrl=_queue_url(queue_arn), Entries=entries)
            refused = len(answer.get("Failed", []))
        except Exception as error:
            logger.warning("backoff failed", extra={"error": type(error).__name__, "messages": len(entries)})
            refused = len(entries)
        emit(MetricName.MESSAGES_BACKED_OFF, len(entries) - refused)
        if refused:
            emit(MetricName.BACKOFF_FAILED, refused)


def _queue_url(queue_arn: str) -> str:
    """arn:aws:sqs:<region>:<account>:<name> -> the queue's URL on this client's endpoint."""
    _, _, _, _, account, name = queue_arn.split(":", 5)
    return f"{aws_clients.sqs().meta.endpoint_url}/{account}/{name}"


def _printable(text: str) -> str:
    """SQS refuses attribute values with control characters (a field name can hold any): escape them."""
    return "".join(character if character.isprintable() else f"\\x{ord(character):02x}" for character in text)
