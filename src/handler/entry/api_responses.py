"""The REST API's error body, one model for the responses api.py builds and for the OpenAPI document."""

from typing import Any

from aws_lambda_powertools.event_handler import content_types
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel, Field

from handler.core.models import CallReport, KickoutResult
from handler.zego import zim
from handler.zego.zim import CodeClass


class FieldProblem(BaseModel):
    field: str
    problem: str


class ZegoAnswer(BaseModel):
    code: int
    message: str
    request_id: str


class ErrorBody(BaseModel):
    """Every error response's body; a field without a value is left out."""

    error: str = Field(description="Stable code to branch on; the status's description lists the values.")
    message: str = Field(description="For people; never echoes the request's values.")
    fields: list[FieldProblem] | None = Field(default=None, description="invalid_request: each field, its problem.")
    zego: ZegoAnswer | None = Field(default=None, description="ZEGO's answer, when there was one.")
    result: KickoutResult | None = Field(default=None, description="not_in_room: what ZEGO answered per call.")
    completed_calls: list[CallReport] | None = Field(
        default=None,
        description="A request of over 50 users that failed partway: the calls ZEGO had already answered "
        "(their users are kicked).",
    )

    def as_json(self) -> dict[str, Any]:
        """The body as sent: JSON values, the fields without a value left out."""
        return self.model_dump(mode="json", exclude_none=True)


def _codes(code_class: CodeClass) -> str:
    return ", ".join(str(code) for code in zim.codes_of(code_class))


def _error_response(description: str, headers: dict[str, str] | None = None) -> OpenAPIResponse:
    response: OpenAPIResponse = {
        "description": description,
        "content": {content_types.APPLICATION_JSON: {"model": ErrorBody}},
    }
    if headers:
        response["headers"] = {
            name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()
        }
    return response


RESPONSES: dict[int, OpenAPIResponse] = {
    200: {
        "description": "At least one user was kicked; users ZEGO reports absent are listed apart.",
        "headers": {
            "Idempotent-Replayed": {
                "description": "true: the answer kept for this Idempotency-Key, given again (ZEGO was not called). "
                "Sent with every replayed status (200, 404 not_in_room, 422 zego_refused).",
                "schema": {"type": "string"},
            }
        },
    },
    400: _error_response(
        "invalid_json: the body is not JSON, holds a number Python will not read (over 4300 digits), is nested too "
        "deeply, or is flagged base64 but is not valid base64 or not UTF-8 once decoded; invalid_idempotency_key: "
        "the Idempotency-Key is not a string of 1 to 255 printable ASCII characters, or is sent twice with "
        "different values."
    ),
    404: _error_response(
        "not_in_room: ZEGO says the room does not exist or none of the users is in it "
        f"({_codes(CodeClass.NOTHING_TO_DO)}); "
        "not_found: another path."
    ),
    405: _error_response("method_not_allowed: another method on /kickouts.", {"Allow": "Only POST is allowed."}),
    409: _error_response(
        "idempotency_key_in_use: the first request with this Idempotency-Key is still being carried out "
        "(ZEGO was not called for this one).",
        {"Retry-After": "Seconds to wait before trying again."},
    ),
    422: _error_response(
        "invalid_request: the payload breaks a rule, or the body is not one JSON object (an array, a single "
        "value), or there is no body (`fields` says which); zego_refused: ZEGO refused what the "
        f"caller sent ({', '.join(f'{meaning} {code}' for code, meaning in zim.CALLER_CAUSE_CODES.items())}); "
        "idempotency_key_reused: the Idempotency-Key was first sent with another payload (nothing was done)."
    ),
    415: _error_response(
        "unsupported_media_type: a Content-Type other than application/json (in any case), a charset other than "
        "UTF-8, or Content-Type headers that disagree."
    ),
    429: _error_response(
        f"zego_rate_limited: ZEGO kept answering over the rate limit ({_codes(CodeClass.RATE_LIMITED)}).",
        {"Retry-After": "Seconds to wait before trying again."},
    ),
    500: _error_response(
        "configuration_error: an environment variable is missing or malformed; internal_error: the function failed "
        "unexpectedly (a bug: the logs hold the stack trace, the answer none of it)."
    ),
    502: _error_response(
        "zego_refused: a permanent refusal caused by the function's configuration (AppId, ServerSecret); "
        "zego_unavailable: ZEGO kept failing."
    ),
    503: _error_response(
        "secret_unavailable: the ServerSecret could not be read from Secrets Manager; out_of_time: the invocation "
        "had no time left to call ZEGO (ZEGO was not called); zego_unavailable: ZEGO kept failing and the fleet "
        "waits before calling it again (its circuit is open; ZEGO was not called).",
        {"Retry-After": "Seconds to wait before trying again (out_of_time, zego_unavailable)."},
    ),
    504: _error_response("zego_unavailable: ZEGO did not answer in time."),
}


LIST_KEEP_OUTS_RESPONSES: dict[int, OpenAPIResponse] = {
    200: {"description": "The room's keep-outs that still last, in user order, a page at a time."},
    400: _error_response("invalid_next_token: next_token is not one this API gave."),
    422: _error_response("invalid_request: room_id missing or not a ZEGO id, or limit not 1 to 100."),
    503: _error_response("keep_outs_unavailable: the keep-outs' table could not be read; try again."),
}
LIFT_KEEP_OUT_RESPONSES: dict[int, OpenAPIResponse] = {
    200: {"description": "The keep-out was lifted: ZIM's next room_enter of the user leaves them in."},
    404: _error_response("no_keep_out: the user is not kept out of the room (none, or it ended)."),
    422: _error_response("invalid_request: room_id or user_id is not a ZEGO id."),
    503: _error_response("keep_outs_unavailable: the keep-outs' table could not be written; try again."),
}
