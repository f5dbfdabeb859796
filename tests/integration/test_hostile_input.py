"""Whatever arrives, the answer is a clean 4xx (or a parked message, or a named error), never a 5xx, a crash
or a call to ZEGO."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from handler.entry.direct import InvalidKickoutRequest
from kickout_dev.events import api_event, sqs_event
from kickout_dev.sandbox import Sandbox
from kickout_dev.zim_server import ALLOWED_ID
from tests.conftest import Invoke

HOSTILE = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
# Characters from every Unicode category ZEGO's set does not allow, surrogates aside (JSON cannot carry them).
foreign_characters = st.characters(codec="utf-8", exclude_characters="!#$%&()+-:;<=.>?@[]^_{}|~, ").filter(
    lambda character: not (character.isascii() and character.isalnum())
)
bad_ids = st.builds(
    lambda before, bad, after: before + bad + after,
    st.text("abc", max_size=5),
    foreign_characters,
    st.text("xyz", max_size=5),
)

payloads = st.one_of(
    json_values,
    st.fixed_dictionaries({"room_id": json_values, "user_ids": json_values}),
    st.fixed_dictionaries({"room_id": bad_ids, "user_ids": st.just(["ok"])}),
    st.fixed_dictionaries({"room_id": st.just("ok"), "user_ids": st.lists(bad_ids, min_size=1, max_size=3)}),
    st.fixed_dictionaries({"room_id": st.just("ok"), "user_ids": st.just(["ok"]), "operator_id": bad_ids}),
    st.fixed_dictionaries(
        {
            "room_id": st.just("ok"),
            "user_ids": st.just(["ok"]),
            "reason": json_values.filter(lambda value: not isinstance(value, str | None)),
        }
    ),
)


def is_valid(payload: Any) -> bool:
    """The payload rules, written out again apart from the model under test (the ZIM stand-in's id pattern)."""

    def zego_id(value: Any) -> bool:
        return isinstance(value, str) and ALLOWED_ID.fullmatch(value) is not None

    if not isinstance(payload, dict) or not {"room_id", "user_ids"} <= payload.keys():
        return False
    if payload.keys() - {"room_id", "user_ids", "reason", "operator_id"}:
        return False
    users = payload["user_ids"]
    reason, operator = payload.get("reason"), payload.get("operator_id")
    return (
        zego_id(payload["room_id"])
        and isinstance(users, list)
        and 1 <= len(users) <= 500
        and all(zego_id(user) for user in users)
        and (reason is None or (isinstance(reason, str) and len(reason) <= 1024))
        and (operator is None or zego_id(operator))
    )


invalid_payloads = payloads.filter(lambda payload: not is_valid(payload))
"""What the payload rules refuse (a valid payload is rare among `payloads`: the filter discards few)."""


@HOSTILE
@given(payload=payloads)
def test_any_invalid_body_gets_a_clean_4xx_and_no_zego_call(invoke: Invoke, box: Sandbox, payload: Any) -> None:
    before = box.zim.requests_seen
    response = invoke(api_event(json.dumps(payload)))
    if is_valid(payload):
        assert response["statusCode"] == 200  # hypothesis found a valid payload: it must be kicked
    else:
        assert response["statusCode"] in (400, 422)
        body = json.loads(response["body"])
        assert body["error"] in ("invalid_json", "invalid_request")
        assert box.zim.requests_seen == before


@HOSTILE
@given(raw=st.text(max_size=200) | st.binary(max_size=100).map(lambda data: data.decode("latin-1")))
def test_any_body_that_is_not_json_gets_400(invoke: Invoke, box: Sandbox, raw: str) -> None:
    assume(not parses_as_json(raw))
    response = invoke(api_event(raw))
    if raw == "":
        assert response["statusCode"] == 422  # no body at all: the field "body" is required
    else:
        assert response["statusCode"] == 400
        assert json.loads(response["body"])["error"] == "invalid_json"
    assert box.zim.requests_seen == 0


def parses_as_json(raw: str) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


@HOSTILE
@given(payload=invalid_payloads)
def test_any_invalid_direct_invoke_raises_invalid_kickout_request(invoke: Invoke, box: Sandbox, payload: Any) -> None:
    with pytest.raises(InvalidKickoutRequest):
        invoke(payload)
    assert box.zim.requests_seen == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(invalid_payloads, min_size=1, max_size=10))
def test_any_invalid_sqs_batch_is_parked_whole_and_never_raises(
    invoke: Invoke, box: Sandbox, payloads: list[Any]
) -> None:
    bodies = [json.dumps(payload) for payload in payloads]
    response = invoke(sqs_event(*bodies))
    assert response == {"batchItemFailures": []}
    assert sorted(message["Body"] for message in box.parked()) == sorted(bodies)
    assert box.zim.requests_seen == 0


@pytest.mark.parametrize("size", [64 * 1024, 1024 * 1024, 6 * 1024 * 1024])
def test_huge_bodies_get_a_clean_4xx(invoke: Invoke, box: Sandbox, size: int) -> None:
    huge_list = json.dumps({"room_id": "r", "user_ids": ["u"] * (size // 6)})
    huge_text = json.dumps({"room_id": "r", "user_ids": ["u"], "reason": "x" * size})
    deep = "[" * 100_000 + "]" * 100_000
    for body in (huge_list, huge_text, deep):
        response = invoke(api_event(body))
        assert response["statusCode"] in (400, 422), body[:40]
    assert box.zim.requests_seen == 0
