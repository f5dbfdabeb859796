"""ZIM's server callbacks: ZEGO's rules for checking one and reading its fields (the one home of them).

Pure: no I/O, no clock of its own (the caller hands `now`). ZEGO POSTs a JSON body, which its docs say to URL-decode
first: plain JSON, percent-encoded JSON and a form-encoded body are all read. The signature is SHA-1 of the sorted
strings secret, timestamp and nonce; it covers neither the body nor the event, so it only proves the sender knows the
secret: it is compared in constant time, and a timestamp far from now is refused (a replay).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final
from urllib.parse import parse_qsl, unquote_to_bytes

MAX_BODY_BYTES: Final = 64 * 1024
"""A `room_exit` of one kickout names at most 50 users of 32 characters: a few KiB. Anything much larger is no
callback of ZEGO's."""
TIMESTAMP_WINDOW_SECONDS: Final = 300
"""How far a callback's timestamp may lie from now: ZEGO retries for 62 s, and clocks drift a little."""
MILLISECONDS_FROM: Final = 100_000_000_000
"""A timestamp at or above this is in milliseconds (10**11 s is the year 5138; 10**11 ms is 1973)."""
MAX_EXIT_USERS: Final = 500
MAX_ID_CHARACTERS: Final = 128
"""ZEGO's ids are at most 32 characters; a callback's are checked loosely (longer is no id of ZEGO's)."""


class Event(StrEnum):
    ROOM_ENTER = "room_enter"
    ROOM_EXIT = "room_exit"


class ExitType(StrEnum):
    QUIT = "Quit"
    KICKOUT = "Kickout"


class CallbackRefused(Exception):
    """The request is no callback to act on: `status` 400 (malformed) or 401 (not signed by ZEGO, or stale)."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


def malformed(message: str) -> CallbackRefused:
    return CallbackRefused(400, "malformed_callback", message)


def unauthenticated(message: str) -> CallbackRefused:
    return CallbackRefused(401, "bad_signature", message)


def signature(secret: str, timestamp: str, nonce: str) -> str:
    """ZEGO's callback signature: SHA-1 of the three strings sorted (byte order) and joined, lowercase hex."""
    joined = "".join(sorted([secret, timestamp, nonce])).encode()
    return hashlib.sha1(joined, usedforsecurity=False).hexdigest()


def signature_matches(secret: str, timestamp: str, nonce: str, given: str) -> bool:
    """Whether `given` is the signature, compared in constant time (its length aside)."""
    return hmac.compare_digest(signature(secret, timestamp, nonce).encode(), given.strip().lower().encode())


def timestamp_seconds(timestamp: str) -> float:
    """A callback's timestamp in seconds; ZEGO's docs say milliseconds, their samples show seconds: both read."""
    value = int(timestamp)
    return value / 1000 if value >= MILLISECONDS_FROM else float(value)


