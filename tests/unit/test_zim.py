"""ZEGO's rules as plain functions: the signature, the query, the reply and what each code means."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import given
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


@pytest.mark.parametrize(
    "body",
    [b"<html>502</html>", b"", b"\xff\xfe", b"[1, 2]", b'{"Message": "no code"}', b'{"Code": "0"}', b'{"Code": true}'],
)
def test_a_body_that_is_not_zegos_envelope_is_malformed(body: bytes) -> None:
    with pytest.raises(zim.MalformedReply):
        zim.parse_reply(body)


def test_a_numeric_request_id_is_kept_as_text() -> None:
    assert zim.parse_reply(json.dumps({"Code": 1, "RequestId": 42}).encode()).request_id == "42"
