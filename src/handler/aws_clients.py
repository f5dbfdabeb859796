"""AWS clients of this execution environment, created on first use, with calls bounded in time.

botocore's defaults (60 s to connect, 60 s to read, legacy retries) would let a slow Secrets Manager or SQS
outlast the invocation: Lambda would kill it mid-batch. Two tries of a few seconds each fail in time for the
function to report the failure itself.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Final

import boto3
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_sqs.client import SQSClient

CLIENT_CONFIG: Final = Config(connect_timeout=2, read_timeout=3, retries={"mode": "standard", "max_attempts": 2})


@cache
def secrets_provider() -> SecretsProvider:
    """Powertools' Secrets Manager provider (it holds the cache) on a bounded client."""
    return SecretsProvider(boto_config=CLIENT_CONFIG)


@cache
def sqs() -> SQSClient:
    # Created on first use: most invocations never park a message, and a client costs cold-start time.
    return boto3.client("sqs", config=CLIENT_CONFIG)


@cache
def dynamodb() -> DynamoDBClient:
    """The fleet's shared state (KICKOUT_STATE_TABLE); created on the first call that needs it."""
    return boto3.client("dynamodb", config=CLIENT_CONFIG)
