"""Idempotency-Key on POST /kickouts, through the real handler: the ZIM stand-in on loopback, the state table in moto
(held to AWS's limits). What a retry gets back, what ZEGO receives, and what is kept in the table."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import time_machine

from kickout_dev.events import api_event
from kickout_dev.moto_server import aws_calls
from kickout_dev.sandbox import APP_ID, REGION, STATE_TABLE, Sandbox, sandbox
from kickout_dev.zim_server import Fault
from tests.conftest import Invoke, Printed

KICKOUT = {"room_id": "lobby-7", "user_ids": ["spammer_01", "spammer_02"], "reason": "spam"}
NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
DAY = 24 * 60 * 60


@pytest.fixture
def box(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    options: dict[str, Any] = getattr(request, "param", {"instant_backoff": True})
    with sandbox(**options) as running:
        yield running


def keyed(
    payload: Any, key: str | None, *, header: str = "Idempotency-Key", caller: str | None = None
) -> dict[str, Any]:
    event = api_event(json.dumps(payload))
    if key is not None:
        event["headers"][header] = key
        event["multiValueHeaders"][header] = [key]
    if caller is not None:
        event["requestContext"]["identity"]["userArn"] = caller
    return event


def header(response: dict[str, Any], name: str) -> str | None:
    values = (response.get("multiValueHeaders") or {}).get(name) or []
    single = (response.get("headers") or {}).get(name)
    return single if single is not None else (",".join(values) if values else None)


def kept_items() -> list[dict[str, Any]]:
    items = boto3.client("dynamodb", region_name=REGION).scan(TableName=STATE_TABLE)["Items"]
    return [item for item in items if item["id"]["S"].startswith("idempotency#")]


def done_lines(printed: Printed) -> list[dict[str, Any]]:
    return [line for line in printed.logs if line["message"] == "kickout done"]


# --- a retry gets the first answer ------------------------------------------------------------------------------


def test_a_retry_with_the_same_key_and_payload_gets_the_first_answer_and_zego_is_not_called(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    # GIVEN a kickout posted with a key, and answered
    first = invoke(keyed(KICKOUT, '"8e03978e-40d5-43e8-bc93-6894a57f9324"'))
    assert first["statusCode"] == 200
    assert len(box.zim.kickouts) == 1
    # WHEN the caller retries it (its answer lost on the way, say): the same key, the same payload
    retry = invoke(keyed(KICKOUT, '"8e03978e-40d5-43e8-bc93-6894a57f9324"'))
    # THEN it gets the same status and the same body, said to be replayed
    assert retry["statusCode"] == 200
    assert retry["body"] == first["body"]
    assert header(retry, "Idempotent-Replayed") == "true"
    assert header(first, "Idempotent-Replayed") is None
    # AND ZEGO was not called again, nor the kick audited twice; the replay was counted
    assert len(box.zim.kickouts) == 1
    assert len(done_lines(printed)) == 1
    assert printed.metric("IdempotentReplays") == 1


def test_a_bare_key_and_its_structured_field_string_are_the_same_key(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN a kickout sent with the key as an RFC 8941 string, an escaped quote in it, under a lower-case name
    first = invoke(keyed(KICKOUT, r'"order-\"7\""', header="idempotency-key"))
    # WHEN it is retried with the same key unquoted... (a bare token may not hold a quote: a different key is used)
    bare_first = invoke(keyed(KICKOUT, "order-8"))
    bare_retry = invoke(keyed(KICKOUT, '"order-8"'))
    quoted_retry = invoke(keyed(KICKOUT, r'"order-\"7\""'))
    # THEN each retry is a replay of its first answer: two kicks in all
    assert [first["statusCode"], bare_first["statusCode"]] == [200, 200]
    assert header(bare_retry, "Idempotent-Replayed") == header(quoted_retry, "Idempotent-Replayed") == "true"
    assert bare_retry["body"] == bare_first["body"]
    assert quoted_retry["body"] == first["body"]
    assert len(box.zim.kickouts) == 2


def test_without_a_key_every_post_is_a_kickout_as_before(invoke: Invoke, box: Sandbox) -> None:
    # WHEN the same kickout is posted twice without a key
    responses = [invoke(keyed(KICKOUT, None)) for _ in range(2)]
    # THEN both are carried out, and nothing is kept
    assert [response["statusCode"] for response in responses] == [200, 200]
    assert len(box.zim.kickouts) == 2
    assert kept_items() == []


@pytest.mark.parametrize("box", [{"rooms": {"lobby-7": {"spammer_01"}}, "instant_backoff": True}], indirect=True)
def test_a_kept_not_in_room_answer_is_replayed_too(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN a kickout of a user ZEGO says is not in the room (a final answer: kept)
    first = invoke(keyed({"room_id": "lobby-7", "user_ids": ["ghost"]}, "k-404"))
    # WHEN it is retried
    retry = invoke(keyed({"room_id": "lobby-7", "user_ids": ["ghost"]}, "k-404"))
    # THEN the retry gets the same 404 and its body, ZEGO asked once
    assert (first["statusCode"], retry["statusCode"]) == (404, 404)
    assert retry["body"] == first["body"]
    assert json.loads(retry["body"])["error"] == "not_in_room"
    assert box.zim.requests_seen == 1


# --- what is not a replay ---------------------------------------------------------------------------------------


def test_the_same_key_with_another_payload_is_422_and_zego_is_not_called(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    # GIVEN a key used for one kickout
    assert invoke(keyed(KICKOUT, "k-1"))["statusCode"] == 200
    # WHEN it is sent again with other users
    response = invoke(keyed({**KICKOUT, "user_ids": ["someone_else"]}, "k-1"))
    # THEN 422 idempotency_key_reused, and the other users are not kicked
    assert response["statusCode"] == 422
    assert json.loads(response["body"])["error"] == "idempotency_key_reused"
    assert len(box.zim.kickouts) == 1
    # AND the refusal is audited as an invalid request
    assert any(line.get("outcome") == "Invalid" for line in printed.logs if line["message"] == "kickout failed")


def test_a_key_is_the_senders_own_two_principals_never_share_one(invoke: Invoke, box: Sandbox) -> None:
    # WHEN two IAM principals send the same kickout under the same key
    role_a = "arn:aws:sts::123456789012:assumed-role/moderation-a/session"
    role_b = "arn:aws:sts::123456789012:assumed-role/moderation-b/session"
    first = invoke(keyed(KICKOUT, "shared", caller=role_a))
    second = invoke(keyed(KICKOUT, "shared", caller=role_b))
    # THEN each is carried out for its sender
    assert (first["statusCode"], second["statusCode"]) == (200, 200)
    assert header(second, "Idempotent-Replayed") is None
    assert len(box.zim.kickouts) == 2


def test_a_key_whose_first_request_is_still_running_is_409(box: Sandbox) -> None:
    # GIVEN a keyed kickout whose ZEGO call takes a second
    box.zim.script(Fault.slow(1.0))
    answers: dict[str, Any] = {}
    first = threading.Thread(target=lambda: answers.update(first=box.handler(keyed(KICKOUT, "k-slow"), box.context())))
    first.start()
    while box.zim.requests_seen == 0 and first.is_alive():  # until ZEGO holds the first call
        threading.Event().wait(0.01)
    # WHEN the caller retries it meanwhile
    retry = box.handler(keyed(KICKOUT, "k-slow"), box.context())
    first.join(timeout=10)
    # THEN the retry is 409 with Retry-After, without calling ZEGO; the first is answered as usual
    assert retry["statusCode"] == 409
    assert json.loads(retry["body"])["error"] == "idempotency_key_in_use"
    assert header(retry, "Retry-After") == "1"
    assert answers["first"]["statusCode"] == 200
    assert box.zim.requests_seen == 1
    # AND once it is answered, a retry is its replay
    assert header(box.handler(keyed(KICKOUT, "k-slow"), box.context()), "Idempotent-Replayed") == "true"


def test_after_an_answer_to_retry_the_key_is_free_and_the_retry_is_carried_out(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN a keyed kickout that failed with ZEGO down (504/502: the caller should retry)
    box.zim.go_down()
    failed = invoke(keyed(KICKOUT, "k-retry"))
    assert failed["statusCode"] in (502, 504)
    assert kept_items() == []
    # WHEN ZEGO is back and the caller retries with the same key
    box.zim.come_back()
    retry = invoke(keyed(KICKOUT, "k-retry"))
    # THEN it is carried out (not a replay of the failure)
    assert retry["statusCode"] == 200
    assert header(retry, "Idempotent-Replayed") is None
    assert len(box.zim.kickouts) == 1


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ('""', "empty"),
        ('"' + "k" * 256 + '"', "too long"),
        ('"unterminated', "not a string"),
        ("two words", "space in a bare key"),
        ('"caf\u00e9"', "not ASCII"),
    ],
)
def test_a_malformed_key_is_400_and_nothing_is_done(invoke: Invoke, box: Sandbox, value: str, detail: str) -> None:
    response = invoke(keyed(KICKOUT, value))
    assert response["statusCode"] == 400, detail
    assert json.loads(response["body"])["error"] == "invalid_idempotency_key"
    assert box.zim.requests_seen == 0
    assert kept_items() == []


def test_a_key_sent_twice_with_different_values_is_400(invoke: Invoke, box: Sandbox) -> None:
    event = keyed(KICKOUT, "k-a")
    event["multiValueHeaders"]["Idempotency-Key"] = ["k-a", "k-b"]
    response = invoke(event)
    assert response["statusCode"] == 400
    assert box.zim.requests_seen == 0


# --- what is kept, for how long ---------------------------------------------------------------------------------


def test_an_answer_is_kept_24_hours_in_the_state_table_then_the_key_is_new_again(invoke: Invoke, box: Sandbox) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        # GIVEN a keyed kickout answered
        assert invoke(keyed(KICKOUT, "k-day"))["statusCode"] == 200
        # THEN its answer is one item of the state table, under the AppId, reaped by its TTL a day later
        (item,) = kept_items()
        assert item["id"]["S"].startswith(f"idempotency#{APP_ID}#")
        assert "k-day" not in item["id"]["S"]  # hashed: a key is the caller's, not the table's to show
        assert int(item["expiration"]["N"]) == int(NOW.timestamp()) + DAY
        assert item["status"]["S"] == "COMPLETED"
        # WHEN the same kickout comes with the key just before the day is over, and again after
        clock.shift(timedelta(seconds=DAY - 1))
        before = invoke(keyed(KICKOUT, "k-day"))
        clock.shift(timedelta(seconds=2))
        after = invoke(keyed(KICKOUT, "k-day"))
    # THEN the first is a replay, the second a kickout of its own
    assert header(before, "Idempotent-Replayed") == "true"
    assert header(after, "Idempotent-Replayed") is None
    assert len(box.zim.kickouts) == 2


def test_the_keep_is_the_templates_parameter(invoke: Invoke, box: Sandbox) -> None:
    box.rewire({"KICKOUT_IDEMPOTENCY_KEY_SECONDS": "3600"})
    with time_machine.travel(NOW, tick=False):
        assert invoke(keyed(KICKOUT, "k-hour"))["statusCode"] == 200
    (item,) = kept_items()
    assert int(item["expiration"]["N"]) == int(NOW.timestamp()) + 3600


def test_a_replay_costs_one_store_call_and_no_zego_call(invoke: Invoke, box: Sandbox) -> None:
    assert invoke(keyed(KICKOUT, "k-cost"))["statusCode"] == 200
    with aws_calls() as calls:
        retry = invoke(keyed(KICKOUT, "k-cost"))
    assert header(retry, "Idempotent-Replayed") == "true"
    # The conditional PutItem refused hands back the kept record (ReturnValuesOnConditionCheckFailure): no GetItem.
    assert calls["dynamodb:PutItem"] == 1
    assert calls["dynamodb:GetItem"] == 0
    assert box.zim.requests_seen == 1


# --- when the store fails ---------------------------------------------------------------------------------------


def test_with_the_store_unreachable_a_keyed_kickout_is_carried_out_and_the_failure_counted(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    # GIVEN the state table gone
    boto3.client("dynamodb", region_name=REGION).delete_table(TableName=STATE_TABLE)
    # WHEN a keyed kickout comes
    response = invoke(keyed(KICKOUT, "k-down"))
    # THEN it is carried out all the same, answered as without a key
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["kicked_user_ids"] == KICKOUT["user_ids"]
    assert len(box.zim.kickouts) == 1
    # AND the store's failure is logged (its class, not its text) and counted
    (line,) = [line for line in printed.logs if line["message"].startswith("idempotency store failed")]
    assert line["error"] == "ResourceNotFoundException"
    assert printed.metric("IdempotencyStoreErrors") == 1


def test_the_store_is_not_called_when_the_deadline_leaves_no_time_for_it(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    from handler.aws import clients

    # GIVEN a warm environment (its secret read), and an invocation with less time left than one store call may
    # take (its worst case, retries included)
    assert invoke(keyed(KICKOUT, None))["statusCode"] == 200
    seconds = clients.DYNAMODB.worst_seconds - 1
    # WHEN a keyed kickout comes in it
    with aws_calls() as calls:
        response = invoke(keyed(KICKOUT, "k-late"), timeout_seconds=seconds)
    # THEN the key's record is not attempted (the store could outlast the invocation), the kick is carried out
    assert calls["dynamodb:PutItem"] == 0
    assert kept_items() == []
    assert response["statusCode"] == 200
    assert printed.metric("IdempotencyStoreErrors") == 1
