"""Everything the function needs, on this machine: the ZIM stand-in on loopback, Secrets Manager and SQS in
memory (moto), the environment the SAM template would set, and a Lambda context.

Used by the demo (`make demo`) and by the tests, so both drive the real handler the same way.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from moto import mock_aws

from kickout_dev.clock import InstantBackoff
from kickout_dev.moto_server import make_moto_like_aws
from kickout_dev.queues import drained
from kickout_dev.zim_server import ZimStandIn

if TYPE_CHECKING:
    from handler.wiring import Function

REGION = "eu-central-1"
APP_ID = 1234567890
# Not a real secret: the stand-in's ServerSecret, 32 hex characters like ZEGO's.
SERVER_SECRET = "0123456789abcdef0123456789abcdef"
SECRET_NAME = "kickout/zego-server-secret"
STATE_TABLE = "kickout-state"


@dataclass
class LambdaContext:
    """What the handler reads of the Lambda context (the shape of Powertools' own test contexts)."""

    function_name: str = "kickout-KickoutFunction"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:kickout-KickoutFunction"
    aws_request_id: str = "5b6f1c5e-0000-4000-8000-000000000001"
    log_group_name: str = "/aws/lambda/kickout-KickoutFunction"
    log_stream_name: str = field(
        default_factory=lambda: time.strftime("%Y/%m/%d/[$LATEST]0123456789abcdef", time.gmtime())
    )
    """Lambda's stream name: the date the environment started, then its version and id."""
    timeout_seconds: float = 20.0
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (self.clock() - self.started)) * 1000))


@dataclass
class Sandbox:
    zim: ZimStandIn
    secret_arn: str
    dlq_url: str
    queue_url: str
    environ: dict[str, str]
    backoff: InstantBackoff | None = None
    """The function's retry backoff, skipped but counted as time spent; None: real sleeps."""
    function: Function = field(init=False)
    """The function as one execution environment of Lambda would run it here (handler/wiring.py)."""

    def __post_init__(self) -> None:
        self.rewire()

    def rewire(self, environ: Mapping[str, str] | None = None, **parts: Any) -> Function:
        """A new execution environment: the function built afresh, from the sandbox's environment (with `environ`
        laid over it) and its backoff, and any other `Parts` given (a retry policy, the circuit's threshold)."""
        from handler.wiring import Function, Parts

        forget_circuit_counters()
        if self.backoff is not None:
            parts.setdefault("retry_sleep", self.backoff.sleep)
        self.function = Function(Parts(environ={**self.environ, **(environ or {})}, **parts))
        return self.function

    def handler(self, event: Any, context: LambdaContext) -> Any:
        """The Lambda handler of the sandbox's function, as the runtime calls it."""
        from handler.app import handler_for

        return handler_for(lambda: self.function)(event, context)

    def context(self, timeout_seconds: float = 20.0) -> LambdaContext:
        """A fresh Lambda context, on a clock that counts the backoff the sandbox skips."""
        clock = self.backoff.clock() if self.backoff is not None else time.monotonic
        return LambdaContext(timeout_seconds=timeout_seconds, clock=clock)

    def parked(self) -> list[dict[str, Any]]:
        """Every message in the dead-letter queue (received, then deleted so a second call does not see it)."""
        return self._drain(self.dlq_url)

    def deferred(self) -> list[dict[str, Any]]:
        """Every message the function sent again to the kickout queue, once its delay is over; received and deleted."""
        from handler.entry.redelivery import DEFER_DELAY_SECONDS

        time.sleep(DEFER_DELAY_SECONDS + 0.1)
        return self._drain(self.queue_url)

    @staticmethod
    def _drain(queue_url: str) -> list[dict[str, Any]]:
        return drained(boto3.client("sqs", region_name=REGION), queue_url)

    def put_secret(self, secret_string: str) -> None:
        boto3.client("secretsmanager", region_name=REGION).put_secret_value(
            SecretId=self.secret_arn, SecretString=secret_string
        )


@cache
def _template() -> dict[str, Any]:
    from cfnlint.decode import cfn_yaml

    template: dict[str, Any] = cfn_yaml.load(str(Path(__file__).resolve().parent.parent / "template.yaml"))
    return template


