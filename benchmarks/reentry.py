"""A re-entry wave: users kept out of two rooms all enter again at once; ZIM calls back for each.

    python -m benchmarks.reentry [--users N]

In one process, on loopback: moto (held to AWS's limits) for Secrets Manager, SQS and DynamoDB, the ZIM stand-in
enforcing ZEGO's 20 calls/s in any second, the real handlers. First N users (default 2,000, half in each room) are
kicked with an hour's keep-out; then each one's signed `room_enter` goes through the callbacks' handler, one after
the other (answer latency, p50 and p99); then Lambda's poller (kickout_dev.event_source, the template's batches)
hands the queued kickouts to the kickout handler until none is left, and the ZEGO calls that kicked them again are
timed: users kicked again per second against ZEGO's 1,000 (20 calls of 50 users), from the first such call to the
last. Nothing lost: every user kicked again, the queue and the dead-letter queue empty.

Not a test: it prints figures and asserts nothing about time. The baselines are in the same run: ZEGO's limit
(1,000 users/s) and, for the answer latency, one bare GetItem on the same moto (the least a callback must do).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import boto3

from kickout_dev.event_source import Batching, Poller
from kickout_dev.events import api_event
from kickout_dev.sandbox import APP_ID, REGION, SERVER_SECRET, STATE_TABLE, sandbox

# Powertools reads these when the handler is imported (below, in main): quiet logs, metrics to a sink.
for name, value in {
    "POWERTOOLS_SERVICE_NAME": "kickout",
    "POWERTOOLS_METRICS_NAMESPACE": "Kickout",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "ERROR",
}.items():
    os.environ.setdefault(name, value)

ROOMS = ("raid-room-1", "raid-room-2")
USERS_PER_KICKOUT = 500
ZEGO_USERS_PER_SECOND = 20 * 50


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def callback_event(room_id: str, user_id: str, nonce: int) -> dict[str, Any]:
    from handler.zego import callbacks

    timestamp = str(int(time.time()))
    body = {
        "appid": str(APP_ID),
        "event": "room_enter",
        "room_id": room_id,
        "operator_account": user_id,
        "nonce": str(nonce),
        "timestamp": timestamp,
        "signature": callbacks.signature(SERVER_SECRET, timestamp, str(nonce)),
    }
    event = api_event(json.dumps(body), path="/zego/callbacks")
    event["requestContext"]["identity"] = {"sourceIp": "203.0.113.7"}
    return event


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--users", type=int, default=2000, help="kept-out users who enter again (half per room)")
    users_total = parser.parse_args(argv).users
    with contextlib.redirect_stdout(io.StringIO()):  # the function's EMF metrics
        figures = keep_out_cost() + wave(users_total)
    print("\n".join(figures))
    return 0


def keep_out_cost(repeats: int = 60) -> list[str]:
    """What a keep-out adds to a kickout a caller waits for: warm direct kickouts of one user without a window and
    with one, interleaved, on a budget that never waits (1,000 calls/s); medians."""
    with sandbox(rate_limit_per_second=1000.0) as box:
        timings: dict[int, list[float]] = {0: [], 3600: []}
        for index in range(repeats + 2):
            for window, taken in timings.items():
                payload = {"room_id": "lobby-7", "user_ids": [f"w{window}-{index}"], "keep_out_seconds": window}
                began = time.perf_counter()
                box.handler(payload, box.context())
                if index >= 2:  # the first of each warms the clients
                    taken.append(time.perf_counter() - began)
    without, with_window = (statistics.median(taken) for taken in timings.values())
    return [
        f"kickout a caller waits for (direct invoke, warm, median of {repeats}): without a window "
        f"{without * 1000:.1f} ms, with a keep-out {with_window * 1000:.1f} ms = {with_window / without:.2f}x "
        "(the keep-out's UpdateItem after ZEGO's answer)"
    ]


def wave(users_total: int) -> list[str]:
    """The wave, and the lines that say what it did."""
    from handler.app import callbacks_handler_for
    from handler.fleet.keep_outs import item_key

    with sandbox(rate_limit_per_second=20.0, max_requests_per_second=20) as box:
        users = {room: [f"u{index:05d}" for index in range(users_total // len(ROOMS))] for room in ROOMS}
        for room, members in users.items():
            for start in range(0, len(members), USERS_PER_KICKOUT):
                payload = {
                    "room_id": room,
                    "user_ids": members[start : start + USERS_PER_KICKOUT],
                    "operator_id": "mod-anna",
                    "keep_out_seconds": 3600,
                }
                box.handler(payload, box.context(timeout_seconds=60))
        kicked_before = len(box.zim.kickouts)

        # The least a callback must do, on the same moto: one GetItem.
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        bare = []
        for index in range(200):
            began = time.perf_counter()
            dynamodb.get_item(TableName=STATE_TABLE, Key={"id": {"S": item_key(APP_ID, ROOMS[0], f"u{index:05d}")}})
            bare.append(time.perf_counter() - began)

        handle = callbacks_handler_for(lambda: box.function)
        latencies = []
        outcomes: dict[str, int] = {}
        nonce = 100_000
        for index in range(max(len(members) for members in users.values())):
            for room, members in users.items():
                if index >= len(members):
                    continue
                nonce += 1
                event = callback_event(room, members[index], nonce)
                began = time.perf_counter()
                response = handle(event, box.context(timeout_seconds=6))
                latencies.append(time.perf_counter() - began)
                outcome = json.loads(response["body"]).get("outcome", str(response["statusCode"]))
                outcomes[outcome] = outcomes.get(outcome, 0) + 1

        sqs = boto3.client("sqs", region_name=REGION)
        poller = Poller(
            sqs=sqs,
            queue_url=box.queue_url,
            invoke=lambda event: box.handler(event, box.context(timeout_seconds=60)),
            batching=Batching.from_template(),
        )
        drained_by = time.monotonic() + 120
        batches: list[tuple[int, int]] = []
        while time.monotonic() < drained_by:
            first = len(box.zim.kickouts)
            if poller.poll() is not None:
                batches.append((first, len(box.zim.kickouts)))
            elif not _waiting(sqs, box.queue_url):
                break
        within = [
            (sum(len(k.user_ids) for k in calls[:-1]), calls[-1].at - calls[0].at)
            for start, end in batches
            if len(calls := box.zim.kickouts[start:end]) > 1
        ]
        batch_rate = sum(users for users, _ in within) / sum(span for _, span in within) if within else float("nan")
        again = box.zim.kickouts[kicked_before:]
        users_again = sum(len(kickout.user_ids) for kickout in again if kickout.code == 0)
        span = (again[-1].at - again[0].at) if len(again) > 1 else float("nan")
        # n calls at ZEGO's 20/s span (n - 1) / 20 s: the rate is measured over the calls' intervals.
        users_per_second = (users_again - len(again[-1].user_ids)) / span if len(again) > 1 else float("nan")
        parked = box.parked()
        return [
            f"re-entry wave: {users_total} kept-out users entering again in {len(ROOMS)} rooms",
            f"  callback outcomes: {outcomes}",
            f"  callback answer: p50 {percentile(latencies, 0.5) * 1000:.1f} ms, p99 "
            f"{percentile(latencies, 0.99) * 1000:.1f} ms (goal p99 < 50 ms); one bare GetItem on the same moto: "
            f"p50 {percentile(bare, 0.5) * 1000:.2f} ms",
            f"  re-kicks: {users_again} users in {len(again)} ZEGO calls over {span:.2f} s = {users_per_second:.0f} "
            f"users/s, {users_per_second / ZEGO_USERS_PER_SECOND:.2f} of ZEGO's {ZEGO_USERS_PER_SECOND} (goal >= 0.9)",
            f"  within each of the {len(batches)} batches (Lambda's poller gathers the next 1,000 between them, one "
            f"poller here where QueueMaximumConcurrency runs 2): {batch_rate:.0f} users/s, "
            f"{batch_rate / ZEGO_USERS_PER_SECOND:.2f} of ZEGO's {ZEGO_USERS_PER_SECOND}",
            f"  lost: {users_total - users_again} not kicked again, {len(parked)} parked, "
            f"{_waiting(sqs, box.queue_url)} left in the queue, {len(box.zim.refusals)} refused by ZEGO's rate check",
        ]


def _waiting(sqs: Any, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


if __name__ == "__main__":
    raise SystemExit(main())
