"""SQS entry point: each message is one kickout; partial batch responses, poison parked in the DLQ at once.

- done, or nothing left to do (room gone, user not in room): acknowledged;
- invalid payload or a permanent ZEGO refusal: parked in KICKOUT_DLQ_URL with the reason, then acknowledged;
- not reached before the invocation's deadline (a large batch, ZEGO's budget busy): sent again to the queue
  with a short delay, attribute `SourceMessageId` naming the original (its other attributes and its sender
  kept), then acknowledged: a healthy backlog never spends a receive toward the DLQ;
- anything that may succeed later (ZEGO busy or rate limited, timeouts, the secret unreadable, a DLQ that
  cannot be reached): reported in batchItemFailures, so SQS delivers it again. When ZEGO or Secrets Manager
  was the cause (ZEGO down, failing, its circuit open), the message is first hidden for longer the more often
  it was received (`backoff_seconds`), so that a long outage uses few receives of the queue's maxReceiveCount.

A batch is settled before Powertools walks it: messages for the same room, reason and operator are merged
into one ZEGO call, and the calls of a batch run concurrently on the shared pool, paced to this
environment's share of ZEGO's rate limit. What is not simply acknowledged is then deferred, parked or hidden
in SQS batch calls side by side (redelivery), in the time kept back for it, while the keep-outs of the messages
done are written (keep_out_writes, their windows from each message's SentTimestamp); Powertools then applies each
message's outcome.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from handler.aws import clients
from handler.aws.observability import MetricName, emit, in_current_trace, logger
from handler.aws.settings import ConfigurationError
from handler.core.deadline import Deadline
from handler.core.errors import KickoutError, OutOfTime, SecretUnavailable, ZegoRefused, ZegoUnavailable
from handler.core.kickout import Group, coalesce
from handler.core.models import KickoutRequest, KickoutResult, describe_invalid
from handler.entry import audit, redelivery
from handler.entry.kickouts import Kickouts, deadline_of, keep_out_field
from handler.fleet.budget import Lane
from handler.zego import transport, zim

# An all-failed batch is returned as such rather than raised: raising would hand back messages already parked.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
_workers = ThreadPoolExecutor(max_workers=transport.POOL_SIZE, thread_name_prefix="kickout")

RETURN_MARGIN = 0.5
"""Left of the invocation when the handler returns, whatever SQS, DynamoDB or ZEGO did."""
AUDIT_SECONDS_PER_RECORD = 0.001
"""Kept for each record's audit line, outcome and metrics at the end: about 70 µs of a full core each, measured,
so 1 ms at a 256 MB function's seventh of a vCPU, with room to spare."""
BOOKKEEPING_SECONDS = clients.SQS.worst_seconds
"""Kept free after the batch's calls: deferring, parking and hiding go out side by side, one round of SQS calls."""
MAX_DEFERRALS = 30
"""A message deferred this often goes back to SQS the usual way instead (a receive toward the DLQ)."""


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


Outcome = Invalid | Done | Failed
"""What became of one message's kickout (deferred, parked or hidden after that: redelivery)."""


class NotParked(Exception):
    """A message to park could not be parked: reported failed, so SQS keeps it."""


def handle(event: dict[str, Any], context: LambdaContext, kickouts: Kickouts) -> PartialItemFailureResponse:
    records = [SQSRecord(raw) for raw in event.get("Records", [])]
    deadline = deadline_of(context)
    closing = deadline.less(RETURN_MARGIN + AUDIT_SECONDS_PER_RECORD * len(records))
    outcomes = settle(records, closing.less(BOOKKEEPING_SECONDS), kickouts)
    # ZEGO has answered: the keep-outs are written while the batch's redeliveries go out, both within `closing`.
    keep_outs = kickouts.record_keep_outs(
        [
            (outcome.request, outcome.result, decided_at(record, kickouts))
            for record in records
            if isinstance(outcome := outcomes[record.message_id], Done)
        ],
        closing,
    )
    redelivered = redelivery.redeliver(redelivery_plan(records, outcomes), closing, _workers, kickouts)
    keep_outs.finish(closing)
    return process_partial_response(
        event=event,
        record_handler=partial(apply_outcome, outcomes, redelivered, kickouts),
        processor=processor,
        context=context,
    )


def decided_at(record: SQSRecord, kickouts: Kickouts) -> float:
    """When the message's kickout was decided: SQS's SentTimestamp, the same on every redelivery of the message, so
    that its keep-out ends at the same moment however often it is received (the wall clock when it has none)."""
    sent = (record.raw_event.get("attributes") or {}).get("SentTimestamp")
    if isinstance(sent, str) and sent.isdigit():
        return int(sent) / 1000
    return kickouts.wall_clock()


def settle(records: Sequence[SQSRecord], deadline: Deadline, kickouts: Kickouts) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    requests: list[tuple[str, KickoutRequest]] = []
    for record in records:
        try:
            requests.append((record.message_id, KickoutRequest.model_validate_json(record.body)))
        except ValidationError as error:
            outcomes[record.message_id] = Invalid(error)
    try:
        kickouts.settings()
    except ConfigurationError as error:
        # Not any message's fault: every one goes back to SQS, to be done once the configuration is fixed.
        outcomes.update(_each_failed(requests, error))
    else:
        settle_group = in_current_trace(partial(_settle_group, deadline=deadline, kickouts=kickouts))
        for settled in _workers.map(settle_group, coalesce(requests)):
            outcomes.update(settled)
    _count_calls_per_user([outcome.result for outcome in outcomes.values() if isinstance(outcome, Done)])
    return outcomes


