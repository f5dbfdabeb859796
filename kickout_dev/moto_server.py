"""moto held to AWS's rules: what AWS would refuse, this refuses too; DynamoDB's writes are atomic, as DynamoDB's are.

moto is more forgiving than AWS: it takes 25 entries in a ChangeMessageVisibilityBatch without a word, and a batch of
1 MiB. A test that passes against moto would then fail on AWS. `make_moto_like_aws()` wraps moto's SQS and DynamoDB
request handlers (its response classes, so the same rules hold under `mock_aws()` in process and in this server)
and refuses, with the error code and HTTP status AWS documents (moto's own exception classes, serialised by moto as
AWS would answer), what AWS refuses:

- SendMessageBatch, DeleteMessageBatch, ChangeMessageVisibilityBatch: no entry, over 10, an Id repeated, an Id not
  `[A-Za-z0-9_-]{1,80}` (AWS.SimpleQueueService.EmptyBatchRequest, .TooManyEntriesInBatchRequest,
  .BatchEntryIdsNotDistinct, .InvalidBatchEntryId);
- SendMessageBatch: over 256 KiB of bodies and message attributes in all (AWS.SimpleQueueService.BatchRequestTooLong);
- SendMessage and each batch entry: over 256 KiB of body and attributes, over 10 message attributes, DelaySeconds
  outside 0-900 (InvalidParameterValue);
- ChangeMessageVisibility, each ChangeMessageVisibilityBatch entry, ReceiveMessage: VisibilityTimeout outside 0-43200
  (InvalidParameterValue; refused as the whole call, where AWS may fail only the entry); ReceiveMessage's
  MaxNumberOfMessages outside 1-10 moto refuses itself;
- BatchWriteItem: no request, or over 25 across its tables; TransactWriteItems: no action, or over 100
  (ValidationException).

All are HTTP 400. (An item over 400 KB moto refuses itself, ItemSizeTooLarge.) SQS has taken messages of up to
1 MiB since 2025 where a queue's MaximumMessageSize allows it; 256 KiB, the limit that held for years and that a
queue may still set, is kept here: a call within it is within both.

Two knobs for fault tests, in process: `aws_latency(sqs=0.02, dynamodb=0.005)` adds that many seconds to each call,
and `aws_calls()` counts the calls made while it is open, per operation (`"sqs:ChangeMessageVisibilityBatch"`). For
the server, `KICKOUT_MOTO_LATENCY=sqs=0.02,dynamodb=0.005` in its environment.

Atomic queues and writes: moto rebuilds a queue's list of messages on a delete, so two deletes at once can lose
one; its queue operations take one lock. moto applies a conditional UpdateItem as a read, a check and a write,
with nothing to stop two server threads (or two test threads under mock_aws) from interleaving them: both see the
same `next_slot`, both are granted it, and the rate budget hands one slot to two calls. DynamoDB never does. One
lock around moto's item writes keeps the promise the function relies on, so a test that finds a slot
double-booked has found a bug in the function. The lock holds each write request whole, its answer included:
moto's handler reads the item's old image before the write and builds `ReturnValues` from the live item after it,
so with the lock around the backend's write alone, a second write landing in between showed up in the first's
UPDATED_NEW (two bookings answered the same `next_slot`, the same slot handed to two calls, under CPU load).

Receiving from a queue of n messages costs moto n² (every queue attribute counted for each message received) and
2n clock reads: both are cut to what they need (`_retained`, `_VisibleMessages`), so a replay of 1000 takes
seconds; what moto answers is unchanged.

Run as `python -m kickout_dev.moto_server -H 127.0.0.1 -p PORT` (make local, tests/package, the benchmarks); the
sandbox and tests/conftest.py call `make_moto_like_aws()` for mock_aws in process.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

SQS_BATCH_MAX = 10
SQS_PAYLOAD_MAX = 256 * 1024
SQS_MESSAGE_ATTRIBUTES_MAX = 10
SQS_DELAY_MAX = 900
SQS_VISIBILITY_MAX = 43_200
DYNAMODB_BATCH_WRITE_MAX = 25
DYNAMODB_TRANSACT_WRITE_MAX = 100
BATCH_ENTRY_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")
LATENCY_VARIABLE = "KICKOUT_MOTO_LATENCY"

_lock = threading.RLock()
_sqs_lock = threading.RLock()
_SQS_WRITES = (
    "send_message",
    "send_message_batch",
    "receive_message",
    "delete_message",
    "delete_message_batch",
    "change_message_visibility",
    "change_message_visibility_batch",
    "purge_queue",
)
"""moto's queue operations that change a queue: moto rebuilds a queue's message list on a delete, so two at once
(two pollers, a server's two threads) can lose one, and the message comes back after its visibility timeout. One
lock, as SQS is one service; no one here long-polls (WaitTimeSeconds > 0 would hold it while it waits)."""
_DYNAMODB_WRITES = ("update_item", "put_item", "delete_item", "transact_write_items")
"""moto's DynamoDB writes, each taken under `_lock` (an RLock: the request's handler holds it around the backend's
write, which takes it again for whoever calls the backend directly)."""
_knobs_lock = threading.Lock()
_latency: dict[str, float] = {}
_counters: list[Counter[str]] = []


def make_moto_like_aws() -> None:
    """AWS's limits, atomic DynamoDB writes, the latency and call-count knobs (idempotent)."""
    from moto.dynamodb.responses import DynamoHandler
    from moto.sqs.models import Queue, SQSBackend
    from moto.sqs.responses import SQSResponse

    make_dynamodb_updates_atomic()
    _wrap(SQSBackend, "is_message_valid_based_on_retention_period", lambda _: _retained)
    for name in _SQS_WRITES:
        _wrap(SQSBackend, name, _serialised_sqs)
    if not isinstance(Queue.__dict__["messages"].fget, _VisibleMessages):
        setattr(Queue, "messages", property(_VisibleMessages()))  # noqa: B010 (a property, on a class of moto)
    checks: dict[type[Any], dict[str, Callable[[Any], None]]] = {
        SQSResponse: {
            "send_message": _check_send_message,
            "send_message_batch": _check_send_message_batch,
            "delete_message_batch": _check_delete_message_batch,
            "change_message_visibility": _check_change_message_visibility,
            "change_message_visibility_batch": _check_change_message_visibility_batch,
            "receive_message": _check_receive_message,
        },
        DynamoHandler: {
            "batch_write_item": _check_batch_write_item,
            "transact_write_items": _check_transact_write_items,
        },
    }
    for cls, by_action in checks.items():
        for action, check in by_action.items():
            _wrap(cls, action, functools.partial(_checked, check))
    _wrap(SQSResponse, "call_action", functools.partial(_knobbed, "sqs"))
    _wrap(DynamoHandler, "call_action", functools.partial(_knobbed, "dynamodb"))


