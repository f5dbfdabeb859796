"""SQS entry point: each message is one kickout; partial batch responses, poison parked in the DLQ at once.

- done, or nothing left to do (room gone, user not in room): acknowledged;
- invalid payload or a permanent ZEGO refusal: parked in KICKOUT_DLQ_URL with the reason, then acknowledged;
- not reached before the invocation's deadline (a large batch, ZEGO's budget busy): sent again to the queue
  with a short delay, attribute `SourceMessageId` naming the original, then acknowledged: a healthy backlog
  never spends a receive toward the DLQ;
- anything that may succeed later (ZEGO busy or rate limited, timeouts, the secret unreadable, a DLQ that
  cannot be reached): reported in batchItemFailures, so SQS delivers it again. When ZEGO or Secrets Manager
  was the cause (ZEGO down, failing, its circuit open), the message is first hidden for longer the more often
  it was received (`backoff_seconds`), so that a long outage uses few receives of the queue's maxReceiveCount.

A batch is settled before Powertools walks it: messages for the same room, reason and operator are merged
into one ZEGO call, and the calls of a batch run concurrently on the shared pool, paced to this
environment's share of ZEGO's rate limit. Powertools then applies each message's outcome.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from handler import aws_clients, service, settings, transport, zim
from handler.budget import Lane
from handler.errors import KickoutError, OutOfTime, SecretUnavailable, ZegoRefused, ZegoUnavailable
from handler.kickout import Group, coalesce
from handler.models import KickoutRequest, KickoutResult, describe_invalid
from handler.observability import in_current_trace, logger, metrics, metrics_lock

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        MessageAttributeValueTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

# An all-failed batch is returned as such rather than raised: raising would hand back messages already parked.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
_workers = ThreadPoolExecutor(max_workers=transport.POOL_SIZE, thread_name_prefix="kickout")

DETAIL_MAX_CHARACTERS = 1000
PARK_SECONDS_NEEDED = 1.0
DEFER_SECONDS_RESERVED = 1.0
"""Kept free at the end of a batch's calls to send again what they did not reach."""
DEFER_DELAY_SECONDS = 1
"""A deferred message is visible again this soon: to whichever environment has time for it."""
MAX_DEFERRALS = 30
"""A message deferred this often goes back to SQS the usual way instead (a receive toward the DLQ)."""
SQS_BATCH = 10
BACKOFF_FIRST_SECONDS = 60
BACKOFF_MAX_SECONDS = 600
"""A message ZEGO failed is back after 1, 2, 4, 8, then every 10 minutes (README: "A ZEGO outage")."""
BACKOFF_JITTER = 0.2
"""Each wait is cut by up to a fifth at random, so messages failed together do not all come back together."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one message: a result, a failure, or the reason its payload is invalid."""

    request: KickoutRequest | None = None
    result: KickoutResult | None = None
    error: Exception | None = None
    invalid: ValidationError | None = None
    deferred_as: str | None = None
    """Not reached in time, and sent again to the queue as this message id."""