def _resolved(value: Any) -> Any:
    """`!Ref Parameter` (at any depth) replaced by the parameter's default: what a deploy with defaults gets."""
    if isinstance(value, dict):
        if set(value) == {"Ref"} and value["Ref"] in _template()["Parameters"]:
            return _template()["Parameters"][value["Ref"]]["Default"]
        return {key: _resolved(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolved(item) for item in value]
    return value


def template_queue() -> dict[str, Any]:
    """KickoutQueue's properties in template.yaml (VisibilityTimeout, RedrivePolicy), for queues made like it."""
    properties: dict[str, Any] = _resolved(_template()["Resources"]["KickoutQueue"]["Properties"])
    return properties


def template_event_source() -> dict[str, Any]:
    """The queue's event source mapping in template.yaml (BatchSize, MaximumBatchingWindowInSeconds, ScalingConfig),
    each parameter at its default: 1000 messages and 1 s today."""
    (mapping,) = (
        resource["Properties"]
        for resource in _template()["Resources"].values()
        if resource["Type"] == "AWS::Lambda::EventSourceMapping"
    )
    properties: dict[str, Any] = _resolved(mapping)
    return properties


def template_function_timeout() -> float:
    """KickoutFunction's Timeout in template.yaml, seconds (60 today)."""
    function = {**_template()["Globals"]["Function"], **_template()["Resources"]["KickoutFunction"]["Properties"]}
    return float(_resolved(function["Timeout"]))


def make_like_template_queue(sqs: Any, queue_url: str, dlq_url: str) -> str:
    """Give a queue KickoutQueue's VisibilityTimeout and RedrivePolicy (to `dlq_url`, after maxReceiveCount
    receives: moto moves the message itself); its ARN."""
    properties = template_queue()

    def arn(url: str) -> str:
        found: str = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return found

    redrive = {"deadLetterTargetArn": arn(dlq_url), "maxReceiveCount": properties["RedrivePolicy"]["maxReceiveCount"]}
    sqs.set_queue_attributes(
        QueueUrl=queue_url,
        Attributes={"VisibilityTimeout": str(properties["VisibilityTimeout"]), "RedrivePolicy": json.dumps(redrive)},
    )
    return arn(queue_url)


def create_state_table(dynamodb: Any, name: str = STATE_TABLE) -> str:
    """The template's KickoutStateTable: key `id`, on demand, and its index of keep-outs by room."""
    dynamodb.create_table(
        TableName=name,
        AttributeDefinitions=[
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "room_key", "AttributeType": "S"},
            {"AttributeName": "user_id", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "KeepOutsByRoom",
                "KeySchema": [
                    {"AttributeName": "room_key", "KeyType": "HASH"},
                    {"AttributeName": "user_id", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def function_environment(
    *, endpoint: str, secret_arn: str, dlq_url: str, queue_url: str, rate_limit_per_second: float = 1000.0
) -> dict[str, str]:
    """The variables template.yaml gives the function, plus fake credentials for moto.

    ZEGO's limit defaults to 1000/s here, so that tests of other things are not held to ZEGO's 20/s.
    """
    return {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_SERVICE_NAME": "kickout",
        "POWERTOOLS_METRICS_NAMESPACE": "Kickout",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "ZEGO_APP_ID": str(APP_ID),
        "ZEGO_SECRET_ID": secret_arn,
        "ZEGO_API_ENDPOINT": endpoint,
        "KICKOUT_DLQ_URL": dlq_url,
        "KICKOUT_QUEUE_URL": queue_url,
        "KICKOUT_STATE_TABLE": STATE_TABLE,
        "ZEGO_RATE_LIMIT_PER_SECOND": str(rate_limit_per_second),
        # Ten environments at most: alone, each paces itself at a tenth of the budget while its table fails.
        "KICKOUT_RESERVED_CONCURRENCY": "10",
    }


def forget_circuit_counters() -> None:
    """Powertools keeps each circuit's failure streak per process (one execution environment): start afresh."""
    from aws_lambda_powertools.utilities.circuit_breaker import base

    with base._COUNTERS_LOCK:
        base._LOCAL_FAILURES.clear()
        base._LOCAL_SUCCESSES.clear()
        base._LAST_OBSERVED_STATE.clear()


@contextmanager
def sandbox(
    *,
    rooms: dict[str, set[str]] | None = None,
    secret_string: str | None = None,
    max_requests_per_second: int | None = None,
    rate_limit_per_second: float = 1000.0,
    instant_backoff: bool = False,
) -> Iterator[Sandbox]:
    """The function's world on this machine; with `instant_backoff`, its retries do not wait (kickout_dev.clock)."""
    saved = dict(os.environ)
    backoff = InstantBackoff() if instant_backoff else None
    os.environ.update(
        {"AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    )
    make_moto_like_aws()
    try:
        with (
            mock_aws(),
            ZimStandIn(APP_ID, SERVER_SECRET, rooms=rooms, max_requests_per_second=max_requests_per_second) as zim,
        ):
            secret_arn = boto3.client("secretsmanager", region_name=REGION).create_secret(
                Name=SECRET_NAME,
                SecretString=secret_string
                if secret_string is not None
                else json.dumps({"ServerSecret": SERVER_SECRET}),
            )["ARN"]
            sqs = boto3.client("sqs", region_name=REGION)
            dlq_url = sqs.create_queue(QueueName="kickout-dlq")["QueueUrl"]
            queue_url = sqs.create_queue(QueueName="kickout-queue")["QueueUrl"]
            create_state_table(boto3.client("dynamodb", region_name=REGION))
            environ = function_environment(
                endpoint=zim.url,
                secret_arn=secret_arn,
                dlq_url=dlq_url,
                queue_url=queue_url,
                rate_limit_per_second=rate_limit_per_second,
            )
            os.environ.update(environ)  # for boto3's own clients and Powertools; the function reads `environ`
            yield Sandbox(
                zim=zim, secret_arn=secret_arn, dlq_url=dlq_url, queue_url=queue_url, environ=environ, backoff=backoff
            )
    finally:
        os.environ.clear()
        os.environ.update(saved)
        forget_circuit_counters()
