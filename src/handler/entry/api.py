"""REST entry point: POST /kickouts, validated by Powertools, every failure mapped to a JSON status here."""

import base64
import binascii
import json
import math
from functools import partial
from http import HTTPStatus
from typing import Annotated, Any
from urllib.parse import quote, unquote

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Header, Query
from aws_lambda_powertools.shared.json_encoder import Encoder
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from handler.aws.observability import MetricName, emit, logger
from handler.aws.settings import API_DEADLINE_SECONDS, ConfigurationError
from handler.core.deadline import Deadline
from handler.core.errors import (
    KickoutError,
    OutOfTime,
    SecretUnavailable,
    ZegoCircuitOpen,
    ZegoRefused,
    ZegoUnavailable,
)
from handler.core.models import (
    ZEGO_ID_PATTERN,
    CallReport,
    KeepOutKey,
    KeepOutLifted,
    KeepOutPage,
    KeepOutView,
    KickoutRequest,
    KickoutResult,
    field_problems,
)
from handler.core.ports import Answer, KeyInUse, KeyReused
from handler.entry import api_request, audit
from handler.entry.api_responses import (
    LIFT_KEEP_OUT_RESPONSES,
    LIST_KEEP_OUTS_RESPONSES,
    RESPONSES,
    ErrorBody,
    FieldProblem,
    ZegoAnswer,
)
from handler.entry.kickouts import Kickouts, deadline_of
from handler.fleet.keep_outs import MAX_PAGE, KeepOutsUnavailable
from handler.zego import zim

KICKOUTS_PATH = "/kickouts"
KEEP_OUTS_PATH = "/keep-outs"
KEEP_OUT_RESOURCE = "/keep-outs/{room_id}/{user_id}"
RATE_LIMITED_RETRY_AFTER_SECONDS = 1
"""ZEGO's limit is per second: a second later the budget is back."""
KEY_IN_USE_RETRY_AFTER_SECONDS = 1
"""A kickout is answered in about a second: by then the key's first request has its answer kept."""
REPLAYED_HEADER = "Idempotent-Replayed"
IDEMPOTENCY_KEY_DESCRIPTION = (
    "Optional (IETF httpapi draft 'The Idempotency-Key HTTP Header Field'): a Structured Field string of 1 to "
    f"{api_request.MAX_IDEMPOTENCY_KEY_CHARACTERS} printable ASCII characters, unique per kickout, e.g. "
    '"8e03978e-40d5-43e8-bc93-6894a57f9324" (a bare token is taken too). A retry with the same key and payload '
    f"gets the first answer again (status and body, with {REPLAYED_HEADER}: true) and ZEGO is not called; with "
    "another payload 422 idempotency_key_reused; while the first is still running 409 idempotency_key_in_use. "
    "Kept per IAM principal for 24 hours (IdempotencyKeySeconds). Kept are 200, 404 not_in_room and 422 "
    "zego_refused; after any other answer the key is free for a retry."
)

serialize = partial(json.dumps, separators=(",", ":"), cls=Encoder)
"""Powertools' own default, named: the bodies refused before the resolver are serialised like the resolver's."""
app = APIGatewayRestResolver(enable_validation=True, serializer=serialize)


class NothingToKick(Exception):
    """ZEGO says none of the users is in the room, or the room does not exist."""

    def __init__(self, result: KickoutResult) -> None:
        super().__init__("none of the users is in the room")
        self.result = result


class Answered(Exception):
    """A keyed request's answer, sent as kept (a replay, or the first answer, serialised once for both)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.status)
        self.answer = answer


@app.post(KICKOUTS_PATH, summary="Remove users from a ZIM room", tags=["kickouts"], responses=RESPONSES)
def create_kickout(
    request: KickoutRequest,
    idempotency_key: Annotated[
        str | None, Header(alias=api_request.IDEMPOTENCY_KEY_HEADER, description=IDEMPOTENCY_KEY_DESCRIPTION)
    ] = None,
) -> KickoutResult:
    kickouts: Kickouts = app.context["kickouts"]
    deadline = deadline_of(app.lambda_context, at_most=API_DEADLINE_SECONDS)
    if idempotency_key is None:
        return _kick_out(kickouts, request, deadline)
    answer = kickouts.answers().once(
        scope=_principal().get("principal_arn", ""),
        key=idempotency_key,
        payload=request.model_dump(mode="json"),
        work=lambda: _final_answer(kickouts, request, deadline),
        deadline=deadline,
    )
    raise Answered(answer)


def _kick_out(kickouts: Kickouts, request: KickoutRequest, deadline: Deadline) -> KickoutResult:
    result = kickouts.kick_out(request, deadline, _principal())
    if not result.kicked_user_ids:
        raise NothingToKick(result)
    return result


def _final_answer(kickouts: Kickouts, request: KickoutRequest, deadline: Deadline) -> Answer:
    """The answer to keep for a key: one that says what happened for good. Any other failure is raised, its key
    left free for the caller's retry."""
    try:
        result = _kick_out(kickouts, request, deadline)
    except NothingToKick as error:
        response = nothing_to_kick(error)
    except ZegoRefused as error:
        if error.reply.code not in zim.CALLER_CAUSE_CODES:
            raise
        response = zego_refused(error)
    else:
        return Answer(HTTPStatus.OK.value, serialize(result.model_dump(mode="json")))
    return Answer(int(response.status_code), serialize(response.body))


