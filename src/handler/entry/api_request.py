"""The raw API Gateway REST event, checked once before Powertools' resolver sees it: who sent it, and its body.

API Gateway hands over whatever the client sent: Content-Type in any case and possibly twice (the single-value
map keeps the last, the multi-value map all of them), a body flagged base64 that may not be base64 nor UTF-8,
JSON that Python's parser refuses for reasons other than syntax (an integer past its digit limit), and JSON
that is not one object, an `Idempotency-Key` sent twice or not a Structured Field string. Each is the client's
mistake and gets its own 4xx here, as a `Refused`; what passes is handed on as one JSON object in UTF-8 text under
a single `Content-Type: application/json`, and the key (if any) as its plain value under one `idempotency-key`, so
the resolver downstream meets only the shape it understands.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

JSON_MEDIA_TYPE = "application/json"
# RFC 8259: JSON exchanged between systems is UTF-8; US-ASCII is a subset of it.
JSON_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii"})
# requestContext.identity of an IAM-authorised request, and the audit field each becomes.
IDENTITY_FIELDS = {
    "userArn": "principal_arn",
    "caller": "principal_caller",
    "accountId": "principal_account",
    "sourceIp": "source_ip",
}
_SHOWN_CHARACTERS = 60
IDEMPOTENCY_KEY_HEADER = "idempotency-key"
"""The IETF httpapi draft's request header, as Powertools names a header parameter (in lower case)."""
MAX_IDEMPOTENCY_KEY_CHARACTERS = 255
# RFC 8941 3.3.3: a String is DQUOTE *( %x20-21 / %x23-5B / %x5D-7E / "\" DQUOTE / "\\" ) DQUOTE. A bare token of
# visible ASCII (a UUID, as most clients send it) is taken too: refusing it would help no one.
_SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_BARE_KEY = re.compile(r"[\x21\x23-\x7e]+")


@dataclass(eq=False)
class Refused(Exception):
    """The request cannot be a kickout; `detail` is for the log (it never repeats the body)."""

    status: HTTPStatus
    error: str
    message: str
    detail: str
    fields: tuple[dict[str, str], ...] = ()


def principal(event: dict[str, Any]) -> dict[str, str]:
    """Who signed the request (IAM user or role ARN, caller id, account, source IP), as API Gateway saw it."""
    context = event.get("requestContext")
    identity = context.get("identity") if isinstance(context, dict) else None
    if not isinstance(identity, dict):
        return {}
    return {
        field: str(identity[key])[:256] for key, field in IDENTITY_FIELDS.items() if isinstance(identity.get(key), str)
    }


def checked(event: dict[str, Any]) -> dict[str, Any]:
    """The event with its body as JSON text of one object, under one JSON Content-Type; raises Refused."""
    _check_content_type(event)
    key = idempotency_key(event)
    text = _body_text(event)
    if text:
        _check_one_object(text)
    headers = _without(event.get("headers"), _is_rewritten)
    multi_value_headers = _without(event.get("multiValueHeaders"), _is_rewritten)
    headers["Content-Type"] = JSON_MEDIA_TYPE
    multi_value_headers["Content-Type"] = [JSON_MEDIA_TYPE]
    if key is not None:
        headers[IDEMPOTENCY_KEY_HEADER] = key
        multi_value_headers[IDEMPOTENCY_KEY_HEADER] = [key]
    return {
        **event,
        "headers": headers,
        "multiValueHeaders": multi_value_headers,
        "body": text,
        "isBase64Encoded": False,
    }


def content_type_values(event: dict[str, Any]) -> list[str]:
    """Every Content-Type the client sent, from both header maps, header names in any case; blanks dropped."""
    return [value for value in _header_values(event, "content-type") if value.strip()]


def idempotency_key(event: dict[str, Any]) -> str | None:
    """The `Idempotency-Key` the client sent (unquoted), or None; raises Refused when it is malformed or sent twice."""
    values = set(_header_values(event, IDEMPOTENCY_KEY_HEADER))
    if not values:
        return None
    if len(values) > 1:
        raise _bad_key("Idempotency-Key sent more than once with different values")
    (value,) = values
    value = value.strip(" \t")
    if quoted := _SF_STRING.fullmatch(value):
        key = re.sub(r"\\(.)", r"\1", quoted.group(1))
    elif _BARE_KEY.fullmatch(value):
        key = value
    else:
        raise _bad_key("Idempotency-Key is not a Structured Field string")
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARACTERS:
        raise _bad_key(f"Idempotency-Key of {len(key)} characters")
    return key


