"""Metrics emitted from worker threads add up exactly: every value reaches the EMF output once."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from handler.aws.observability import MetricName, emit
from kickout_dev.events import sqs_record
from kickout_dev.sandbox import Sandbox
from tests.conftest import Invoke, Printed


def test_values_emitted_from_many_threads_at_once_are_all_flushed(printed: Printed) -> None:
    # GIVEN 8 threads each emitting 2,501 values of one metric (Powertools flushes a metric at 100 values)
    from handler.aws.observability import metrics

    def emit_many(_: int) -> None:
        for _ in range(2_501):
            emit(MetricName.ZEGO_CALLS, 1)

    # WHEN they run side by side, and the rest is flushed as the handler's decorator would
    with ThreadPoolExecutor(max_workers=8) as workers:
        list(workers.map(emit_many, range(8)))
    metrics.flush_metrics()

    # THEN the EMF output holds all 20,008, none lost to a flush racing an append
    assert printed.metric("ZegoCalls") == 20_008


def test_the_calls_of_a_large_batch_are_each_counted_once(invoke: Invoke, box: Sandbox, printed: Printed) -> None:
    # GIVEN a batch of 300 kickouts for 300 rooms: 300 ZEGO calls, made on the batch's worker threads
    records = [
        sqs_record(json.dumps({"room_id": f"room-{index}", "user_ids": [f"user-{index}"]}), message_id=f"m-{index}")
        for index in range(300)
    ]

    # WHEN the batch is handled
    assert invoke({"Records": records}, timeout_seconds=60) == {"batchItemFailures": []}

    # THEN each call ZEGO saw is counted once, and so is each call's latency and users
    assert box.zim.requests_seen == 300
    assert printed.metric("ZegoCalls") == 300
    assert printed.metric("UsersPerCall") == 300
    assert printed.metric("UsersKicked") == 300
    latencies = sum(len(line["ZegoLatency"]) for line in printed.lines if "ZegoLatency" in line)
    assert latencies == 300