def make_dynamodb_updates_atomic() -> None:
    """Wrap moto's DynamoDB item writes in one lock (idempotent): each request whole, from the item it reads first
    to the answer it builds last, not only the backend's write (see the module's docstring)."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.responses import DynamoHandler

    for name in _DYNAMODB_WRITES:
        _wrap(DynamoDBBackend, name, _serialised)
        _wrap(DynamoHandler, name, _serialised)


def _wrap(cls: type[Any], name: str, wrapper: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    method = getattr(cls, name)
    if not getattr(method, "_kickout_wrapped", False):
        wrapped = functools.wraps(method)(wrapper(method))
        wrapped._kickout_wrapped = True  # type: ignore[attr-defined]
        setattr(cls, name, wrapped)


def _retained(backend: Any, queue_name: str, message: Any) -> bool:
    """moto's retention check for each message it receives, reading only the queue's retention period: moto's own
    computes every queue attribute (counting every message), which makes receiving from a queue of n messages
    cost n², minutes for a replay of 1000."""
    from moto.core.utils import unix_time

    retention = int(backend.get_queue(queue_name).message_retention_period)
    return bool(retention + message.sent_timestamp / 1000 > unix_time())


class _VisibleMessages:
    """moto's Queue.messages (the visible messages, not delayed) reading the clock once, not twice per message: a
    receive from a queue of 2000 costs 4000 clock reads in moto, most of its time."""

    def __call__(self, queue: Any) -> list[Any]:
        from moto.core.utils import unix_time_millis

        now = unix_time_millis()
        return [m for m in queue._messages if now > m.visible_at and not now < m.delayed_until]


def _serialised(method: Callable[..., Any]) -> Callable[..., Any]:
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _lock:
            return method(*args, **kwargs)

    return locked


def _serialised_sqs(method: Callable[..., Any]) -> Callable[..., Any]:
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _sqs_lock:
            return method(*args, **kwargs)

    return locked


def _checked(check: Callable[[Any], None], method: Callable[..., Any]) -> Callable[..., Any]:
    """Run `check` on the request (the response object, its parameters parsed) before moto handles it."""

    def checked(self: Any) -> Any:
        check(self)
        return method(self)

    return checked


def _knobbed(service: str, method: Callable[..., Any]) -> Callable[..., Any]:
    def call_action(self: Any) -> Any:
        operation = f"{service}:{self._get_action()}"
        with _knobs_lock:
            delay = _latency.get(service, 0.0)
            for counter in _counters:
                counter[operation] += 1
        if delay > 0:
            time.sleep(delay)
        return method(self)

    return call_action


# --- the knobs ---------------------------------------------------------------------------------------------------


@contextmanager
def aws_latency(*, sqs: float = 0.0, dynamodb: float = 0.0) -> Iterator[None]:
    """Every SQS (DynamoDB) call served by moto in this process takes `sqs` (`dynamodb`) seconds more while open."""
    with _knobs_lock:
        saved = dict(_latency)
        _latency.update(sqs=sqs, dynamodb=dynamodb)
    try:
        yield
    finally:
        with _knobs_lock:
            _latency.clear()
            _latency.update(saved)


@contextmanager
def aws_calls() -> Iterator[Counter[str]]:
    """The SQS and DynamoDB calls moto serves in this process while open, per operation: `"sqs:ReceiveMessage"`."""
    counter: Counter[str] = Counter()
    with _knobs_lock:
        _counters.append(counter)
    try:
        yield counter
    finally:
        with _knobs_lock:
            _counters.remove(counter)


def parse_latency(text: str) -> dict[str, float]:
    """`sqs=0.02,dynamodb=0.005` -> {"sqs": 0.02, "dynamodb": 0.005}; ValueError naming what is wrong."""
    latency: dict[str, float] = {}
    for part in filter(None, (part.strip() for part in text.split(","))):
        service, _, seconds = part.partition("=")
        if service not in ("sqs", "dynamodb"):
            raise ValueError(f"{LATENCY_VARIABLE}: {service!r} is not sqs or dynamodb")
        latency[service] = float(seconds)
        if not 0 <= latency[service] <= 10:
            raise ValueError(f"{LATENCY_VARIABLE}: {part!r}: seconds must be 0-10")
    return latency


# --- SQS ---------------------------------------------------------------------------------------------------------


def _invalid(message: str) -> Exception:
    from moto.sqs.exceptions import InvalidParameterValue

    error: Exception = InvalidParameterValue(message)
    return error


def _check_entries(action: str, entries: list[dict[str, Any]]) -> None:
    from moto.sqs.exceptions import (
        BatchEntryIdsNotDistinct,
        EmptyBatchRequest,
        InvalidBatchEntryId,
        TooManyEntriesInBatchRequest,
    )

    if not entries:
        empty = EmptyBatchRequest()
        empty.message = f"There should be at least one {action}BatchRequestEntry in the request."
        raise empty
    if len(entries) > SQS_BATCH_MAX:
        raise TooManyEntriesInBatchRequest(len(entries))
    seen: set[str] = set()
    for entry in entries:
        entry_id = str(entry.get("Id", ""))
        if not BATCH_ENTRY_ID.fullmatch(entry_id):
            raise InvalidBatchEntryId()
        if entry_id in seen:
            raise BatchEntryIdsNotDistinct(entry_id)
        seen.add(entry_id)


def _message_size(body: str, attributes: dict[str, Any]) -> int:
    """What SQS counts toward a message's size: the body and each attribute's name, type and value, in bytes."""
    size = len(body.encode())
    for name, attribute in attributes.items():
        value = attribute.get("StringValue")
        if value is None:
            value = attribute.get("BinaryValue", b"")
        size += len(name.encode()) + len(str(attribute.get("DataType", "")).encode())
        size += len(value.encode() if isinstance(value, str) else value)
    return size


def _check_message(body: str, attributes: dict[str, Any], delay: Any, *, alone: bool = True) -> int:
    """The message's size, once its attributes and delay are found valid (and its size, when sent `alone`)."""
    if len(attributes) > SQS_MESSAGE_ATTRIBUTES_MAX:
        raise _invalid(
            f"Number of message attributes [{len(attributes)}] exceeds the allowed maximum "
            f"[{SQS_MESSAGE_ATTRIBUTES_MAX}]."
        )
    if delay is not None and not 0 <= int(delay) <= SQS_DELAY_MAX:
        raise _invalid(
            f"Value {delay} for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= 900."
        )
    size = _message_size(body, attributes)
    if alone and size > SQS_PAYLOAD_MAX:
        raise _invalid(
            f"One or more parameters are invalid. Reason: Message must be shorter than {SQS_PAYLOAD_MAX} bytes."
        )
    return size


