"""The Lambda entry point: one function for API Gateway, SQS and direct invokes.

One function rather than three keeps one warm pool, one cached secret and one set of alarms; the event's
shape says which adapter handles it.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from handler import api, direct, queue
from handler.observability import logger, metrics, tracer


def adapter_for(event: Any) -> Any:
    if isinstance(event, dict):
        if "httpMethod" in event and "requestContext" in event:
            return api.handle
        records = event.get("Records")
        if (
            isinstance(records, list)
            and records
            and all(isinstance(record, dict) and record.get("eventSource") == "aws:sqs" for record in records)
        ):
            return queue.handle
    return direct.handle


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: Any, context: LambdaContext) -> Any:
    return adapter_for(event)(event, context)
