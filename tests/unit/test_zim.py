"""ZEGO's rules as plain functions: the signature, the query, the reply and what each code means."""

from __future__ import annotations

import json
import string
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handler.zego import zim
from handler.zego.zim import CodeClass, KickoutCall
from kickout_dev.zim_server import parse_query

ZEGO_ID_CHARACTERS = string.ascii_letters + string.digits + "!#$%&()+-:;<=.>?@[]^_{}|~, "
zego_ids = st.text(alphabet=ZEGO_ID_CHARACTERS, min_size=1, max_size=32)


def signed_query(call: KickoutCall) -> dict[str, list[str]]:
    query = zim.kickout_query(
        call, app_id=12345, server_secret="s" * 32, nonce="0123456789abcdef", timestamp=1700000000
    )
    return parse_query(query)


def test_signature_matches_zegos_worked_example() -> None:
    # GIVEN ZEGO's own example (from its Go sample) WHEN signed THEN the documented signature comes out
    assert (
        zim.sign(12345, "4fd24687296dd9f3", "9193cc662a4c0ec135ec71fb57194b38", 1615186943)
        == "43e5cfcca828314675f91b001390566a"
    )


@given(app_id=st.integers(1, 2**32 - 1), nonce=st.text("0123456789abcdef", min_size=16, max_size=16))
def test_signature_is_32_lowercase_hex(app_id: int, nonce: str) -> None:
    signature = zim.sign(app_id, nonce, "secret", 1)
    assert len(signature) == 32
    assert set(signature) <= set("0123456789abcdef")


@given(room_id=zego_ids, user_ids=st.lists(zego_ids, min_size=1, max_size=50), reason=st.text(max_size=40))
def test_query_decodes_to_exactly_the_ids_given(room_id: str, user_ids: list[str], reason: str) -> None:
    # GIVEN any ids from ZEGO's allowed set and any reason WHEN encoded and decoded the strict way
    params = signed_query(KickoutCall(room_id, tuple(user_ids), reason=reason or None, operator_id="op"))
    # THEN the server reads exactly what was given, nothing more
    assert params["RoomId"] == [room_id]
    assert params["UserId[]"] == user_ids
    assert params.get("CustomReason", []) == ([reason] if reason else [])
    assert params["FromUserId"] == ["op"]


def test_room_id_with_ampersand_cannot_add_a_user() -> None:
    params = signed_query(KickoutCall("a&UserId[]=admin", ("victim",)))
    assert params["RoomId"] == ["a&UserId[]=admin"]
    assert params["UserId[]"] == ["victim"]


def test_query_carries_every_public_parameter() -> None:
    params = signed_query(KickoutCall("room", ("u1", "u2")))
    assert params["Action"] == ["KickoutRoomUser"]
    assert params["AppId"] == ["12345"]
    assert params["SignatureNonce"] == ["0123456789abcdef"]
    assert params["Timestamp"] == ["1700000000"]
    assert params["SignatureVersion"] == ["2.0"]
    assert params["Signature"] == [zim.sign(12345, "0123456789abcdef", "s" * 32, 1700000000)]
    assert "CustomReason" not in params
    assert "FromUserId" not in params


def test_url_keeps_an_endpoint_path() -> None:
    url = zim.kickout_url(
        "https://zim-api.zego.im/", KickoutCall("r", ("u",)), app_id=1, server_secret="s", nonce="0" * 16, timestamp=1
    )
    assert url.startswith("https://zim-api.zego.im/?Action=KickoutRoomUser&")


@given(st.text(max_size=64))
def test_reason_is_cut_to_32_bytes_at_a_character_boundary(reason: str) -> None:
    cut = zim.truncate_utf8(reason)
    assert reason.startswith(cut)
    assert len(cut.encode()) <= 32
    # the cut is the longest such prefix: one more character would not fit
    if cut != reason:
        assert len(reason[: len(cut) + 1].encode()) > 32


def test_reason_of_multibyte_characters_is_never_cut_mid_character() -> None:
    # 3 bytes a character: ten fit in 30 bytes, an eleventh would need 33
    assert zim.truncate_utf8("違反" * 10) == "違反" * 5
    assert zim.truncate_utf8("ab" + "違反" * 10) == "ab" + "違反" * 5
    assert zim.truncate_utf8("abc" + "違反" * 10) == "abc" + "違反" * 4 + "違"


