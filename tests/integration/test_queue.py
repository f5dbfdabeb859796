"""SQS batches through the real handler: only what may succeed later goes back to SQS; what never can is parked
in the dead-letter queue at once, body unchanged, with the reason."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from kickout_dev.events import failed_ids, sqs_event, sqs_record
from kickout_dev.sandbox import REGION, Sandbox
from kickout_dev.zim_server import Fault
from tests.conftest import Invoke, Printed

NOT_JSON = "kick spammer_01 out of lobby-7 please"
WRONG_SHAPE = json.dumps({"room": "lobby-7", "users": ["spammer_01"]})
WRONG_TYPES = json.dumps({"room_id": ["lobby-7"], "user_ids": "spammer_01"})


def kickout(room_id: str, *user_ids: str, **extra: str) -> str:
    return json.dumps({"room_id": room_id, "user_ids": list(user_ids), **extra})


def batch(**bodies: str) -> dict[str, Any]:
    """An SQS event whose message ids are the keyword names, so that results read by name."""
    return {"Records": [sqs_record(body, message_id=message_id) for message_id, body in bodies.items()]}


def parked_by_source(box: Sandbox) -> dict[str, dict[str, Any]]:
    """The DLQ's messages by the id of the message they park (each must be parked at most once)."""
    parked = box.parked()
    by_source = {message["MessageAttributes"]["SourceMessageId"]["StringValue"]: message for message in parked}
    assert len(by_source) == len(parked), "a message was parked twice"
    return by_source


def attribute(message: dict[str, Any], name: str) -> str:
    value: str = message["MessageAttributes"][name]["StringValue"]
    return value


def zego_answers_by_room(box: Sandbox, faults: dict[str, Fault]) -> None:
    """Make the stand-in answer every request for a room with that room's fault (rooms not named behave)."""

    def fault_for(params: dict[str, list[str]]) -> Fault | None:
        return faults.get(params.get("RoomId", [""])[0])

    box.zim.fault_for = fault_for


