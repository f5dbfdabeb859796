"""moto held to AWS's documented limits (kickout_dev/moto_server.py): a call AWS would refuse fails a test here too,
with the error code boto3 raises against AWS; and the latency and call-count knobs for fault tests."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from kickout_dev.moto_server import SQS_PAYLOAD_MAX, aws_calls, aws_latency
from kickout_dev.processes import MotoServer
from kickout_dev.sandbox import REGION, STATE_TABLE, Sandbox, create_state_table

TOO_MANY = "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"


@pytest.fixture
def sqs(box: Sandbox) -> Any:
    return boto3.client("sqs", region_name=REGION)


def received(sqs: Any, queue_url: str, count: int) -> list[str]:
    """Receipt handles of `count` messages sent to the queue and received (visible again at once)."""
    for start in range(0, count, 10):
        entries = [{"Id": f"m{n}", "MessageBody": f"message {n}"} for n in range(start, min(count, start + 10))]
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
    handles: list[str] = []
    while len(handles) < count:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]
        handles.extend(message["ReceiptHandle"] for message in batch)
    return handles[:count]


def batch_call(sqs: Any, queue_url: str, call: str, ids: list[str]) -> Any:
    """One SQS batch call (`send`, `delete`, `change_visibility`) with one entry per id."""
    if call == "send":
        return sqs.send_message_batch(QueueUrl=queue_url, Entries=[{"Id": i, "MessageBody": "x"} for i in ids])
    handles = received(sqs, queue_url, len(ids))
    if call == "delete":
        deletes = [{"Id": i, "ReceiptHandle": handle} for i, handle in zip(ids, handles, strict=True)]
        return sqs.delete_message_batch(QueueUrl=queue_url, Entries=deletes)
    entries: list[dict[str, Any]] = [
        {"Id": i, "ReceiptHandle": h, "VisibilityTimeout": 60} for i, h in zip(ids, handles, strict=True)
    ]
    return sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)


def refusal(call: Callable[[], Any]) -> tuple[str, int]:
    """The error code and HTTP status of the call's refusal (fails the test when the call is taken)."""
    with pytest.raises(ClientError) as refused:
        call()
    response = refused.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


BATCH_CALLS = ["send", "delete", "change_visibility"]


@pytest.mark.parametrize("call", BATCH_CALLS)
def test_each_sqs_batch_call_takes_ten_entries_and_refuses_eleven(sqs: Any, box: Sandbox, call: str) -> None:
    # GIVEN ten entries, then eleven, in one call: AWS takes at most 10 (moto alone takes 25 in a visibility batch)
    answer = batch_call(sqs, box.queue_url, call, [f"e{n}" for n in range(10)])
    assert len(answer["Successful"]) == 10
    # THEN eleven are refused as AWS refuses them, nothing done
    assert refusal(lambda: batch_call(sqs, box.queue_url, call, [f"e{n}" for n in range(11)])) == (TOO_MANY, 400)


@pytest.mark.parametrize("call", BATCH_CALLS)
@pytest.mark.parametrize(
    ("ids", "code"),
    [
        (["same", "same"], "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"),
        (["a.b"], "AWS.SimpleQueueService.InvalidBatchEntryId"),
        (["é"], "AWS.SimpleQueueService.InvalidBatchEntryId"),
        (["x" * 81], "AWS.SimpleQueueService.InvalidBatchEntryId"),
        ([], "AWS.SimpleQueueService.EmptyBatchRequest"),
    ],
    ids=["duplicate", "dot", "not-ascii", "81-long", "empty"],
)
def test_each_sqs_batch_call_refuses_ids_aws_refuses(
    sqs: Any, box: Sandbox, call: str, ids: list[str], code: str
) -> None:
    assert refusal(lambda: batch_call(sqs, box.queue_url, call, ids)) == (code, 400)
    # while ids of 80 letters, digits, - and _ are taken
    assert batch_call(sqs, box.queue_url, call, ["A-z_09" + "x" * 74, "0"])["Successful"]


