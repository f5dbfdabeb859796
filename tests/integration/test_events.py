"""The sample events of `events/` (the ones `sam local invoke -e` takes) give their documented outcomes through
the real handler, the ZIM stand-in on loopback and moto."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from kickout_dev.events import api_event, load_event, sqs_event
from kickout_dev.sandbox import Sandbox
from tests.conftest import Invoke, Printed


def test_api_event_kicks_its_users_and_answers_with_the_request_id_zego_issued(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    # GIVEN events/api.json: lobby-7, spammer_01 and spammer_02, operator mod-bot
    issued = box.zim.request_ids  # grows as the stand-in answers

    # WHEN API Gateway delivers it
    response = invoke(load_event("api"))

    # THEN the function answers 200 with a JSON body naming the room, the kicked users and ZEGO's RequestId
    assert response["statusCode"] == 200
    body = json.loads(response["body"])
    assert body["room_id"] == "lobby-7"
    assert body["kicked_user_ids"] == ["spammer_01", "spammer_02"]
    assert body["absent_user_ids"] == []
    assert body["reason_truncated"] is False
    assert len(issued) == 1
    assert body["request_ids"] == issued
    # AND the stand-in accepted exactly that kickout, signed, with the operator and the reason
    [kickout] = box.zim.kickouts
    assert (kickout.room_id, kickout.user_ids, kickout.reason, kickout.operator_id) == (
        "lobby-7",
        ("spammer_01", "spammer_02"),
        "spam links",
        "mod-bot",
    )
    assert box.zim.refusals == []
    # AND the kick is audited and counted
    assert printed.metric("UsersKicked") == 2


def test_sqs_event_delivers_every_message_users_to_zego_with_reserved_characters_intact(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    # GIVEN events/sqs.json: three messages, one with a room and users full of & + = # and spaces
    event = load_event("sqs")
    expected: dict[str, set[str]] = defaultdict(set)
    for record in event["Records"]:
        message = json.loads(record["body"])
        expected[message["room_id"]].update(message["user_ids"])
    assert "troll&co" in expected["stream #42 (EU)"]

    # WHEN SQS delivers the batch
    response = invoke(event)

    # THEN no message is reported failed, none is parked
    assert response == {"batchItemFailures": []}
    assert box.parked() == []
    # AND the stand-in received, room by room, exactly the users the messages named (in whatever calls)
    received: dict[str, set[str]] = defaultdict(set)
    for kickout in box.zim.kickouts:
        received[kickout.room_id].update(kickout.user_ids)
    assert received == expected
    assert box.zim.refusals == []
    # AND the reasons ZEGO got fit its 32 bytes: cut when longer, intact when shorter (even in Japanese)
    reasons = sorted(kickout.reason or "" for kickout in box.zim.kickouts)
    assert reasons == sorted(["flooding", "raid: coordinated harassment of ", "スパム"])
    assert printed.metric("UsersKicked") == 5


def test_direct_event_returns_the_api_body_shape_with_duplicates_dropped(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN events/direct.json, which names cheater_1 twice, and the body the API answers for its own event
    api_body = json.loads(invoke(load_event("api"))["body"])

    # WHEN the function is invoked directly with the payload
    result = invoke(load_event("direct"))

    # THEN it returns a plain dict of the same shape as the API's 200 body
    assert isinstance(result, dict)
    assert set(result) == set(api_body)
    assert set(result["calls"][0]) == set(api_body["calls"][0])
    json.dumps(result)  # serialisable as the Lambda runtime needs
    # AND each user is kicked once, in the order first given
    assert result["room_id"] == "match-2026-11-25"
    assert result["kicked_user_ids"] == ["cheater_1", "cheater_2"]
    assert box.zim.kickouts[-1].user_ids == ("cheater_1", "cheater_2")
    assert box.zim.kickouts[-1].operator_id == "anti-cheat"


def test_invalid_event_invoked_directly_raises_invalid_kickout_request_naming_both_fields(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    # GIVEN events/invalid.json: a room with '/', an empty user list
    from handler.entry.direct import InvalidKickoutRequest

    # WHEN it is invoked directly
    with pytest.raises(InvalidKickoutRequest) as raised:
        invoke(load_event("invalid"))

    # THEN the error names both offending fields (a Step Functions Catch matches on the class name)
    assert "room_id" in str(raised.value)
    assert "user_ids" in str(raised.value)
    # AND ZEGO never heard of it; the failure is logged and counted
    assert box.zim.requests_seen == 0
    assert printed.metric("FailedInvalid") == 1
    assert any(log["message"] == "kickout failed" and log["outcome"] == "Invalid" for log in printed.logs)


def test_invalid_event_as_an_api_body_is_refused_with_422_naming_both_fields(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN the payload of events/invalid.json as the body of POST /kickouts
    event = api_event(json.dumps(load_event("invalid")))

    # WHEN API Gateway delivers it
    response = invoke(event)

    # THEN the caller gets 422 naming room_id and user_ids, and ZEGO got nothing
    assert response["statusCode"] == 422
    fields = {problem["field"] for problem in json.loads(response["body"])["fields"]}
    assert fields == {"room_id", "user_ids"}
    assert box.zim.requests_seen == 0


def test_invalid_event_as_an_sqs_message_is_parked_unchanged(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN the payload of events/invalid.json as an SQS message
    body = json.dumps(load_event("invalid"))

    # WHEN SQS delivers it
    response = invoke(sqs_event(body))

    # THEN it is acknowledged (retrying cannot fix it) and parked once, body unchanged, without calling ZEGO
    assert response == {"batchItemFailures": []}
    [parked] = box.parked()
    assert parked["Body"] == body
    assert parked["MessageAttributes"]["KickoutFailure"]["StringValue"] == "invalid_payload"
    assert box.zim.requests_seen == 0
