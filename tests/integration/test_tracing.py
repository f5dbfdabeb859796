"""Subsegments opened on the batch's worker threads belong to the invocation's trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter: the Tracer reads Lambda's environment when the handler is imported.
SCRIPT = """
import json
from concurrent.futures import ThreadPoolExecutor
from handler.aws.observability import in_current_trace, tracer

def call(index):
    with tracer.provider.in_subsegment(f"## ZEGO call {index}") as subsegment:
        return subsegment.parent_id

with tracer.provider.in_subsegment("## lambda_handler") as handler, ThreadPoolExecutor(3) as workers:
    print(json.dumps({"handler": handler.id, "parents": list(workers.map(in_current_trace(call), range(3)))}))
"""


def test_worker_subsegments_hang_off_the_handler_not_a_facade_of_their_own() -> None:
    environment = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}",
        "LAMBDA_TASK_ROOT": str(ROOT / "src"),
        "AWS_LAMBDA_FUNCTION_NAME": "kickout",
        "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2999",  # nothing listens: segments are sent by UDP and dropped
        "POWERTOOLS_TRACE_DISABLED": "false",
    }
    finished = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=environment, capture_output=True, text=True, timeout=60, check=True
    )
    traced = json.loads(finished.stdout.strip().splitlines()[-1])
    assert traced["parents"] == [traced["handler"]] * 3
