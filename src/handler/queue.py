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

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from handler import aws_clients, redelivery, service, settings, transport, zim
from handler.budget import Lane
from handler.deadline import Deadline
from handler.errors import KickoutError, OutOfTime, SecretUnavailable, ZegoRefused, ZegoUnavailable
from handler.kickout import Group, coalesce
from handler.models import KickoutRequest, KickoutResult, describe_invalid
from handler.observability import MetricName, emit, in_current_trace, logger

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import (
        SendMessageBatchRequestEntryTypeDef,
    )

# An all-failed batch is returned as such rather than raised: raising would hand back messages already parked.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
_workers = ThreadPoolExecutor(max_workers=transport.POOL_SIZE, thread_name_prefix="kickout")

DEFER_SECONDS_RESERVED = 1.0
"""Kept free at the end of a batch's calls to send again what they did not reach."""
DEFER_DELAY_SECONDS = 1
"""A deferred message is visible again this soon: to whichever environment has time for it."""
MAX_DEFERRALS = 30
"""A message deferred this often goes back to SQS the usual way instead (a receive toward the DLQ)."""
SQS_BATCH = 10


@dataclass(frozen=True, slots=True)
class Invalid:
    """The message's payload is no kickout request."""

    error: ValidationError


@dataclass(frozen=True, slots=True)
class Done:
    """ZEGO answered for every user of the message (kicked, or not in the room)."""

    request: KickoutRequest
    result: KickoutResult


@dataclass(frozen=True, slots=True)
class Failed:
    """The message's kickout failed: parked when ZEGO refused it for good, else back to SQS."""

    request: KickoutRequest
    error: Exception


@dataclass(frozen=True, slots=True)
class Deferred:
    """Not reached before the deadline, and sent again to the queue as message `deferred_as`."""

    request: KickoutRequest
    deferred_as: str


Outcome = Invalid | Done | Failed | Deferred
"""What became of one message."""


