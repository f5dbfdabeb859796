"""AWS clients, each call bounded in time (the composition root, handler/wiring.py, makes one of each on first use).

botocore's defaults (60 s to connect, 60 s to read, legacy retries) would let a slow Secrets Manager, DynamoDB or
SQS outlast the invocation: Lambda would kill it mid-batch. Each client here has timeouts and attempts whose worst
case (`CallBounds.worst_seconds`) is known, so a caller starts a call only when its deadline allows that much.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import boto3
import botocore.session
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_sqs.client import SQSClient

RETRY_BACKOFF_CEILING: Final = 1.0
"""botocore's standard retry mode waits at most random() x 2**(n - 1) s before its n-th retry: 1 s before the first."""


@dataclass(frozen=True, slots=True)
class CallBounds:
    connect: float
    read: float
    """Seconds for the connection, and for each read of the answer (AWS answers whole, it does not trickle)."""
    attempts: int

    @property
    def config(self) -> Config:
        return Config(
            connect_timeout=self.connect,
            read_timeout=self.read,
            retries={"mode": "standard", "total_max_attempts": self.attempts},
        )

    @property
    def worst_seconds(self) -> float:
        """The longest one call can take, its retries and their backoff included."""
        backoff: float = sum(RETRY_BACKOFF_CEILING * 2**retry for retry in range(self.attempts - 1))
        return self.attempts * (self.connect + self.read) + backoff


SECRETS_MANAGER: Final = CallBounds(connect=0.5, read=1.0, attempts=2)
"""Read once per environment and every 5 minutes (GetSecretValue answers in tens of ms): a retry is worth its time."""
DYNAMODB: Final = CallBounds(connect=1.0, read=1.0, attempts=2)
"""The budget's bookings and ZEGO's circuit: single-item calls that take milliseconds when DynamoDB is well."""
KEEP_OUTS: Final = CallBounds(connect=0.5, read=0.5, attempts=2)
"""A keep-out's conditional UpdateItem or GetItem, after ZEGO's answer: kept short (worst 3 s) so that one still fits
the end of a queue batch, on a client of its own so its writes never wait for the budget's connections."""
KEEP_OUT_CONNECTIONS: Final = 8
"""Keep-out writes in flight at once (each a few ms): a message of 500 users is recorded in about 60 round trips."""
SQS: Final = CallBounds(connect=0.5, read=1.0, attempts=1)
"""Parking, backoff and deferral, in batches: entries SQS refuses are retried by the caller when time allows, so the
client does not retry on its own and one call's worst case stays small enough to keep back at a batch's end."""


def renew_session() -> None:
    """boto3's default session made anew, keeping what its loader read (botocore's models, endpoints): the clients
    made from then on resolve credentials afresh. After a SnapStart restore the credentials of the snapshot's
    moment must not be reused by every clone. Measured here: the renewal and three clients 45-65 ms, against
    100-145 ms for three clients on a session made from nothing."""
    old = boto3.DEFAULT_SESSION
    fresh = botocore.session.Session()
    if old is not None:
        fresh.register_component("data_loader", old._session.get_component("data_loader"))
    boto3.setup_default_session(botocore_session=fresh)


def secrets_provider() -> SecretsProvider:
    """Powertools' Secrets Manager provider (it holds the cache) on a bounded client.

    The client is made here, on boto3's default session, which the other clients share: left to itself Powertools
    makes a session of its own, and a session loads botocore's endpoint and partition data afresh (60 ms of a cold
    start here, against 10 ms for a client on a session already loaded; and the memory of a second copy).
    """
    return SecretsProvider(boto3_client=boto3.client("secretsmanager", config=SECRETS_MANAGER.config))


def sqs() -> SQSClient:
    return boto3.client("sqs", config=SQS.config)


def dynamodb() -> DynamoDBClient:
    return boto3.client("dynamodb", config=DYNAMODB.config)


def keep_out_dynamodb() -> DynamoDBClient:
    """The keep-outs' own client: its pool holds as many connections as writes run at once."""
    config = KEEP_OUTS.config.merge(Config(max_pool_connections=KEEP_OUT_CONNECTIONS))
    return boto3.client("dynamodb", config=config)
