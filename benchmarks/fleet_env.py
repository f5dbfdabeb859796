"""One execution environment of the fleet benchmark: the real handler in a process of its own.

Run by `benchmarks.fleet`, one process per environment, with the function's environment variables set by the
parent (AWS_ENDPOINT_URL at the shared moto server, ZEGO_API_ENDPOINT at the shared stand-in). It imports the
handler, says `ready`, then takes one invocation per stdin line, one at a time as Lambda gives an environment:

    {"event": {...}, "timeout": 20}

and answers each with one line `BENCH_REPLY {"response": ..., "began": t, "ended": t, "metrics": {...}}`: the
handler's return value, its wall-clock times (Unix seconds) and the values of every EMF metric the invocation
printed, by name. What the handler prints (logs, EMF) is kept off the real stdout. An empty line or EOF ends it.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from collections import defaultdict
from typing import Any

from kickout_dev.sandbox import LambdaContext


def emf_metrics(printed: str) -> dict[str, list[float]]:
    """Every metric value of the EMF documents among the printed lines (logs lines have no `_aws`)."""
    values: dict[str, list[float]] = defaultdict(list)
    for line in printed.splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = document.get(metric["Name"])
                if isinstance(value, list):
                    values[metric["Name"]].extend(float(item) for item in value)
                elif value is not None:
                    values[metric["Name"]].append(float(value))
    return dict(values)


def main() -> None:
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
        began = time.time()
        with contextlib.redirect_stdout(printed):
            response = lambda_handler(request["event"], context)
        ended = time.time()
        reply = {"response": response, "began": began, "ended": ended, "metrics": emf_metrics(printed.getvalue())}
        printed.seek(0)
        printed.truncate()
        print(f"BENCH_REPLY {json.dumps(reply)}", file=out, flush=True)


if __name__ == "__main__":
    main()