def handle(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    records = [SQSRecord(raw) for raw in event.get("Records", [])]
    deadline = service.deadline_of(context)
    outcomes = settle(records, deadline.less(DEFER_SECONDS_RESERVED))
    outcomes |= defer_unreached(records, outcomes)
    response = process_partial_response(
        event=event,
        record_handler=partial(apply_outcome, outcomes, deadline),
        processor=processor,
        context=context,
    )
    back_off(records, outcomes, {str(item["itemIdentifier"]) for item in response["batchItemFailures"]}, deadline)
    return response


def settle(records: Sequence[SQSRecord], deadline: Deadline) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    requests: list[tuple[str, KickoutRequest]] = []
    for record in records:
        try:
            requests.append((record.message_id, KickoutRequest.model_validate_json(record.body)))
        except ValidationError as error:
            outcomes[record.message_id] = Invalid(error)
    try:
        settings.current()
    except settings.ConfigurationError as error:
        # Not any message's fault: every one goes back to SQS, to be done once the configuration is fixed.
        outcomes.update(_each_failed(requests, error))
    else:
        settle_group = in_current_trace(partial(_settle_group, deadline=deadline))
        for settled in _workers.map(settle_group, coalesce(requests)):
            outcomes.update(settled)
    _count_calls_per_user([outcome.result for outcome in outcomes.values() if isinstance(outcome, Done)])
    return outcomes


def _each_failed(members: Sequence[tuple[str, KickoutRequest]], error: Exception) -> dict[str, Outcome]:
    return {key: Failed(request, error) for key, request in members}


def _settle_group(group: Group, deadline: Deadline) -> dict[str, Outcome]:
    try:
        merged = service.send_calls(group.request, deadline, Lane.QUEUE)
    except ZegoRefused as error:
        if len(group.members) == 1 or error.reply.code in zim.SHARED_CAUSE_CODES:
            return _each_failed(group.members, error)
        # One member may be the cause: each is tried alone, so that only that one is refused.
        return {key: _settle_alone(request, deadline) for key, request in group.members}
    except (KickoutError, settings.ConfigurationError) as error:
        # Nothing here is any one message's fault (ZEGO down or busy, the secret unreadable): all try again later.
        return _each_failed(group.members, error)
    except Exception as error:
        # A bug must cost this group a retry, not the whole batch its partial response.
        logger.exception("settling a group of messages failed", extra={"room_id": group.request.room_id})
        return _each_failed(group.members, error)
    if len(group.members) == 1 or _same_for_everyone(merged):
        return {key: Done(request, merged.for_users(request.user_ids)) for key, request in group.members}
    return {key: _settle_alone(request, deadline) for key, request in group.members}


def _same_for_everyone(result: KickoutResult) -> bool:
    """A merged answer that holds for each member alike: all kicked, or the room is gone."""
    return all(call.outcome is zim.CodeClass.DONE for call in result.calls) or all(
        call.code == zim.ROOM_DOES_NOT_EXIST for call in result.calls
    )


def _settle_alone(request: KickoutRequest, deadline: Deadline) -> Outcome:
    try:
        return Done(request, service.send_calls(request, deadline, Lane.QUEUE))
    except (KickoutError, settings.ConfigurationError) as error:
        return Failed(request, error)
    except Exception as error:
        logger.exception("settling a message failed", extra={"room_id": request.room_id})
        return Failed(request, error)


def _count_calls_per_user(results: Sequence[KickoutResult]) -> None:
    users = sum(len(result.kicked_user_ids) + len(result.absent_user_ids) for result in results)
    if users:
        calls = len({request_id for result in results for request_id in result.request_ids})
        emit(MetricName.ZEGO_CALLS_PER_USER, calls / users)


def defer_unreached(records: Sequence[SQSRecord], outcomes: Mapping[str, Outcome]) -> dict[str, Outcome]:
    """Send again, with a short delay, the messages whose calls found no time or budget slot before the deadline.

    ZEGO was not asked about them (or only about some of their users: kicking again is harmless), so they are no
    failure: reported failed, each would wait out its visibility timeout and spend a receive toward the DLQ.
    """
    unreached = [
        record for record in records if _out_of_time(outcomes[record.message_id]) and _deferrals(record) < MAX_DEFERRALS
    ]
    queue_url = settings.current().queue_url if unreached else None
    if queue_url is None:
        return {}
    chunks = [unreached[start : start + SQS_BATCH] for start in range(0, len(unreached), SQS_BATCH)]
    deferred: dict[str, Outcome] = {}
    for sent in _workers.map(partial(_send_again, queue_url), chunks):
        deferred |= {key: Deferred(_request_of(outcomes[key]), deferred_as=new_id) for key, new_id in sent.items()}
    return deferred


def _out_of_time(outcome: Outcome) -> bool:
    match outcome:
        case Failed(error=OutOfTime()):
            return True
    return False


def _request_of(outcome: Outcome) -> KickoutRequest:
    match outcome:
        case Done(request=request) | Failed(request=request) | Deferred(request=request):
            return request
    raise ValueError("an invalid payload holds no request")


def _send_again(queue_url: str, records: Sequence[SQSRecord]) -> dict[str, str]:
    """Original message id -> the new one, for those SQS took (the others go back to SQS as failed)."""
    entries: list[SendMessageBatchRequestEntryTypeDef] = [
        {
            "Id": str(index),
            "MessageBody": record.body,
            "DelaySeconds": DEFER_DELAY_SECONDS,
            "MessageAttributes": {
                "SourceMessageId": {"DataType": "String", "StringValue": redelivery.source_message_id(record)},
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


def _deferrals(record: SQSRecord) -> int:
    attribute = record.message_attributes["KickoutDeferrals"]
    try:
        return int(attribute.string_value or 0) if attribute is not None else 0
    except ValueError:
        return 0


def apply_outcome(outcomes: Mapping[str, Outcome], deadline: Deadline, record: SQSRecord) -> None:
    """Audit the message, and park it or raise (Powertools reports it failed) as its outcome requires."""
    outcome = outcomes[record.message_id]
    attributes = record.raw_event.get("attributes") or {}
    delivery = {
        "message_id": record.message_id,
        "receive_count": redelivery.receive_count(record),
        # The IAM principal (or account) that sent the message, as SQS recorded it.
        "sender_id": attributes.get("SenderId"),
    }
    match outcome:
        case Invalid(error=invalid):
            service.record_failure(invalid, delivery)
            redelivery.park_or_say_why(record, "invalid_payload", describe_invalid(invalid), deadline)
        case Deferred(request=request, deferred_as=deferred_as):
            service.record_deferred(
                service.audit_fields(request, **delivery),
                source_message_id=redelivery.source_message_id(record),
                deferred_as=deferred_as,
            )
        case Done(request=request, result=result):
            service.record_success(result, service.audit_fields(request, **delivery))
        case Failed(request=request, error=error):
            service.record_failure(error, service.audit_fields(request, **delivery))
            if not isinstance(error, ZegoRefused):
                raise error
            redelivery.park_or_say_why(record, "zego_refused", str(error), deadline)


def back_off(
    records: Sequence[SQSRecord],
    outcomes: Mapping[str, Outcome],
    failed: set[str],
    deadline: Deadline,
) -> None:
    """Hide each failed message that ZEGO (or Secrets Manager) failed for its backoff (redelivery.hide).

    The others keep the queue's visibility timeout: a message that found no time or pacing slot in this invocation
    may go at once in the next.
    """
    redelivery.hide(
        [record for record in records if record.message_id in failed and _zego_failed(outcomes.get(record.message_id))],
        deadline,
    )


def _zego_failed(outcome: Outcome | None) -> bool:
    """ZEGO (or Secrets Manager, which the call needs) failed the message: worth waiting before the next receive."""
    match outcome:
        case Failed(error=ZegoUnavailable() | SecretUnavailable()):
            return True
    return False
