"""Which of ZIM's callbacks were handled already: ZEGO sends each up to 6 times (every answer that is not 2xx, or
none, is retried after 2, 4, 8, 16 and 32 s), and a repeated one must do nothing twice.

A callback is claimed by one conditional PutItem of `callback#<AppId>#<event>#<timestamp>#<nonce>` (the values the
signature covers: a replay cannot change them), kept by the table's TTL for longer than ZEGO retries and the
timestamp window together. A claim whose work then failed is released, so ZEGO's next try is handled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from botocore.exceptions import BotoCoreError, ClientError

from handler.core.deadline import Deadline
from handler.fleet.keep_outs import KeepOutsUnavailable, client_within

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

CLAIM_SECONDS: Final = 900
"""A claim outlives ZEGO's 62 s of retries and the 300 s timestamp window on either side of now."""


def claim_key(app_id: int, event: str, timestamp: str, nonce: str) -> str:
    return f"callback#{app_id}#{event}#{timestamp}#{nonce}"


@dataclass(frozen=True, slots=True)
class DynamoCallbackClaims:
    client: Callable[[], DynamoDBClient]
    table: str
    app_id: int

    def claim(self, event: str, timestamp: str, nonce: str, now: float, deadline: Deadline) -> bool:
        """True: this callback is new and now claimed; False: it was handled before. Raises KeepOutsUnavailable."""
        client = self._client_within(deadline)
        try:
            client.put_item(
                TableName=self.table,
                Item={
                    "id": {"S": claim_key(self.app_id, event, timestamp, nonce)},
                    "expiration": {"N": str(int(now) + CLAIM_SECONDS)},
                },
                ConditionExpression="attribute_not_exists(id)",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise KeepOutsUnavailable(f"DynamoDB answered {error.response.get('Error', {}).get('Code')}") from None
        except BotoCoreError as error:
            raise KeepOutsUnavailable(f"DynamoDB could not be reached ({type(error).__name__})") from None
        return True

    def release(self, event: str, timestamp: str, nonce: str, deadline: Deadline) -> bool:
        """Give a claim back (its work failed), so that ZEGO's next try is handled; False: it could not be."""
        try:
            self._client_within(deadline).delete_item(
                TableName=self.table, Key={"id": {"S": claim_key(self.app_id, event, timestamp, nonce)}}
            )
        except (ClientError, BotoCoreError, KeepOutsUnavailable):
            return False
        return True

    def _client_within(self, deadline: Deadline) -> DynamoDBClient:
        return client_within(self.client, deadline)
