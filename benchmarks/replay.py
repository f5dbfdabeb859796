"""Row 10 of `make bench`: what an Idempotency-Key costs, and what its replay answers in.

    python -m benchmarks.replay [--requests N]

Through the real handler in this process (the sandbox: the ZIM stand-in on loopback answering in 100 ms, moto for
the state table), POST /kickouts of 50 users: without a key, with a new key each time, and the same key again (a
replay). Medians of each, against the request without a key measured in the same run. Not a test: nothing here
asserts a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from kickout_dev.events import api_event
from kickout_dev.moto_server import aws_calls
from kickout_dev.sandbox import sandbox

ZEGO_LATENCY_SECONDS = 0.1
USERS = [f"user_{n:02d}" for n in range(50)]


def keyed(key: str | None, room: str) -> dict[str, Any]:
    event = api_event(json.dumps({"room_id": room, "user_ids": USERS}))
    if key is not None:
        event["headers"]["Idempotency-Key"] = key
    return event


def timed(call: Callable[[], dict[str, Any]], expect: int) -> float:
    started = time.perf_counter()
    response = call()
    elapsed = time.perf_counter() - started
    if response["statusCode"] != expect:
        raise RuntimeError(f"expected {expect}, got {response['statusCode']}: {response['body'][:200]}")
    return elapsed


def measure(requests: int = 20) -> dict[str, Any]:
    """Median seconds of each kind of request, and the store calls a replay makes."""
    from benchmarks.report import quiet  # the handler's log lines and metrics away from the figures

    with sandbox(instant_backoff=True) as box, quiet():
        box.zim.latency = ZEGO_LATENCY_SECONDS

        def post(event: dict[str, Any]) -> dict[str, Any]:
            response: dict[str, Any] = box.handler(event, box.context())
            return response

        def seconds(key: str | None, room: str) -> float:
            return timed(lambda: post(keyed(key, room)), 200)

        seconds(None, "warm-up")  # the clients, the secret, the connection
        plain = [seconds(None, f"plain-{n}") for n in range(requests)]
        first = [seconds(f"key-{n}", f"keyed-{n}") for n in range(requests)]
        with aws_calls() as calls:
            replay = [seconds(f"key-{n}", f"keyed-{n}") for n in range(requests)]
        zego_calls = len(box.zim.kickouts)
    return {
        "plain": statistics.median(plain),
        "first": statistics.median(first),
        "replay": statistics.median(replay),
        "replay_store_calls": sum(calls.values()) / requests,
        "zego_calls": zego_calls,
        "requests": requests,
    }


def rows(figures: dict[str, Any]) -> list[tuple[str, str, str, float, str, bool | None]]:
    plain = figures["plain"]
    return [
        (
            "11. POST of 50 users with a new Idempotency-Key (ZEGO at 100 ms)",
            f"{figures['first'] * 1000:.1f} ms",
            f"{plain * 1000:.1f} ms without a key",
            figures["first"] / plain,
            "info: its PutItem and UpdateItem",
            None,
        ),
        (
            "11. the same key again: the replay",
            f"{figures['replay'] * 1000:.1f} ms, {figures['replay_store_calls']:.0f} store call each, ZEGO not called",
            f"{plain * 1000:.1f} ms without a key",
            figures["replay"] / plain,
            "≤ 0.2 (no ZEGO call)",
            figures["replay"] / plain <= 0.2 and figures["zego_calls"] == 2 * figures["requests"] + 1,
        ),
    ]


def measure_replay(report: Any) -> None:
    """Row 11 into `make bench`'s table (benchmarks.run.Report)."""
    from benchmarks.report import Row, log

    log("Idempotency-Key: a first request with a key, and its replay, against one without (in process)")
    report.add(*(Row(*row) for row in rows(measure())))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--requests", type=int, default=20, help="requests of each kind (default 20)")
    args = parser.parse_args(argv)
    for metric, measured, baseline, ratio, target, ok in rows(measure(args.requests)):
        result = "info" if ok is None else ("pass" if ok else "FAIL")
        print(f"{metric} | {measured} | {baseline} | {ratio:.2f} | {target} | {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
