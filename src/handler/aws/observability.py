"""Logger, Tracer and Metrics, built once per execution environment.

Service name and metrics namespace come from POWERTOOLS_SERVICE_NAME and POWERTOOLS_METRICS_NAMESPACE
(set in template.yaml), never from code.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from enum import StrEnum
from typing import ParamSpec, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_xray_sdk import global_sdk_config

logger = Logger()
# Only botocore is patched: X-Ray's httplib patch would record the signed ZEGO URL (nonce and signature) in traces.
tracer = Tracer(patch_modules=["botocore"])
metrics = Metrics()
_metrics_lock = threading.Lock()


class MetricName(StrEnum):
    """Every metric the function emits, by name: the dashboard charts each and no other, the alarms watch only these
    (tests/test_template.py holds the template to this list, and the code to emitting nothing else)."""

    COLD_START = "ColdStart"
    """Emitted by Powertools (`capture_cold_start_metric=True`)."""
    KICKOUT_REQUESTS = "KickoutRequests"
    USERS_KICKED = "UsersKicked"
    USERS_ABSENT = "UsersAbsent"
    USERS_PER_CALL = "UsersPerCall"
    ZEGO_CALLS = "ZegoCalls"
    ZEGO_LATENCY = "ZegoLatency"
    ZEGO_CALLS_PER_USER = "ZegoCallsPerUser"
    BUDGET_WAIT = "BudgetWait"
    BUDGET_STORE_CALLS = "BudgetStoreCalls"
    BUDGET_SLOTS_DROPPED = "BudgetSlotsDropped"
    BUDGET_STORE_ERRORS = "BudgetStoreErrors"
    BUDGET_STORE_SLOW = "BudgetStoreSlow"
    BUDGET_REPAIRS = "BudgetRepairs"
    ZEGO_CIRCUIT_OPEN = "ZegoCircuitOpen"
    ZEGO_CIRCUIT_HALF_OPEN = "ZegoCircuitHalfOpen"
    ZEGO_CIRCUIT_CLOSED = "ZegoCircuitClosed"
    ZEGO_CIRCUIT_STORE_ERRORS = "ZegoCircuitStoreErrors"
    KEEP_OUTS_RECORDED = "KeepOutsRecorded"
    KEEP_OUTS_NOT_RECORDED = "KeepOutsNotRecorded"
    KEEP_OUTS_LISTED = "KeepOutsListed"
    KEEP_OUTS_LIFTED = "KeepOutsLifted"
    CALLBACKS_RECEIVED = "CallbacksReceived"
    REENTRIES_KICKED = "ReentriesKicked"
    KICKOUTS_CONFIRMED = "KickoutsConfirmed"
    CONFIRMATION_LATENCY = "ConfirmationLatency"
    CONFIRMATION_READS_FAILED = "ConfirmationReadsFailed"
    CALLBACKS_REFUSED = "CallbacksRefused"
    CALLBACKS_REPEATED = "CallbacksRepeated"
    CALLBACKS_FAILED = "CallbacksFailed"
    MESSAGES_DEFERRED = "MessagesDeferred"
    MESSAGES_BACKED_OFF = "MessagesBackedOff"
    BACKOFF_FAILED = "BackoffFailed"
    PARKING_FAILED = "ParkingFailed"
    IDEMPOTENT_REPLAYS = "IdempotentReplays"
    IDEMPOTENCY_STORE_ERRORS = "IdempotencyStoreErrors"
    # One per failure class (entry.audit.failure_class): `Failed<Class>`.
    FAILED_PERMANENT = "FailedPermanent"
    FAILED_CIRCUIT_OPEN = "FailedCircuitOpen"
    FAILED_RATE_LIMITED = "FailedRateLimited"
    FAILED_TIMEOUT = "FailedTimeout"
    FAILED_TRANSIENT = "FailedTransient"
    FAILED_DEADLINE = "FailedDeadline"
    FAILED_SECRET = "FailedSecret"  # noqa: S105 (a metric name, not a password)
    FAILED_CONFIGURATION = "FailedConfiguration"
    FAILED_INVALID = "FailedInvalid"
    FAILED_UNEXPECTED = "FailedUnexpected"

    @classmethod
    def failed(cls, failure_class: str) -> MetricName:
        """The metric counting one failure class; raises ValueError for a class without one."""
        return cls(f"Failed{failure_class}")


def emit(name: MetricName, value: float, unit: MetricUnit = MetricUnit.Count) -> None:
    """Add `value` to metric `name`: the one way the function emits a metric, from any thread.

    The calls of a batch run on worker threads, and Powertools' add_metric reads its dict, appends, and may flush
    it when a metric reaches 100 values: two threads at once would lose values.
    """
    with _metrics_lock:
        metrics.add_metric(name=name, unit=unit, value=value)


Params = ParamSpec("Params")
Result = TypeVar("Result")


def in_current_trace(function: Callable[Params, Result]) -> Callable[Params, Result]:
    """`function`, to run on worker threads under the caller's trace entity.

    X-Ray keeps its context per thread: without this, subsegments opened on a worker (the ZEGO calls of a
    batch) would hang off a facade of their own instead of the invocation's `## lambda_handler`.
    """
    if not global_sdk_config.sdk_enabled():
        return function
    entity = tracer.provider.get_trace_entity()  # type: ignore[attr-defined]

    @functools.wraps(function)
    def run(*args: Params.args, **kwargs: Params.kwargs) -> Result:
        tracer.provider.set_trace_entity(entity)  # type: ignore[attr-defined]
        return function(*args, **kwargs)

    return run


# At DEBUG, urllib3 logs request lines (the signed query) and botocore logs response bodies (GetSecretValue's
# SecretString); urllib3 even warns with the full URL when a reply's headers do not parse. Keep all of them out
# of the logs whatever level the function or Lambda's log config asks for.
logging.getLogger("urllib3").setLevel(logging.ERROR)
for library in ("botocore", "boto3"):
    logging.getLogger(library).setLevel(logging.WARNING)