def _check_visibility(timeout: Any) -> None:
    if timeout is not None and not 0 <= int(timeout) <= SQS_VISIBILITY_MAX:
        raise _invalid(
            f"Value {timeout} for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200."
        )


def _check_send_message(request: Any) -> None:
    _check_message(
        request._get_param("MessageBody") or "",
        request._get_param("MessageAttributes") or {},
        request._get_param("DelaySeconds"),
    )


def _check_send_message_batch(request: Any) -> None:
    from moto.sqs.exceptions import BatchRequestTooLong

    entries = request._get_param("Entries") or []
    _check_entries("SendMessage", entries)
    total = sum(
        _check_message(
            entry.get("MessageBody") or "",
            entry.get("MessageAttributes") or {},
            entry.get("DelaySeconds"),
            alone=False,
        )
        for entry in entries
    )
    if total > SQS_PAYLOAD_MAX:
        error = BatchRequestTooLong(total)
        error.message = f"Batch requests cannot be longer than {SQS_PAYLOAD_MAX} bytes. You have sent {total} bytes."
        raise error


def _check_delete_message_batch(request: Any) -> None:
    _check_entries("DeleteMessage", request._get_param("Entries") or [])


def _check_change_message_visibility(request: Any) -> None:
    _check_visibility(request._get_param("VisibilityTimeout"))


