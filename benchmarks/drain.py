"""One queue environment draining its share of the kickouts, as SQS and the Lambda poller would feed it.

Run by `benchmarks.run` as a separate process per environment: its own moto sandbox (secret, DLQ), the
template's KICKOUT_QUEUE_RATE_PER_SECOND, and the one ZEGO stand-in the parent shares between environments
(BENCH_ENDPOINT). Batches of 10; the messages a batch reports in batchItemFailures are delivered again at the
end of the queue with one more receive (SQS would wait for the visibility timeout first). Says `ready` once
imported, starts on `go` from stdin, ends with one `BENCH_RESULT {...}` line.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from collections import deque

from kickout_dev.events import sqs_record
from kickout_dev.sandbox import LambdaContext, sandbox

BATCH_SIZE = 10
DEADLINE_SECONDS = 120.0


def main() -> None:
    first, count = int(sys.argv[1]), int(sys.argv[2])
    rate = float(os.environ["KICKOUT_QUEUE_RATE_PER_SECOND"])
    with sandbox(rate_limit_per_second=rate):
        os.environ["ZEGO_API_ENDPOINT"] = os.environ["BENCH_ENDPOINT"]
        from handler import settings
        from handler.app import lambda_handler
        from handler.observability import logger

        settings.current.cache_clear()
        printed = io.StringIO()
        logger.registered_handler.setStream(printed)  # type: ignore[attr-defined]
        pending = deque(
            (f"m{index}", json.dumps({"room_id": f"room-{index}", "user_ids": [f"user-{index}"]}), 1)
            for index in range(first, first + count)
        )
        print("ready", flush=True)
        sys.stdin.readline()

        started = time.time()
        invocations = redeliveries = 0
        durations: list[float] = []
        while pending and time.time() - started < DEADLINE_SECONDS:
            batch = [pending.popleft() for _ in range(min(BATCH_SIZE, len(pending)))]
            event = {"Records": [sqs_record(body, receive_count=n, message_id=key) for key, body, n in batch]}
            began = time.time()
            with contextlib.redirect_stdout(printed):
                response = lambda_handler(event, LambdaContext())
            durations.append(round(time.time() - began, 3))
            printed.seek(0)
            printed.truncate()
            invocations += 1
            failed = {failure["itemIdentifier"] for failure in response["batchItemFailures"]}
            redeliveries += len(failed)
            pending.extend((key, body, n + 1) for key, body, n in batch if key in failed)
        report = {
            "started": started,
            "done": time.time(),
            "invocations": invocations,
            "redeliveries": redeliveries,
            "undelivered": len(pending),
            "durations": durations,
        }
    print(f"BENCH_RESULT {json.dumps(report)}", flush=True)


if __name__ == "__main__":
    main()