def handle(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    records = [SQSRecord(raw) for raw in event.get("Records", [])]
    remaining_seconds = service.remaining_seconds_of(context)
    outcomes = settle(records, lambda: remaining_seconds() - DEFER_SECONDS_RESERVED)
    outcomes |= defer_unreached(records, outcomes)
    response = process_partial_response(
        event=event,
        record_handler=partial(apply_outcome, outcomes, remaining_seconds),
        processor=processor,
        context=context,
    )
    back_off(
        records, outcomes, {str(item["itemIdentifier"]) for item in response["batchItemFailures"]}, remaining_seconds
    )
    return response


def settle(records: Sequence[SQSRecord], remaining_seconds: service.RemainingSeconds) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    requests: list[tuple[str, KickoutRequest]] = []
    for record in records:
        try:
            requests.append((record.message_id, KickoutRequest.model_validate_json(record.body)))
        except ValidationError as error:
            outcomes[record.message_id] = Outcome(invalid=error)
    try:
        settings.current()
    except settings.ConfigurationError as error:
        # Not any message's fault: every one goes back to SQS, to be done once the configuration is fixed.
        outcomes.update(_each(requests, error=error))
    else:
        settle_group = in_current_trace(partial(_settle_group, remaining_seconds=remaining_seconds))
        for settled in _workers.map(settle_group, coalesce(requests)):
            outcomes.update(settled)
    _count_calls_per_user([outcome.result for outcome in outcomes.values() if outcome.result is not None])
    return outcomes


def _each(members: Sequence[tuple[str, KickoutRequest]], **fields: Any) -> dict[str, Outcome]:
    return {key: Outcome(request=request, **fields) for key, request in members}


def _settle_group(group: Group, remaining_seconds: service.RemainingSeconds) -> dict[str, Outcome]:
    try:
        merged = service.send_calls(group.request, remaining_seconds, Lane.QUEUE)
    except ZegoRefused as error:
        if len(group.members) == 1 or error.reply.code in zim.SHARED_CAUSE_CODES:
            return _each(group.members, error=error)
        # One member may be the cause: each is tried alone, so that only that one is refused.
        return {key: _settle_alone(request, remaining_seconds) for key, request in group.members}
    except (KickoutError, settings.ConfigurationError) as error:
        # Nothing here is any one message's fault (ZEGO down or busy, the secret unreadable): all try again later.
        return _each(group.members, error=error)
    except Exception as error:
        # A bug must cost this group a retry, not the whole batch its partial response.
        logger.exception("settling a group of messages failed", extra={"room_id": group.request.room_id})
        return _each(group.members, error=error)
    if len(group.members) == 1 or _same_for_everyone(merged):
        return {
            key: Outcome(request=request, result=merged.for_users(request.user_ids)) for key, request in group.members
        }
    return {key: _settle_alone(request, remaining_seconds) for key, request in group.members}


def _same_for_everyone(result: KickoutResult) -> bool:
    """A merged answer that holds for each member alike: all kicked, or the room is gone."""
    return all(call.outcome is zim.CodeClass.DONE for call in result.calls) or all(
        call.code == zim.ROOM_DOES_NOT_EXIST for call in result.calls
    )


def _settle_alone(request: KickoutRequest, remaining_seconds: service.RemainingSeconds) -> Outcome:
    try:
        return Outcome(request=request, result=service.send_calls(request, remaining_seconds, Lane.QUEUE))
    except (KickoutError, settings.ConfigurationError) as error:
        return Outcome(request=request, error=error)
    except Exception as error:
        logger.exception("settling a message failed", extra={"room_id": request.room_id})
        return Outcome(request=request, error=error)


def _count_calls_per_user(results: Sequence[KickoutResult]) -> None:
    users = sum(len(result.kicked_user_ids) + len(result.absent_user_ids) for result in results)
    if users:
        calls = len({request_id for result in results for request_id in result.request_ids})
        metrics.add_metric(name="ZegoCallsPerUser", unit=MetricUnit.Count, value=calls / users)


def defer_unreached(records: Sequence[SQSRecord], outcomes: Mapping[str, Outcome]) -> dict[str, Outcome]:
    """Send again, with a short delay, the messages whose calls found no time or budget slot before the deadline.

    ZEGO was not asked about them (or only about some of their users: kicking again is harmless), so they are no
    failure: reported failed, each would wait out its visibility timeout and spend a receive toward the DLQ.
    """
    unreached = [
        record
        for record in records
        if isinstance(outcomes[record.message_id].error, OutOfTime) and _deferrals(record) < MAX_DEFERRALS
    ]
    queue_url = settings.current().queue_url if unreached else None
    if queue_url is None:
        return {}
    chunks = [unreached[start : start + SQS_BATCH] for start in range(0, len(unreached), SQS_BATCH)]
    deferred: dict[str, Outcome] = {}
    for sent in _workers.map(partial(_send_again, queue_url), chunks):
        deferred |= {key: replace(outcomes[key], deferred_as=new_id) for key, new_id in sent.items()}
    return deferred


def _send_again(queue_url: str, records: Sequence[SQSRecord]) -> dict[str, str]:
    """Original message id -> the new one, for those SQS took (the others go back to SQS as failed)."""
    entries: list[SendMessageBatchRequestEntryTypeDef] = [
        {
            "Id": str(index),
            "MessageBody": record.body,
            "DelaySeconds": DEFER_DELAY_SECONDS,
            "MessageAttributes": {
                "SourceMessageId": {"DataType": "String", "StringValue": _source_message_id(record)},
                "KickoutDeferrals": {"DataType": "Number", "StringValue": str(_deferrals(record) + 1)},
            },
        }
        for index, record in enumerate(records)
    ]
    try:
        answer = aws_clients.sqs().send_message_batch(QueueUrl=queue_url, Entries=entries)
    except (BotoCoreError, ClientError) as error:
        logger.warning("deferring messages failed: they go back to SQS", extra={"error": type(error).__name__})
        return {}
    return {records[int(entry["Id"])].message_id: entry["MessageId"] for entry in answer.get("Successful", [])}


def _source_message_id(record: SQSRecord) -> str:
    """The id of the message as first sent: deferrals keep it, so one kickout can be followed through them."""
    attribute = record.message_attributes["SourceMessageId"]
    return attribute.string_value if attribute is not None and attribute.string_value else record.message_id


def _deferrals(record: SQSRecord) -> int:
    attribute = record.message_attributes["KickoutDeferrals"]
    try:
        return int(attribute.string_value or 0) if attribute is not None else 0
    except ValueError:
        return 0


def apply_outcome(
    outcomes: Mapping[str, Outcome], remaining_seconds: service.RemainingSeconds, record: SQSRecord
) -> None:
    """Audit the message, and park it or raise (Powertools reports it failed) as its outcome requires."""
    outcome = outcomes[record.message_id]
    attributes = record.raw_event.get("attributes") or {}
    delivery = {
        "message_id": record.message_id,
        "receive_count": receive_count(record),
        # The IAM principal (or account) that sent the message, as SQS recorded it.
        "sender_id": attributes.get("SenderId"),
    }
    if outcome.invalid is not None:
        service.record_failure(outcome.invalid, delivery)
        park_or_say_why(record, "invalid_payload", describe_invalid(outcome.invalid), remaining_seconds)
        return
    assert outcome.request is not None
    audit = service.audit_fields(outcome.request, **delivery)
    if outcome.deferred_as is not None:
        service.record_deferred(audit, source_message_id=_source_message_id(record), deferred_as=outcome.deferred_as)
        return
    if outcome.result is not None:
        service.record_success(outcome.result, audit)
        return
    assert outcome.error is not None
    service.record_failure(outcome.error, audit)
    if isinstance(outcome.error, ZegoRefused):
        park_or_say_why(record, "zego_refused", str(outcome.error), remaining_seconds)
        return
    raise outcome.error


def receive_count(record: SQSRecord) -> int | None:
    """SQS's ApproximateReceiveCount; None when the record has no attributes (a hand-made event)."""
    value = (record.raw_event.get("attributes") or {}).get("ApproximateReceiveCount")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def park_or_say_why(record: SQSRecord, reason: str, detail: str, remaining_seconds: service.RemainingSeconds) -> None:
    """Park the message; when that fails, its own line and metric (ParkingFailed), and SQS keeps the message."""
    try:
        park(record, reason, detail, remaining_seconds)
    except Exception as error:
        metrics.add_metric(name="ParkingFailed", unit=MetricUnit.Count, value=1)
        logger.error(
            "parking failed: the message stays in the queue",
            extra={
                "message_id": record.message_id,
                "reason": reason,
                "error": f"{type(error).__name__}: {str(error)[:DETAIL_MAX_CHARACTERS]}",
            },
        )
        raise


def park(record: SQSRecord, reason: str, detail: str, remaining_seconds: service.RemainingSeconds) -> None:
    """Copy the message, body unchanged, to the dead-letter queue; raises (so SQS keeps it) when that fails."""
    if remaining_seconds() < PARK_SECONDS_NEEDED:
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
        "SourceMessageId": {"DataType": "String", "StringValue": _source_message_id(record)},
    }
    aws_clients.sqs().send_message(QueueUrl=dlq_url, MessageBody=record.body, MessageAttributes=attributes)
    logger.warning("message parked", extra={"message_id": record.message_id, "reason": reason})