@given(st.lists(zego_ids, max_size=200, unique=True))
def test_chunks_hold_every_user_once_in_order_at_most_50_each(user_ids: list[str]) -> None:
    chunks = zim.chunk(user_ids)
    assert all(1 <= len(part) <= 50 for part in chunks)
    assert [user for part in chunks for user in part] == user_ids


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0, CodeClass.DONE),
        (1, CodeClass.TRANSIENT),
        (660000001, CodeClass.TRANSIENT),
        (660000003, CodeClass.TRANSIENT),
        (100000010, CodeClass.TRANSIENT),
        (100000011, CodeClass.TRANSIENT),
        (100000012, CodeClass.TRANSIENT),
        (100000015, CodeClass.TRANSIENT),
        (105001, CodeClass.TRANSIENT),
        (660300007, CodeClass.TRANSIENT),
        (7, CodeClass.RATE_LIMITED),
        (660300005, CodeClass.RATE_LIMITED),
        (660300006, CodeClass.RATE_LIMITED),
        (100000004, CodeClass.RESIGN),
        (100000005, CodeClass.REREAD_SECRET),
        (2, CodeClass.PERMANENT),
        (660000002, CodeClass.PERMANENT),
        (3, CodeClass.PERMANENT),
        (100000001, CodeClass.PERMANENT),
        (100000016, CodeClass.PERMANENT),
        (100000017, CodeClass.PERMANENT),
        (100000002, CodeClass.PERMANENT),
        (100000003, CodeClass.PERMANENT),
        *[(code, CodeClass.PERMANENT) for code in range(100000006, 100000010)],
        (100000013, CodeClass.PERMANENT),
        (100000014, CodeClass.PERMANENT),
        (660000011, CodeClass.PERMANENT),
        (660000012, CodeClass.PERMANENT),
        (660500002, CodeClass.PERMANENT),
        (660300001, CodeClass.NOTHING_TO_DO),
        (660300002, CodeClass.NOTHING_TO_DO),
    ],
)
def test_each_code_of_the_shared_table_has_its_class(code: int, expected: CodeClass) -> None:
    assert zim.classify(code) is expected


# Every code the shared table gives another class than "permanent".
NOT_PERMANENT = {
    0,
    1,
    7,
    105001,
    660000001,
    660000003,
    100000010,
    100000011,
    100000012,
    100000015,
    660300005,
    660300006,
    660300007,
    100000004,
    100000005,
    660300001,
    660300002,
}


@given(st.integers().filter(lambda code: code not in NOT_PERMANENT))
def test_any_other_code_is_permanent_so_it_is_never_retried_blindly(code: int) -> None:
    assert zim.classify(code) is CodeClass.PERMANENT


def test_reply_is_parsed_from_zegos_envelope() -> None:
    reply = zim.parse_reply(b'{"Code": 0, "Message": "success", "RequestId": "343649807833778782"}')
    assert reply == zim.Reply(code=0, message="success", request_id="343649807833778782")
    assert reply.code_class is CodeClass.DONE


ENVELOPE = b'{"Code": 0, "Message": "success", "RequestId": "343649807833778782"}'
UNREADABLE: dict[str, bytes] = {
    "not JSON": b"<html>502</html>",
    "not UTF-8": b'{"Code": 0, "Message": "\xff\xfe"}',
    "UTF-16 (JSON, but not UTF-8)": '{"Code": 0}'.encode("utf-16"),
    "an encoded surrogate (not UTF-8)": b'{"Code": 0, "Message": "\xed\xa0\x80"}',
    "empty": b"",
    "only blanks": b" \r\n\t",
    "a JSON array": b"[1, 2]",
    "a JSON string": b'"success"',
    "a JSON number": b"0",
    "JSON null": b"null",
    "an object without Code": b'{"Message": "no code"}',
    "Code null": b'{"Code": null}',
    "Code as a string": b'{"Code": "0"}',
    "Code as a float": b'{"Code": 0.0}',
    "Code as an exponent": b'{"Code": 1e3}',
    "Code as a bool": b'{"Code": true}',
    "Code as an object": b'{"Code": {"value": 0}}',
    "Code negative": b'{"Code": -1}',
    "Code past 64 bits": b'{"Code": 9223372036854775808}',
    "Code of 700 digits": b'{"Code": ' + b"9" * 700 + b"}",
    "Code NaN": b'{"Code": NaN}',
    "Code Infinity": b'{"Code": Infinity}',
    "NaN elsewhere": b'{"Code": 0, "Message": NaN}',
    "-Infinity elsewhere": b'{"Code": 0, "Extra": -Infinity}',
    "Code given twice": b'{"Code": 0, "Code": 660500002}',
    "RequestId given twice": b'{"Code": 0, "RequestId": "a", "RequestId": "b"}',
    "a key twice, nested": b'{"Code": 0, "Extra": {"k": 1, "k": 2}}',
    "nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
    "10 MB": b'{"Code": 0, "Message": "' + b"x" * 10_000_000 + b'"}',
    "one byte over the limit": b'{"Code": 0, "Message": "' + b"x" * (zim.MAX_REPLY_BYTES - 25) + b'"}',
    "two documents": b'{"Code": 0}{"Code": 1}',
    "trailing garbage": b'{"Code": 0} x',
    "a BOM and nothing else": b"\xef\xbb\xbf",
}


