"""Keep-outs as a resource through the real handler: `GET /keep-outs?room_id=` pages through a room's keep-outs
that still last, `DELETE /keep-outs/{room_id}/{user_id}` lifts one early (and ZIM's next room_enter of that user
then leaves them in)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from kickout_dev.clock import SimulatedClock
from kickout_dev.events import api_event
from kickout_dev.sandbox import Sandbox
from tests.integration.test_callbacks import callback_body, post


def keep_out(box: Sandbox, room_id: str, *user_ids: str, seconds: int = 3600, reason: str | None = None) -> None:
    payload: dict[str, Any] = {"room_id": room_id, "user_ids": list(user_ids), "keep_out_seconds": seconds}
    if reason:
        payload["reason"] = reason
    box.handler(payload, box.context())


def get(box: Sandbox, **query: str) -> tuple[int, dict[str, Any]]:
    event = api_event(None, method="GET", path="/keep-outs")
    event["queryStringParameters"] = query or None
    event["multiValueQueryStringParameters"] = {name: [value] for name, value in query.items()} or None
    response = box.handler(event, box.context())
    return response["statusCode"], json.loads(response["body"])


def delete(box: Sandbox, room_id: str, user_id: str) -> tuple[int, dict[str, Any]]:
    """DELETE as API Gateway hands it over: the path as sent (percent-encoded), the parameters decoded."""
    event = api_event(None, method="DELETE", path=f"/keep-outs/{quote(room_id, safe='')}/{quote(user_id, safe='')}")
    event["resource"] = "/keep-outs/{room_id}/{user_id}"
    event["requestContext"]["resourcePath"] = "/keep-outs/{room_id}/{user_id}"
    event["pathParameters"] = {"room_id": room_id, "user_id": user_id}
    response = box.handler(event, box.context())
    return response["statusCode"], json.loads(response["body"])


def test_a_rooms_keep_outs_are_listed_page_by_page_in_user_order(box: Sandbox, clock: SimulatedClock) -> None:
    # GIVEN five users kept out of a room (one of them in a batch with a reason), one of another room
    keep_out(box, "stream #42 (EU)", "e", "c", "a", seconds=600, reason="raid")
    keep_out(box, "stream #42 (EU)", "b", "d", seconds=7200)
    keep_out(box, "lobby-7", "x")

    # WHEN the room's keep-outs are read two at a time
    pages = []
    query = {"room_id": "stream #42 (EU)", "limit": "2"}
    while True:
        status, page = get(box, **query)
        assert status == 200
        pages.append(page)
        if page["next_token"] is None:
            break
        query["next_token"] = page["next_token"]

    # THEN each page holds at most two, all five come in user order, each with its end and reason
    assert [len(page["keep_outs"]) for page in pages] == [2, 2, 1]
    listed = [keep_out for page in pages for keep_out in page["keep_outs"]]
    assert [item["user_id"] for item in listed] == ["a", "b", "c", "d", "e"]
    assert listed[0] == {
        "user_id": "a",
        "until": 1_900_000_600,
        "reason": "raid",
        "operator_id": None,
    }
    assert listed[1]["until"] == 1_900_007_200


def test_keep_outs_whose_window_ended_are_not_listed(box: Sandbox, clock: SimulatedClock) -> None:
    keep_out(box, "lobby-7", "short", seconds=60)
    keep_out(box, "lobby-7", "long", seconds=3600)
    clock.now += 61

    status, page = get(box, room_id="lobby-7")

    assert status == 200
    assert [item["user_id"] for item in page["keep_outs"]] == ["long"]


def test_a_room_without_keep_outs_lists_none(box: Sandbox, clock: SimulatedClock) -> None:
    assert get(box, room_id="empty-room") == (200, {"room_id": "empty-room", "keep_outs": [], "next_token": None})


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"room_id": "a/b"},
        {"room_id": "r", "limit": "0"},
        {"room_id": "r", "limit": "101"},
        {"room_id": "r", "limit": "x"},
    ],
)
def test_a_listing_without_a_valid_room_or_limit_is_refused_naming_the_parameter(
    box: Sandbox, clock: SimulatedClock, query: dict[str, str]
) -> None:
    status, body = get(box, **query)

    assert status == 422
    assert body["error"] == "invalid_request"
    assert {problem["field"] for problem in body["fields"]} <= {"query.room_id", "query.limit", "room_id", "limit"}


def test_a_forged_next_token_is_refused(box: Sandbox, clock: SimulatedClock) -> None:
    status, body = get(box, room_id="lobby-7", next_token="not base64 !!")

    assert status == 400
    assert body["error"] == "invalid_next_token"


def test_a_keep_out_lifted_early_is_gone_and_its_user_not_kicked_again(box: Sandbox, clock: SimulatedClock) -> None:
    # GIVEN a user kept out of a room whose id holds characters a path must encode
    keep_out(box, "stream #42 (EU)", "troll&co", "other")

    outcomes: list[str] = []

    # WHEN their keep-out is lifted
    status, body = delete(box, "stream #42 (EU)", "troll&co")

    # THEN the answer says so, and the room lists only the other one
    assert (status, body) == (200, {"room_id": "stream #42 (EU)", "user_id": "troll&co", "lifted": True})
    assert [item["user_id"] for item in get(box, room_id="stream #42 (EU)")[1]["keep_outs"]] == ["other"]

    # AND lifting it again is 404: there is none
    status, body = delete(box, "stream #42 (EU)", "troll&co")
    assert (status, body["error"]) == (404, "no_keep_out")

    # AND ZIM's next room_enter of that user leaves them in, while the other is still kicked again
    for nonce, user in (("1", "troll&co"), ("2", "other")):
        entered = callback_body("room_enter", nonce=nonce, room_id="stream #42 (EU)", operator_account=user)
        outcomes.append(json.loads(post(box, json.dumps(entered))["body"])["outcome"])
    assert outcomes == ["not_kept_out", "kickout_queued"]


def test_lifting_with_an_invalid_id_is_refused(box: Sandbox, clock: SimulatedClock) -> None:
    status, body = delete(box, "r" * 40, "u")

    assert status == 422
    assert body["error"] == "invalid_request"
