"""What the confirmation latency costs: a `room_exit` by Kickout answered, and a kick that writes the answer's time.

    python -m benchmarks.confirmation [--repeats N]

In one process, on loopback: moto (held to AWS's limits), the ZIM stand-in, the real handlers. First, ZIM's signed
`room_exit` of 50 users (one KickoutRoomUser call's worth) through the callbacks' handler, interleaved: users kicked
with a window (their items read, a latency each) and users kicked without one (read, nothing found); baselines in
the same run: one bare BatchGetItem of those 50 items (projected as the function does) and one bare GetItem on the
same moto. Then warm direct kickouts of one user: without a window, with a new one (one UpdateItem), and the same
user again with a shorter window (the UpdateItem refused by its condition, then the one that moves the answer's time
on).

Not a test: it prints figures (medians, p99 where said) and asserts nothing about time.
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

from benchmarks.reentry import percentile
from kickout_dev.events import signed_callback
from kickout_dev.sandbox import APP_ID, REGION, SERVER_SECRET, STATE_TABLE, sandbox

for name, value in {
    "POWERTOOLS_SERVICE_NAME": "kickout",
    "POWERTOOLS_METRICS_NAMESPACE": "Kickout",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "ERROR",
}.items():
    os.environ.setdefault(name, value)

USERS = 50


def room_exit(room_id: str, user_ids: list[str], nonce: int) -> dict[str, Any]:
    return signed_callback(
        {
            "appid": str(APP_ID),
            "event": "room_exit",
            "room_id": room_id,
            "exit_type": "Kickout",
            "operator_account": "mod-anna",
            "exit_user_ids": user_ids,
            "nonce": str(nonce),
        },
        SERVER_SECRET,
        str(int(time.time() * 1000)),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--repeats", type=int, default=100, help="callbacks (and kickouts) of each kind")
    repeats = parser.parse_args(argv).repeats
    with contextlib.redirect_stdout(io.StringIO()):  # the function's EMF metrics and logs
        figures = confirmations(repeats) + kicks(repeats)
    print("\n".join(figures))
    return 0


def confirmations(repeats: int) -> list[str]:
    from handler.app import callbacks_handler_for
    from handler.fleet.keep_outs import item_key

    with sandbox(rate_limit_per_second=1000.0) as box:
        kept = [f"k{index:02d}" for index in range(USERS)]
        plain = [f"p{index:02d}" for index in range(USERS)]
        box.handler({"room_id": "lobby-7", "user_ids": kept, "keep_out_seconds": 3600}, box.context())
        box.handler({"room_id": "lobby-7", "user_ids": plain}, box.context())

        dynamodb = boto3.client("dynamodb", region_name=REGION)
        keys = [{"id": {"S": item_key(APP_ID, "lobby-7", user)}} for user in kept]
        bare: dict[str, list[float]] = {"BatchGetItem": [], "GetItem": []}
        for _ in range(repeats):
            began = time.perf_counter()
            dynamodb.batch_get_item(
                RequestItems={
                    STATE_TABLE: {"Keys": keys, "ConsistentRead": True, "ProjectionExpression": "id, answered_at_ms"}
                }
            )
            bare["BatchGetItem"].append(time.perf_counter() - began)
            began = time.perf_counter()
            dynamodb.get_item(TableName=STATE_TABLE, Key=keys[0], ConsistentRead=True)
            bare["GetItem"].append(time.perf_counter() - began)

        handle = callbacks_handler_for(lambda: box.function)
        answers: dict[str, list[float]] = {"with a window": [], "without": []}
        outcomes: set[str] = set()
        nonce = 1_000
        for index in range(repeats + 2):
            for kind, users in (("with a window", kept), ("without", plain)):
                nonce += 1
                event = room_exit("lobby-7", users, nonce)
                began = time.perf_counter()
                response = handle(event, box.context())
                if index >= 2:
                    answers[kind].append(time.perf_counter() - began)
                outcomes.add(f"{response['statusCode']} {json.loads(response['body']).get('outcome')}")
    with_window, without = (statistics.median(taken) for taken in answers.values())
    batch, single = (statistics.median(taken) for taken in bare.values())
    return [
        f"room_exit by Kickout of {USERS} users, answered (median of {repeats}; p99): kicked with a window "
        f"{with_window * 1000:.1f} ms ({percentile(answers['with a window'], 0.99) * 1000:.1f}), without "
        f"{without * 1000:.1f} ms ({percentile(answers['without'], 0.99) * 1000:.1f}) = {with_window / without:.2f}x; "
        f"answers: {', '.join(sorted(outcomes))}",
        f"  baselines on the same moto: one BatchGetItem of the {USERS} items, projected, {batch * 1000:.2f} ms, "
        f"one GetItem {single * 1000:.2f} ms ({USERS} GetItems in turn would be ~{USERS * single * 1000:.0f} ms)",
    ]


def kicks(repeats: int) -> list[str]:
    with sandbox(rate_limit_per_second=1000.0) as box:
        timings: dict[str, list[float]] = {"without a window": [], "a new window": [], "again, shorter": []}
        for index in range(repeats + 2):
            for kind, window in (("without a window", None), ("a new window", 3600), ("again, shorter", 600)):
                payload: dict[str, Any] = {"room_id": "lobby-7", "user_ids": [f"u{index}"]}
                if window is not None:
                    payload["keep_out_seconds"] = window
                began = time.perf_counter()
                box.handler(payload, box.context())
                if index >= 2:
                    timings[kind].append(time.perf_counter() - began)
    without, new, again = (statistics.median(taken) for taken in timings.values())
    return [
        f"kickout a caller waits for (direct invoke, warm, median of {repeats}): without a window "
        f"{without * 1000:.1f} ms, with a new window {new * 1000:.1f} ms = {new / without:.2f}x (one UpdateItem, "
        f"answered_at_ms in it), the same user again with a shorter window {again * 1000:.1f} ms = "
        f"{again / without:.2f}x (the refused UpdateItem, then the one moving the answer's time on)"
    ]


if __name__ == "__main__":
    raise SystemExit(main())
