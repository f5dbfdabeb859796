"""Lambda's SQS poller as kickout_dev.event_source simulates it on moto: batches gathered 10 per receive, records in
Lambda's shape, the partial batch response read as Lambda reads it, SQS's delays and redrive."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import time_machine

from kickout_dev.event_source import Batching, Poller, item_failures
from kickout_dev.moto_server import aws_calls
from kickout_dev.sandbox import REGION, Sandbox, make_like_template_queue, template_queue
from tests.conftest import Invoke


@pytest.fixture
def sqs(box: Sandbox) -> Any:
    return boto3.client("sqs", region_name=REGION)


def send(sqs: Any, queue_url: str, count: int, **extra: Any) -> None:
    for start in range(0, count, 10):
        entries = [{"Id": str(n), "MessageBody": f"body {n}", **extra} for n in range(start, min(count, start + 10))]
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)


class Function:
    """Stands in for the function: answers each batch with `answer(records)`, keeps what it was given."""

    def __init__(self, answer: Any = None) -> None:
        self.answer = answer if callable(answer) else (lambda _records: answer)
        self.batches: list[list[dict[str, Any]]] = []

    def __call__(self, event: dict[str, Any]) -> Any:
        self.batches.append(event["Records"])
        return self.answer(event["Records"])


def in_queue(sqs: Any, queue_url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    counts = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return sum(int(count) for count in counts.values())


def test_a_batch_of_25_is_gathered_10_per_receive_and_deleted_10_per_call(sqs: Any, box: Sandbox) -> None:
    send(sqs, box.queue_url, 25)
    function = Function({"batchItemFailures": []})
    poller = Poller(sqs, box.queue_url, function, Batching(size=100, window=1))
    with aws_calls() as calls:
        delivery = poller.poll()
    assert delivery is not None
    assert len(delivery.records) == 25
    # three receives of at most 10 (and one that found nothing), three deletes of at most 10
    assert calls["sqs:ReceiveMessage"] == 4
    assert calls["sqs:DeleteMessageBatch"] == 3
    assert in_queue(sqs, box.queue_url) == 0


def test_records_are_shaped_as_lambda_gives_them(sqs: Any, box: Sandbox) -> None:
    sqs.send_message(
        QueueUrl=box.queue_url,
        MessageBody='{"room_id": "r"}',
        MessageAttributes={
            "SourceMessageId": {"DataType": "String", "StringValue": "first-life"},
            "Blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    function = Function()
    Poller(sqs, box.queue_url, function).poll()
    ((record,),) = function.batches
    arn = sqs.get_queue_attributes(QueueUrl=box.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert set(record) == {
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfBody",
        "md5OfMessageAttributes",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    }
    assert (record["eventSource"], record["eventSourceARN"], record["awsRegion"]) == ("aws:sqs", arn, REGION)
    assert record["body"] == '{"room_id": "r"}'
    assert set(record["attributes"]) == {
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    }
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["messageAttributes"] == {
        "SourceMessageId": {
            "stringValue": "first-life",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        },
        "Blob": {
            "binaryValue": base64.b64encode(b"\x00\x01").decode(),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
    }


@pytest.mark.parametrize(
    ("answer", "left"),
    [
        (None, set()),
        ({}, set()),
        ({"batchItemFailures": None}, set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, {"b"}),
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, None),
        ({"batchItemFailures": [{"itemIdentifier": None}]}, None),
        ({"batchItemFailures": [{"itemIdentifer": "b"}]}, None),
        ({"batchItemFailures": [{"itemIdentifier": "not-in-the-batch"}]}, None),
        ({"batchItemFailures": "b"}, None),
        ("not an object", None),
    ],
)
def test_the_partial_batch_response_is_read_as_lambda_reads_it(answer: Any, left: set[str] | None) -> None:
    assert item_failures(answer, ["a", "b"]) == left


def test_a_failed_or_invalid_answer_leaves_the_whole_batch_and_a_named_failure_only_that_one(
    sqs: Any, box: Sandbox
) -> None:
    send(sqs, box.queue_url, 3)

    def raise_error(_records: list[dict[str, Any]]) -> Any:
        raise RuntimeError("the function failed")

    poller = Poller(sqs, box.queue_url, Function(raise_error))
    delivery = poller.poll()
    assert delivery is not None
    assert delivery.whole_batch_failed
    assert in_queue(sqs, box.queue_url) == 3
    other = sqs.create_queue(QueueName="other")["QueueUrl"]
    send(sqs, other, 3)
    second = Function(lambda records: {"batchItemFailures": [{"itemIdentifier": records[1]["messageId"]}]})
    delivery = Poller(sqs, other, second).poll()
    assert delivery is not None
    assert not delivery.whole_batch_failed
    assert delivery.failed == {delivery.records[1]["messageId"]}
    assert in_queue(sqs, other) == 1


def test_delays_visibility_and_the_redrive_are_sqs_own_on_the_simulated_clock(sqs: Any, box: Sandbox) -> None:
    with time_machine.travel(datetime.now(UTC), tick=False) as clock:
        make_like_template_queue(sqs, box.queue_url, box.dlq_url)
        sqs.send_message(QueueUrl=box.queue_url, MessageBody="late", DelaySeconds=5)
        failing = Function(lambda records: {"batchItemFailures": [{"itemIdentifier": records[0]["messageId"]}]})
        poller = Poller(sqs, box.queue_url, failing)
        # not visible before its delay
        assert poller.poll() is None
        clock.shift(timedelta(seconds=6))
        receives = 0
        for _ in range(30):
            if poller.poll() is not None:
                receives += 1
            clock.shift(timedelta(seconds=template_queue()["VisibilityTimeout"] + 1))
        # received maxReceiveCount times, then moved by SQS to the dead-letter queue
        assert receives == template_queue()["RedrivePolicy"]["maxReceiveCount"]
        assert [int(batch[0]["attributes"]["ApproximateReceiveCount"]) for batch in failing.batches] == list(
            range(1, receives + 1)
        )
        assert [message["Body"] for message in box.parked()] == ["late"]


def test_the_function_reads_its_own_message_attributes_from_the_records(invoke: Invoke, sqs: Any, box: Sandbox) -> None:
    # GIVEN a message the function deferred three times already
    sqs.send_message(
        QueueUrl=box.queue_url,
        MessageBody=json.dumps({"room_id": "lobby-7", "user_ids": ["spammer_01"]}),
        MessageAttributes={
            "SourceMessageId": {"DataType": "String", "StringValue": "first-life"},
            "KickoutDeferrals": {"DataType": "Number", "StringValue": "3"},
        },
    )
    # WHEN Lambda's poller gives it to an invocation with no time for it
    Poller(sqs, box.queue_url, lambda event: invoke(event, timeout_seconds=2.8)).poll()
    # THEN its copy counts the fourth deferral and keeps the first id
    (again,) = box.deferred()
    assert again["MessageAttributes"]["SourceMessageId"]["StringValue"] == "first-life"
    assert again["MessageAttributes"]["KickoutDeferrals"]["StringValue"] == "4"