def _check_change_message_visibility_batch(request: Any) -> None:
    entries = request._get_param("Entries") or []
    _check_entries("ChangeMessageVisibility", entries)
    for entry in entries:
        _check_visibility(entry.get("VisibilityTimeout"))


def _check_receive_message(request: Any) -> None:
    _check_visibility(request._get_param("VisibilityTimeout"))


# --- DynamoDB ----------------------------------------------------------------------------------------------------


def _validation(message: str) -> Exception:
    from moto.dynamodb.exceptions import MockValidationException

    error: Exception = MockValidationException(message)
    return error


def _check_batch_write_item(request: Any) -> None:
    requests = sum(len(writes) for writes in (request.body.get("RequestItems") or {}).values())
    if requests > DYNAMODB_BATCH_WRITE_MAX:
        raise _validation("Too many items requested for the BatchWriteItem call")
    if requests == 0:
        raise _validation(
            "1 validation error detected: Value at 'requestItems' failed to satisfy constraint: "
            "Member must have length greater than or equal to 1"
        )


def _check_transact_write_items(request: Any) -> None:
    actions = len(request.body.get("TransactItems") or [])
    if not 1 <= actions <= DYNAMODB_TRANSACT_WRITE_MAX:
        raise _validation(
            f"1 validation error detected at 'transactItems' failed to satisfy constraint: Member must have length "
            f"less than or equal to {DYNAMODB_TRANSACT_WRITE_MAX} and greater than or equal to 1."
        )


def main() -> None:
    from moto.server import main as moto_main

    make_moto_like_aws()
    _latency.update(parse_latency(os.environ.get(LATENCY_VARIABLE, "")))
    moto_main()


if __name__ == "__main__":
    main()
