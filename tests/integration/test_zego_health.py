"""ZEGO's circuit through the real handler: shared in KickoutStateTable (moto), opened by failures, refusing at
once while open, probed once per recovery window, and kept by each environment when the table fails; a queue
message ZEGO failed is hidden for its backoff."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import time_machine

from handler.core.errors import ZegoCircuitOpen
from handler.entry import redelivery
from handler.fleet import circuit
from kickout_dev.events import api_event, sqs_record
from kickout_dev.sandbox import APP_ID, REGION, STATE_TABLE, Sandbox
from tests.conftest import Invoke, Printed

KICKOUT = {"room_id": "lobby-7", "user_ids": ["spammer_01"]}
NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


def circuit_item() -> dict[str, Any] | None:
    item: dict[str, Any] | None = (
        boto3.client("dynamodb", region_name=REGION)
        .get_item(TableName=STATE_TABLE, Key={"id": {"S": circuit.circuit_name(APP_ID)}}, ConsistentRead=True)
        .get("Item")
    )
    return item


def leave_circuit_open(opened_at: datetime) -> None:
    """The item another environment leaves when it opens the circuit (Powertools' attribute names)."""
    boto3.client("dynamodb", region_name=REGION).put_item(
        TableName=STATE_TABLE,
        Item={
            "id": {"S": circuit.circuit_name(APP_ID)},
            "state": {"S": "OPEN"},
            "failure_count": {"N": "5"},
            "opened_at": {"N": str(int(opened_at.timestamp()))},
            "expiration": {"N": str(int(opened_at.timestamp()) + 3600)},
        },
    )


def post(invoke: Invoke) -> dict[str, Any]:
    response: dict[str, Any] = invoke(api_event(json.dumps(KICKOUT)))
    return response


def test_zego_failing_five_times_in_a_row_opens_the_circuit_and_the_api_then_answers_503_at_once(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    # GIVEN ZEGO down
    box.zim.go_down()
    # WHEN a request fails its 4 attempts, and the next one fails its first (the fifth in a row)
    assert post(invoke)["statusCode"] == 502
    assert circuit_item() is None
    assert post(invoke)["statusCode"] == 502
    calls = box.zim.requests_seen
    # THEN the circuit is open for the whole fleet, in the state table
    item = circuit_item()
    assert item is not None
    assert item["state"] == {"S": "OPEN"}
    assert calls == circuit.FAILURES_TO_OPEN
    # AND the next request is answered 503 at once, with Retry-After, without calling ZEGO
    response = post(invoke)
    body = json.loads(response["body"])
    assert response["statusCode"] == 503
    assert body["error"] == "zego_unavailable"
    assert "ZEGO was not called" in body["message"]
    (retry_after,) = response["multiValueHeaders"]["Retry-After"]
    assert 1 <= int(retry_after) <= circuit.RECOVERY_SECONDS
    assert box.zim.requests_seen == calls
    # AND the change was logged and counted, and the refusal counted as such
    assert any(line["message"] == "ZEGO circuit OPEN" for line in printed.logs)
    assert printed.metric("ZegoCircuitOpen") == 1
    assert printed.metric("FailedCircuitOpen") == 1


def test_a_direct_invoke_while_the_circuit_is_open_raises_a_named_error(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    # GIVEN another environment opened the circuit a moment ago
    leave_circuit_open(datetime.now(UTC))
    # WHEN a workflow invokes the function directly
    with pytest.raises(ZegoCircuitOpen, match="ZEGO kept failing"):
        invoke(dict(KICKOUT))
    # THEN ZEGO was not asked
    assert box.zim.requests_seen == 0


def test_once_the_recovery_window_passes_one_probe_that_succeeds_closes_the_circuit(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        # GIVEN the circuit opened by another environment, and ZEGO back meanwhile
        leave_circuit_open(NOW)
        # WHEN a request comes within the recovery window, then one after it
        assert post(invoke)["statusCode"] == 503
        assert box.zim.requests_seen == 0
        clock.shift(timedelta(seconds=circuit.RECOVERY_SECONDS + circuit.STATE_CACHE_SECONDS))
        response = post(invoke)
    # THEN the later one was the fleet's probe: it kicked, and closed the circuit for everyone
    assert response["statusCode"] == 200
    assert box.zim.requests_seen == 1
    item = circuit_item()
    assert item is not None
    assert item["state"] == {"S": "CLOSED"}
    assert [line["to_state"] for line in printed.logs if line["message"].startswith("ZEGO circuit")] == [
        "HALF_OPEN",
        "CLOSED",
    ]


def test_with_the_state_table_unreachable_each_environment_keeps_the_circuit_on_its_own(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    # GIVEN the state table gone, and ZEGO down
    boto3.client("dynamodb", region_name=REGION).delete_table(TableName=STATE_TABLE)
    box.zim.go_down()
    # WHEN requests keep coming
    statuses = [post(invoke)["statusCode"] for _ in range(3)]
    # THEN the environment opened the circuit by itself after five failures in a row, and then spared ZEGO
    assert statuses == [502, 502, 503]
    assert box.zim.requests_seen == circuit.FAILURES_TO_OPEN
    # AND the store's failures were logged and counted, without the error's text
    store_lines = [line for line in printed.logs if line["message"].startswith("ZEGO circuit store failed")]
    assert store_lines
    assert {line["error"] for line in store_lines} == {"ResourceNotFoundException"}
    assert printed.metric("ZegoCircuitStoreErrors") == len(store_lines)


def test_a_message_zego_failed_is_hidden_for_its_backoff_instead_of_the_queues_timeout(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        # GIVEN a real queue whose visibility timeout is 130 s, one message in it, and ZEGO down
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url = box.queue_url
        sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"VisibilityTimeout": "130"})
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(KICKOUT))
        box.zim.go_down()
        (message,) = sqs.receive_message(QueueUrl=queue_url, AttributeNames=["All"])["Messages"]
        record = sqs_record(message["Body"], message_id=message["MessageId"])
        record.update(receiptHandle=message["ReceiptHandle"], eventSourceARN=queue_arn)
        # WHEN the function fails it on its first receive
        response = invoke({"Records": [record]})
        assert response["batchItemFailures"] == [{"itemIdentifier": message["MessageId"]}]
        # THEN it stays hidden for the first backoff (1 minute, less up to a fifth), not the queue's 130 s
        clock.shift(timedelta(seconds=redelivery.BACKOFF_FIRST_SECONDS * (1 - redelivery.BACKOFF_JITTER) - 1))
        assert "Messages" not in sqs.receive_message(QueueUrl=queue_url)
        clock.shift(timedelta(seconds=redelivery.BACKOFF_FIRST_SECONDS * redelivery.BACKOFF_JITTER + 2))
        assert len(sqs.receive_message(QueueUrl=queue_url)["Messages"]) == 1
    assert printed.metric("MessagesBackedOff") == 1


@pytest.mark.parametrize(
    ("receives", "seconds"), [(None, 60), (1, 60), (2, 120), (3, 240), (4, 480), (5, 600), (19, 600), (1000, 600)]
)
def test_the_backoff_doubles_from_one_minute_to_ten_by_receive(receives: int | None, seconds: int) -> None:
    assert redelivery.backoff_seconds(receives, jitter=lambda: 0.0) == seconds
    assert redelivery.backoff_seconds(receives, jitter=lambda: 1.0) == round(seconds * (1 - redelivery.BACKOFF_JITTER))


def test_a_record_without_attributes_is_still_audited(invoke: Invoke, box: Sandbox, printed: Printed) -> None:
    # GIVEN SQS records without their `attributes` (a hand-made event): one kickout, one invalid payload
    good, bad = sqs_record(json.dumps(KICKOUT), message_id="good"), sqs_record("not json", message_id="bad")
    del good["attributes"], bad["attributes"]
    # WHEN they are delivered
    response = invoke({"Records": [good, bad]})
    # THEN both are dealt with and audited, the receive count unknown
    assert response["batchItemFailures"] == []
    audit = {line["message_id"]: line for line in printed.logs if line["message"] in ("kickout done", "kickout failed")}
    assert set(audit) == {"good", "bad"}
    assert audit["good"].get("receive_count") is None
    assert audit["bad"]["outcome"] == "Invalid"


def test_the_circuit_is_not_read_when_the_deadline_leaves_no_time_for_a_dynamodb_call(
    invoke: Invoke, box: Sandbox
) -> None:
    # GIVEN a warm environment, and a count of the function's DynamoDB calls on ZEGO's circuit
    from handler.aws import clients

    assert post(invoke)["statusCode"] == 200
    circuit_calls: list[str] = []

    def count(params: dict[str, Any], model: Any, **_: Any) -> None:
        if params.get("Key", {}).get("id", {}).get("S") == circuit.circuit_name(APP_ID):
            circuit_calls.append(model.name)

    box.function.dynamodb().meta.events.register("before-parameter-build.dynamodb", count)
    try:
        # WHEN a kickout arrives past the circuit's cache, with time for a ZEGO call but not for a DynamoDB call's
        # worst case on top of it
        with time_machine.travel(datetime.now(UTC) + timedelta(seconds=circuit.STATE_CACHE_SECONDS + 1)):
            remaining = clients.DYNAMODB.worst_seconds  # the client's margin (1.5 s) leaves less than that
            response = invoke(api_event(json.dumps(KICKOUT)), timeout_seconds=remaining)
    finally:
        box.function.dynamodb().meta.events.unregister("before-parameter-build.dynamodb", count)

    # THEN the kick was made on the environment's own copy of the circuit, without asking DynamoDB
    assert response["statusCode"] == 200
    assert circuit_calls == []