def backoff_seconds(receives: int | None, jitter: Callable[[], float] = random.random) -> int:
    """How long a message ZEGO failed stays hidden after its `receives`-th receive: doubling from 1 to 10 minutes."""
    doublings = min(max(1, receives or 1), 16) - 1
    nominal = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS << doublings)
    return round(nominal * (1 - BACKOFF_JITTER * jitter()))


def back_off(
    records: Sequence[SQSRecord],
    outcomes: Mapping[str, Outcome],
    failed: set[str],
    remaining_seconds: service.RemainingSeconds,
) -> None:
    """Hide each failed message that ZEGO (or Secrets Manager) failed for its backoff, by ChangeMessageVisibility.

    The others keep the queue's visibility timeout: a message that found no time or pacing slot in this invocation
    may go at once in the next. When SQS refuses, the message simply comes back after the queue's timeout.
    """
    by_queue: dict[str, list[ChangeMessageVisibilityBatchRequestEntryTypeDef]] = defaultdict(list)
    for record in records:
        error = outcomes[record.message_id].error if record.message_id in outcomes else None
        if record.message_id in failed and isinstance(error, ZegoUnavailable | SecretUnavailable):
            by_queue[record.event_source_arn].append(
                {
                    "Id": str(len(by_queue[record.event_source_arn])),
                    "ReceiptHandle": record.receipt_handle,
                    "VisibilityTimeout": backoff_seconds(receive_count(record)),
                }
            )
    if not by_queue or remaining_seconds() < PARK_SECONDS_NEEDED:
        return
    for queue_arn, entries in by_queue.items():
        try:
            answer = aws_clients.sqs().change_message_visibility_batch(QueueUrl=_queue_url(queue_arn), Entries=entries)
            refused = len(answer.get("Failed", []))
        except Exception as error:
            logger.warning("backoff failed", extra={"error": type(error).__name__, "messages": len(entries)})
            refused = len(entries)
        with metrics_lock:
            metrics.add_metric(name="MessagesBackedOff", unit=MetricUnit.Count, value=len(entries) - refused)
            if refused:
                metrics.add_metric(name="BackoffFailed", unit=MetricUnit.Count, value=refused)


def _queue_url(queue_arn: str) -> str:
    """arn:aws:sqs:<region>:<account>:<name> -> the queue's URL on this client's endpoint."""
    _, _, _, _, account, name = queue_arn.split(":", 5)
    return f"{aws_clients.sqs().meta.endpoint_url}/{account}/{name}"


def _printable(text: str) -> str:
    """SQS refuses attribute values with control characters (a field name can hold any): escape them."""
    return "".join(character if character.isprintable() else f"\\x{ord(character):02x}" for character in text)
