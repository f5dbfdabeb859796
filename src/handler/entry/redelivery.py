"""What becomes of the queue messages that are not simply acknowledged, decided for a whole batch at once:

- deferred: sent again to the kickout queue with a short delay (no time or budget slot was left for them), the
  original's attributes and sender kept, so that a healthy backlog never spends a receive toward the DLQ;
- parked: copied to the dead-letter queue with their reason (poison, or refused by ZEGO for good);
- hidden: left failed, but invisible for a backoff that grows with the receive count (ZEGO or Secrets Manager
  failed them: docs/failure-handling.md, "A ZEGO outage").

All three go out side by side in SQS batch calls (sqs_batches) within the invocation's deadline; what does not get
through stays failed, so SQS keeps the message.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from handler.aws import sqs_batches
from handler.aws.observability import MetricName, emit, logger
from handler.aws.settings import ConfigurationError
from handler.aws.sqs_batches import Batch, Entry
from handler.core.deadline import Deadline
from handler.entry.kickouts import Kickouts

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

DETAIL_MAX_CHARACTERS: Final = 1000
BACKOFF_FIRST_SECONDS: Final = 60
BACKOFF_MAX_SECONDS: Final = 600
"""A message ZEGO failed is back after 1, 2, 4, 8, then every 10 minutes (docs/failure-handling.md, "A ZEGO outage")."""
BACKOFF_JITTER: Final = 0.2
"""Each wait is cut by up to a fifth at random, so messages failed together do not all come back together."""
DEFER_DELAY_SECONDS: Final = 1
"""A deferred message is visible again this soon: to whichever environment has time for it."""
MAX_MESSAGE_ATTRIBUTES: Final = 10
"""SQS's limit per message: the function's own attributes first, then as many of the original's as fit."""

SOURCE_MESSAGE_ID: Final = "SourceMessageId"
DEFERRALS: Final = "KickoutDeferrals"
SENDER_ID: Final = "KickoutSenderId"
"""Who sent the original message (SQS's SenderId), kept through deferrals for the final audit line."""


@dataclass(frozen=True, slots=True)
class Parking:
    record: SQSRecord
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Plan:
    """The batch's messages that are not simply acknowledged, and what to do with each."""

    defer: Sequence[SQSRecord] = ()
    park: Sequence[Parking] = ()
    hide: Sequence[SQSRecord] = ()


@dataclass(slots=True)
class Redelivered:
    deferred: dict[str, str] = field(default_factory=dict)
    """Message id -> the id of its copy in the kickout queue."""
    parked: set[str] = field(default_factory=set)
    hidden: set[str] = field(default_factory=set)


def redeliver(plan: Plan, deadline: Deadline, workers: Executor, kickouts: Kickouts) -> Redelivered:
    """Defer, park and hide as `plan` says, in SQS batch calls side by side; each failure logged and counted."""
    queue_url, dlq_url, unconfigured = _queue_urls(kickouts)
    sqs = kickouts.sqs
    batches: list[Batch[tuple[str, str]]] = []
    if plan.defer and queue_url is not None:
        batches.append(Batch(partial(_send_batch, sqs, queue_url), [_deferral(record) for record in plan.defer]))
    if plan.park and dlq_url is not None:
        batches.append(Batch(partial(_send_batch, sqs, dlq_url), [_parked_copy(parking) for parking in plan.park]))
    elif plan.park:
        for parking in plan.park:
            _parking_failed(parking, unconfigured or "KICKOUT_DLQ_URL is not set")
    by_queue: dict[str, list[Entry[tuple[str, str]]]] = {}
    for record in plan.hide:
        by_queue.setdefault(record.event_source_arn, []).append(_hiding(record))
    batches += [
        Batch(partial(_change_visibility_batch, sqs, _queue_url(sqs, arn)), entries)
        for arn, entries in by_queue.items()
    ]

    sent = sqs_batches.send_all(batches, deadline, workers)
    done = Redelivered()
    for (kind, message_id), answer in sent.succeeded.items():
        match kind:
            case "defer":
                done.deferred[message_id] = str(answer["MessageId"])
            case "park":
                done.parked.add(message_id)
            case "hide":
                done.hidden.add(message_id)
    _report(plan, done, sent.failed)
    return done


def _queue_urls(kickouts: Kickouts) -> tuple[str | None, str | None, str | None]:
    """The kickout queue's and the DLQ's URLs, or why the configuration gives neither."""
    try:
        settings = kickouts.settings()
    except ConfigurationError as error:
        return None, None, str(error)
    return settings.queue_url, settings.dlq_url, None


def _report(plan: Plan, done: Redelivered, failed: Mapping[tuple[str, str], str]) -> None:
    for parking in plan.park:
        if parking.record.message_id in done.parked:
            logger.warning("message parked", extra={"message_id": parking.record.message_id, "reason": parking.reason})
        elif ("park", parking.record.message_id) in failed:
            _parking_failed(parking, failed["park", parking.record.message_id])
    deferrals_failed = sum(1 for (kind, _), _ in failed.items() if kind == "defer")
    if deferrals_failed:
        logger.warning("deferring messages failed: they go back to SQS", extra={"messages": deferrals_failed})
    if plan.hide:
        emit(MetricName.MESSAGES_BACKED_OFF, len(done.hidden))
        refused = len(plan.hide) - len(done.hidden)
        if refused:
            emit(MetricName.BACKOFF_FAILED, refused)
            causes = sorted({cause for (kind, _), cause in failed.items() if kind == "hide"})
            logger.warning(
                "backoff failed: the messages keep the queue's timeout", extra={"messages": refused, "causes": causes}
            )


