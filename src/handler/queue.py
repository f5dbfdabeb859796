"""SQS entry point: each message is one kickout; partial batch responses, poison parked in the DLQ at once.

- done, or nothing left to do (room gone, user not in room): acknowledged;
- invalid payload or a permanent ZEGO refusal: parked in KICKOUT_DLQ_URL with the reason, then acknowledged;
- anything that may succeed later (ZEGO busy or rate limited, timeouts, the secret unreadable, a DLQ that
  cannot be reached): reported in batchItemFailures, so SQS delivers it again.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from handler import service, settings
from handler.kickout import KickoutRequest, ZegoRefused, describe_invalid
from handler.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef

# An all-failed batch is returned as such rather than raised: raising would hand back messages already parked.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

DETAIL_MAX_CHARACTERS = 1000


def handle(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=handle_record, processor=processor, context=context)


def handle_record(record: SQSRecord, lambda_context: LambdaContext) -> None:
    log_context = {"message_id": record.message_id, "receive_count": record.attributes.approximate_receive_count}
    try:
        request = KickoutRequest.model_validate_json(record.body)
    except ValidationError as error:
        service.record_failure(error, log_context)
        park(record, "invalid_payload", describe_invalid(error))
        return
    try:
        service.run(request, lambda: lambda_context.get_remaining_time_in_millis() / 1000, log_context)
    except ZegoRefused as error:
        park(record, "zego_refused", str(error))


def park(record: SQSRecord, reason: str, detail: str) -> None:
    """Copy the message, body unchanged, to the dead-letter queue; raises (so SQS keeps it) when that fails."""
    dlq_url = settings.current().dlq_url
    if dlq_url is None:
        raise settings.ConfigurationError(
            "invalid configuration: KICKOUT_DLQ_URL: is not set (needed to park messages)"
        )
    attributes: dict[str, MessageAttributeValueTypeDef] = {
        "KickoutFailure": {"DataType": "String", "StringValue": reason},
        "KickoutDetail": {"DataType": "String", "StringValue": detail[:DETAIL_MAX_CHARACTERS] or reason},
        "SourceMessageId": {"DataType": "String", "StringValue": record.message_id},
    }
    _sqs().send_message(QueueUrl=dlq_url, MessageBody=record.body, MessageAttributes=attributes)
    logger.warning("message parked", extra={"message_id": record.message_id, "reason": reason, "detail": detail})


@cache
def _sqs() -> SQSClient:
    # Created on first use: most invocations never park, and a boto3 client costs cold-start time.
    return boto3.client("sqs")
