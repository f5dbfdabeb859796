"""ZIM's callback rules as plain functions: the signature (ZEGO's official vector), the timestamp window in seconds
and milliseconds, the three body encodings, and what a malformed callback is refused for."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from handler.zego import callbacks
from handler.zego.callbacks import CallbackRefused

NOW = 1_470_820_200.0
"""A simulated now, two seconds after the official example's timestamp."""


def test_signature_is_zegos_official_example() -> None:
    # GIVEN ZEGO's documented vector: secret "secret", timestamp 1470820198, nonce 123412, joined sorted
    # THEN its documented signature comes out, and it matches in either case
    assert callbacks.signature("secret", "1470820198", "123412") == "5bd59fd62953a8059fb7eaba95720f66d19e4517"
    assert callbacks.signature_matches("secret", "1470820198", "123412", "5BD59FD62953A8059FB7EABA95720F66D19E4517")


@pytest.mark.parametrize(
    ("secret", "timestamp", "nonce", "given"),
    [
        ("other", "1470820198", "123412", "5bd59fd62953a8059fb7eaba95720f66d19e4517"),
        ("secret", "1470820199", "123412", "5bd59fd62953a8059fb7eaba95720f66d19e4517"),
        ("secret", "1470820198", "123413", "5bd59fd62953a8059fb7eaba95720f66d19e4517"),
        ("secret", "1470820198", "123412", "5bd59fd62953a8059fb7eaba95720f66d19e451"),
        ("secret", "1470820198", "123412", ""),
    ],
)
def test_a_signature_of_anything_else_does_not_match(secret: str, timestamp: str, nonce: str, given: str) -> None:
    assert not callbacks.signature_matches(secret, timestamp, nonce, given)


def signed(**fields: Any) -> dict[str, Any]:
    document = {"appid": "1", "event": "room_enter", "room_id": "r", "operator_account": "u", **fields}
    document.setdefault("timestamp", "1470820198")
    document.setdefault("nonce", "123412")
    document.setdefault("signature", callbacks.signature("secret", str(document["timestamp"]), str(document["nonce"])))
    return document


def test_a_signed_callback_in_the_window_is_verified_and_its_fields_read() -> None:
    verified = callbacks.verify(signed(), "secret", NOW)

    assert (verified.app_id, verified.event, verified.nonce, verified.at) == (1, "room_enter", "123412", 1470820198.0)
    assert callbacks.room_enter(verified) == callbacks.RoomEnter(room_id="r", user_id="u")


def test_a_timestamp_in_milliseconds_is_read_as_such() -> None:
    verified = callbacks.verify(signed(timestamp=1_470_820_198_500), "secret", NOW)

    assert verified.at == 1_470_820_198.5
    assert verified.timestamp == "1470820198500"


@pytest.mark.parametrize("offset", [-301, 301])
def test_a_timestamp_more_than_five_minutes_from_now_is_refused_as_a_replay(offset: int) -> None:
    with pytest.raises(CallbackRefused) as refused:
        callbacks.verify(signed(timestamp=str(int(NOW) + offset)), "secret", NOW)

    assert refused.value.status == 401
    assert "timestamp" in refused.value.message


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"signature": None}, 401),
        ({"signature": "0" * 40}, 401),
        ({"signature": 5}, 401),
        ({"timestamp": None}, 400),
        ({"timestamp": "17e8"}, 400),
        ({"timestamp": True}, 400),
        ({"nonce": ["1"]}, 400),
        ({"appid": "one"}, 400),
    ],
)
def test_a_callback_missing_or_mistyping_a_common_field_is_refused(change: dict[str, Any], status: int) -> None:
    fields = signed()
    fields.update(change)
    fields = {name: value for name, value in fields.items() if value is not None}

    with pytest.raises(CallbackRefused) as refused:
        callbacks.verify(fields, "secret", NOW)

    assert refused.value.status == status


ROOM_EXIT = {
    "appid": "1",
    "event": "room_exit",
    "room_id": "1",
    "nonce": "350176",
    "signature": "x",
    "exit_type": "Kickout",
    "operator_account": "userA",
    "exit_user_ids": ["Tony", "Jenny"],
    "timestamp": 1499676978,
}


@pytest.mark.parametrize(
    "encode",
    [
        lambda document: json.dumps(document).encode(),
        lambda document: quote(json.dumps(document)).encode(),
        lambda document: urlencode(
            {name: value for name, value in document.items() if name != "exit_user_ids"}
            | {"exit_user_ids": json.dumps(document["exit_user_ids"])}
        ).encode(),
        lambda document: urlencode(
            [(name, value) for name, value in document.items() if name != "exit_user_ids"]
            + [("exit_user_ids", user) for user in document["exit_user_ids"]]
        ).encode(),
    ],
    ids=["json", "percent-encoded json", "form with a json array", "form with repeated ids"],
)
def test_the_body_is_read_as_json_percent_encoded_json_or_a_form(encode: Any) -> None:
    fields = callbacks.parse_body(encode(ROOM_EXIT))

    assert fields["event"] == "room_exit"
    assert fields["exit_user_ids"] == ["Tony", "Jenny"]
    assert str(fields["timestamp"]) == "1499676978"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 400),
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (b"%7B%22a%22", 400),
        (b"a=1&a=2", 400),
        (b"\xff\xfe", 400),
        (b"{" * 100_000, 413),
        (b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 413),
        (b'{"a": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", 400),
        (b'{"a": {"b": 1}}', 400),
        (b'{"a": [[1]]}', 400),
    ],
    ids=[
        "empty",
        "broken json",
        "json array",
        "broken percent-encoding",
        "repeated form field",
        "not utf-8",
        "huge",
        "huge and nested",
        "nested",
        "an object in a field",
        "a list in a list",
    ],
)
def test_a_body_that_is_no_callback_is_refused(body: bytes, status: int) -> None:
    with pytest.raises(CallbackRefused) as refused:
        callbacks.parse_body(body)

    assert refused.value.status == status


def test_a_room_exit_is_read_with_its_users_each_once() -> None:
    fields = signed(**{**ROOM_EXIT, "timestamp": "1470820198", "exit_user_ids": ["Tony", "Jenny", "Tony"]})
    fields["signature"] = callbacks.signature("secret", "1470820198", "350176")

    left = callbacks.room_exit(callbacks.verify(fields, "secret", NOW))

    assert left == callbacks.RoomExit(
        room_id="1", exit_type="Kickout", operator_account="userA", user_ids=("Tony", "Jenny")
    )


@pytest.mark.parametrize("users", ["Tony", [1], [""], ["x" * 200], ["u"] * 501])
def test_a_room_exit_whose_users_are_no_list_of_ids_is_refused(users: Any) -> None:
    fields = signed(event="room_exit", exit_type="Kickout", exit_user_ids=users)

    with pytest.raises(CallbackRefused) as refused:
        callbacks.room_exit(callbacks.verify(fields, "secret", NOW))

    assert refused.value.status == 400