class InvalidNextToken(Exception):
    """A next_token this API did not give."""


class NoKeepOut(Exception):
    """The user is not kept out of the room."""


@app.get(KEEP_OUTS_PATH, summary="List a room's keep-outs", tags=["keep-outs"], responses=LIST_KEEP_OUTS_RESPONSES)
def list_keep_outs(
    room_id: Annotated[str, Query(min_length=1, max_length=32, pattern=ZEGO_ID_PATTERN)],
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="The most keep-outs read for this page.")] = 50,
    next_token: Annotated[str | None, Query(max_length=200, description="The last page's next_token.")] = None,
) -> KeepOutPage:
    kickouts: Kickouts = app.context["kickouts"]
    deadline = deadline_of(app.lambda_context, at_most=API_DEADLINE_SECONDS)
    keep_outs, last = kickouts.keep_outs().in_room(
        room_id, kickouts.wall_clock(), deadline, limit=limit, after=_after(next_token)
    )
    emit(MetricName.KEEP_OUTS_LISTED, len(keep_outs))
    return KeepOutPage(
        room_id=room_id,
        keep_outs=[
            KeepOutView(user_id=k.user_id, until=k.until, reason=k.reason, operator_id=k.operator_id) for k in keep_outs
        ],
        next_token=base64.urlsafe_b64encode(last.encode()).decode() if last is not None else None,
    )


def _after(next_token: str | None) -> str | None:
    """The last user of the page before, from the token that page gave (the user id, base64url)."""
    if next_token is None:
        return None
    try:
        after = base64.urlsafe_b64decode(next_token.encode("ascii")).decode()
        KeepOutKey(room_id="r", user_id=after)
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidNextToken from None
    return after


# API Gateway hands the path's ids decoded; the resolver's routes match only some of ZEGO's id characters (not `#`
# nor `?`), so `handle` puts them back percent-encoded and the route decodes them.
@app.delete(
    "/keep-outs/<room_id>/<user_id>",
    summary="Lift a keep-out early",
    tags=["keep-outs"],
    responses=LIFT_KEEP_OUT_RESPONSES,
)
def lift_keep_out(room_id: str, user_id: str) -> KeepOutLifted:
    try:
        key = KeepOutKey(room_id=unquote(room_id), user_id=unquote(user_id))
    except ValidationError as error:
        raise RequestValidationError(error.errors()) from None
    kickouts: Kickouts = app.context["kickouts"]
    deadline = deadline_of(app.lambda_context, at_most=API_DEADLINE_SECONDS)
    lifted = kickouts.keep_outs().lift(key.room_id, key.user_id, kickouts.wall_clock(), deadline)
    if lifted is None:
        raise NoKeepOut
    emit(MetricName.KEEP_OUTS_LIFTED, 1)
    logger.info(
        "keep-out lifted",
        extra={"room_id": key.room_id, "user_id": key.user_id, "keep_out_until": lifted.until, **_principal()},
    )
    return KeepOutLifted(room_id=key.room_id, user_id=key.user_id, lifted=True)


def _keep_out_path(event: dict[str, Any]) -> dict[str, Any]:
    """The event of DELETE /keep-outs/{room_id}/{user_id} with its ids percent-encoded in the path."""
    parameters = event.get("pathParameters") or {}
    room_id, user_id = parameters.get("room_id"), parameters.get("user_id")
    if not isinstance(room_id, str) or not isinstance(user_id, str):
        return event
    return {**event, "path": f"{KEEP_OUTS_PATH}/{quote(room_id, safe='')}/{quote(user_id, safe='')}"}