def _each_failed(members: Sequence[tuple[str, KickoutRequest]], error: Exception) -> dict[str, Outcome]:
    return {key: Failed(request, error) for key, request in members}


def _settle_group(group: Group, deadline: Deadline, kickouts: Kickouts) -> dict[str, Outcome]:
    try:
        merged = kickouts.send_calls(group.request, deadline, Lane.QUEUE)
    except ZegoRefused as error:
        if len(group.members) == 1 or error.reply.code in zim.SHARED_CAUSE_CODES:
            return _each_failed(group.members, error)
        # One member may be the cause: each is tried alone, so that only that one is refused.
        return {key: _settle_alone(request, deadline, kickouts) for key, request in group.members}
    except (KickoutError, ConfigurationError) as error:
        # Nothing here is any one message's fault (ZEGO down or busy, the secret unreadable): all try again later.
        return _each_failed(group.members, error)
    except Exception as error:
        # A bug must cost this group a retry, not the whole batch its partial response.
        logger.exception("settling a group of messages failed", extra={"room_id": group.request.room_id})
        return _each_failed(group.members, error)
    if len(group.members) == 1 or _same_for_everyone(merged):
        return {key: Done(request, merged.for_users(request.user_ids)) for key, request in group.members}
    return {key: _settle_alone(request, deadline, kickouts) for key, request in group.members}


def _same_for_everyone(result: KickoutResult) -> bool:
    """A merged answer that holds for each member alike: all kicked, or the room is gone."""
    return all(call.outcome is zim.CodeClass.DONE for call in result.calls) or all(
        call.code == zim.ROOM_DOES_NOT_EXIST for call in result.calls
    )


def _settle_alone(request: KickoutRequest, deadline: Deadline, kickouts: Kickouts) -> Outcome:
    try:
        return Done(request, kickouts.send_calls(request, deadline, Lane.QUEUE))
    except (KickoutError, ConfigurationError) as error:
        return Failed(request, error)
    except Exception as error:
        logger.exception("settling a message failed", extra={"room_id": request.room_id})
        return Failed(request, error)


def _count_calls_per_user(results: Sequence[KickoutResult]) -> None:
    users = sum(len(result.kicked_user_ids) + len(result.absent_user_ids) for result in results)
    if users:
        calls = len({request_id for result in results for request_id in result.request_ids})
        emit(MetricName.ZEGO_CALLS_PER_USER, calls / users)


def redelivery_plan(records: Sequence[SQSRecord], outcomes: Mapping[str, Outcome]) -> redelivery.Plan:
    """Which messages to defer, park or hide, by their outcome.

    Deferred: no time or budget slot was left for them, so ZEGO was not asked (or only about some of their users:
    kicking again is harmless); reported failed instead, each would wait out its visibility timeout and spend a
    receive toward the DLQ. Hidden: ZEGO or Secrets Manager failed them, so the next try waits for their backoff;
    the others that fail keep the queue's visibility timeout (a message that found no time may go at once).
    """
    defer: list[SQSRecord] = []
    park: list[redelivery.Parking] = []
    hide: list[SQSRecord] = []
    for record in records:
        match outcomes[record.message_id]:
            case Invalid(error=invalid):
                park.append(redelivery.Parking(record, "invalid_payload", describe_invalid(invalid)))
            case Failed(error=ZegoRefused() as refused):
                park.append(redelivery.Parking(record, "zego_refused", str(refused)))
            case Failed(error=OutOfTime()):
                if redelivery.deferrals(record) < MAX_DEFERRALS:
                    defer.append(record)
            case Failed(error=ZegoUnavailable() | SecretUnavailable()):
                hide.append(record)
    return redelivery.Plan(defer=defer, park=park, hide=hide)


def apply_outcome(
    outcomes: Mapping[str, Outcome], redelivered: redelivery.Redelivered, kickouts: Kickouts, record: SQSRecord
) -> None:
    """Audit the message, and raise (Powertools reports it failed) unless it is done, deferred or parked."""
    delivery = {
        "message_id": record.message_id,
        "receive_count": redelivery.receive_count(record),
        # The IAM principal (or account) that sent the message, as SQS recorded it (the original's, if deferred).
        "sender_id": redelivery.sender_id(record),
    }
    match outcomes[record.message_id]:
        case Invalid(error=invalid):
            audit.record_failure(invalid, delivery)
            if record.message_id not in redelivered.parked:
                raise NotParked("the invalid message could not be parked")
        case Done(request=request, result=result):
            keep_out = keep_out_field(request, decided_at(record, kickouts))
            audit.record_success(result, audit.audit_fields(request, **delivery, **keep_out))
        case Failed(request=request) if record.message_id in redelivered.deferred:
            audit.record_deferred(
                audit.audit_fields(request, **delivery),
                source_message_id=redelivery.source_message_id(record),
                deferred_as=redelivered.deferred[record.message_id],
            )
        case Failed(request=request, error=error):
            audit.record_failure(error, audit.audit_fields(request, **delivery))
            if not isinstance(error, ZegoRefused):
                raise error
            if record.message_id not in redelivered.parked:
                raise NotParked("the refused message could not be parked")