def parse_body(body: bytes) -> dict[str, Any]:
    """The callback's fields from its body: JSON, percent-encoded JSON, or a form; raises CallbackRefused (400, 413)."""
    if len(body) > MAX_BODY_BYTES:
        raise CallbackRefused(413, "body_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    text = body.strip()
    if not text:
        raise malformed("the body is empty")
    if text[:1] != b"{" and text[:3].upper() == b"%7B":
        text = unquote_to_bytes(text).strip()
    return _json_fields(text) if text[:1] == b"{" else _form_fields(text)


def _json_fields(text: bytes) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        raise malformed("the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise malformed("the body is not a JSON object")
    if not all(_flat(value) for value in document.values()):
        raise malformed("a field holds nested data: a callback's fields are strings, numbers and lists of them")
    return document


def _form_fields(text: bytes) -> dict[str, Any]:
    """A form's fields; `exit_user_ids` repeated (or `exit_user_ids[]`), or once as a JSON array."""
    try:
        pairs = parse_qsl(
            text.decode(), keep_blank_values=True, strict_parsing=True, max_num_fields=MAX_EXIT_USERS + 20
        )
    except (ValueError, UnicodeDecodeError):
        raise malformed("the body is neither JSON nor a form") from None
    fields: dict[str, Any] = {}
    users: list[str] = []
    for name, value in pairs:
        if name in ("exit_user_ids", "exit_user_ids[]"):
            users.append(value)
        elif name in fields:
            raise malformed(f"the form repeats {name[:40]!r}")
        else:
            fields[name] = value
    if len(users) == 1 and users[0].startswith("["):
        try:
            fields["exit_user_ids"] = json.loads(users[0])
        except ValueError:
            raise malformed("exit_user_ids is not a JSON array") from None
    elif users:
        fields["exit_user_ids"] = users
    return fields


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _flat(value: Any) -> bool:
    return _scalar(value) or (isinstance(value, list) and all(_scalar(item) for item in value))


@dataclass(frozen=True, slots=True)
class Signed:
    """A callback whose signature and timestamp were checked."""

    app_id: int
    event: str
    timestamp: str
    nonce: str
    at: float
    """The event's time, seconds."""
    fields: Mapping[str, Any]


def _text(fields: Mapping[str, Any], name: str, *, numeric: bool = False, int_ok: bool = False) -> str:
    """A field ZEGO sends as a string (`numeric`: decimal digits; `int_ok`: a JSON number is taken too)."""
    value = fields.get(name)
    if isinstance(value, int) and not isinstance(value, bool) and (numeric or int_ok) and value >= 0:
        value = str(value)
    if not isinstance(value, str) or not value:
        raise malformed(f"{name} is missing or not a string")
    if len(value) > MAX_ID_CHARACTERS:
        raise malformed(f"{name} is too long")
    if numeric and not (value.isascii() and value.isdigit()):
        raise malformed(f"{name} is not a decimal number")
    return value


def verify(fields: Mapping[str, Any], secret: str, now: float) -> Signed:
    """The callback, once its signature and timestamp hold; raises CallbackRefused (400 malformed, 401 otherwise).

    The signature is checked before anything else the body says is believed; a missing one is 401, not 400.
    """
    given = fields.get("signature")
    if not isinstance(given, str) or not given:
        raise unauthenticated("the callback carries no signature")
    timestamp = _text(fields, "timestamp", numeric=True)
    nonce = _text(fields, "nonce", int_ok=True)
    if not signature_matches(secret, timestamp, nonce, given):
        raise unauthenticated("the signature does not match")
    at = timestamp_seconds(timestamp)
    if abs(now - at) > TIMESTAMP_WINDOW_SECONDS:
        raise unauthenticated(f"the timestamp is more than {TIMESTAMP_WINDOW_SECONDS} s from now")
    app_id = int(_text(fields, "appid", numeric=True))
    event = _text(fields, "event")
    return Signed(app_id=app_id, event=event, timestamp=timestamp, nonce=nonce, at=at, fields=fields)


@dataclass(frozen=True, slots=True)
class RoomEnter:
    room_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class RoomExit:
    room_id: str
    exit_type: str
    operator_account: str | None
    user_ids: tuple[str, ...]


def room_enter(signed: Signed) -> RoomEnter:
    return RoomEnter(room_id=_text(signed.fields, "room_id"), user_id=_text(signed.fields, "operator_account"))


def room_exit(signed: Signed) -> RoomExit:
    users = signed.fields.get("exit_user_ids")
    if not isinstance(users, list) or len(users) > MAX_EXIT_USERS:
        raise malformed(f"exit_user_ids is not a list of at most {MAX_EXIT_USERS} ids")
    if not all(isinstance(user, str) and 0 < len(user) <= MAX_ID_CHARACTERS for user in users):
        raise malformed("exit_user_ids holds something that is no user id")
    operator = signed.fields.get("operator_account")
    return RoomExit(
        room_id=_text(signed.fields, "room_id"),
        exit_type=_text(signed.fields, "exit_type"),
        operator_account=operator if isinstance(operator, str) and operator else None,
        user_ids=tuple(dict.fromkeys(users)),
    )