def test_a_send_batch_over_256_kib_in_all_is_refused_while_one_of_exactly_256_kib_is_taken(
    sqs: Any, box: Sandbox
) -> None:
    attribute = {"Origin": {"DataType": "String", "StringValue": "é" * 100}}  # 6 + 6 + 200 bytes
    attribute_bytes = len("Origin") + len("String") + 200
    per_entry = SQS_PAYLOAD_MAX // 4

    def entries(extra: int) -> list[dict[str, Any]]:
        body = "b" * (per_entry - attribute_bytes)
        bodies = [body + "b" * extra] + [body] * 3
        return [{"Id": f"e{n}", "MessageBody": text, "MessageAttributes": attribute} for n, text in enumerate(bodies)]

    assert len(sqs.send_message_batch(QueueUrl=box.queue_url, Entries=entries(0))["Successful"]) == 4
    refused = refusal(lambda: sqs.send_message_batch(QueueUrl=box.queue_url, Entries=entries(1)))
    assert refused == ("AWS.SimpleQueueService.BatchRequestTooLong", 400)


@pytest.mark.parametrize(
    "kwargs",
    [
        # the body alone fits; its one attribute (A, String, é: 9 bytes) does not
        {
            "MessageBody": "b" * (SQS_PAYLOAD_MAX - 8),
            "MessageAttributes": {"A": {"DataType": "String", "StringValue": "é"}},
        },
        {
            "MessageBody": "b",
            "MessageAttributes": {f"a{n}": {"DataType": "String", "StringValue": "v"} for n in range(11)},
        },
        {"MessageBody": "b", "DelaySeconds": 901},
        {"MessageBody": "b", "DelaySeconds": -1},
    ],
    ids=["body-and-attributes-over-256-kib", "eleven-attributes", "delay-901", "delay-negative"],
)
def test_a_message_aws_would_refuse_is_refused(sqs: Any, box: Sandbox, kwargs: dict[str, Any]) -> None:
    assert refusal(lambda: sqs.send_message(QueueUrl=box.queue_url, **kwargs)) == ("InvalidParameterValue", 400)
    batch_entry = {"Id": "e", **kwargs}
    assert refusal(lambda: sqs.send_message_batch(QueueUrl=box.queue_url, Entries=[batch_entry]))[1] == 400


def test_visibility_timeouts_and_receive_sizes_outside_aws_ranges_are_refused(sqs: Any, box: Sandbox) -> None:
    (handle,) = received(sqs, box.queue_url, 1)
    for timeout in (-1, 43_201):
        assert refusal(
            lambda t=timeout: sqs.change_message_visibility(  # type: ignore[misc]
                QueueUrl=box.queue_url, ReceiptHandle=handle, VisibilityTimeout=t
            )
        ) == ("InvalidParameterValue", 400)
        assert refusal(
            lambda t=timeout: sqs.change_message_visibility_batch(  # type: ignore[misc]
                QueueUrl=box.queue_url, Entries=[{"Id": "e", "ReceiptHandle": handle, "VisibilityTimeout": t}]
            )
        ) == ("InvalidParameterValue", 400)
    for count in (0, 11):
        assert refusal(
            lambda c=count: sqs.receive_message(QueueUrl=box.queue_url, MaxNumberOfMessages=c)  # type: ignore[misc]
        ) == ("InvalidParameterValue", 400)
    sqs.change_message_visibility(QueueUrl=box.queue_url, ReceiptHandle=handle, VisibilityTimeout=43_000)


def test_dynamodb_batch_writes_over_25_and_transactions_over_100_are_refused(box: Sandbox) -> None:
    dynamodb: Any = boto3.client("dynamodb", region_name=REGION)

    def puts(count: int) -> list[dict[str, Any]]:
        return [{"PutRequest": {"Item": {"id": {"S": f"item-{n}"}}}} for n in range(count)]

    def transaction(count: int) -> list[dict[str, Any]]:
        return [{"Put": {"TableName": STATE_TABLE, "Item": {"id": {"S": f"tx-{n}"}}}} for n in range(count)]

    dynamodb.batch_write_item(RequestItems={STATE_TABLE: puts(25)})
    refused = refusal(lambda: dynamodb.batch_write_item(RequestItems={STATE_TABLE: puts(26)}))
    assert refused == ("ValidationException", 400)
    dynamodb.transact_write_items(TransactItems=transaction(100))
    refused = refusal(lambda: dynamodb.transact_write_items(TransactItems=transaction(101)))
    assert refused == ("ValidationException", 400)


