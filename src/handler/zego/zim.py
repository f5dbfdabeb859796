"""ZEGO ZIM server API rules for KickoutRoomUser: signing, query encoding, reply parsing, code classes.

Pure: no I/O, no clock, no randomness. Callers hand in the secret, nonce and timestamp, so every rule
here runs on plain values in tests (ZEGO's own worked example is one of them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote

ACTION = "KickoutRoomUser"
SIGNATURE_VERSION = "2.0"
MAX_USERS_PER_CALL = 50
REASON_MAX_BYTES = 32
ROOM_DOES_NOT_EXIST = 660300001
SHARED_CAUSE_CODES = frozenset({3, 100000001, 100000005, 100000016, 100000017, 660500002})
"""Refusals whose cause every message merged into one call shares (auth, AppId, ServerSecret, the app's setup,
the operator, which is part of what merges them): retrying the messages one by one would only be refused again."""


def sign(app_id: int, nonce: str, server_secret: str, timestamp: int) -> str:
    """ZEGO signature v2.0: md5 of AppId, nonce, ServerSecret and timestamp, concatenated as text."""
    material = f"{app_id}{nonce}{server_secret}{timestamp}".encode()
    return hashlib.md5(material, usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class KickoutCall:
    """One KickoutRoomUser request's business parameters (at most 50 users)."""

    room_id: str
    user_ids: tuple[str, ...]
    reason: str | None = None
    operator_id: str | None = None


def _encode(value: str) -> str:
    # safe="" so that & = + % # ? / and space are all escaped: the server must decode exactly the id given.
    return quote(value, safe="")


def kickout_query(call: KickoutCall, *, app_id: int, server_secret: str, nonce: str, timestamp: int) -> str:
    """The full, signed query string for one call; every value percent-encoded (the keys need none but `[]`)."""
    signature = sign(app_id, nonce, server_secret, timestamp)
    parts = [
        f"Action={ACTION}&AppId={app_id}&SignatureNonce={_encode(nonce)}&Timestamp={timestamp}",
        f"SignatureVersion={SIGNATURE_VERSION}&Signature={signature}&RoomId={_encode(call.room_id)}",
        *(f"UserId%5B%5D={_encode(user_id)}" for user_id in call.user_ids),
    ]
    if call.reason:
        parts.append(f"CustomReason={_encode(call.reason)}")
    if call.operator_id:
        parts.append(f"FromUserId={_encode(call.operator_id)}")
    return "&".join(parts)


def kickout_url(
    endpoint: str, call: KickoutCall, *, app_id: int, server_secret: str, nonce: str, timestamp: int
) -> str:
    query = kickout_query(call, app_id=app_id, server_secret=server_secret, nonce=nonce, timestamp=timestamp)
    return f"{endpoint}?{query}"  # settings refuse an endpoint that has a query of its own


def truncate_utf8(text: str, max_bytes: int = REASON_MAX_BYTES) -> str:
    """Longest prefix of `text` that fits in `max_bytes` of UTF-8, never cutting a character in half."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode(errors="ignore")


def chunk(user_ids: Sequence[str], size: int = MAX_USERS_PER_CALL) -> list[tuple[str, ...]]:
    return [tuple(user_ids[start : start + size]) for start in range(0, len(user_ids), size)]


class CodeClass(StrEnum):
    """How a client must treat a ZEGO return code (the shared return-code table, in one place)."""

    DONE = "done"
    TRANSIENT = "transient"
    RATE_LIMITED = "rate_limited"
    RESIGN = "resign"
    REREAD_SECRET = "reread_secret"  # noqa: S105 (a class name, not a password)
    PERMANENT = "permanent"
    NOTHING_TO_DO = "nothing_to_do"


_CODE_CLASSES: dict[int, CodeClass] = {
    0: CodeClass.DONE,
    1: CodeClass.TRANSIENT,
    660000001: CodeClass.TRANSIENT,
    660000003: CodeClass.TRANSIENT,
    100000010: CodeClass.TRANSIENT,
    100000011: CodeClass.TRANSIENT,
    100000012: CodeClass.TRANSIENT,
    100000015: CodeClass.TRANSIENT,
    105001: CodeClass.TRANSIENT,
    660300007: CodeClass.TRANSIENT,
    7: CodeClass.RATE_LIMITED,
    660300005: CodeClass.RATE_LIMITED,
    660300006: CodeClass.RATE_LIMITED,
    100000004: CodeClass.RESIGN,
    100000005: CodeClass.REREAD_SECRET,
    ROOM_DOES_NOT_EXIST: CodeClass.NOTHING_TO_DO,
    660300002: CodeClass.NOTHING_TO_DO,
}


def classify(code: int) -> CodeClass:
    """Every code not known to be retryable or benign is permanent: retrying it would only burn the quota."""
    return _CODE_CLASSES.get(code, CodeClass.PERMANENT)


def codes_of(code_class: CodeClass) -> tuple[int, ...]:
    """The codes known to be of `code_class`, in order (PERMANENT also holds every code not listed)."""
    return tuple(sorted(code for code, known in _CODE_CLASSES.items() if known is code_class))


CALLER_CAUSE_CODES: dict[int, str] = {
    660500002: "operator not registered",
    660000012: "user id too long",
}
"""Permanent refusals caused by what the caller sent (its ids, its operator), not by the function's configuration:
the caller's to fix (the API answers 422, not 502)."""


