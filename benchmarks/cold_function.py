"""A cold start: a fresh interpreter doing its first kickout through the real handler, from the built artifact.

Run by `benchmarks.run` as `python3.13 -c <this file>` in a copy of the artifact (nothing of the repository on
the path), with the environment the template sets. The secret comes from a moto server, the ZEGO call goes to
the stand-in; the Lambda context's attributes come as JSON in BENCH_CONTEXT. Prints one `BENCH_RESULT {...}` line:
wall-clock times, for the parent to subtract its spawn time.
"""

import time

STARTED = time.time()

import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

from handler.app import lambda_handler  # noqa: E402

IMPORTED = time.time()


context = SimpleNamespace(**json.loads(os.environ["BENCH_CONTEXT"]), get_remaining_time_in_millis=lambda: 20_000)
result: Any = lambda_handler(json.loads(os.environ["BENCH_EVENT"]), context)
DONE = time.time()
assert result["kicked_user_ids"], result
origins = {name: getattr(sys.modules.get(name), "__file__", None) for name in ("boto3", "aws_lambda_powertools")}
report = {
    "started": STARTED,
    "imported": IMPORTED,
    "done": DONE,
    "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "modules": len(sys.modules),
    "origins": origins,
}
sys.stdout.write(f"\nBENCH_RESULT {json.dumps(report)}\n")
sys.stdout.flush()
os._exit(0)  # what Lambda keeps running is not torn down either