@pytest.fixture
def bare_moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {"AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


def test_the_limits_hold_under_any_mock_aws_of_the_tests_not_only_the_sandbox(bare_moto: None) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="plain")["QueueUrl"]
    assert refusal(lambda: batch_call(sqs, url, "change_visibility", [f"e{n}" for n in range(11)])) == (TOO_MANY, 400)


def test_the_call_counter_counts_each_operation_while_open(sqs: Any, box: Sandbox) -> None:
    sqs.send_message(QueueUrl=box.queue_url, MessageBody="before")
    with aws_calls() as calls:
        for _ in range(3):
            sqs.send_message(QueueUrl=box.queue_url, MessageBody="counted")
        sqs.receive_message(QueueUrl=box.queue_url, MaxNumberOfMessages=10)
        boto3.client("dynamodb", region_name=REGION).describe_table(TableName=STATE_TABLE)
    sqs.send_message(QueueUrl=box.queue_url, MessageBody="after")
    assert calls == {"sqs:SendMessage": 3, "sqs:ReceiveMessage": 1, "dynamodb:DescribeTable": 1}


def test_added_latency_holds_each_call_back_while_open_and_only_then(sqs: Any, box: Sandbox) -> None:
    with aws_latency(sqs=0.05, dynamodb=0.05):
        began = time.monotonic()
        for _ in range(4):
            sqs.send_message(QueueUrl=box.queue_url, MessageBody="slow")
        boto3.client("dynamodb", region_name=REGION).describe_table(TableName=STATE_TABLE)
        held = time.monotonic() - began
    # at least what was added (a lower bound: a sleep never takes less)
    assert held >= 5 * 0.05


def test_the_moto_server_process_holds_the_same_limits_and_takes_its_latency_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the server of make local, tests/package and the benchmarks, started with 0.1 s added to each SQS call
    monkeypatch.setenv("KICKOUT_MOTO_LATENCY", "sqs=0.1")
    with MotoServer(tmp_path) as server:
        sqs = server.sqs()
        url = sqs.create_queue(QueueName="served")["QueueUrl"]
        create_state_table(server.dynamodb())
        # THEN eleven entries are refused there as in process
        assert refusal(lambda: batch_call(sqs, url, "change_visibility", [f"e{n}" for n in range(11)])) == (
            TOO_MANY,
            400,
        )
        # AND each SQS call takes at least the latency asked for
        began = time.monotonic()
        for _ in range(3):
            sqs.send_message(QueueUrl=url, MessageBody="slow")
        assert time.monotonic() - began >= 3 * 0.1


def test_concurrent_conditional_updates_each_answer_their_own_new_value(bare_moto: None) -> None:
    # GIVEN moto's DynamoDB under mock_aws, and threads switched as often as the interpreter can (a loaded CPU)
    client = boto3.client("dynamodb", region_name=REGION)
    table = create_state_table(client)
    answers: list[int] = []
    lock = threading.Lock()

    def increments() -> None:
        own = boto3.client("dynamodb", region_name=REGION)
        for _ in range(50):
            answer = own.update_item(
                TableName=table,
                Key={"id": {"S": "counter"}},
                UpdateExpression="SET n = if_not_exists(n, :zero) + :one",
                ConditionExpression="attribute_not_exists(n) OR n >= :zero",
                ExpressionAttributeValues={":zero": {"N": "0"}, ":one": {"N": "1"}},
                ReturnValues="UPDATED_NEW",
            )
            with lock:
                answers.append(int(answer["Attributes"]["n"]["N"]))

    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=increments) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(switching)
    # WHEN 400 increments raced each other
    # THEN each was answered the value it wrote, as DynamoDB answers: 1 to 400, each once (the budget's slots are
    # read off these answers; one answered another's value hands one slot to two calls)
    assert sorted(answers) == list(range(1, 401))
