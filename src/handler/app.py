"""The Lambda entry point: one function for API Gateway, SQS and direct invokes.

One function rather than three keeps one warm pool, one cached secret and one set of alarms; the event's
shape says which adapter handles it. The API and queue adapters are imported by the first event that needs
them: an environment fed by the queue never loads the REST resolver and its OpenAPI machinery, nor a direct
invoke the batch utilities (about 50 ms of a cold start, measured by `make bench`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from handler import wiring
from handler.aws.observability import logger, metrics, tracer
from handler.entry import direct
from handler.entry.kickouts import Kickouts

Adapter = Callable[[Any, LambdaContext, Kickouts], Any]
LambdaHandler = Callable[..., Any]


def adapter_for(event: Any) -> Adapter:
    """API Gateway and SQS events by their shape; anything else is a direct invoke's payload (and validated so)."""
    if not isinstance(event, dict):
        return direct.handle
    if isinstance(event.get("httpMethod"), str) and isinstance(event.get("requestContext"), dict):
        from handler.entry import api  # noqa: PLC0415 (on first use: see the module's docstring)

        return api.handle
    records = event.get("Records")
    if isinstance(records, list) and records and all(_is_sqs_record(record) for record in records):
        from handler.entry import queue  # noqa: PLC0415

        return queue.handle
    return direct.handle


def _is_sqs_record(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and record.get("eventSource") == "aws:sqs"
        and isinstance(record.get("messageId"), str)
        and isinstance(record.get("body"), str)
    )


def handler_for(function: Callable[[], wiring.Function]) -> LambdaHandler:
    """The Lambda handler of `function` (made on the first invocation): logs, traces and metrics around the adapter."""

    @logger.inject_lambda_context(clear_state=True)
    @tracer.capture_lambda_handler(capture_response=False)
    @metrics.log_metrics(capture_cold_start_metric=True)
    def lambda_handler(event: Any, context: LambdaContext) -> Any:
        return adapter_for(event)(event, context, function().kickouts)

    handler: LambdaHandler = lambda_handler
    return handler


def callbacks_handler_for(function: Callable[[], wiring.Function]) -> LambdaHandler:
    """The Lambda handler of ZIM's callbacks (a function of its own, with a role of its own): logs and metrics
    around the adapter, no trace of the request (its body and the signature are ZEGO's)."""

    @logger.inject_lambda_context(clear_state=True)
    @metrics.log_metrics(capture_cold_start_metric=True)
    def callbacks_handler(event: Any, context: LambdaContext) -> Any:
        from handler.entry import callbacks  # noqa: PLC0415 (on first use: the kickout function never loads it)

        return callbacks.handle(event, context, function().callbacks)

    handler: LambdaHandler = callbacks_handler
    return handler


lambda_handler = handler_for(wiring.lambdas_function)
"""The handler Lambda calls (template.yaml: handler.app.lambda_handler), for the function of its environment."""
callbacks_lambda_handler = callbacks_handler_for(wiring.lambdas_function)
"""ZIM's callbacks (template.yaml: handler.app.callbacks_lambda_handler)."""


def _register_snapshot_hooks() -> None:
    """SnapStart's hooks, with the runtime's registry (snapshot-restore-py, part of Lambda's Python 3.12+ runtimes;
    absent elsewhere, where no snapshot is taken)."""
    try:
        import snapshot_restore_py  # type: ignore[import-untyped]  # noqa: PLC0415
    except ImportError:
        return
    snapshot_restore_py.register_before_snapshot(wiring.before_snapshot)
    snapshot_restore_py.register_after_restore(wiring.after_restore)


_register_snapshot_hooks()
