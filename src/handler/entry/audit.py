"""What every entry point says of a kickout: one audit line and its counts, whichever way it arrived.

A caller that waits (API, direct invoke) is audited by `Kickouts.kick_out`; the queue, which merges messages into
fewer calls, audits each message on its own with these.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from handler.aws.observability import MetricName, emit, logger
from handler.aws.settings import ConfigurationError
from handler.core.errors import OutOfTime, SecretUnavailable, ZegoCircuitOpen, ZegoRefused, ZegoUnavailable
from handler.core.models import KickoutRequest, KickoutResult, describe_invalid
from handler.zego import zim


def audit_fields(request: KickoutRequest, **context: object) -> dict[str, object]:
    """What an audit line says of a request: the room, how many users, the operator who ordered it when named,
    and the adapter's `context` (who sent it, the message it came in)."""
    operator = {"operator_id": request.operator_id} if request.operator_id is not None else {}
    return {"room_id": request.room_id, "user_count": len(request.user_ids), **operator, **context}


def record_success(result: KickoutResult, audit: Mapping[str, object]) -> None:
    """The audit line of a kickout, and its counts."""
    emit(MetricName.KICKOUT_REQUESTS, 1)
    emit(MetricName.USERS_KICKED, len(result.kicked_user_ids))
    if result.absent_user_ids:
        emit(MetricName.USERS_ABSENT, len(result.absent_user_ids))
    logger.info(
        "kickout done",
        extra={
            **audit,
            "outcome": "kicked" if result.kicked_user_ids else "nothing_to_do",
            "kicked_user_ids": result.kicked_user_ids,
            "absent_user_ids": result.absent_user_ids,
            "zego_codes": [call.code for call in result.calls],
            "zego_request_ids": result.request_ids,
        },
    )


def record_deferred(audit: Mapping[str, object], **fields: str) -> None:
    """A queue message its invocation had no time or budget slot for, sent again to the queue."""
    emit(MetricName.MESSAGES_DEFERRED, 1)
    logger.info("kickout deferred", extra={**audit, "outcome": "deferred", **fields})


def failure_class(error: Exception) -> str:
    """The name under which a failure is counted and logged (one metric `Failed<Class>` each)."""
    match error:
        case ZegoRefused():
            return "Permanent"
        case ZegoCircuitOpen():
            return "CircuitOpen"
        case ZegoUnavailable(rate_limited=True):
            return "RateLimited"
        case ZegoUnavailable(timed_out=True):
            return "Timeout"
        case ZegoUnavailable():
            return "Transient"
        case OutOfTime():
            return "Deadline"
        case SecretUnavailable():
            return "Secret"
        case ConfigurationError():
            return "Configuration"
        case ValidationError():
            return "Invalid"
    return "Unexpected"


def record_failure(error: Exception, audit: Mapping[str, object]) -> None:
    """The failure line of a kickout, and its counts."""
    detail = describe_invalid(error) if isinstance(error, ValidationError) else str(error)
    _record(failure_class(error), detail, audit, getattr(error, "reply", None))


def record_invalid(detail: str, audit: Mapping[str, object]) -> None:
    """A request refused before it became a kickout; `detail` says why without repeating the input."""
    _record("Invalid", detail, audit, None)


def _record(kind: str, detail: str, audit: Mapping[str, object], reply: zim.Reply | None) -> None:
    emit(MetricName.KICKOUT_REQUESTS, 1)
    emit(MetricName.failed(kind), 1)
    logger.warning(
        "kickout failed",
        extra={
            **audit,
            "outcome": kind,
            "error": detail,
            "zego_code": reply.code if reply else None,
            "zego_request_id": reply.request_id if reply else None,
        },
    )
