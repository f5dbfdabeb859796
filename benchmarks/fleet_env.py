"""One execution environment of the fleet benchmark: the real handler in a process of its own.

Run by `benchmarks.fleet`, one process per environment, with the function's environment variables set by the
parent (AWS_ENDPOINT_URL at the shared moto server, ZEGO_API_ENDPOINT at the shared stand-in). It imports the
handler, says `ready`, then takes one invocation per stdin line, one at a time as Lambda gives an environment:

    {"event": {...}, "timeout": 20}

and answers each with one line `BENCH_REPLY {"response": ..., "began": t, "ended": t, "metrics": {...}}`: the
handler's return value, its wall-clock times (Unix seconds) and the values of every EMF metric the invocation
printed, by name. What the handler prints (logs, EMF) is kept off the real stdout. An empty line or EOF ends it.

With KICKOUT_BENCH_CLOCK_OFFSET (seconds), the environment's wall clock (time.time, which the budget's slots and
ZEGO's signatures read) runs that far ahead of the machine's: a clock skewed against the others (benchmarks.skew).
The times it reports stay the machine's.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from typing import Any

from kickout_dev.emf import emf_metrics
from kickout_dev.sandbox import LambdaContext

CLOCK_OFFSET = "KICKOUT_BENCH_CLOCK_OFFSET"


def skew_clock(offset: float) -> None:
    """time.time, `offset` seconds ahead from now on: before the handler is imported, which binds it."""
    machine = time.time
    time.time = lambda: machine() + offset


def main() -> None:
    machine_time = time.time
    if offset := float(os.environ.get(CLOCK_OFFSET, "0")):
        skew_clock(offset)
    from handler.app import lambda_handler
    from handler.aws.observability import logger

    printed = io.StringIO()
    logger.registered_handler.setStream(printed)  # type: ignore[attr-defined]
    out = sys.stdout
    print("ready", file=out, flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        request: dict[str, Any] = json.loads(line)
        context = LambdaContext(timeout_seconds=float(request["timeout"]))
        began = machine_time()
        with contextlib.redirect_stdout(printed):
            response = lambda_handler(request["event"], context)
        ended = machine_time()
        reply = {"response": response, "began": began, "ended": ended, "metrics": emf_metrics(printed.getvalue())}
        printed.seek(0)
        printed.truncate()
        print(f"BENCH_REPLY {json.dumps(reply)}", file=out, flush=True)


if __name__ == "__main__":
    main()