def test_only_the_transient_failure_goes_back_to_sqs_poison_and_permanent_are_parked(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    # GIVEN a batch: two poison messages, one ZEGO refuses for good, one whose room ZEGO never serves, one good
    zego_answers_by_room(
        box, {"vip-lounge": Fault.code(660500002, "operator not registered"), "flaky-room": Fault.http(503)}
    )
    event = batch(
        not_json=NOT_JSON,
        wrong_shape=WRONG_SHAPE,
        permanent=kickout("vip-lounge", "spammer_01", operator_id="mod-ghost"),
        transient=kickout("flaky-room", "spammer_02"),
        good=kickout("lobby-7", "spammer_03"),
    )

    # WHEN SQS delivers it
    response = invoke(event)

    # THEN only the transient one is reported failed, so SQS delivers it again
    assert failed_ids(response) == {"transient"}
    # AND the good one was kicked
    assert box.zim.kicked_user_ids == ["spammer_03"]
    # AND the poison and permanent ones are parked once each, bodies unchanged, with reason and detail
    parked = parked_by_source(box)
    assert set(parked) == {"not_json", "wrong_shape", "permanent"}
    for record in event["Records"]:
        if record["messageId"] in parked:
            assert parked[record["messageId"]]["Body"] == record["body"]
    assert attribute(parked["not_json"], "KickoutFailure") == "invalid_payload"
    assert attribute(parked["wrong_shape"], "KickoutFailure") == "invalid_payload"
    assert "room_id" in attribute(parked["wrong_shape"], "KickoutDetail")
    assert attribute(parked["permanent"], "KickoutFailure") == "zego_refused"
    assert "660500002" in attribute(parked["permanent"], "KickoutDetail")
    # AND each outcome is counted under its class
    assert (printed.metric("FailedInvalid"), printed.metric("FailedPermanent")) == (2, 1)
    assert printed.metric("FailedTransient") == 1


def test_nothing_left_to_do_is_acknowledged_and_not_parked(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN ZEGO says one room does not exist and the users of another are not in it
    zego_answers_by_room(
        box, {"closed-room": Fault.code(660300001, "room not exist"), "quiet-room": Fault.code(660300002, "not in")}
    )

    # WHEN both kickouts arrive in one batch
    response = invoke(batch(room_gone=kickout("closed-room", "u1"), user_gone=kickout("quiet-room", "u2")))

    # THEN both are acknowledged: the users are out already, nothing to retry, nothing to park
    assert response == {"batchItemFailures": []}
    assert box.parked() == []
    assert box.zim.requests_seen == 2


def test_batch_of_only_poison_returns_without_failures_and_parks_each_once(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN a batch where no message can ever be handled
    event = batch(not_json=NOT_JSON, wrong_shape=WRONG_SHAPE, wrong_types=WRONG_TYPES, empty="")

    # WHEN SQS delivers it
    response = invoke(event)

    # THEN the handler returns (it does not raise, which would hand the parked messages back to SQS)
    assert response == {"batchItemFailures": []}
    # AND each message is parked exactly once, unchanged; ZEGO heard of none
    parked = parked_by_source(box)
    assert set(parked) == {"not_json", "wrong_shape", "wrong_types", "empty"}
    assert {message["Body"] for message in parked.values()} == {NOT_JSON, WRONG_SHAPE, WRONG_TYPES, ""}
    assert box.zim.requests_seen == 0


def test_message_that_cannot_be_parked_goes_back_to_sqs_and_says_so(
    invoke: Invoke, box: Sandbox, printed: Printed, monkeypatch: pytest.MonkeyPatch, subtests: pytest.Subtests
) -> None:

    zego_answers_by_room(box, {"vip-lounge": Fault.code(660500002, "operator not registered")})
    missing_queue = box.dlq_url.rsplit("/", 1)[0] + "/kickout-dlq-that-was-never-created"

    def point_dlq_at_a_missing_queue() -> None:
        box.rewire(environ={"KICKOUT_DLQ_URL": missing_queue})

    def unset_dlq() -> None:
        box.rewire(environ={"KICKOUT_DLQ_URL": ""})

    def delete_dlq() -> None:
        box.rewire()
        boto3.client("sqs", region_name=REGION).delete_queue(QueueUrl=box.dlq_url)

    # the DLQ is deleted last: it does not come back
    breakages = {"DLQ URL of a missing queue": point_dlq_at_a_missing_queue, "no DLQ URL": unset_dlq}
    breakages["DLQ deleted"] = delete_dlq
    for name, break_parking in breakages.items():
        with subtests.test(breakage=name):
            # GIVEN parking is impossible
            break_parking()

            # WHEN a batch of a poison message, a permanent refusal and a good kickout arrives
            response = invoke(
                batch(
                    poison=NOT_JSON,
                    permanent=kickout("vip-lounge", "spammer_01", operator_id="mod-ghost"),
                    good=kickout("lobby-7", "spammer_02"),
                )
            )

            # THEN the messages that could not be parked go back to SQS rather than being dropped
            assert failed_ids(response) == {"poison", "permanent"}
            # AND each says that parking failed, and why, in a line and a metric of its own
            lines = [line for line in printed.logs if line["message"].startswith("parking failed")]
            assert sorted(line["message_id"] for line in lines[-2:]) == ["permanent", "poison"]
            assert all(line["level"] == "ERROR" and line["error"] for line in lines[-2:])
            assert printed.metric("ParkingFailed") == len(lines)


def test_unreadable_secret_sends_every_message_back_to_sqs_and_parks_none(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN the ServerSecret is gone from Secrets Manager
    boto3.client("secretsmanager", region_name=REGION).delete_secret(
        SecretId=box.secret_arn, ForceDeleteWithoutRecovery=True
    )

    # WHEN a batch of good kickouts arrives
    response = invoke(batch(first=kickout("lobby-7", "spammer_01"), second=kickout("arena", "spammer_02")))

    # THEN every message is reported failed (a later delivery may find the secret) and none is parked
    assert failed_ids(response) == {"first", "second"}
    assert box.parked() == []
    assert box.zim.requests_seen == 0


def test_messages_the_invocation_has_no_time_for_are_sent_again_with_their_origin_not_failed(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    # GIVEN an invocation already at its safety margin
    event = batch(first=kickout("lobby-7", "spammer_01"), second=kickout("arena", "spammer_02"))

    # WHEN the batch is handled
    response = invoke(event, timeout_seconds=2.8)

    # THEN no message spends a receive: both are sent again to the queue, bodies unchanged, naming their origin
    assert failed_ids(response) == set()
    again = {attribute(message, "SourceMessageId"): message for message in box.deferred()}
    assert set(again) == {"first", "second"}
    assert json.loads(again["first"]["Body"]) == json.loads(event["Records"][0]["body"])
    assert attribute(again["first"], "KickoutDeferrals") == "1"
    # AND nothing was parked, ZEGO was not called, and each deferral is audited and counted
    assert box.parked() == []
    assert box.zim.requests_seen == 0
    deferred_lines = [line for line in printed.logs if line.get("outcome") == "deferred"]
    assert {line["message_id"] for line in deferred_lines} == {"first", "second"}
    assert printed.metric("MessagesDeferred") == 2


def test_a_deferred_message_deferred_again_keeps_its_first_id(invoke: Invoke, box: Sandbox) -> None:
    record = sqs_record(kickout("lobby-7", "spammer_01"), message_id="second-life")
    record["messageAttributes"] = {
        "SourceMessageId": {"stringValue": "first-life", "dataType": "String"},
        "KickoutDeferrals": {"stringValue": "3", "dataType": "Number"},
    }
    invoke({"Records": [record]}, timeout_seconds=2.8)
    (again,) = box.deferred()
    assert attribute(again, "SourceMessageId") == "first-life"
    assert attribute(again, "KickoutDeferrals") == "4"


def test_messages_that_cannot_be_sent_again_go_back_to_sqs(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN the queue to send them again to is gone
    boto3.client("sqs", region_name=REGION).delete_queue(QueueUrl=box.queue_url)
    event = batch(first=kickout("lobby-7", "spammer_01"), second=kickout("arena", "spammer_02"))
    # WHEN an invocation has no time for them
    response = invoke(event, timeout_seconds=2.8)
    # THEN SQS keeps them: reported failed, nothing parked, ZEGO not called
    assert failed_ids(response) == {"first", "second"}
    assert box.parked() == []
    assert box.zim.requests_seen == 0


def test_a_message_deferred_too_often_goes_back_to_sqs_the_usual_way(invoke: Invoke, box: Sandbox) -> None:
    record = sqs_record(kickout("lobby-7", "spammer_01"), message_id="restless")
    record["messageAttributes"] = {"KickoutDeferrals": {"stringValue": "30", "dataType": "Number"}}
    response = invoke({"Records": [record]}, timeout_seconds=2.8)
    assert failed_ids(response) == {"restless"}
    assert box.deferred() == []


def test_messages_for_the_same_room_share_a_zego_call_and_are_each_acknowledged(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN three messages for one room, reason and operator, naming one user twice
    event = batch(
        first=kickout("lobby-7", "spammer_01", reason="spam"),
        second=kickout("lobby-7", "spammer_02", "spammer_03", reason="spam"),
        third=kickout("lobby-7", "spammer_01", reason="spam"),
    )

    # WHEN SQS delivers them together
    response = invoke(event)

    # THEN every message is acknowledged, and ZEGO got one call naming each user once
    assert response == {"batchItemFailures": []}
    [call] = box.zim.kickouts
    assert sorted(call.user_ids) == ["spammer_01", "spammer_02", "spammer_03"]
    assert box.parked() == []


def test_a_shared_call_refused_for_good_parks_only_the_message_that_caused_it(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN ZEGO refuses for good any call that names cursed_user
    def fault_for(params: dict[str, list[str]]) -> Fault | None:
        return Fault.code(2, "parameter error") if "cursed_user" in params.get("UserId[]", []) else None

    box.zim.fault_for = fault_for

    # WHEN a message naming cursed_user arrives with one that could share its call
    response = invoke(
        batch(
            clean=kickout("lobby-7", "spammer_01", reason="spam"),
            culprit=kickout("lobby-7", "cursed_user", reason="spam"),
        )
    )

    # THEN the clean message's user is kicked and only the culprit is parked; nothing goes back to SQS
    assert response == {"batchItemFailures": []}
    assert box.zim.kicked_user_ids == ["spammer_01"]
    parked = parked_by_source(box)
    assert set(parked) == {"culprit"}
    assert attribute(parked["culprit"], "KickoutFailure") == "zego_refused"


def test_a_shared_call_zego_cannot_serve_sends_every_message_back(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN ZEGO answers HTTP 503 to everything for one room
    zego_answers_by_room(box, {"flaky-room": Fault.http(503)})

    # WHEN two messages for that room arrive together, with one for another room
    response = invoke(
        batch(
            first=kickout("flaky-room", "spammer_01"),
            second=kickout("flaky-room", "spammer_02"),
            elsewhere=kickout("lobby-7", "spammer_03"),
        )
    )

    # THEN both messages of the failing room go back to SQS, none is parked, the other room's is done
    assert failed_ids(response) == {"first", "second"}
    assert box.parked() == []
    assert box.zim.kicked_user_ids == ["spammer_03"]


def test_malformed_configuration_sends_every_message_back_to_sqs_without_raising(
    invoke: Invoke, box: Sandbox, printed: Printed, monkeypatch: pytest.MonkeyPatch
) -> None:

    # GIVEN the function's ZEGO_APP_ID is malformed
    box.rewire(environ={"ZEGO_APP_ID": "not-a-number"})

    # WHEN a batch of good kickouts arrives
    response = invoke(batch(first=kickout("lobby-7", "spammer_01"), second=kickout("arena", "spammer_02")))

    # THEN the handler reports every message failed (a fixed configuration will take them) rather than raising,
    # and each failure is audited and counted
    assert failed_ids(response) == {"first", "second"}
    assert printed.metric("FailedConfiguration") == 2
    assert box.parked() == []


def test_a_message_there_is_no_time_left_to_park_goes_back_to_sqs(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN a poison message and an invocation with under a second left
    event = sqs_event("not json")
    # WHEN the batch is handled
    response = invoke(event, timeout_seconds=0.8)
    # THEN it is not parked half-way: SQS keeps it, and the next delivery parks it
    assert [item["itemIdentifier"] for item in response["batchItemFailures"]] == [event["Records"][0]["messageId"]]
    assert box.parked() == []