def _parking_failed(parking: Parking, cause: str) -> None:
    emit(MetricName.PARKING_FAILED, 1)
    logger.error(
        "parking failed: the message stays in the queue",
        extra={
            "message_id": parking.record.message_id,
            "reason": parking.reason,
            "error": cause[:DETAIL_MAX_CHARACTERS],
        },
    )


def receive_count(record: SQSRecord) -> int | None:
    """SQS's ApproximateReceiveCount; None when the record has no attributes (a hand-made event)."""
    value = (record.raw_event.get("attributes") or {}).get("ApproximateReceiveCount")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def source_message_id(record: SQSRecord) -> str:
    """The id of the message as first sent: deferrals keep it, so one kickout can be followed through them."""
    return _string_attribute(record, SOURCE_MESSAGE_ID) or record.message_id


def sender_id(record: SQSRecord) -> str | None:
    """Who sent the message as first sent (SQS's SenderId), through every deferral."""
    return _string_attribute(record, SENDER_ID) or (record.raw_event.get("attributes") or {}).get("SenderId")


def deferrals(record: SQSRecord) -> int:
    """How often the message was deferred already."""
    try:
        return int(_string_attribute(record, DEFERRALS) or 0)
    except ValueError:
        return 0


def backoff_seconds(receives: int | None, jitter: Callable[[], float] = random.random) -> int:
    """How long a message ZEGO failed stays hidden after its `receives`-th receive: doubling from 1 to 10 minutes."""
    doublings = min(max(1, receives or 1), 16) - 1
    nominal = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS << doublings)
    return round(nominal * (1 - BACKOFF_JITTER * jitter()))


def _deferral(record: SQSRecord) -> Entry[tuple[str, str]]:
    own = {
        SOURCE_MESSAGE_ID: _string(source_message_id(record)),
        DEFERRALS: {"DataType": "Number", "StringValue": str(deferrals(record) + 1)},
    }
    sender = sender_id(record)
    if sender:
        own[SENDER_ID] = _string(sender)
    return _message_entry("defer", record, own, DelaySeconds=DEFER_DELAY_SECONDS)


def _parked_copy(parking: Parking) -> Entry[tuple[str, str]]:
    own = {
        "KickoutFailure": _string(parking.reason),
        "KickoutDetail": _string(_printable(parking.detail)[:DETAIL_MAX_CHARACTERS] or parking.reason),
        SOURCE_MESSAGE_ID: _string(source_message_id(parking.record)),
    }
    return _message_entry("park", parking.record, own)


def _message_entry(
    kind: str, record: SQSRecord, own: dict[str, dict[str, Any]], **request: Any
) -> Entry[tuple[str, str]]:
    """A copy of `record`, body unchanged: `own` attributes first, then the original's as far as SQS allows."""
    attributes = dict(own)
    kept_back = []
    for name, value in sorted(_original_attributes(record).items()):
        if name in attributes:
            continue
        if len(attributes) < MAX_MESSAGE_ATTRIBUTES:
            attributes[name] = value
        else:
            kept_back.append(name)
    if kept_back:
        logger.warning(
            "a copy of the message carries fewer attributes than the original (SQS allows 10)",
            extra={"message_id": record.message_id, "attributes_dropped": kept_back},
        )
    return Entry(
        key=(kind, record.message_id),
        request={"MessageBody": record.body, "MessageAttributes": attributes, **request},
        size=sqs_batches.message_size(record.body, attributes),
    )


def _original_attributes(record: SQSRecord) -> dict[str, dict[str, Any]]:
    """The record's message attributes as SendMessage takes them (Lambda hands them over in its own shape)."""
    attributes: dict[str, dict[str, Any]] = {}
    for name, value in (record.raw_event.get("messageAttributes") or {}).items():
        if not isinstance(value, dict) or not isinstance(value.get("dataType"), str):
            continue
        if isinstance(value.get("stringValue"), str):
            attributes[name] = {"DataType": value["dataType"], "StringValue": value["stringValue"]}
        elif isinstance(value.get("binaryValue"), str):
            attributes[name] = {"DataType": value["dataType"], "BinaryValue": base64.b64decode(value["binaryValue"])}
    return attributes


def _hiding(record: SQSRecord) -> Entry[tuple[str, str]]:
    """The visibility change that hides `record` for its backoff."""
    return Entry(
        key=("hide", record.message_id),
        request={"ReceiptHandle": record.receipt_handle, "VisibilityTimeout": backoff_seconds(receive_count(record))},
    )


def _send_batch(sqs: Callable[[], SQSClient], queue_url: str, entries: list[dict[str, Any]]) -> Mapping[str, Any]:
    return sqs().send_message_batch(QueueUrl=queue_url, Entries=entries)  # type: ignore[arg-type]


def _change_visibility_batch(
    sqs: Callable[[], SQSClient], queue_url: str, entries: list[dict[str, Any]]
) -> Mapping[str, Any]:
    return sqs().change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)  # type: ignore[arg-type]


def _queue_url(sqs: Callable[[], SQSClient], queue_arn: str) -> str:
    """arn:aws:sqs:<region>:<account>:<name> -> the queue's URL on this client's endpoint."""
    _, _, _, _, account, name = queue_arn.split(":", 5)
    return f"{sqs().meta.endpoint_url}/{account}/{name}"


def _string_attribute(record: SQSRecord, name: str) -> str | None:
    attribute = record.message_attributes[name]
    return attribute.string_value if attribute is not None and attribute.string_value else None


def _string(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def _printable(text: str) -> str:
    """SQS refuses attribute values with control characters (a field name can hold any): escape them."""
    return "".join(character if character.isprintable() else f"\\x{ord(character):02x}" for character in text)
