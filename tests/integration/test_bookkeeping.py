"""A queue batch's bookkeeping (deferring, parking, hiding) within SQS's limits and the invocation's deadline.

Batches of 1000 records as the template configures them, with every SQS call the function makes slowed down at its
client: each message ends hidden for its backoff, parked, deferred, or reported failed (SQS keeps it), the calls are
SQS-sized (10 entries, 256 KiB), and the handler returns with its margin left whatever SQS's latency.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
import time_machine

from handler.entry import queue, redelivery
from handler.fleet import circuit
from kickout_dev.events import failed_ids, sqs_record
from kickout_dev.sandbox import APP_ID, REGION, STATE_TABLE, Sandbox
from tests.conftest import Invoke, Printed

BATCH = 1000


class SlowSqs:
    """Every SQS call the function's client makes, counted by operation, each delayed by `latency` seconds."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.calls: Counter[str] = Counter()

    def __call__(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1
        time.sleep(self.latency)


@pytest.fixture
def slow_sqs(box: Sandbox) -> Iterator[SlowSqs]:
    slow = SlowSqs(0.02)
    events = box.function.sqs().meta.events
    events.register("before-call.sqs", slow)
    yield slow
    events.unregister("before-call.sqs", slow)


RECEIVE_VISIBILITY = 600
"""The visibility timeout the test receives with (the template's queue has 370 s): longer than a first backoff."""


def received(box: Sandbox, bodies: list[str]) -> list[dict[str, Any]]:
    """`bodies` sent to the kickout queue, then received as Lambda's poller hands them to the function."""
    sqs = boto3.client("sqs", region_name=REGION)
    arn = sqs.get_queue_attributes(QueueUrl=box.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(index), "MessageBody": body} for index, body in enumerate(bodies[start : start + 10])]
        sqs.send_message_batch(QueueUrl=box.queue_url, Entries=entries)  # type: ignore[arg-type]
    records: dict[str, dict[str, Any]] = {}
    while len(records) < len(bodies):
        messages = sqs.receive_message(
            QueueUrl=box.queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=RECEIVE_VISIBILITY,
            AttributeNames=["All"],
        )
        for message in messages.get("Messages", []):
            record = sqs_record(message["Body"], message_id=message["MessageId"])
            record.update(receiptHandle=message["ReceiptHandle"], eventSourceARN=arn, attributes=message["Attributes"])
            records[message["MessageId"]] = record
    return list(records.values())


