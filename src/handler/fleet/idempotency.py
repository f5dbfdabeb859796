"""The API's answers kept by Idempotency-Key: Powertools' idempotency utility, its records in KickoutStateTable.

The IETF httpapi draft "The Idempotency-Key HTTP Header Field": the first request with a key is carried out and
its answer (status and body, as sent) kept for `keep_seconds`; the same key with the same payload gets that answer
again without anything being done; with another payload `KeyReused` (422); while the first is still running
`KeyInUse` (409). A key belongs to the IAM principal that sent it (`scope`): two callers never share one.

Only answers that say what happened for good are kept (`Answer`, returned by the work); a failure the caller
should retry (ZEGO unavailable, out of time, the secret) is raised by the work, Powertools deletes the record, and
the retry runs afresh.

When the table cannot be reached (or the deadline leaves no time for a call, `clients.DYNAMODB.worst_seconds`),
the kickout is carried out all the same, unprotected, and the failure counted (`IdempotencyStoreErrors`): a
moderation decision is not held up by bookkeeping, and a kick repeated by a retry is harmless at ZEGO (the user
is out; the fleet's budget pays one more call). A record that cannot be completed or deleted stays "in progress"
until the first request's deadline has passed: a retry meanwhile gets 409, after it runs afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig
from aws_lambda_powertools.utilities.idempotency.base import IdempotencyHandler
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyInconsistentStateError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.dynamodb import DynamoDBPersistenceLayer

from handler.aws import clients
from handler.aws.observability import MetricName, emit, logger
from handler.core.deadline import Deadline, ThreadDeadlines
from handler.core.ports import Answer, KeyInUse, KeyReused

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from mypy_boto3_dynamodb.client import DynamoDBClient


class AnswerStore(DynamoDBPersistenceLayer):
    """Powertools' DynamoDB persistence, each call within the deadline of the request on its thread.

    A record that cannot be read or written before the work raises (the work then runs unprotected); one that
    cannot be completed or deleted after it is counted and left to its in-progress expiry: the answer is never lost
    to the store.
    """

    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        super().__init__(table_name=table_name, boto3_client=client)
        self.deadlines = ThreadDeadlines()

    def _check_time(self) -> None:
        if not self.deadlines.allow(clients.DYNAMODB.worst_seconds):
            raise TimeoutError("no time left for a call to the idempotency store")

    def _get_record(self, idempotency_key: str) -> DataRecord:
        self._check_time()
        return super()._get_record(idempotency_key)

    def _put_record(self, data_record: DataRecord) -> None:
        self._check_time()
        super()._put_record(data_record)

    def _update_record(self, data_record: DataRecord) -> None:
        try:
            self._check_time()
            super()._update_record(data_record)
        except Exception as error:
            store_failed("complete", error)

    def _delete_record(self, data_record: DataRecord) -> None:
        try:
            self._check_time()
            super()._delete_record(data_record)
        except Exception as error:
            store_failed("delete", error)


class DynamoKeptAnswers:
    """The KeptAnswers port: answers kept `keep_seconds` in the store, as `<prefix>#<sha256 of scope and key>`."""

    def __init__(self, store: AnswerStore, *, prefix: str, keep_seconds: int) -> None:
        self.store = store
        self.prefix = prefix
        self.keep_seconds = keep_seconds

    def once(self, *, scope: str, key: str, payload: Any, work: Callable[[], Answer], deadline: Deadline) -> Answer:
        done: list[Answer] = []

        def first() -> dict[str, Any]:
            answer = work()
            done.append(answer)
            return {"status": answer.status, "body": answer.body}

        config = IdempotencyConfig(
            event_key_jmespath="key",
            payload_validation_jmespath="payload",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=self.keep_seconds,
            hash_function="sha256",
        )
        # A record in progress is taken over once its request's deadline has passed (Powertools' in-progress
        # expiry): a request that died leaves its key free again, never blocked for the whole keep.
        config.register_lambda_context(cast("LambdaContext", _Remaining(deadline)))
        handler = IdempotencyHandler(
            function=first,
            function_payload={"key": [scope, key], "payload": payload},
            config=config,
            persistence_store=self.store,
            key_prefix=self.prefix,
            function_args=(),
            function_kwargs={},
        )
        try:
            with self.store.deadlines.bounded_by(deadline):
                kept: dict[str, Any] = handler.handle()
        except IdempotencyAlreadyInProgressError:
            raise KeyInUse from None
        except IdempotencyValidationError:
            raise KeyReused from None
        except (IdempotencyPersistenceLayerError, IdempotencyInconsistentStateError) as error:
            if done:  # the store failed after the work: its answer stands
                return done[0]
            store_failed("record", error)
            return work()
        if done:
            return done[0]
        emit(MetricName.IDEMPOTENT_REPLAYS, 1)
        return Answer(status=int(kept["status"]), body=str(kept["body"]), replayed=True)


@dataclass(frozen=True, slots=True)
class _Remaining:
    """What Powertools reads of a Lambda context (the in-progress expiry), from the request's own deadline."""

    deadline: Deadline

    def get_remaining_time_in_millis(self) -> int:
        return int(self.deadline.remaining() * 1000)


def store_failed(operation: str, error: BaseException) -> None:
    # The error's class only: botocore's text names the table and the request, which is all the line needs anyway.
    cause = error.__cause__ if isinstance(error, IdempotencyPersistenceLayerError) and error.__cause__ else error
    logger.warning(
        "idempotency store failed: the kickout is carried out without its key's protection"
        if operation == "record"
        else "idempotency store failed: the answer stands, its record expires with the request's deadline",
        extra={"operation": operation, "error": type(cause).__name__},
    )
    emit(MetricName.IDEMPOTENCY_STORE_ERRORS, 1)