@pytest.mark.parametrize("body", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_a_body_that_is_not_zegos_envelope_is_malformed(body: bytes) -> None:
    # GIVEN a 200 whose body is not ZEGO's envelope WHEN parsed THEN MalformedReply (a transport failure), and only it
    with pytest.raises(zim.MalformedReply) as malformed:
        zim.parse_reply(body)
    # AND what it says never repeats the body
    assert "xxx" not in str(malformed.value)
    assert "<html>" not in str(malformed.value)


def test_the_size_limit_is_exact() -> None:
    at_limit = b'{"Code": 0, "Message": "' + b"x" * (zim.MAX_REPLY_BYTES - 26) + b'"}'
    assert len(at_limit) == zim.MAX_REPLY_BYTES
    assert zim.parse_reply(at_limit).code == 0


def test_nesting_past_the_parsers_limit_is_malformed_whatever_the_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a size limit too large to stop a deep body first
    monkeypatch.setattr(zim, "MAX_REPLY_BYTES", 10**6)
    # WHEN the body is nested past what json's parser takes (it raises RecursionError, the API's 400 once)
    # THEN it is malformed, ZEGO's fault
    with pytest.raises(zim.MalformedReply, match="nested too deeply"):
        zim.parse_reply(b'{"Code": 0, "Extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")


def test_an_integer_past_pythons_digit_limit_is_malformed_not_a_crash() -> None:
    # GIVEN int()'s digit limit lowered to its minimum, so that a Code longer than it still fits the size limit
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        # WHEN ZEGO's Code has more digits than int() reads THEN it is malformed, not a ValueError of its own
        with pytest.raises(zim.MalformedReply, match="not JSON"):
            zim.parse_reply(b'{"Code": ' + b"1" * 700 + b"}")
    finally:
        sys.set_int_max_str_digits(limit)


def test_a_byte_order_mark_is_ignored() -> None:
    # RFC 8259 section 8.1: a parser may ignore a BOM rather than refuse the text
    assert zim.parse_reply(b"\xef\xbb\xbf" + ENVELOPE) == zim.parse_reply(ENVELOPE)


@pytest.mark.parametrize("code", [0, 1, 660500002, 123456, zim.MAX_CODE])
def test_any_integer_code_in_range_is_zego_speaking(code: int) -> None:
    # an unknown code is ZEGO's answer all the same (permanent), not a malformed reply
    assert zim.parse_reply(json.dumps({"Code": code}).encode()).code == code


def test_a_numeric_request_id_is_kept_as_text_to_the_last_digit() -> None:
    assert zim.parse_reply(json.dumps({"Code": 1, "RequestId": 42}).encode()).request_id == "42"
    assert zim.parse_reply(b'{"Code": 1, "RequestId": 343649807833778782}').request_id == "343649807833778782"


@pytest.mark.parametrize(
    "odd",
    [3.4364980783377878e17, True, None, [], ["343649807833778782"], {"id": "1"}],
    ids=["float", "bool", "null", "empty array", "array", "object"],
)
def test_a_request_id_of_another_type_is_left_out_and_the_code_still_counts(odd: object) -> None:
    reply = zim.parse_reply(json.dumps({"Code": 0, "Message": odd, "RequestId": odd}).encode())
    assert reply == zim.Reply(code=0, message="", request_id="")


def test_a_long_message_or_request_id_is_cut_and_says_so() -> None:
    reply = zim.parse_reply(json.dumps({"Code": 1, "Message": "m" * 2000, "RequestId": "r" * 2000}).encode())
    assert reply.message == "m" * (zim.MESSAGE_MAX_CHARS - 1) + "…"
    assert reply.request_id == "r" * (zim.REQUEST_ID_MAX_CHARS - 1) + "…"


def test_a_lone_surrogate_is_replaced_so_the_reply_can_be_shown_and_logged() -> None:
    reply = zim.parse_reply(b'{"Code": 1, "Message": "busy \\ud800", "RequestId": "\\udfff1"}')
    assert reply.message == "busy ?"
    assert reply.request_id == "?1"
    json.dumps(reply.message, ensure_ascii=False).encode()  # would raise on a lone surrogate


def _check_reply(reply: zim.Reply) -> None:
    assert isinstance(reply.code, int)
    assert 0 <= reply.code <= zim.MAX_CODE
    assert len(reply.message) <= zim.MESSAGE_MAX_CHARS
    assert len(reply.request_id) <= zim.REQUEST_ID_MAX_CHARS
    (reply.message + reply.request_id).encode()  # UTF-8 throughout: the API body and the logs can carry them
    assert isinstance(reply.code_class, CodeClass)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_any_bytes_are_a_reply_or_malformed_never_another_error(body: bytes) -> None:
    try:
        reply = zim.parse_reply(body)
    except zim.MalformedReply:
        return
    _check_reply(reply)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
envelopes = st.fixed_dictionaries(
    {}, optional={"Code": json_values | st.integers(), "Message": json_values, "RequestId": json_values}
)


@settings(max_examples=200)
@given(document=envelopes | json_values, bom=st.booleans(), ascii_only=st.booleans())
def test_any_json_is_a_reply_or_malformed_never_another_error(document: object, bom: bool, ascii_only: bool) -> None:
    # Python's encoder writes NaN and Infinity for those floats: JSON's parser must refuse them, not read them
    body = (b"\xef\xbb\xbf" if bom else b"") + json.dumps(document, ensure_ascii=ascii_only).encode(
        errors="surrogatepass"
    )
    try:
        reply = zim.parse_reply(body)
    except zim.MalformedReply:
        return
    _check_reply(reply)
    assert isinstance(document, dict)
    assert reply.code == document["Code"]
