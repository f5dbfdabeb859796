"""Direct invokes (Step Functions, `sam local invoke`, the AWS CLI): the event is the payload; the result is
returned, failures are raised as exceptions whose class names a `Catch` can match."""

from __future__ import annotations

import json
from typing import Any

import pytest

from handler.core.errors import ZegoRefused, ZegoUnavailable
from handler.entry.direct import InvalidKickoutRequest
from kickout_dev.sandbox import Sandbox
from kickout_dev.zim_server import Fault
from tests.conftest import Invoke


def test_direct_payload_returns_the_result_as_a_dict(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN a payload with a reason and an operator
    payload = {"room_id": "match-7", "user_ids": ["cheater_1", "cheater_2"], "reason": "aimbot", "operator_id": "ac"}

    # WHEN the function is invoked with it
    result = invoke(payload)

    # THEN it returns the result, and ZEGO got the reason and the operator
    assert result["room_id"] == "match-7"
    assert result["kicked_user_ids"] == ["cheater_1", "cheater_2"]
    assert result["absent_user_ids"] == []
    assert result["reason_truncated"] is False
    assert [call["outcome"] for call in result["calls"]] == ["done"]
    [kickout] = box.zim.kickouts
    assert (kickout.reason, kickout.operator_id) == ("aimbot", "ac")


def test_zego_refusal_raises_zego_refused_naming_the_code(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN ZEGO does not know the operator
    box.zim.script(Fault.code(660500002, "operator not registered"))

    # WHEN a kickout by that operator is invoked
    with pytest.raises(ZegoRefused) as raised:
        invoke({"room_id": "match-7", "user_ids": ["cheater_1"], "operator_id": "ghost"})

    # THEN ZegoRefused carries ZEGO's code in its message, after one request
    assert "660500002" in str(raised.value)
    assert raised.value.reply.code == 660500002
    assert box.zim.requests_seen == 1


def test_zego_unavailable_raises_zego_unavailable_so_the_caller_can_retry(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN ZEGO answers HTTP 503 to every attempt
    box.zim.script(*[Fault.http(503)] * 6)

    # WHEN a kickout is invoked
    # THEN the failure is raised as ZegoUnavailable (a Step Functions Retry can match it), not as a refusal
    with pytest.raises(ZegoUnavailable, match="HTTP 503"):
        invoke({"room_id": "match-7", "user_ids": ["cheater_1"]})


def test_invalid_payload_raises_invalid_kickout_request_naming_the_fields(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN a payload with a room id that is too long and a user id with '/'
    payload = {"room_id": "r" * 33, "user_ids": ["ok", "a/b"]}

    # WHEN it is invoked
    with pytest.raises(InvalidKickoutRequest) as raised:
        invoke(payload)

    # THEN the message names both fields; ZEGO got nothing
    assert "room_id" in str(raised.value)
    assert "user_ids.1" in str(raised.value)
    assert box.zim.requests_seen == 0


def test_event_that_is_not_a_payload_raises_invalid_kickout_request_and_nothing_else(
    invoke: Invoke, box: Sandbox, subtests: pytest.Subtests
) -> None:
    payload = {"room_id": "match-7", "user_ids": ["cheater_1"]}
    events: dict[str, Any] = {
        "list of a payload": [payload],
        "empty list": [],
        "payload as a JSON string": json.dumps(payload),
        "empty string": "",
        "None": None,
        "int": 42,
        "bool": True,
        "SNS-like records": {"Records": [{"eventSource": "aws:sns", "Sns": {"Message": json.dumps(payload)}}]},
        "empty SQS-like records": {"Records": []},
        "API-like without requestContext": {"httpMethod": "POST", "body": json.dumps(payload)},
    }
    for name, event in events.items():
        # GIVEN an event that is neither an API, an SQS event nor a kickout payload
        # WHEN it is invoked
        # THEN it is refused as InvalidKickoutRequest (never a TypeError or AttributeError)
        with subtests.test(event=name), pytest.raises(InvalidKickoutRequest):
            invoke(event)
    # AND ZEGO heard of none of them
    assert box.zim.requests_seen == 0


@pytest.mark.parametrize(
    "event",
    [
        {"httpMethod": "POST", "requestContext": None},
        {"httpMethod": 1, "requestContext": {}},
        {"Records": [{"eventSource": "aws:sqs"}]},
        {"Records": [{"eventSource": "aws:sqs", "messageId": "m", "body": 5}]},
        {"Records": []},
    ],
)
def test_an_event_that_only_looks_like_api_or_sqs_is_an_invalid_kickout(
    invoke: Invoke, box: Sandbox, event: Any
) -> None:
    with pytest.raises(InvalidKickoutRequest):
        invoke(event)
    assert box.zim.requests_seen == 0
