"""A ZEGO outage of 90 minutes on a simulated clock (kickout_dev/outage.py), as `benchmarks.run` reports it.

    python -m benchmarks.outage [--no-circuit]

Runs in its own process (time-machine moves the clock of the whole process); ends with one `BENCH_RESULT {...}`
line. `--no-circuit`: the same replay with a circuit that never opens, each receive making its attempts: the
baseline the circuit's saving is measured against.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
from typing import Any

from kickout_dev.outage import Scenario, replay_outage
from kickout_dev.sandbox import LambdaContext, sandbox


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--no-circuit", action="store_true", help="a circuit that never opens (the baseline)")
    args = parser.parse_args()
    for name, value in (("POWERTOOLS_SERVICE_NAME", "kickout"), ("POWERTOOLS_METRICS_NAMESPACE", "Kickout")):
        os.environ.setdefault(name, value)
    printed = io.StringIO()
    with sandbox() as box, contextlib.redirect_stdout(printed):
        from handler.aws.observability import logger

        logger.registered_handler.setStream(printed)  # type: ignore[attr-defined]
        if args.no_circuit:
            box.rewire(failures_to_open=10**9)

        def invoke(event: dict[str, Any]) -> dict[str, Any]:
            printed.seek(0)
            printed.truncate()
            response: dict[str, Any] = box.handler(event, LambdaContext())
            return response

        scenario = Scenario()
        replay = replay_outage(box, invoke, scenario)
    result = replay.summary() | {
        "outage_minutes": scenario.outage.total_seconds() / 60,
        "environments": scenario.environments,
        "messages": scenario.messages,
        "poison": scenario.poison,
    }
    print(f"BENCH_RESULT {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    main()
