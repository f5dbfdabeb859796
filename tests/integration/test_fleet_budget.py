"""The real handler under ZEGO's real limit: the stand-in refuses a 21st call in any second, the budget lives in
moto's DynamoDB, and the queue and the API share it, the API first. Bounded: about 60 calls, a few seconds."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest

from kickout_dev.events import api_event, sqs_event
from kickout_dev.sandbox import REGION, LambdaContext, Sandbox, sandbox
from tests.conftest import Invoke, Printed

ZEGO_LIMIT = 20


@pytest.fixture
def limited() -> Iterator[Sandbox]:
    with sandbox(rate_limit_per_second=ZEGO_LIMIT, max_requests_per_second=ZEGO_LIMIT) as box:
        yield box


def kickout(room: str, *users: str) -> str:
    return json.dumps({"room_id": room, "user_ids": list(users)})


def test_a_queue_backlog_and_an_api_request_together_stay_within_zegos_limit_the_api_first(limited: Sandbox) -> None:
    # GIVEN two environments' worth of queue batches (40 rooms, 40 calls) and, while they drain, an API request of
    # 150 users (3 calls): 43 calls, over two seconds of ZEGO's budget
    batches = [sqs_event(*(kickout(f"room-{half}-{index}", "u") for index in range(20))) for half in range(2)]
    api_body = json.dumps({"room_id": "lobby", "user_ids": [f"user-{index}" for index in range(150)]})
    answers: dict[str, Any] = {}
    api_done = threading.Event()

    def queue(batch: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = limited.handler(batch, LambdaContext())
        return response

    def api() -> None:
        time.sleep(0.3)  # the queue has filled its horizon by now
        started = time.monotonic()
        answers["api"] = limited.handler(api_event(api_body), LambdaContext())
        answers["api_seconds"] = time.monotonic() - started
        api_done.set()

    # WHEN both run at once
    with ThreadPoolExecutor(max_workers=3) as pool:
        api_future = pool.submit(api)
        queue_started = time.monotonic()
        responses = list(pool.map(queue, batches))
        queue_seconds = time.monotonic() - queue_started
        api_future.result(timeout=30)

    # THEN ZEGO refused nothing, every message and every user was done, none handed back to SQS
    assert limited.zim.refusals == []
    assert responses == [{"batchItemFailures": []}] * 2
    assert answers["api"]["statusCode"] == 200
    assert len(limited.zim.kicked_user_ids) == 40 + 150
    # AND the API's three calls did not wait for the queue's backlog (about two seconds of it)
    print(f"api {answers['api_seconds']:.2f} s, queue {queue_seconds:.2f} s")
    assert answers["api_seconds"] < queue_seconds


def test_with_the_budgets_table_gone_kickouts_go_on_at_the_local_pace_and_say_so(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    # GIVEN the budget's table is unreachable (deleted)
    boto3.client("dynamodb", region_name=REGION).delete_table(TableName=box.environ["KICKOUT_STATE_TABLE"])
    # WHEN a batch for three rooms comes
    response = invoke(sqs_event(*(kickout(f"room-{index}", "u") for index in range(3))))
    # THEN every message is done, nothing handed back, and the failure is counted and logged once
    assert response == {"batchItemFailures": []}
    assert len(box.zim.kickouts) == 3
    assert printed.metric("BudgetStoreErrors") == 1
    assert [line["message"] for line in printed.logs if "budget" in line["message"]] == [
        "rate budget store unavailable: pacing this environment alone"
    ]
