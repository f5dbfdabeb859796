"""A slow but healthy store: invocation times and the kicks done, against DynamoDB's latency (row 8 of make bench).

    python -m benchmarks.slow_store [--latencies 10,50,100,200,500]   (about a minute)

Each latency runs in a child process of its own (`--one MS`): the sandbox (moto in process, the ZIM stand-in at
ZEGO's 20 calls/s, refusing a 21st call in any second), and a botocore hook that holds every call of the function's
DynamoDB client (bookings and ZEGO's circuit alike) for that long before it is sent. In it, the real handler takes
an API request of 150 users (3 ZEGO calls; a 29 s Lambda timeout) and then a queue batch of 20 rooms (a second of
ZEGO's budget; a 10 s timeout). The child prints one JSON line. The parent stops (by its handle) a child that
outlives its invocations' timeouts and reports that the invocation never returned. Not a test: nothing here asserts
a time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.fleet_env import emf_metrics
from benchmarks.run import ROOT, Report, Row, log, print_table

API_USERS = 150
QUEUE_ROOMS = 20
API_TIMEOUT = 29.0
QUEUE_TIMEOUT = 10.0
LATENCIES_MS = (10, 50, 100, 200, 500)
CHILD_TIMEOUT = API_TIMEOUT + QUEUE_TIMEOUT + 20


@dataclass
class Delay:
    seconds: float
    store_calls: int = 0

    def __call__(self, **_: Any) -> None:
        self.store_calls += 1
        time.sleep(self.seconds)


def one(latency_ms: float) -> dict[str, Any]:
    """The API request and the queue batch against a store `latency_ms` slow; what each did (in this process)."""
    from kickout_dev.events import api_event, sqs_event
    from kickout_dev.sandbox import sandbox

    printed = io.StringIO()
    with sandbox(rate_limit_per_second=20, max_requests_per_second=20) as box, contextlib.redirect_stdout(printed):
        from handler.aws.observability import logger

        logger.registered_handler.setStream(printed)  # type: ignore[attr-defined]
        delay = Delay(latency_ms / 1000)
        box.function.dynamodb().meta.events.register("before-send.dynamodb", delay)
        body = json.dumps({"room_id": "lobby", "user_ids": [f"user-{index}" for index in range(API_USERS)]})
        started = time.monotonic()
        api = box.handler(api_event(body), box.context(API_TIMEOUT))
        api_seconds = time.monotonic() - started
        api_kicked = len(box.zim.kicked_user_ids)
        batch = sqs_event(*(json.dumps({"room_id": f"room-{n}", "user_ids": ["u"]}) for n in range(QUEUE_ROOMS)))
        started = time.monotonic()
        queue = box.handler(batch, box.context(QUEUE_TIMEOUT))
        queue_seconds = time.monotonic() - started
        metrics = emf_metrics(printed.getvalue())
        return {
            "latency_ms": latency_ms,
            "api_status": api["statusCode"],
            "api_seconds": api_seconds,
            "api_kicked": api_kicked,
            "queue_seconds": queue_seconds,
            "queue_kicked": len(box.zim.kicked_user_ids) - api_kicked,
            "queue_failed": len(queue["batchItemFailures"]),
            "deferred": sum(metrics.get("MessagesDeferred", [])),
            "refused": len(box.zim.refusals),
            "store_calls": delay.store_calls,
            "store_errors": sum(metrics.get("BudgetStoreErrors", [])),
            "store_slow": sum(metrics.get("BudgetStoreSlow", [])),
        }


def run_child(latency_ms: float) -> dict[str, Any] | None:
    """`one` in a child process; None when it did not finish within CHILD_TIMEOUT (an invocation never returned)."""
    with subprocess.Popen(
        [sys.executable, "-m", "benchmarks.slow_store", "--one", str(latency_ms)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as child:
        try:
            out, _ = child.communicate(timeout=CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            return None
    lines = [line for line in out.splitlines() if line.startswith("SLOW_STORE ")]
    return json.loads(lines[-1].removeprefix("SLOW_STORE ")) if lines else None


def row_of(latency_ms: float, result: dict[str, Any] | None) -> Row:
    name = f"8. store at {latency_ms:g} ms a call: API {API_USERS} users; queue {QUEUE_ROOMS} rooms"
    target = f"200 within {API_TIMEOUT:.0f} s; queue within {QUEUE_TIMEOUT:.0f} s; 0 refused"
    if result is None:
        return Row(name, f"did not return within {CHILD_TIMEOUT:.0f} s", "all kicked", 0.0, target, False)
    kicked = result["api_kicked"] + result["queue_kicked"]
    measured = (
        f"API {result['api_status']} in {result['api_seconds']:.1f} s ({result['api_kicked']}/{API_USERS}); "
        f"queue {result['queue_seconds']:.1f} s ({result['queue_kicked']}/{QUEUE_ROOMS} kicked, "
        f"{result['deferred']:.0f} deferred, {result['queue_failed']} failed); {result['refused']} refused; "
        f"{result['store_calls']} store calls, BudgetStoreSlow {result['store_slow']:.0f}, "
        f"BudgetStoreErrors {result['store_errors']:.0f}"
    )
    ok = (
        result["api_status"] == 200
        and result["api_seconds"] < API_TIMEOUT
        and result["queue_seconds"] < QUEUE_TIMEOUT
        and result["queue_failed"] == 0
        and result["refused"] == 0
    )
    return Row(name, measured, f"{API_USERS + QUEUE_ROOMS} users", kicked / (API_USERS + QUEUE_ROOMS), target, ok)


def measure_slow_store(report: Report, latencies_ms: Sequence[float] = LATENCIES_MS) -> None:
    for latency_ms in latencies_ms:
        log(f"slow store: every DynamoDB call {latency_ms:g} ms late (a child process)")
        report.add(row_of(latency_ms, run_child(latency_ms)))
    report.note(
        "slow store (8): the ratio is the share of the 170 users kicked by the two invocations (the rest deferred "
        "to a later one, never lost); 'store calls' counts every DynamoDB call, ZEGO's circuit included"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--latencies", default=",".join(map(str, LATENCIES_MS)), help="ms a call, comma separated")
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        print("SLOW_STORE " + json.dumps(one(args.one)), file=sys.__stdout__, flush=True)
        return 0
    report = Report()
    began = time.monotonic()
    measure_slow_store(report, [float(text) for text in args.latencies.split(",") if text])
    print_table(report)
    print(f"\n({time.monotonic() - began:.0f} s; python -m benchmarks.slow_store)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
