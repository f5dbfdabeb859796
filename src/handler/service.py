"""One kickout, wired to this environment: settings, the cached secret, the shared pool, logs and metrics.

Every entry point comes through here, so every kickout is audited and counted the same way whichever way
it arrived: `kick_out` for one request a caller waits for (API, direct invoke), `send_calls` plus `record_*`
for the queue, which merges messages into fewer calls and audits each message on its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from functools import cache, partial

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from handler import aws_clients, health, settings, transport, zim
from handler.budget import FleetBudget, Lane, departing
from handler.deadline import Deadline
from handler.errors import OutOfTime, SecretUnavailable, ZegoCircuitOpen, ZegoRefused, ZegoUnavailable
from handler.kickout import carry_out
from handler.models import KickoutRequest, KickoutResult, describe_invalid
from handler.observability import MetricName, in_current_trace, logger, metrics, tracer
from handler.observability import metrics_lock as _metrics_lock
from handler.pacing import Pacer
from handler.ports import HttpReply, RateGate
from handler.secret import read_server_secret
from handler.slot_book import DynamoSlotBook
from handler.zim_client import RetryPolicy, ZimClient

retry_policy = RetryPolicy()
retry_sleep: Callable[[float], None] = time.sleep
"""How a ZEGO call waits out its backoff between attempts (kickout_dev.backoff replaces it to replay faults fast)."""


def deadline_of(context: LambdaContext, *, at_most: float | None = None) -> Deadline:
    """The invocation's deadline, as Lambda counts it down; never more than `at_most` seconds from now."""
    deadline = Deadline.counting_down(lambda: context.get_remaining_time_in_millis() / 1000)
    return deadline if at_most is None else deadline.within(at_most)


def kick_out(request: KickoutRequest, deadline: Deadline, origin: Mapping[str, object] | None = None) -> KickoutResult:
    """One kickout a caller waits for (API, direct invoke): audited, counted, first in line for ZEGO's budget.

    `origin`: who or what sent the request (plain fields, e.g. the IAM principal), for its audit line.
    """
    audit = audit_fields(request, **(origin or {}))
    try:
        result = send_calls(request, deadline, Lane.API)
    except Exception as error:
        record_failure(error, audit)  # an unexpected one too: counted FailedUnexpected, then raised
        raise
    record_success(result, audit)
    return result


def send_calls(request: KickoutRequest, deadline: Deadline, lane: Lane) -> KickoutResult:
    """The ZEGO calls of one request, unaudited; raises KickoutError or ConfigurationError."""
    config = settings.current()
    client = ZimClient(
        endpoint=config.endpoint,
        app_id=config.app_id,
        read_secret=partial(read_server_secret, config.secret_id),
        send=_send_traced,
        deadline=deadline,
        pacer=budget(lane),
        policy=retry_policy,
        sleep=retry_sleep,
        health=health.zego_health(),
    )
    result = carry_out(request, client.call)
    with _metrics_lock:
        for call in result.calls:
            metrics.add_metric(name=MetricName.USERS_PER_CALL, unit=MetricUnit.Count, value=len(call.user_ids))
    return result


@cache
def budget(lane: Lane) -> RateGate:
    """This environment's gate to ZEGO's fleet-wide rate budget, one per lane."""
    config = settings.current()
    return FleetBudget(
        book=DynamoSlotBook(client=aws_clients.dynamodb, table=config.state_table, key=f"budget#{config.app_id}"),
        limit=config.zego_rate_limit,
        lane=lane,
        fallback=_local_pace(),
        observe=_observe_budget,
        spawn=_spawn_traced,
    )


@cache
def _local_pace() -> Pacer:
    """The pace both lanes share while the budget's store fails: this environment's safe share, alone."""
    return Pacer(share=settings.current().fallback_rate_per_second)


def forget_budget() -> None:
    """Drop the budget's gates (tests, and a process whose configuration changed)."""
    budget.cache_clear()
    _local_pace.cache_clear()