def _bad_key(detail: str) -> Refused:
    return Refused(
        HTTPStatus.BAD_REQUEST,
        "invalid_idempotency_key",
        f"send one Idempotency-Key header: a string of 1 to {MAX_IDEMPOTENCY_KEY_CHARACTERS} printable ASCII "
        'characters, e.g. Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324"',
        detail,
    )


def _header_values(event: dict[str, Any], lower_name: str) -> list[str]:
    """Every value of one header the client sent, from both header maps, its name in any case."""
    values: list[str] = []
    for name, value in _items(event.get("headers")):
        if name.strip().lower() == lower_name:
            values.append(str(value))
    for name, listed in _items(event.get("multiValueHeaders")):
        if name.strip().lower() == lower_name:
            values.extend(str(value) for value in (listed if isinstance(listed, list) else [listed]))
    return values


def _check_content_type(event: dict[str, Any]) -> None:
    for value in content_type_values(event):
        media_type, _, parameters = value.partition(";")
        if media_type.strip().lower() != JSON_MEDIA_TYPE:
            # Powertools would parse a form body as form fields (curl -d sends one by default) and answer 422
            # about fields named after the body. A kickout is JSON: say so.
            raise Refused(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the kickout as JSON, with Content-Type: application/json",
                f"unsupported Content-Type {_shown(value)}",
            )
        charset = _parameters(parameters).get("charset")
        if charset is not None and charset.lower() not in JSON_CHARSETS:
            raise Refused(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the kickout as JSON in UTF-8 (charset=utf-8, or no charset)",
                f"unsupported charset {_shown(charset)}",
            )


def _body_text(event: dict[str, Any]) -> str:
    body = event.get("body")
    if body is None:
        return ""
    if not isinstance(body, str):
        raise Refused(HTTPStatus.BAD_REQUEST, "invalid_json", "the request body is not valid JSON", "body not text")
    if not event.get("isBase64Encoded"):
        return body
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(
            HTTPStatus.BAD_REQUEST,
            "invalid_json",
            "the request body is flagged base64 but is not valid base64",
            "body not valid base64",
        ) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(
            HTTPStatus.BAD_REQUEST, "invalid_json", "the request body is not UTF-8 text", "body not UTF-8"
        ) from None


def _check_one_object(text: str) -> None:
    try:
        document = json.loads(text)
    except RecursionError:
        raise Refused(
            HTTPStatus.BAD_REQUEST,
            "invalid_json",
            "the request body is nested too deeply to be a kickout",
            "body nested too deeply",
        ) from None
    except json.JSONDecodeError:
        raise Refused(
            HTTPStatus.BAD_REQUEST, "invalid_json", "the request body is not valid JSON", "body not JSON"
        ) from None
    except ValueError:
        # Refused beyond syntax: an integer past Python's digit limit (sys.get_int_max_str_digits()).
        raise Refused(
            HTTPStatus.BAD_REQUEST,
            "invalid_json",
            "the request body holds a number with too many digits to read",
            "body holds a number with too many digits",
        ) from None
    if not isinstance(document, dict):
        kind = "an array" if isinstance(document, list) else "a single value"
        problem = f"must be one JSON object (a kickout), not {kind}"
        raise Refused(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            "invalid_request",
            "invalid kickout request: body",
            f"body: {problem}",
            ({"field": "body", "problem": problem},),
        )


def _items(headers: object) -> Iterator[tuple[str, object]]:
    if isinstance(headers, dict):
        for name, value in headers.items():
            yield str(name), value


def _is_content_type(name: str) -> bool:
    return name.strip().lower() == "content-type"


def _is_rewritten(name: str) -> bool:
    return _is_content_type(name) or name.strip().lower() == IDEMPOTENCY_KEY_HEADER


def _without(headers: object, dropped: Callable[[str], bool]) -> dict[str, Any]:
    return {name: value for name, value in _items(headers) if not dropped(name)}


def _parameters(text: str) -> dict[str, str]:
    """`; name=value; ...` with names in lower case and quotes removed (RFC 9110, 5.6.6)."""
    parameters: dict[str, str] = {}
    for parameter in text.split(";"):
        name, equals, value = parameter.partition("=")
        if equals:
            parameters[name.strip().lower()] = value.strip().strip('"')
    return parameters


def _shown(text: str) -> str:
    return text[:_SHOWN_CHARACTERS]