MAX_REPLY_BYTES = 4096
"""ZEGO's envelope is about 100 bytes: a body larger than this is not ZEGO's answer (the transport reads no more)."""
MAX_CODE = 2**63 - 1
"""The largest Code a typed integer (64-bit) can carry; ZEGO's own codes are 9 digits at most."""
MESSAGE_MAX_CHARS = 256
REQUEST_ID_MAX_CHARS = 128
"""A Message or RequestId longer than this is cut (ending in '…'): it is only shown and logged, never acted on."""


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    message: str
    request_id: str

    @property
    def code_class(self) -> CodeClass:
        return classify(self.code)


class MalformedReply(ValueError):
    """ZEGO answered 200 with something that is not its JSON envelope (treated as a transport failure)."""


def parse_reply(body: bytes) -> Reply:
    """ZEGO's envelope `{"Code": 0, "Message": "...", "RequestId": "..."}`; raises MalformedReply, and only that, for
    anything else.

    The body must be at most MAX_REPLY_BYTES of UTF-8 (a byte order mark is ignored, as RFC 8259 allows), strict
    JSON (no NaN or Infinity, no key twice: which one would ZEGO have meant?), one object, with a Code that is an
    integer from 0 to MAX_CODE (a negative, fractional, boolean, textual or larger one is no code of ZEGO's, so
    nothing can be concluded from it). Message and RequestId only inform: of another type they become "", and
    they are cut to a readable length. A RequestId that is a JSON integer is kept as its decimal text (Python reads
    JSON integers exactly, so every digit of ZEGO's 18-digit ids survives); any other type (a float has lost
    digits, a bool, null, an array or object names no request) becomes "" rather than a made-up id.
    """
    if len(body) > MAX_REPLY_BYTES:
        raise MalformedReply(f"reply of {len(body)} bytes is larger than ZEGO's envelope")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedReply(f"reply is not UTF-8 ({_bytes(body)})") from None
    try:
        document = json.loads(text.removeprefix("\ufeff"), object_pairs_hook=_unique_keys, parse_constant=_refuse)
    except RecursionError:
        raise MalformedReply(f"reply is nested too deeply to be ZEGO's envelope ({_bytes(body)})") from None
    except ValueError:
        # Not JSON; NaN or Infinity; a key twice; an integer of more digits than int() reads (Python's limit).
        raise MalformedReply(f"reply is not JSON ({_bytes(body)})") from None
    if not isinstance(document, dict):
        raise MalformedReply("reply is not a JSON object")
    code = document.get("Code")
    if not isinstance(code, int) or isinstance(code, bool):
        raise MalformedReply("reply has no integer Code")
    if not 0 <= code <= MAX_CODE:
        raise MalformedReply("reply's Code is outside ZEGO's range")
    message = document.get("Message")
    request_id = document.get("RequestId")
    if isinstance(request_id, int) and not isinstance(request_id, bool):
        request_id = str(request_id)
    return Reply(
        code=code,
        message=_shown(message, MESSAGE_MAX_CHARS),
        request_id=_shown(request_id, REQUEST_ID_MAX_CHARS),
    )


def _bytes(body: bytes) -> str:
    return f"{len(body)} byte{'' if len(body) == 1 else 's'}"


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("a key given twice")
    return document


def _refuse(constant: str) -> object:
    raise ValueError(f"{constant} is not JSON")


def _shown(value: object, max_chars: int) -> str:
    """A text field fit to show and log: "" unless a string; lone surrogates (JSON's \\ud800) replaced; cut."""
    if not isinstance(value, str):
        return ""
    text = value.encode("utf-8", errors="replace").decode("utf-8")
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"
