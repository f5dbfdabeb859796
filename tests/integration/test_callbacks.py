"""ZIM's callbacks through the real handler (handler.app.callbacks_lambda_handler's, on the sandbox's function):
a kept-out user's `room_enter` becomes one queue message that kicks them again, a `room_exit` by Kickout is
confirmed, each callback is handled once however often ZEGO sends it, and whatever is not ZEGO's signed callback
gets its 4xx and does nothing."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote, urlencode

import boto3
import pytest

from handler.app import callbacks_handler_for
from handler.zego import callbacks
from kickout_dev.clock import SimulatedClock
from kickout_dev.events import api_event
from kickout_dev.sandbox import APP_ID, REGION, SERVER_SECRET, Sandbox
from tests.conftest import WALL_CLOCK_START, Printed

NOW = WALL_CLOCK_START


def callback_body(event: str, *, secret: str = SERVER_SECRET, nonce: str = "350176", **fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"appid": str(APP_ID), "event": event, "nonce": nonce, **fields}
    document.setdefault("timestamp", int(NOW) - 1)
    document.setdefault("signature", callbacks.signature(secret, str(document["timestamp"]), nonce))
    return document


def post(box: Sandbox, body: str | None, *, base64_encoded: bool = False, method: str = "POST") -> dict[str, Any]:
    """POST /zego/callbacks as API Gateway hands it over (no IAM identity: the route has no authorizer)."""
    event = api_event(body, method=method, path="/zego/callbacks")
    event["requestContext"]["identity"] = {"sourceIp": "203.0.113.7", "userAgent": "ZEGO"}
    event["headers"] = {"Content-Type": "application/json"}
    event["isBase64Encoded"] = base64_encoded
    response: dict[str, Any] = callbacks_handler_for(lambda: box.function)(event, box.context())
    return response


def answer(response: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return response["statusCode"], json.loads(response["body"])


def queued(box: Sandbox) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name=REGION)
    messages = sqs.receive_message(QueueUrl=box.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
    return [dict(message) for message in messages.get("Messages", [])]


def keep_out(box: Sandbox, room_id: str, user_id: str, seconds: int = 3600) -> None:
    box.handler(
        {"room_id": room_id, "user_ids": [user_id], "operator_id": "mod-anna", "keep_out_seconds": seconds},
        box.context(),
    )


def test_a_kept_out_user_entering_again_is_queued_to_be_kicked_again(
    box: Sandbox, clock: SimulatedClock, printed: Printed
) -> None:
    # GIVEN a user kicked with an hour's keep-out by mod-anna
    keep_out(box, "lobby-7", "spammer_01")

    # WHEN ZIM calls back that they entered the room again, ten minutes later
    clock.now += 600
    response = post(
        box,
        json.dumps(
            callback_body("room_enter", room_id="lobby-7", operator_account="spammer_01", timestamp=int(clock.now))
        ),
    )

    # THEN the answer is 200, and one message in the kickout queue kicks them again, by mod-anna, naming the keep-out
    assert answer(response) == (200, {"outcome": "kickout_queued"})
    [message] = queued(box)
    assert json.loads(message["Body"]) == {
        "room_id": "lobby-7",
        "user_ids": ["spammer_01"],
        "reason": "keep-out to 2030-03-17T18:47Z",  # its end, 18:46:40, rounded up to the minute
        "operator_id": "mod-anna",
    }
    assert message["MessageAttributes"]["KickoutCause"]["StringValue"] == "keep_out_reentry"
    assert printed.metric("ReentriesKicked") == 1

    # AND that message, handled by the function as the queue hands it over, kicks them again
    record = {**box_record(message), "body": message["Body"]}
    assert box.handler({"Records": [record]}, box.context()) == {"batchItemFailures": []}
    assert box.zim.kicked_user_ids == ["spammer_01", "spammer_01"]
    assert box.zim.kickouts[-1].operator_id == "mod-anna"


def box_record(message: dict[str, Any]) -> dict[str, Any]:
    from kickout_dev.events import sqs_record

    return sqs_record(message["Body"], message_id=message["MessageId"])


def test_a_user_who_is_not_kept_out_or_whose_window_ended_is_left_alone(box: Sandbox, clock: SimulatedClock) -> None:
    keep_out(box, "lobby-7", "spammer_01", seconds=60)
    clock.now += 61

    for nonce, user in (("1", "spammer_01"), ("2", "stranger")):
        response = post(
            box,
            json.dumps(
                callback_body(
                    "room_enter", nonce=nonce, room_id="lobby-7", operator_account=user, timestamp=int(clock.now)
                )
            ),
        )
        assert answer(response) == (200, {"outcome": "not_kept_out"})
    assert queued(box) == []


def test_a_callback_sent_again_is_handled_once(box: Sandbox, clock: SimulatedClock, printed: Printed) -> None:
    # GIVEN a kept-out user's room_enter
    keep_out(box, "lobby-7", "spammer_01")
    body = json.dumps(callback_body("room_enter", room_id="lobby-7", operator_account="spammer_01"))

    # WHEN ZEGO sends it six times (its first try and five retries)
    outcomes = [answer(post(box, body))[1]["outcome"] for _ in range(6)]

    # THEN one kickout is queued, and the repeats are answered 200 so ZEGO stops
    assert outcomes == ["kickout_queued"] + ["repeated"] * 5
    assert len(queued(box)) == 1
    assert printed.metric("CallbacksRepeated") == 5


def test_a_room_exit_by_kickout_confirms_the_kick_once(box: Sandbox, clock: SimulatedClock, printed: Printed) -> None:
    body = callback_body(
        "room_exit", room_id="lobby-7", exit_type="Kickout", operator_account="mod-anna", exit_user_ids=["a", "b"]
    )

    first = post(box, json.dumps(body))
    again = post(box, json.dumps(body))

    assert answer(first) == (200, {"outcome": "confirmed"})
    assert answer(again) == (200, {"outcome": "repeated"})
    assert printed.metric("KickoutsConfirmed") == 2
    [confirmed] = [line for line in printed.logs if line["message"] == "kickout confirmed"]
    assert (confirmed["room_id"], confirmed["confirmed_user_ids"], confirmed["operator_account"]) == (
        "lobby-7",
        ["a", "b"],
        "mod-anna",
    )
    assert queued(box) == []


@pytest.mark.parametrize(
    ("event", "fields"),
    [
        ("room_exit", {"room_id": "r", "exit_type": "Quit", "operator_account": "u", "exit_user_ids": ["u"]}),
        ("room_create", {"room_id": "r"}),
        ("group_message", {"anything": [1, 2]}),
    ],
)
def test_an_event_of_no_interest_is_answered_200_and_ignored(
    box: Sandbox, clock: SimulatedClock, printed: Printed, event: str, fields: dict[str, Any]
) -> None:
    response = post(box, json.dumps(callback_body(event, **fields)))

    assert answer(response) == (200, {"outcome": "ignored"})
    assert printed.metric("KickoutsConfirmed") == 0
    assert queued(box) == []


@pytest.mark.parametrize(
    "encode",
    [
        lambda document: (quote(json.dumps(document)), False),
        lambda document: (urlencode(document), False),
        lambda document: (base64.b64encode(json.dumps(document).encode()).decode(), True),
    ],
    ids=["percent-encoded", "form", "base64 from API Gateway"],
)
def test_every_encoding_of_a_body_is_read(box: Sandbox, clock: SimulatedClock, encode: Any) -> None:
    keep_out(box, "lobby-7", "spammer_01")
    body, base64_encoded = encode(callback_body("room_enter", room_id="lobby-7", operator_account="spammer_01"))

    response = post(box, body, base64_encoded=base64_encoded)

    assert answer(response) == (200, {"outcome": "kickout_queued"})


def test_the_callback_secret_is_used_when_the_secret_has_one(box: Sandbox, clock: SimulatedClock) -> None:
    # GIVEN a secret with both keys
    box.put_secret(json.dumps({"ServerSecret": SERVER_SECRET, "CallbackSecret": "callback-only-secret"}))
    box.rewire(wall_clock=clock)
    keep_out(box, "lobby-7", "spammer_01")

    # WHEN a callback comes signed with the ServerSecret, then one with the CallbackSecret
    by_server_secret = post(
        box, json.dumps(callback_body("room_enter", nonce="1", room_id="lobby-7", operator_account="spammer_01"))
    )
    by_callback_secret = post(
        box,
        json.dumps(
            callback_body(
                "room_enter", nonce="2", secret="callback-only-secret", room_id="lobby-7", operator_account="spammer_01"
            )
        ),
    )

    # THEN only the CallbackSecret's is taken
    assert answer(by_server_secret)[0] == 401
    assert answer(by_callback_secret) == (200, {"outcome": "kickout_queued"})


def hostile_bodies() -> dict[str, tuple[str | None, int]]:
    enter = {"room_id": "lobby-7", "operator_account": "spammer_01"}
    good = callback_body("room_enter", **enter)
    return {
        "bad signature": (json.dumps({**good, "signature": "0" * 40}), 401),
        "signed with another secret": (json.dumps(callback_body("room_enter", secret="guess", **enter)), 401),
        "no signature": (json.dumps({key: value for key, value in good.items() if key != "signature"}), 401),
        "stale (an hour old)": (json.dumps(callback_body("room_enter", timestamp=int(NOW) - 3600, **enter)), 401),
        "stale, in milliseconds": (
            json.dumps(callback_body("room_enter", timestamp=(int(NOW) - 3600) * 1000, **enter)),
            401,
        ),
        "another AppId": (json.dumps({**good, "appid": "42"}), 403),
        "no body": (None, 400),
        "not JSON": ("hello", 400),
        "a JSON array": (json.dumps([good]), 400),
        "nested, unsigned": ('{"a": ' + "[" * 5000 + "]" * 5000 + "}", 400),
        "nested in a signed one": (
            json.dumps({**good, "room_id": "@"})[:-1] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}",
            400,
        ),
        "huge": (json.dumps({**good, "pad": "x" * 200_000}), 413),
        "room_id a number": (json.dumps({**good, "room_id": 7}), 400),
        "operator_account missing": (
            json.dumps({key: value for key, value in good.items() if key != "operator_account"}),
            400,
        ),
        "exit_user_ids a string": (
            json.dumps(callback_body("room_exit", room_id="r", exit_type="Kickout", exit_user_ids="a")),
            400,
        ),
    }


@pytest.mark.parametrize("name", list(hostile_bodies()))
def test_a_hostile_callback_gets_its_4xx_and_does_nothing(
    box: Sandbox, clock: SimulatedClock, printed: Printed, name: str
) -> None:
    # GIVEN the user is kept out (so an accepted callback would queue a kickout)
    keep_out(box, "lobby-7", "spammer_01")
    body, status = hostile_bodies()[name]

    # WHEN the hostile request is posted
    response = post(box, body)

    # THEN it gets its status with an error body, nothing is queued or confirmed, and no secret is written anywhere
    code, document = answer(response)
    assert (code, sorted(document)) == (status, ["error", "message"])
    assert queued(box) == []
    assert printed.metric("KickoutsConfirmed") == 0
    assert printed.metric("CallbacksRefused") == 1
    assert SERVER_SECRET not in printed.text
    assert SERVER_SECRET not in response["body"]


def test_a_replayed_signature_with_another_body_does_nothing_twice(box: Sandbox, clock: SimulatedClock) -> None:
    # GIVEN two users kept out, and a callback for the first seen on the wire
    keep_out(box, "lobby-7", "spammer_01")
    keep_out(box, "lobby-7", "spammer_02")
    seen = callback_body("room_enter", room_id="lobby-7", operator_account="spammer_01")
    assert answer(post(box, json.dumps(seen)))[1]["outcome"] == "kickout_queued"

    # WHEN its signature, timestamp and nonce are replayed with another user
    replayed = post(box, json.dumps({**seen, "operator_account": "spammer_02"}))

    # THEN it is taken as the same callback: nothing more is queued
    assert answer(replayed) == (200, {"outcome": "repeated"})
    assert len(queued(box)) == 1


def test_another_method_or_route_is_refused(box: Sandbox, clock: SimulatedClock) -> None:
    assert answer(post(box, None, method="GET"))[0] == 405


def test_a_failing_store_is_503_and_the_next_try_is_handled(box: Sandbox, clock: SimulatedClock) -> None:
    # GIVEN a kept-out user, and the callbacks' table client pointed where the table does not exist
    keep_out(box, "lobby-7", "spammer_01")
    box.rewire(wall_clock=clock, keep_out_dynamodb=lambda: boto3.client("dynamodb", region_name="us-west-2"))
    body = json.dumps(callback_body("room_enter", room_id="lobby-7", operator_account="spammer_01"))

    # WHEN the callback comes: 503, so ZEGO sends it again
    assert answer(post(box, body)) == (503, {"error": "unavailable", "message": "try again"})
    assert queued(box) == []

    # AND once the table is back, ZEGO's retry is handled
    box.rewire(wall_clock=clock)
    assert answer(post(box, body)) == (200, {"outcome": "kickout_queued"})


def test_re_entries_of_one_raid_share_a_reason_so_the_queue_can_merge_them_into_one_call() -> None:
    from handler.entry.callbacks import rekick
    from handler.fleet.keep_outs import KeepOut

    # GIVEN keep-outs of one room set seconds apart (a raid kicked over half a minute), and one ending on the minute
    ends = [1_900_000_020 + offset for offset in (1, 17, 39)]
    on_the_minute = 1_900_000_080
    # WHEN each user enters again THEN their kickouts carry one reason, the end rounded up, never earlier than it is
    reasons = {rekick(KeepOut(room_id="lobby", user_id=f"u{end}", until=end))["reason"] for end in ends}
    assert reasons == {"keep-out to 2030-03-17T17:48Z"}
    assert (
        rekick(KeepOut(room_id="lobby", user_id="u", until=on_the_minute))["reason"] == "keep-out to 2030-03-17T17:48Z"
    )
    # AND the reason stays within the 32 bytes ZEGO keeps
    assert len(next(iter(reasons)).encode()) <= 32
