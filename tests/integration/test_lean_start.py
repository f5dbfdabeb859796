"""Each way in imports what it needs and no more: measured in a fresh interpreter, as a cold start imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESOLVER = "aws_lambda_powertools.event_handler"
BATCH = "aws_lambda_powertools.utilities.batch"
IDEMPOTENCY = "aws_lambda_powertools.utilities.idempotency"

PROBE = """
import json, sys
from handler import app
from kickout_dev.events import load_event
events = {"api": load_event("api"), "sqs": load_event("sqs"), "direct": {"room_id": "r", "user_ids": ["u"]}}
app.adapter_for(events[sys.argv[1]])
print(json.dumps(sorted(sys.modules)))
"""


def modules_loaded_for(way: str) -> set[str]:
    """The modules a fresh interpreter holds once the handler is imported and has picked the adapter of `way`."""
    environment = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}",
        "POWERTOOLS_SERVICE_NAME": "kickout",
        "POWERTOOLS_METRICS_NAMESPACE": "Kickout",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "AWS_REGION": "eu-central-1",
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, way], env=environment, capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def loads(modules: set[str], package: str) -> bool:
    return any(module == package or module.startswith(f"{package}.") for module in modules)


@pytest.mark.parametrize(
    ("way", "loaded", "not_loaded"),
    [
        ("api", [RESOLVER], [BATCH, IDEMPOTENCY]),
        ("sqs", [BATCH], [RESOLVER, IDEMPOTENCY]),
        ("direct", [], [RESOLVER, BATCH, IDEMPOTENCY]),
    ],
)
def test_each_way_in_loads_only_the_powertools_utilities_it_uses(
    way: str, loaded: list[str], not_loaded: list[str]
) -> None:
    # GIVEN a fresh interpreter, the handler imported and one event's adapter picked
    modules = modules_loaded_for(way)
    # THEN its own utility is there, the others' are not: the queue never builds the REST resolver and its OpenAPI
    # models, the API no batch code, and no way Powertools' idempotency until a request carries a key
    for package in loaded:
        assert loads(modules, package), package
    for package in not_loaded:
        assert not loads(modules, package), package
