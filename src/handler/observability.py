"""Logger, Tracer and Metrics, built once per execution environment.

Service name and metrics namespace come from POWERTOOLS_SERVICE_NAME and POWERTOOLS_METRICS_NAMESPACE
(set in template.yaml), never from code.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_xray_sdk import global_sdk_config

logger = Logger()
# Only botocore is patched: X-Ray's httplib patch would record the signed ZEGO URL (nonce and signature) in traces.
tracer = Tracer(patch_modules=["botocore"])
metrics = Metrics()
metrics_lock = threading.Lock()
"""Held around add_metric on worker threads: Powertools' add_metric is a read-then-write of a dict."""

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