def handle(event: dict[str, Any], context: LambdaContext, kickouts: Kickouts) -> dict[str, Any]:
    logger.set_correlation_id(event.get("requestContext", {}).get("requestId"))
    app.append_context(kickouts=kickouts)  # type: ignore[no-untyped-call]
    if event.get("resource") == KEEP_OUT_RESOURCE:
        return app.resolve(_keep_out_path(event), context)
    if (event.get("httpMethod"), event.get("path")) != ("POST", KICKOUTS_PATH):
        # The method and path are decided before the body is read: the resolver answers 405 or 404, whatever the
        # body holds (a GET with the body `null` is a method error, not a body error).
        return app.resolve(event, context)
    try:
        checked = api_request.checked(event)
    except api_request.Refused as refused:
        audit.record_invalid(refused.detail, api_request.principal(event))
        return _refused(refused)
    return app.resolve(checked, context)


def _refused(refused: api_request.Refused) -> dict[str, Any]:
    """The answer to a request refused before the resolver: the same body, serialised as the resolver does."""
    fields = [FieldProblem(**problem) for problem in refused.fields] or None
    body = ErrorBody(error=refused.error, message=refused.message, fields=fields)
    return {
        "statusCode": refused.status,
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "body": serialize(body.as_json()),
        "isBase64Encoded": False,
    }


def _principal() -> dict[str, str]:
    """Who signed the request being resolved, for its audit line."""
    return api_request.principal(app.current_event.raw_event)


def _error(
    status: HTTPStatus,
    error: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    fields: list[FieldProblem] | None = None,
    zego: ZegoAnswer | None = None,
    result: KickoutResult | None = None,
    completed_calls: list[CallReport] | None = None,
) -> Response[dict[str, Any]]:
    body = ErrorBody(
        error=error, message=message, fields=fields, zego=zego, result=result, completed_calls=completed_calls
    )
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body=body.as_json(), headers=headers
    )


def _completed(error: KickoutError) -> list[CallReport] | None:
    """The calls answered before a later call of the same request failed: their users are kicked."""
    return error.completed or None


def _zego(reply: zim.Reply | None) -> ZegoAnswer | None:
    if reply is None:
        return None
    return ZegoAnswer(code=reply.code, message=reply.message, request_id=reply.request_id)


@app.exception_handler(Answered)
def answered(answered: Answered) -> Response[str]:
    answer = answered.answer
    if answer.replayed:
        logger.info("kickout answer replayed for its Idempotency-Key", extra={"status": answer.status})
    return Response(
        status_code=answer.status,
        content_type=content_types.APPLICATION_JSON,
        body=answer.body,
        headers={REPLAYED_HEADER: "true"} if answer.replayed else None,
    )


@app.exception_handler(KeyInUse)
def key_in_use(_: KeyInUse) -> Response[dict[str, Any]]:
    return _error(
        HTTPStatus.CONFLICT,
        "idempotency_key_in_use",
        "the first request with this Idempotency-Key is still being carried out; retry it shortly",
        headers={"Retry-After": str(KEY_IN_USE_RETRY_AFTER_SECONDS)},
    )


@app.exception_handler(KeyReused)
def key_reused(_: KeyReused) -> Response[dict[str, Any]]:
    audit.record_invalid("Idempotency-Key reused with another payload", _principal())
    return _error(
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "this Idempotency-Key was first sent with another payload; use a new key for a new kickout",
    )


@app.exception_handler(RequestValidationError)
def invalid_request(error: RequestValidationError) -> Response[dict[str, Any]]:
    if any(issue["type"] == "json_invalid" for issue in error.errors()):
        # Powertools' own parse failed (api_request parses first, so this is a safety net): its issue says only
        # "JSON decode error" at a character offset, which reads as a field named "0".
        audit.record_invalid("body not JSON", _principal())
        return _error(HTTPStatus.BAD_REQUEST, "invalid_json", "the request body is not valid JSON")
    problems = field_problems(error.errors())
    audit.record_invalid("; ".join(f"{p['field']}: {p['problem']}" for p in problems), _principal())
    fields = sorted({problem["field"] for problem in problems})
    return _error(
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "invalid_request",
        f"invalid kickout request: {', '.join(fields)}",
        fields=[FieldProblem(**problem) for problem in problems],
    )


@app.exception_handler(InvalidNextToken)
def invalid_next_token(_: InvalidNextToken) -> Response[dict[str, Any]]:
    return _error(HTTPStatus.BAD_REQUEST, "invalid_next_token", "next_token is not one this API gave")