def _spawn_traced(work: Callable[[], None]) -> None:
    """A booking on a thread of its own, under the invocation's trace (its DynamoDB call is a subsegment)."""
    threading.Thread(target=in_current_trace(work), name="budget-booking", daemon=True).start()


def _observe_budget(event: str, value: float, /, **detail: str) -> None:
    with _metrics_lock:
        match event:
            case "slot_wait":
                metrics.add_metric(name=MetricName.BUDGET_WAIT, unit=MetricUnit.Milliseconds, value=value * 1000)
            case "store_calls":
                metrics.add_metric(name=MetricName.BUDGET_STORE_CALLS, unit=MetricUnit.Count, value=value)
            case "stale_slot":
                metrics.add_metric(name=MetricName.BUDGET_SLOTS_DROPPED, unit=MetricUnit.Count, value=value)
            case "store_slow":
                metrics.add_metric(name=MetricName.BUDGET_STORE_SLOW, unit=MetricUnit.Count, value=value)
            case "store_error" | "store_too_slow":
                metrics.add_metric(name=MetricName.BUDGET_STORE_ERRORS, unit=MetricUnit.Count, value=value)
            case "repaired":
                metrics.add_metric(name=MetricName.BUDGET_REPAIRS, unit=MetricUnit.Count, value=value)
    match event:
        case "store_error" | "store_too_slow":
            logger.warning(
                "rate budget store unavailable: pacing this environment alone"
                if event == "store_error"
                else "rate budget store too slow: pacing this environment alone",
                extra={"fallback_rate_per_second": settings.current().fallback_rate_per_second, **detail},
            )
        case "repaired":
            logger.warning("rate budget timeline repaired: its next slot was impossible", extra=detail)


def audit_fields(request: KickoutRequest, **context: object) -> dict[str, object]:
    """What an audit line says of a request: the room, how many users, the operator who ordered it when named,
    and the adapter's `context` (who sent it, the message it came in)."""
    operator = {"operator_id": request.operator_id} if request.operator_id is not None else {}
    return {"room_id": request.room_id, "user_count": len(request.user_ids), **operator, **context}


def record_success(result: KickoutResult, audit: Mapping[str, object]) -> None:
    """The audit line of a kickout, and its counts."""
    metrics.add_metric(name=MetricName.KICKOUT_REQUESTS, unit=MetricUnit.Count, value=1)
    metrics.add_metric(name=MetricName.USERS_KICKED, unit=MetricUnit.Count, value=len(result.kicked_user_ids))
    if result.absent_user_ids:
        metrics.add_metric(name=MetricName.USERS_ABSENT, unit=MetricUnit.Count, value=len(result.absent_user_ids))
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
    with _metrics_lock:
        metrics.add_metric(name=MetricName.MESSAGES_DEFERRED, unit=MetricUnit.Count, value=1)
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
        case settings.ConfigurationError():
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
    metrics.add_metric(name=MetricName.KICKOUT_REQUESTS, unit=MetricUnit.Count, value=1)
    metrics.add_metric(name=MetricName.failed(kind), unit=MetricUnit.Count, value=1)
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


def _send_traced(url: str, timeout: float) -> HttpReply:
    started = time.perf_counter()
    # The subsegment names the call but records neither the URL (it carries the signature) nor the body.
    with tracer.provider.in_subsegment("## ZEGO KickoutRoomUser"):
        departing()  # as near the wire as this layer gets: a call leaving late gives its lateness back
        try:
            return transport.send(url, timeout)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            # The calls of a batch run on threads, and Powertools' add_metric is a read-then-write of a dict.
            with _metrics_lock:
                metrics.add_metric(name=MetricName.ZEGO_LATENCY, unit=MetricUnit.Milliseconds, value=elapsed_ms)
                metrics.add_metric(name=MetricName.ZEGO_CALLS, unit=MetricUnit.Count, value=1)
