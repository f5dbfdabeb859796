"""POST /kickouts through the real handler: what the caller gets back for every outcome, and what ZEGO received.

Every test runs against the ZIM stand-in on 127.0.0.1 (it checks signatures) with the secret and the DLQ in moto.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from kickout_dev.events import api_event, body_of
from kickout_dev.sandbox import REGION, SERVER_SECRET, Sandbox, sandbox
from kickout_dev.zim_server import Fault
from tests.conftest import Invoke, Printed

ROTATED_SECRET = "fedcba9876543210fedcba9876543210"


@pytest.fixture
def box(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """The shared sandbox, or one built with the options given by indirect parametrisation (rooms, secret).

    Overrides conftest's `box` so that `invoke` and `printed` are set up inside it (the handler is imported
    only once the sandbox's environment is in place, as in Lambda).
    """
    options: dict[str, Any] = getattr(request, "param", {})
    with sandbox(**options) as running:
        yield running


def post(payload: Any) -> dict[str, Any]:
    return api_event(json.dumps(payload))


def header(response: dict[str, Any], name: str) -> str | None:
    """A response header, wherever the resolver put it (`headers` or `multiValueHeaders`)."""
    if name in (response.get("headers") or {}):
        value: str = response["headers"][name]
        return value
    values = (response.get("multiValueHeaders") or {}).get(name)
    return ",".join(values) if values else None


# --- success ----------------------------------------------------------------------------------------------------


def test_valid_kickout_answers_200_with_the_users_zego_kicked(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN a kickout without reason or operator
    issued = box.zim.request_ids  # grows as the stand-in answers

    # WHEN it is posted
    response = invoke(post({"room_id": "lobby-7", "user_ids": ["spammer_01", "spammer_02"]}))

    # THEN 200 with a JSON body of the kicked users and ZEGO's RequestId
    assert response["statusCode"] == 200
    assert header(response, "Content-Type") == "application/json"
    body = body_of(response)
    assert body["kicked_user_ids"] == ["spammer_01", "spammer_02"]
    assert body["request_ids"] == issued
    assert body["calls"] == [
        {
            "user_ids": ["spammer_01", "spammer_02"],
            "code": 0,
            "message": "success",
            "request_id": issued[0],
            "outcome": "done",
        }
    ]
    # AND ZEGO got no CustomReason nor FromUserId
    [kickout] = box.zim.kickouts
    assert (kickout.reason, kickout.operator_id) == (None, None)


def test_more_than_50_users_become_several_zego_calls_of_at_most_50_each_user_once(
    invoke: Invoke, box: Sandbox
) -> None:
    # GIVEN 120 distinct users, a few of them named twice
    users = [f"user_{number:03}" for number in range(120)]
    payload = {"room_id": "lobby-7", "user_ids": [*users, "user_000", "user_077"]}

    # WHEN they are kicked
    response = invoke(post(payload))

    # THEN ZEGO gets calls of at most 50 users that together hold every user exactly once, in order (the calls go
    # out side by side: ZEGO may see them in any order)
    assert response["statusCode"] == 200
    calls = sorted(kickout.user_ids for kickout in box.zim.kickouts)
    assert len(calls) == 3
    assert all(len(call) <= 50 for call in calls)
    assert [user for call in calls for user in call] == users
    # AND the body names each user once and one RequestId per call
    body = body_of(response)
    assert body["kicked_user_ids"] == users
    assert len(set(body["request_ids"])) == 3


def test_room_id_with_ampersand_cannot_add_a_user(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN a room and a user whose names look like query parameters
    payload = {"room_id": "a&UserId[]=admin", "user_ids": ["mallory", "x&RoomId=lobby-7"]}

    # WHEN they are kicked
    response = invoke(post(payload))

    # THEN ZEGO decodes exactly that room and exactly those users: nobody called admin is kicked
    assert response["statusCode"] == 200
    [kickout] = box.zim.kickouts
    assert kickout.room_id == "a&UserId[]=admin"
    assert kickout.user_ids == ("mallory", "x&RoomId=lobby-7")
    assert "admin" not in box.zim.kicked_user_ids
    assert box.zim.refusals == []


def test_long_reason_is_cut_to_32_bytes_at_a_character_boundary(
    invoke: Invoke, box: Sandbox, subtests: pytest.Subtests
) -> None:
    cases = [
        # reason, what ZEGO must receive, reason_truncated
        ("スパム" * 5, "スパムスパムスパムス", True),  # 45 bytes of 3-byte characters: 10 fit in 32
        ("🚫" * 9, "🚫" * 8, True),  # 4-byte characters: exactly 8 fit
        ("a" + "é" * 20, "a" + "é" * 15, True),  # 1 + 2-byte characters: 31 bytes fit, 33 would not
        ("x" * 32, "x" * 32, False),  # exactly 32 bytes: kept whole
        ("スパム", "スパム", False),
    ]
    for reason, expected, truncated in cases:
        with subtests.test(reason=reason):
            # GIVEN a reason of more (or not more) than ZEGO's 32 bytes
            before = len(box.zim.kickouts)

            # WHEN it comes with a kickout
            response = invoke(post({"room_id": "lobby-7", "user_ids": ["spammer_01"], "reason": reason}))

            # THEN ZEGO gets the longest whole-character prefix of at most 32 bytes, and the caller is told
            assert response["statusCode"] == 200
            assert box.zim.kickouts[before].reason == expected
            assert body_of(response)["reason_truncated"] is truncated


def test_empty_reason_is_not_reported_as_truncated(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN a kickout whose reason is the empty string (the model allows it)
    payload = {"room_id": "lobby-7", "user_ids": ["spammer_01"], "reason": ""}

    # WHEN it is posted
    response = invoke(post(payload))

    # THEN it succeeds and nothing was cut
    assert response["statusCode"] == 200
    assert body_of(response)["reason_truncated"] is False


def test_a_single_transient_failure_is_retried_and_the_kickout_succeeds(
    invoke: Invoke, box: Sandbox, subtests: pytest.Subtests
) -> None:
    faults = {
        "HTTP 503": Fault.http(503),
        "connection reset": Fault.reset(),
        "body not JSON": Fault.not_json(),
        "server busy (Code 1)": Fault.code(1),
        "signature expired (Code 100000004)": Fault.code(100000004),
    }
    for name, fault in faults.items():
        with subtests.test(fault=name):
            # GIVEN ZEGO fails once, then behaves
            box.zim.script(fault)
            before = len(box.zim.kickouts)

            # WHEN a kickout is posted
            response = invoke(post({"room_id": "lobby-7", "user_ids": ["spammer_01"]}))

            # THEN the function retried with a new signed request and the caller sees success
            assert response["statusCode"] == 200
            assert body_of(response)["kicked_user_ids"] == ["spammer_01"]
            assert len(box.zim.kickouts) == before + 1
            assert not box.zim.faults


# --- invalid requests -------------------------------------------------------------------------------------------


def test_bad_payloads_are_refused_with_422_naming_the_field_without_calling_zego(
    invoke: Invoke, box: Sandbox, subtests: pytest.Subtests
) -> None:
    good: dict[str, Any] = {"room_id": "lobby-7", "user_ids": ["spammer_01"]}
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "room_id not a string": ({**good, "room_id": 7}, "room_id"),
        "user_ids a string": ({**good, "user_ids": "spammer_01"}, "user_ids"),
        "a user id not a string": ({**good, "user_ids": [1]}, "user_ids.0"),
        "reason not a string": ({**good, "reason": ["spam"]}, "reason"),
        "unknown field": ({**good, "priority": "high"}, "priority"),
        "room_id missing": ({"user_ids": ["spammer_01"]}, "room_id"),
        "empty user list": ({**good, "user_ids": []}, "user_ids"),
        "room id with /": ({**good, "room_id": "lobby/7"}, "room_id"),
        "user id with /": ({**good, "user_ids": ["ok", "a/b"]}, "user_ids.1"),
        "user id with a unicode letter": ({**good, "user_ids": ["josé"]}, "user_ids.0"),
        "user id with a newline": ({**good, "user_ids": ["spammer\n"]}, "user_ids.0"),
        "empty user id": ({**good, "user_ids": [""]}, "user_ids.0"),
        "room id of 33 characters": ({**good, "room_id": "r" * 33}, "room_id"),
        "user id of 33 characters": ({**good, "user_ids": ["u" * 33]}, "user_ids.0"),
        "operator id with /": ({**good, "operator_id": "mod/bot"}, "operator_id"),
        "501 users": ({**good, "user_ids": [f"user_{number}" for number in range(501)]}, "user_ids"),
        "reason over 1024 characters": ({**good, "reason": "x" * 1025}, "reason"),
    }
    for name, (payload, field) in cases.items():
        with subtests.test(case=name):
            # GIVEN a payload that breaks one rule
            # WHEN it is posted
            response = invoke(post(payload))

            # THEN 422 names the offending field, in the list and in the message
            assert response["statusCode"] == 422
            body = body_of(response)
            assert body["error"] == "invalid_request"
            assert field in {problem["field"] for problem in body["fields"]}
            assert field in body["message"]
    # AND ZEGO heard of none of them
    assert box.zim.requests_seen == 0


def test_refused_payload_values_are_not_echoed_back(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN a payload whose values are hostile
    hostile_room = "<script>alert('room')</script>"
    hostile_user = "DROP TABLE users; -- " + "z" * 40

    # WHEN it is posted
    response = invoke(post({"room_id": hostile_room, "user_ids": [hostile_user]}))

    # THEN the 422 names the fields but repeats neither value
    assert response["statusCode"] == 422
    assert {problem["field"] for problem in body_of(response)["fields"]} == {"room_id", "user_ids.0"}
    assert hostile_room not in response["body"]
    assert "DROP TABLE" not in response["body"]


def test_body_that_is_not_json_is_refused_with_400(invoke: Invoke, box: Sandbox, subtests: pytest.Subtests) -> None:
    for body in ["room_id=lobby-7&user_ids=spammer_01", '{"room_id": "lobby-7"', "{'room_id': 'lobby-7'}"]:
        with subtests.test(body=body):
            # GIVEN a body that does not parse as JSON
            # WHEN it is posted
            response = invoke(api_event(body))

            # THEN 400 invalid_json, as JSON
            assert response["statusCode"] == 400
            assert body_of(response)["error"] == "invalid_json"
    assert box.zim.requests_seen == 0


def test_unknown_route_answers_404(invoke: Invoke, box: Sandbox, printed: Printed) -> None:
    # GIVEN a request for a path the function does not serve
    event = api_event(json.dumps({"room_id": "lobby-7", "user_ids": ["spammer_01"]}), path="/kickout")

    # WHEN it arrives
    response = invoke(event)

    # THEN 404 with a JSON body pointing at POST /kickouts
    assert response["statusCode"] == 404
    body = body_of(response)
    assert body["error"] == "not_found"
    assert "/kickouts" in body["message"]
    assert [log["error"] for log in printed.logs if log["message"] == "kickout failed"] == ["no such route"]
    assert box.zim.requests_seen == 0


def test_other_methods_on_kickouts_answer_405_with_allow_post(
    invoke: Invoke, box: Sandbox, printed: Printed, subtests: pytest.Subtests
) -> None:
    bodies = {
        "no body": None,
        "empty": "",
        "JSON null": "null",
        "an array": "[]",
        "not JSON": "{nope",
        "a kickout": json.dumps({"room_id": "lobby-7", "user_ids": ["spammer_01"]}),
    }
    for method, (name, body) in itertools.product(["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"], bodies.items()):
        with subtests.test(method=method, body=name):
            # GIVEN /kickouts called with another method, whatever its body
            # WHEN it arrives
            response = invoke(api_event(body, method=method))

            # THEN 405 with Allow: POST
            assert response["statusCode"] == 405
            assert header(response, "Allow") == "POST"
            assert body_of(response)["error"] == "method_not_allowed"
            # AND the log says so, not that there is no such route
            assert printed.logs[-1]["error"] == f"method {method} not allowed on /kickouts"
    assert box.zim.requests_seen == 0


# --- ZEGO refuses -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("box", [{"rooms": {"lobby-7": {"someone_else"}}}], indirect=True, ids=["one room"])
def test_nobody_to_kick_answers_404_with_zegos_code_message_and_request_id(
    invoke: Invoke, box: Sandbox, subtests: pytest.Subtests
) -> None:
    issued = box.zim.request_ids  # grows as the stand-in answers
    cases = {"users not in the room": ("lobby-7", 660300002), "room does not exist": ("closed-room", 660300001)}
    for name, (room_id, zego_code) in cases.items():
        with subtests.test(case=name):
            # GIVEN ZEGO's rooms, where the users are not in the room named (or the room is gone)
            # WHEN a kickout is posted
            response = invoke(post({"room_id": room_id, "user_ids": ["spammer_01", "spammer_02"]}))

            # THEN 404 carries ZEGO's Code, Message and the RequestId it issued, and names the absent users
            assert response["statusCode"] == 404
            body = body_of(response)
            assert body["error"] == "not_in_room"
            assert body["zego"] == {"code": zego_code, "message": "room or users not found", "request_id": issued[-1]}
            assert body["result"]["absent_user_ids"] == ["spammer_01", "spammer_02"]
            assert body["result"]["kicked_user_ids"] == []


@pytest.mark.parametrize(
    "box", [{"rooms": {"lobby-7": {f"user_{number:02}" for number in range(50)}}}], indirect=True, ids=["50 present"]
)
def test_users_zego_reports_absent_are_listed_apart_from_those_kicked(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN a room holding the first 50 of 60 users named
    users = [f"user_{number:02}" for number in range(60)]

    # WHEN all 60 are kicked (two ZEGO calls)
    response = invoke(post({"room_id": "lobby-7", "user_ids": users}))

    # THEN 200: the first call's users are kicked, the second call's reported absent
    assert response["statusCode"] == 200
    body = body_of(response)
    assert body["kicked_user_ids"] == users[:50]
    assert body["absent_user_ids"] == users[50:]
    assert [call["code"] for call in body["calls"]] == [0, 660300002]


def test_unregistered_operator_answers_422_with_zegos_reply_without_retrying(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN ZEGO does not know the operator
    issued = box.zim.request_ids  # grows as the stand-in answers
    box.zim.script(Fault.code(660500002, "operator not registered"))

    # WHEN a kickout by that operator is posted
    response = invoke(post({"room_id": "lobby-7", "user_ids": ["spammer_01"], "operator_id": "mod-ghost"}))

    # THEN 422: the caller's operator is at fault, with ZEGO's Code, Message and RequestId
    assert response["statusCode"] == 422
    body = body_of(response)
    assert body["error"] == "zego_refused"
    assert body["zego"] == {"code": 660500002, "message": "operator not registered", "request_id": issued[0]}
    # AND a permanent refusal is not retried
    assert box.zim.requests_seen == 1


def test_permanent_configuration_refusal_answers_502_without_retrying(
    invoke: Invoke, box: Sandbox, subtests: pytest.Subtests
) -> None:
    for zego_code in [100000001, 3, 660000002]:
        with subtests.test(zego_code=zego_code):
            # GIVEN ZEGO refuses for a reason the caller cannot fix (bad AppId, auth failed, parameter error)
            box.zim.script(Fault.code(zego_code, "refused for good"))
            before = box.zim.requests_seen

            # WHEN a kickout is posted
            response = invoke(post({"room_id": "lobby-7", "user_ids": ["spammer_01"]}))

            # THEN 502 carrying ZEGO's Code and Message, after a single request
            assert response["statusCode"] == 502
            body = body_of(response)
            assert body["error"] == "zego_refused"
            assert (body["zego"]["code"], body["zego"]["message"]) == (zego_code, "refused for good")
            assert box.zim.requests_seen == before + 1


def test_zego_rate_limiting_answers_429_with_retry_after(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN ZEGO answers "over the AppId-level frequency limit" to every attempt
    box.zim.script(*[Fault.code(660300005, "over the AppId-level frequency limit")] * 6)

    # WHEN a kickout is posted
    response = invoke(post({"room_id": "lobby-7", "user_ids": ["spammer_01"]}))

    # THEN 429 with Retry-After, carrying ZEGO's code, after backing off and retrying
    assert response["statusCode"] == 429
    retry_after = header(response, "Retry-After")
    assert retry_after is not None
    assert int(retry_after) >= 1
    body = body_of(response)
    assert body["error"] == "zego_rate_limited"
    assert body["zego"]["code"] == 660300005
    assert box.zim.requests_seen >= 2
    assert box.zim.kickouts == []


def test_zego_answering_503_every_time_answers_502(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN ZEGO's gateway answers HTTP 503 to every attempt
    box.zim.script(*[Fault.http(503)] * 6)

    # WHEN a kickout is posted
    response = invoke(post({"room_id": "lobby-7", "user_ids": ["spammer_01"]}))

    # THEN 502 zego_unavailable, after retrying
    assert response["statusCode"] == 502
    assert body_of(response)["error"] == "zego_unavailable"
    assert box.zim.requests_seen >= 2


def test_zego_slower_than_the_time_left_answers_504(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN a warm environment (the secret read), then ZEGO taking 3 s to answer while the invocation has 2.5 s
    # (1 s after the function's safety margin)
    assert invoke(post({"room_id": "lobby-7", "user_ids": ["spammer_01"]}))["statusCode"] == 200
    box.zim.script(Fault.slow(3), Fault.slow(3))

    # WHEN a kickout is posted
    response = invoke(post({"room_id": "lobby-7", "user_ids": ["spammer_01"]}), timeout_seconds=2.5)

    # THEN 504 zego_unavailable, within the invocation's time
    assert response["statusCode"] == 504
    assert body_of(response)["error"] == "zego_unavailable"


def test_invocation_too_close_to_its_deadline_answers_503_without_calling_zego(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN an invocation with less time left than the safety margin plus one request
    # WHEN a kickout is posted
    response = invoke(post({"room_id": "lobby-7", "user_ids": ["spammer_01"]}), timeout_seconds=1.8)

    # THEN 503 at once, saying ZEGO was not called (it did not time out: it was never asked)
    assert response["statusCode"] == 503
    assert body_of(response)["error"] == "out_of_time"
    assert response["multiValueHeaders"]["Retry-After"] == ["1"]
    assert box.zim.requests_seen == 0


# --- secret and configuration -----------------------------------------------------------------------------------


def test_missing_secret_answers_503_json_without_calling_zego(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN the ServerSecret was deleted from Secrets Manager
    boto3.client("secretsmanager", region_name=REGION).delete_secret(
        SecretId=box.secret_arn, ForceDeleteWithoutRecovery=True
    )

    # WHEN a kickout is posted
    response = invoke(post({"room_id": "lobby-7", "user_ids": ["spammer_01"]}))

    # THEN 503 secret_unavailable as JSON; nothing unsigned went out
    assert response["statusCode"] == 503
    assert header(response, "Content-Type") == "application/json"
    assert body_of(response)["error"] == "secret_unavailable"
    assert box.zim.requests_seen == 0


def test_secret_without_a_usable_server_secret_answers_503_without_calling_zego(
    invoke: Invoke, box: Sandbox, subtests: pytest.Subtests
) -> None:
    cases = {
        "broken JSON": "{not json",
        "JSON without ServerSecret": json.dumps({"Secret": SERVER_SECRET}),
        "ServerSecret not a string": json.dumps({"ServerSecret": 42}),
        "blank": "  ",
    }
    for name, secret_string in cases.items():
        with subtests.test(secret=name):
            # GIVEN a secret that holds no usable ServerSecret
            box.put_secret(secret_string)

            # WHEN a kickout is posted
            response = invoke(post({"room_id": "lobby-7", "user_ids": ["spammer_01"]}))

            # THEN 503 secret_unavailable
            assert response["statusCode"] == 503
            assert body_of(response)["error"] == "secret_unavailable"
    assert box.zim.requests_seen == 0


@pytest.mark.parametrize("box", [{"secret_string": SERVER_SECRET}], indirect=True, ids=["bare"])
def test_secret_stored_bare_signs_as_well_as_json(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN the ServerSecret stored as the bare string rather than JSON
    # WHEN a kickout is posted
    response = invoke(post({"room_id": "lobby-7", "user_ids": ["spammer_01"]}))

    # THEN ZEGO accepts the signature
    assert response["statusCode"] == 200
    assert box.zim.refusals == []


def test_secret_rotated_in_secrets_manager_is_used_as_soon_as_zego_rejects_the_cached_one(
    invoke: Invoke, box: Sandbox
) -> None:
    # GIVEN the function has the ServerSecret cached, then it is rotated at ZEGO and in Secrets Manager
    assert invoke(post({"room_id": "lobby-7", "user_ids": ["spammer_01"]}))["statusCode"] == 200
    box.zim.rotate_secret(ROTATED_SECRET)
    box.put_secret(json.dumps({"ServerSecret": ROTATED_SECRET}))

    # WHEN the next kickout is posted (well within the cache's lifetime)
    response = invoke(post({"room_id": "lobby-7", "user_ids": ["spammer_02"]}))

    # THEN ZEGO's "signature invalid" made the function re-read the secret and sign again: success
    assert response["statusCode"] == 200
    assert [code for code, _ in box.zim.refusals] == [100000005]
    assert box.zim.kicked_user_ids == ["spammer_01", "spammer_02"]


def test_secret_rotated_only_at_zego_answers_502_after_one_reread(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN ZEGO has a new ServerSecret that Secrets Manager does not
    box.zim.rotate_secret(ROTATED_SECRET)

    # WHEN a kickout is posted
    response = invoke(post({"room_id": "lobby-7", "user_ids": ["spammer_01"]}))

    # THEN 502 zego_refused with "signature invalid", after exactly one re-read and re-sign
    assert response["statusCode"] == 502
    body = body_of(response)
    assert body["error"] == "zego_refused"
    assert body["zego"]["code"] == 100000005
    assert [code for code, _ in box.zim.refusals] == [100000005, 100000005]


def test_malformed_configuration_answers_500_naming_the_variable(
    invoke: Invoke, box: Sandbox, monkeypatch: pytest.MonkeyPatch, subtests: pytest.Subtests
) -> None:

    cases: list[tuple[str, str | None]] = [
        ("ZEGO_APP_ID", "not-a-number"),
        ("ZEGO_APP_ID", "0"),
        ("ZEGO_APP_ID", str(2**32)),
        ("ZEGO_API_ENDPOINT", "http://zim-api.zego.im/"),
        ("ZEGO_API_ENDPOINT", f"{box.zim.url}?AppId=1"),
        ("ZEGO_SECRET_ID", None),
    ]
    for variable, value in cases:
        with subtests.test(variable=variable, value=value):
            # GIVEN an environment where one variable of the function is malformed (or missing)
            box.rewire(environ={variable: value or ""})

            # WHEN a valid kickout is posted
            response = invoke(post({"room_id": "lobby-7", "user_ids": ["spammer_01"]}))

            # THEN 500 configuration_error as JSON, naming the variable
            assert response["statusCode"] == 500
            body = body_of(response)
            assert body["error"] == "configuration_error"
            assert variable in body["message"]
    box.rewire()
    # AND ZEGO was never called with a half-configured request
    assert box.zim.requests_seen == 0


# --- logs -------------------------------------------------------------------------------------------------------


def test_logs_carry_the_api_request_id_as_correlation_id(invoke: Invoke, box: Sandbox, printed: Printed) -> None:
    # GIVEN two API requests, one that succeeds and one ZEGO refuses
    good, refused = (
        post({"room_id": "lobby-7", "user_ids": ["spammer_01"]}),
        post({"room_id": "lobby-7", "user_ids": ["spammer_02"], "operator_id": "mod-ghost"}),
    )

    # WHEN both are handled
    invoke(good)
    box.zim.script(Fault.code(660500002, "operator not registered"))
    invoke(refused)

    # THEN each audit log line carries its own request's API Gateway requestId
    done = [log for log in printed.logs if log["message"] == "kickout done"]
    failed = [log for log in printed.logs if log["message"] == "kickout failed"]
    assert [log["correlation_id"] for log in done] == [good["requestContext"]["requestId"]]
    assert [log["correlation_id"] for log in failed] == [refused["requestContext"]["requestId"]]


def test_correlation_id_does_not_follow_into_the_next_invocation(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    # GIVEN an API request was handled by this execution environment
    invoke(post({"room_id": "lobby-7", "user_ids": ["spammer_01"]}))

    # WHEN the next invocation is a direct one
    invoke({"room_id": "lobby-7", "user_ids": ["spammer_02"]})

    # THEN its log lines carry no correlation id of the earlier request
    [first, second] = [log for log in printed.logs if log["message"] == "kickout done"]
    assert "correlation_id" in first
    assert second.get("correlation_id") is None


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"]
)
def test_a_body_not_sent_as_json_gets_415_in_the_usual_error_shape(
    invoke: Invoke, box: Sandbox, content_type: str
) -> None:
    # GIVEN a valid kickout, sent the way `curl -d` sends it without a header (a form) or as plain text
    event = api_event(json.dumps({"room_id": "lobby-7", "user_ids": ["spammer_01"]}))
    event["headers"]["Content-Type"] = content_type
    # WHEN it reaches the function
    response = invoke(event)
    # THEN it is refused as such, without echoing the body, and ZEGO is not called
    assert response["statusCode"] == 415
    body = json.loads(response["body"])
    assert body["error"] == "unsupported_media_type"
    assert "spammer_01" not in response["body"]
    assert box.zim.requests_seen == 0


def test_an_error_refused_before_the_resolver_is_written_like_every_other_error_body(
    invoke: Invoke, box: Sandbox
) -> None:
    # GIVEN a request refused before the resolver (a form body, 415) and ones refused by it (422, 404)
    form = api_event(json.dumps({"room_id": "lobby-7", "user_ids": ["spammer_01"]}))
    form["headers"]["Content-Type"] = "application/x-www-form-urlencoded"
    invalid = post({"room_id": "lobby-7", "user_ids": []})
    elsewhere = post({"room_id": "lobby-7", "user_ids": ["spammer_01"]}) | {"path": "/elsewhere"}
    # WHEN each is answered
    responses = [invoke(event) for event in (form, invalid, elsewhere)]
    # THEN each body is the same compact JSON of the same shape, under the same Content-Type
    assert [response["statusCode"] for response in responses] == [415, 422, 404]
    for response in responses:
        body = json.loads(response["body"])
        assert response["body"] == json.dumps(body, separators=(",", ":"))
        assert list(body)[:2] == ["error", "message"]
        content_type = (response.get("headers") or {}).get("Content-Type")
        assert (content_type or response["multiValueHeaders"]["Content-Type"][0]) == "application/json"


def test_json_with_a_charset_or_no_content_type_at_all_is_accepted(invoke: Invoke, box: Sandbox) -> None:
    for headers in ({"content-type": "application/json; charset=utf-8"}, {}, None):
        event = api_event(json.dumps({"room_id": "lobby-7", "user_ids": ["spammer_01"]}))
        event["headers"] = headers
        assert invoke(event)["statusCode"] == 200


def test_an_unknown_field_is_named_but_never_more_than_40_characters_of_it(invoke: Invoke, box: Sandbox) -> None:
    response = invoke(api_event(json.dumps({"room_id": "r", "user_ids": ["u"], "x" * 500: 1})))
    assert response["statusCode"] == 422
    assert "x" * 40 in response["body"]
    assert "x" * 41 not in response["body"]


def test_a_request_that_fails_partway_says_which_users_were_kicked(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN 60 users (two calls) and ZEGO failing for good on the second call only
    users = [f"u{index}" for index in range(60)]
    box.zim.fault_for = lambda params: Fault.code(3) if "u59" in params.get("UserId[]", []) else None
    # WHEN they are kicked through the API
    response = invoke(post({"room_id": "lobby-7", "user_ids": users}))
    # THEN the refusal is reported, with the first call's users, who are kicked all the same
    assert response["statusCode"] == 502
    body = body_of(response)
    assert body["zego"]["code"] == 3
    assert [call["user_ids"] for call in body["completed_calls"]] == [users[:50]]
    assert box.zim.kicked_user_ids == users[:50]


def test_an_unexpected_error_is_a_json_500_that_says_nothing_of_it(
    invoke: Invoke, box: Sandbox, printed: Printed, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise KeyError("internal detail")

    box.rewire(send=broken)
    response = invoke(post({"room_id": "lobby-7", "user_ids": ["spammer_01"]}))
    assert response["statusCode"] == 500
    assert body_of(response)["error"] == "internal_error"
    assert "internal detail" not in response["body"]
    assert printed.metric("FailedUnexpected") == 1


def test_an_unknown_path_is_not_echoed(invoke: Invoke, box: Sandbox) -> None:
    response = invoke(api_event(None, method="GET", path="/<script>alert(1)</script>"))
    assert response["statusCode"] == 404
    assert "script" not in response["body"]
