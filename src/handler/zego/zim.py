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
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedReply(f"reply is not JSON ({len(body)} byte{'' if len(body) == 1 else 's'})") from error
    if not isinstance(document, dict):
        raise MalformedReply("reply is not a JSON object")
    code = document.get("Code")
    if not isinstance(code, int) or isinstance(code, bool):
        raise MalformedReply("reply has no integer Code")
    message = document.get("Message")
    request_id = document.get("RequestId")
    return Reply(
        code=code,
        message=message if isinstance(message, str) else "",
        request_id=str(request_id) if request_id is not None else "",
    )
