"""ZIM's callbacks: `POST /zego/callbacks`, the one route without IAM auth (ZEGO cannot sign SigV4).

Every request is checked by ZEGO's callback signature and timestamp window (zego/callbacks.py) before any field is
believed; then, once per callback (a claim in the state table: ZEGO retries every answer that is not 2xx):

- `room_enter` of a user kept out of the room: one message to the kickout queue (the queue's pace and retries,
  nothing lost however many re-enter at once), the keep-out's operator kept as `FromUserId`;
- `room_exit` with `exit_type` Kickout: the kick confirmed (`KickoutsConfirmed`, an audit line), and how long after
  ZEGO's answer where the user's keep-out item says (entry/confirmations.py, `ConfirmationLatency`);
- anything else: 200 and ignored, else ZEGO would retry it for a minute.

Answers: 200 done or ignored; 400 malformed; 401 bad or missing signature, stale timestamp; 403 another AppId; 413
a body over the limit; 503 when the state table, the queue or the secret fail (ZEGO tries again). No ZEGO call is
made here: the answer takes a few ms of work.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from handler.aws import clients
from handler.aws.observability import MetricName, emit, logger
from handler.aws.settings import ConfigurationError, Settings
from handler.core.deadline import Deadline
from handler.core.errors import OutOfTime, SecretUnavailable
from handler.entry import confirmations
from handler.entry.kickouts import deadline_of
from handler.fleet.callback_claims import DynamoCallbackClaims
from handler.fleet.keep_outs import DynamoKeepOuts, KeepOut, KeepOutsUnavailable
from handler.zego import callbacks as zim_callbacks

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

CALLBACKS_PATH: Final = "/zego/callbacks"
DEADLINE_SECONDS: Final = 5.0
"""ZEGO waits a few seconds for an answer before it sends the callback again. Enough for a cold environment's secret
read at its worst (4 s) and, on the usual path (tens of ms), for the claim, the keep-out and the queue at theirs."""
REKICK_CAUSE: Final = "keep_out_reentry"


@dataclass(frozen=True)
class Callbacks:
    """What the callback entry point is handed by the composition root."""

    settings: Callable[[], Settings]
    read_secret: Callable[[Deadline], str]
    """The callback secret (raises SecretUnavailable or OutOfTime)."""
    keep_outs: Callable[[], DynamoKeepOuts]
    claims: Callable[[], DynamoCallbackClaims]
    sqs: Callable[[], SQSClient]
    wall_clock: Callable[[], float]


class Unavailable(Exception):
    """A part the answer needs failed (the table, the queue, the secret): 503, ZEGO tries again."""


def handle(event: dict[str, Any], context: LambdaContext, callbacks: Callbacks) -> dict[str, Any]:
    logger.set_correlation_id((event.get("requestContext") or {}).get("requestId"))
    deadline = deadline_of(context, at_most=DEADLINE_SECONDS)
    emit(MetricName.CALLBACKS_RECEIVED, 1)
    if CALLBACKS_PATH not in (event.get("path"), (event.get("requestContext") or {}).get("resourcePath")):
        return _answer(404, {"error": "not_found", "message": f"no such route; ZEGO posts to {CALLBACKS_PATH}"})
    if event.get("httpMethod") != "POST":
        return _answer(405, {"error": "method_not_allowed", "message": "only POST is allowed"}, {"Allow": "POST"})
    try:
        outcome = _handle(event, deadline, callbacks)
    except zim_callbacks.CallbackRefused as refused:
        emit(MetricName.CALLBACKS_REFUSED, 1)
        logger.warning("callback refused", extra={"status": refused.status, "error": refused.message})
        return _answer(refused.status, {"error": refused.error, "message": refused.message})
    except (Unavailable, ConfigurationError) as error:
        emit(MetricName.CALLBACKS_FAILED, 1)
        logger.warning("callback failed: ZEGO will send it again", extra={"error": str(error)})
        return _answer(503, {"error": "unavailable", "message": "try again"})
    return _answer(200, {"outcome": outcome})


def _handle(event: dict[str, Any], deadline: Deadline, callbacks: Callbacks) -> str:
    fields = zim_callbacks.parse_body(_body(event))
    config = callbacks.settings()
    try:
        secret = callbacks.read_secret(deadline)
    except (SecretUnavailable, OutOfTime) as error:
        raise Unavailable(str(error)) from None
    now = callbacks.wall_clock()
    signed = zim_callbacks.verify(fields, secret, now)
    if signed.app_id != config.app_id:
        raise zim_callbacks.CallbackRefused(403, "wrong_app_id", "the callback is for another AppId")
    if signed.event not in (zim_callbacks.Event.ROOM_ENTER, zim_callbacks.Event.ROOM_EXIT):
        logger.debug("callback ignored", extra={"event": signed.event[:40]})
        return "ignored"
    # The fields are read before the claim: a malformed callback is refused whole, and claims nothing.
    if signed.event == zim_callbacks.Event.ROOM_ENTER:
        entered = zim_callbacks.room_enter(signed)
        return _once(signed, deadline, callbacks, lambda: _room_enter(entered, now, deadline, callbacks, config))
    left = zim_callbacks.room_exit(signed)
    if left.exit_type != zim_callbacks.ExitType.KICKOUT:
        return "ignored"
    return _once(signed, deadline, callbacks, lambda: _confirmed(left, signed, deadline, callbacks))


def _once(signed: zim_callbacks.Signed, deadline: Deadline, callbacks: Callbacks, work: Callable[[], str]) -> str:
    """`work`, unless this callback was handled before; its claim released when the work fails."""
    claims = callbacks.claims()
    try:
        if not claims.claim(signed.event, signed.timestamp, signed.nonce, callbacks.wall_clock(), deadline):
            emit(MetricName.CALLBACKS_REPEATED, 1)
            return "repeated"
    except KeepOutsUnavailable as error:
        raise Unavailable(f"the callback could not be claimed: {error}") from None
    try:
        return work()
    except Exception:
        if not claims.release(signed.event, signed.timestamp, signed.nonce, deadline):
            # ZEGO's retries of it will be taken as handled until the claim expires: said, so it can be found.
            logger.warning(
                "callback claim not released: its retries will be ignored",
                extra={"event": signed.event, "nonce": signed.nonce, "timestamp": signed.timestamp},
            )
        raise


def _room_enter(
    entered: zim_callbacks.RoomEnter, now: float, deadline: Deadline, callbacks: Callbacks, config: Settings
) -> str:
    try:
        keep_out = callbacks.keep_outs().find(entered.room_id, entered.user_id, now, deadline)
    except KeepOutsUnavailable as error:
        raise Unavailable(f"the keep-out could not be read: {error}") from None
    if keep_out is None:
        return "not_kept_out"
    if config.queue_url is None:
        raise ConfigurationError("invalid configuration: KICKOUT_QUEUE_URL: is not set")
    if not deadline.allows(clients.SQS.worst_seconds):
        raise Unavailable("no time left to send the kickout to the queue")
    try:
        callbacks.sqs().send_message(
            QueueUrl=config.queue_url,
            MessageBody=json.dumps(rekick(keep_out)),
            MessageAttributes={"KickoutCause": {"DataType": "String", "StringValue": REKICK_CAUSE}},
        )
    except (ClientError, BotoCoreError) as error:
        raise Unavailable(f"the kickout could not be queued ({type(error).__name__})") from None
    emit(MetricName.REENTRIES_KICKED, 1)
    logger.info(
        "kept-out user entered again: kickout queued",
        extra={"room_id": keep_out.room_id, "user_id": keep_out.user_id, "keep_out_until": keep_out.until},
    )
    return "kickout_queued"


def rekick(keep_out: KeepOut) -> dict[str, Any]:
    """The queue message that kicks a kept-out user again: the reason names the keep-out and its end to the minute
    (32 bytes, all ZEGO keeps),
    the operator of the kickout that set it is kept as `FromUserId`; no window of its own (it would extend it)."""
    # To the minute, rounded up (never earlier than the real end): the queue merges kickouts of one room only when
    # their reasons agree, and a raid's keep-outs, set seconds apart, end seconds apart.
    until = dt.datetime.fromtimestamp(math.ceil(keep_out.until / 60) * 60, dt.UTC).strftime("%Y-%m-%dT%H:%MZ")
    message: dict[str, Any] = {
        "room_id": keep_out.room_id,
        "user_ids": [keep_out.user_id],
        "reason": f"keep-out to {until}",
    }
    if keep_out.operator_id is not None:
        message["operator_id"] = keep_out.operator_id
    return message


def _confirmed(
    left: zim_callbacks.RoomExit, signed: zim_callbacks.Signed, deadline: Deadline, callbacks: Callbacks
) -> str:
    emit(MetricName.KICKOUTS_CONFIRMED, len(left.user_ids))
    try:
        store = callbacks.keep_outs()
    except ConfigurationError as error:
        raise Unavailable(str(error)) from None
    measured = confirmations.measure(store, left.room_id, left.user_ids, signed.at, deadline)
    logger.info(
        "kickout confirmed",
        extra={
            "room_id": left.room_id,
            "confirmed_user_ids": list(left.user_ids),
            "operator_account": left.operator_account,
            "event_timestamp": signed.timestamp,
            "confirmed_after_ms": measured.confirmed_after_ms,
            "confirmation_latency_unknown": measured.unknown,
        },
    )
    return "confirmed"


def _body(event: dict[str, Any]) -> bytes:
    body = event.get("body")
    if body is None:
        raise zim_callbacks.malformed("the request has no body")
    if not isinstance(body, str):
        raise zim_callbacks.malformed("the body is not text")
    # Checked before decoding: base64 is a third larger than what it holds.
    if len(body) > zim_callbacks.MAX_BODY_BYTES * 4 // 3 + 4:
        raise zim_callbacks.CallbackRefused(413, "body_too_large", "the body is too large")
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise zim_callbacks.malformed("the body is not valid base64") from None
    return body.encode("utf-8", errors="replace")


def _answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "body": json.dumps(body, separators=(",", ":")),
        "isBase64Encoded": False,
    }