@app.exception_handler(NoKeepOut)
def no_keep_out(_: NoKeepOut) -> Response[dict[str, Any]]:
    return _error(HTTPStatus.NOT_FOUND, "no_keep_out", "the user is not kept out of the room")


@app.exception_handler(KeepOutsUnavailable)
def keep_outs_unavailable(error: KeepOutsUnavailable) -> Response[dict[str, Any]]:
    logger.warning("keep-outs unavailable", extra={"error": str(error)})
    return _error(HTTPStatus.SERVICE_UNAVAILABLE, "keep_outs_unavailable", "the keep-outs could not be read or written")


@app.exception_handler(NothingToKick)
def nothing_to_kick(error: NothingToKick) -> Response[dict[str, Any]]:
    last = error.result.calls[-1]
    return _error(
        HTTPStatus.NOT_FOUND,
        "not_in_room",
        "ZEGO reports that none of the users is in the room (or the room does not exist)",
        zego=_zego(zim.Reply(code=last.code, message=last.message, request_id=last.request_id)),
        result=error.result,
    )


@app.exception_handler(ZegoRefused)
def zego_refused(error: ZegoRefused) -> Response[dict[str, Any]]:
    status = HTTPStatus.UNPROCESSABLE_ENTITY if error.reply.code in zim.CALLER_CAUSE_CODES else HTTPStatus.BAD_GATEWAY
    return _error(status, "zego_refused", error.detail, zego=_zego(error.reply), completed_calls=_completed(error))


@app.exception_handler(ZegoUnavailable)
def zego_unavailable(error: ZegoUnavailable) -> Response[dict[str, Any]]:
    if error.rate_limited:
        return _error(
            HTTPStatus.TOO_MANY_REQUESTS,
            "zego_rate_limited",
            error.detail,
            zego=_zego(error.reply),
            headers={"Retry-After": str(RATE_LIMITED_RETRY_AFTER_SECONDS)},
            completed_calls=_completed(error),
        )
    status = HTTPStatus.GATEWAY_TIMEOUT if error.timed_out else HTTPStatus.BAD_GATEWAY
    return _error(status, "zego_unavailable", error.detail, zego=_zego(error.reply), completed_calls=_completed(error))


@app.exception_handler(ZegoCircuitOpen)
def zego_circuit_open(error: ZegoCircuitOpen) -> Response[dict[str, Any]]:
    # ZEGO was not asked: the fleet saw it failing and waits before its next probe. Answering at once is the point.
    return _error(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "zego_unavailable",
        f"{error.detail}; ZEGO was not called",
        headers={"Retry-After": str(math.ceil(error.retry_after))},
        completed_calls=_completed(error),
    )


@app.exception_handler(OutOfTime)
def out_of_time(error: OutOfTime) -> Response[dict[str, Any]]:
    return _error(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "out_of_time",
        f"{error}; " + ("the calls in completed_calls were done" if error.completed else "ZEGO was not called"),
        headers={"Retry-After": str(RATE_LIMITED_RETRY_AFTER_SECONDS)},
        completed_calls=_completed(error),
    )


@app.exception_handler(SecretUnavailable)
def secret_unavailable(error: SecretUnavailable) -> Response[dict[str, Any]]:
    return _error(HTTPStatus.SERVICE_UNAVAILABLE, "secret_unavailable", str(error))


@app.exception_handler(ConfigurationError)
def misconfigured(error: ConfigurationError) -> Response[dict[str, Any]]:
    return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "configuration_error", str(error))


@app.exception_handler(Exception)
def unexpected(error: Exception) -> Response[dict[str, Any]]:
    # A RecursionError too: the caller's body nested too deeply was refused before the resolver (api_request, 400),
    # and ZEGO's replies are parsed apart (zim.parse_reply, a transport failure), so any other is the function's.
    # Kickouts.kick_out has counted and logged it when it came from there; the stack trace is for the logs only.
    logger.exception("unexpected error")
    return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error", "the function failed unexpectedly")


@app.not_found
def unknown_route(_: NotFoundError) -> Response[dict[str, Any]]:
    if app.current_event.path == KICKOUTS_PATH:
        audit.record_invalid(
            f"method {app.current_event.http_method[:16]} not allowed on {KICKOUTS_PATH}", _principal()
        )
        return _error(
            HTTPStatus.METHOD_NOT_ALLOWED,
            "method_not_allowed",
            f"only POST is allowed on {KICKOUTS_PATH}",
            headers={"Allow": "POST"},
        )
    audit.record_invalid("no such route", _principal())
    return _error(HTTPStatus.NOT_FOUND, "not_found", f"no such route; use POST {KICKOUTS_PATH}")