def visible_in(box: Sandbox, clock: time_machine.Traveller, seconds: float) -> int:
    """How many messages of the queue are visible `seconds` from now."""
    clock.shift(seconds)
    sqs = boto3.client("sqs", region_name=REGION)
    attributes = sqs.get_queue_attributes(QueueUrl=box.queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def open_circuit() -> None:
    """ZEGO's circuit, opened by another environment just now."""
    opened_at = int(datetime.now(UTC).timestamp())
    boto3.client("dynamodb", region_name=REGION).put_item(
        TableName=STATE_TABLE,
        Item={
            "id": {"S": circuit.circuit_name(APP_ID)},
            "state": {"S": "OPEN"},
            "failure_count": {"N": "5"},
            "opened_at": {"N": str(opened_at)},
            "expiration": {"N": str(opened_at + 3600)},
        },
    )


def kickouts(count: int) -> list[str]:
    return [json.dumps({"room_id": f"room-{index}", "user_ids": [f"user-{index}"]}) for index in range(count)]


def test_a_full_batch_under_an_open_circuit_is_hidden_for_its_backoff_in_sqs_sized_calls(
    invoke: Invoke, box: Sandbox, slow_sqs: SlowSqs, printed: Printed
) -> None:
    # GIVEN ZEGO's circuit open, 1000 kickouts received from the queue, and 20 ms added to every SQS call
    records = received(box, kickouts(BATCH))
    open_circuit()
    context = box.context(60)

    # WHEN the function handles them as one batch (the template's QueueBatchSize)
    response = box.handler({"Records": records}, context)

    # THEN each goes back to SQS, hidden for its backoff (a minute, less up to a fifth), not for its receive's 600 s
    assert failed_ids(response) == {record["messageId"] for record in records}
    with time_machine.travel(datetime.now(UTC)) as clock:
        assert visible_in(box, clock, redelivery.BACKOFF_FIRST_SECONDS * (1 - redelivery.BACKOFF_JITTER) - 5) == 0
        assert visible_in(box, clock, redelivery.BACKOFF_FIRST_SECONDS * redelivery.BACKOFF_JITTER + 10) == BATCH
    assert printed.metric("MessagesBackedOff") == BATCH
    assert printed.metric("BackoffFailed") == 0
    # AND in calls of 10 entries (the double would refuse more), with nothing else sent to SQS
    assert slow_sqs.calls == {"ChangeMessageVisibilityBatch": BATCH // 10}
    # AND the handler returned with its margin left
    assert context.get_remaining_time_in_millis() / 1000 >= queue.RETURN_MARGIN


def test_a_full_batch_of_poison_is_parked_in_sqs_sized_calls(
    invoke: Invoke, box: Sandbox, slow_sqs: SlowSqs, printed: Printed
) -> None:
    # GIVEN 1000 messages that are no kickout, and 20 ms added to every SQS call
    records = [sqs_record(f"not a kickout {index}", message_id=f"poison-{index}") for index in range(BATCH)]
    context = box.context(60)

    # WHEN the function handles them as one batch
    response = box.handler({"Records": records}, context)

    # THEN every one is parked once and acknowledged, in calls of 10
    assert response == {"batchItemFailures": []}
    parked = box.parked()
    assert sorted(message["MessageAttributes"]["SourceMessageId"]["StringValue"] for message in parked) == sorted(
        record["messageId"] for record in records
    )
    assert slow_sqs.calls == {"SendMessageBatch": BATCH // 10}
    assert printed.metric("ParkingFailed") == 0
    assert context.get_remaining_time_in_millis() / 1000 >= queue.RETURN_MARGIN


@pytest.mark.parametrize(
    "case",
    # Hiding needs messages really received from moto's queue, which is slow to receive from: fewer of them.
    [("backoff", 300, 3.0), ("parking", BATCH, 1.0)],
    ids=["backoff", "parking"],
)
def test_bookkeeping_that_cannot_finish_before_the_deadline_is_not_started_and_stays_failed(
    invoke: Invoke, box: Sandbox, slow_sqs: SlowSqs, printed: Printed, case: tuple[str, int, float]
) -> None:
    kind, messages, latency = case
    # GIVEN a batch to hide (circuit open) or to park (poison), a warm environment, and SQS slow to answer
    records = (
        received(box, kickouts(messages))
        if kind == "backoff"
        else [sqs_record(f"poison {index}", message_id=f"poison-{index}") for index in range(messages)]
    )
    open_circuit()
    invoke({"Records": [sqs_record(kickouts(1)[0])]})  # reads the secret: the batch below finds it cached
    before = {name: printed.metric(name) for name in ("MessagesBackedOff", "BackoffFailed", "ParkingFailed")}
    slow_sqs.calls.clear()
    slow_sqs.latency = latency
    context = box.context(8)

    # WHEN the function handles them with 8 s to run: time for a few rounds of SQS calls, not for all of them
    response = box.handler({"Records": records}, context)

    # THEN it returned with its margin left, having started only the calls that could end in time
    assert context.get_remaining_time_in_millis() / 1000 >= queue.RETURN_MARGIN
    after = {name: printed.metric(name) - before[name] for name in before}
    done = after["MessagesBackedOff"] if kind == "backoff" else len(box.parked())
    refused = after["BackoffFailed"] if kind == "backoff" else after["ParkingFailed"]
    assert 0 < done < messages
    assert done + refused == messages
    assert sum(slow_sqs.calls.values()) <= done / 10 + 10
    # AND each message is either done (hidden, or parked and acknowledged) or reported failed, so SQS keeps it
    if kind == "parking":
        assert len(failed_ids(response)) == refused
    else:
        assert len(failed_ids(response)) == messages


def test_a_message_too_large_to_park_with_its_reason_stays_in_the_queue_and_the_rest_are_parked(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    # GIVEN nine small poison messages and one of 256 KiB (SQS's most), which its reason would push past the limit
    huge = sqs_record("x" * (256 * 1024), message_id="huge")
    records = [sqs_record(f"poison {index}", message_id=f"small-{index}") for index in range(9)] + [huge]

    # WHEN they are handled
    response = invoke({"Records": records})

    # THEN the nine are parked, the large one is reported failed (SQS keeps it, its redrive policy parks it)
    assert failed_ids(response) == {"huge"}
    assert len(box.parked()) == 9
    assert printed.metric("ParkingFailed") == 1
    (line,) = [line for line in printed.logs if line["message"].startswith("parking failed")]
    assert line["message_id"] == "huge"


def test_a_deferred_copy_keeps_the_originals_attributes_and_sender(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    # GIVEN a message sent by the moderation backend with attributes of its own, and no time to reach it
    record = sqs_record(kickouts(1)[0], message_id="original")
    record["attributes"]["SenderId"] = "AIDAMODERATIONBACKEND"
    record["messageAttributes"] = {
        "CorrelationId": {"stringValue": "case-4711", "dataType": "String"},
        "Priority": {"stringValue": "7", "dataType": "Number"},
        "Evidence": {"binaryValue": "AAEC", "dataType": "Binary"},
    }

    # WHEN the invocation defers it
    invoke({"Records": [record]}, timeout_seconds=2.8)

    # THEN its copy carries every attribute of the original, besides the deferral's own
    (copy,) = box.deferred()
    attributes = copy["MessageAttributes"]
    assert attributes["CorrelationId"] == {"StringValue": "case-4711", "DataType": "String"}
    assert attributes["Priority"] == {"StringValue": "7", "DataType": "Number"}
    assert attributes["Evidence"] == {"BinaryValue": b"\x00\x01\x02", "DataType": "Binary"}
    assert attributes[redelivery.SENDER_ID]["StringValue"] == "AIDAMODERATIONBACKEND"

    # AND when the copy is done, its audit line names the backend that sent the original, not the function
    again = sqs_record(copy["Body"], message_id=copy["MessageId"])
    again["attributes"]["SenderId"] = "AROAKICKOUTFUNCTION:kickout"
    again["messageAttributes"] = {
        name: {key[0].lower() + key[1:]: value for key, value in attribute.items()}
        for name, attribute in attributes.items()
        if "StringValue" in attribute
    }
    assert invoke({"Records": [again]}) == {"batchItemFailures": []}
    (done,) = [line for line in printed.logs if line.get("outcome") == "kicked"]
    assert done["sender_id"] == "AIDAMODERATIONBACKEND"
    assert done["message_id"] == copy["MessageId"]


def test_a_deferred_copy_keeps_as_many_of_the_originals_attributes_as_sqs_allows(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN a message with SQS's most attributes (10), and no time to reach it
    record = sqs_record(kickouts(1)[0], message_id="crowded")
    record["messageAttributes"] = {
        f"Attribute{index}": {"stringValue": str(index), "dataType": "String"} for index in range(10)
    }

    # WHEN the invocation defers it
    invoke({"Records": [record]}, timeout_seconds=2.8)

    # THEN the copy is sent (SQS would refuse 11 attributes): the deferral's own three, and seven of the original's
    (copy,) = box.deferred()
    names = set(copy["MessageAttributes"])
    assert len(names) == redelivery.MAX_MESSAGE_ATTRIBUTES
    assert {redelivery.SOURCE_MESSAGE_ID, redelivery.DEFERRALS, redelivery.SENDER_ID} <= names
