"""The ZEGO ServerSecret from AWS Secrets Manager, cached by Powertools' parameters utility."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Final

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from botocore.exceptions import BotoCoreError, ClientError

from handler.aws import clients
from handler.aws.observability import tracer
from handler.core.deadline import Deadline
from handler.core.errors import OutOfTime, SecretUnavailable

CACHE_SECONDS: Final = 300
"""A rotated secret is picked up within five minutes, or at once when ZEGO rejects a signature."""


FORCED_READ_SHARED_SECONDS: Final = 2.0
"""Calls refused together for a rotated secret share one forced read."""
FAILURE_SHARED_SECONDS: Final = 2.0
"""Calls waiting on a fetch that failed share its failure (ten threads must not each wait out a slow service)."""


@dataclass
class _Reads:
    """When the secret was last fetched, beside Powertools' cache that holds it.

    The calls of a batch run on threads: without the lock each would miss an empty cache and fetch on its own (ten
    boto3 clients and ten GetSecretValue calls on a cold start); with it one fetches and the rest hit the cache.
    Knowing when the cache is fresh also keeps cache hits out of the trace: only real fetches get a subsegment.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    fetched_at: float = float("-inf")
    forced_at: float = float("-inf")
    failure: SecretUnavailable | None = None
    """The last fetch's failure, handed to the calls that waited for it rather than each fetching again."""
    failed_at: float = float("-inf")


@dataclass
class ServerSecret:
    """This environment's ZEGO ServerSecret: secret `secret_id`, read through Powertools' cached `provider`."""

    secret_id: str
    provider: SecretsProvider
    _reads: _Reads = field(default_factory=_Reads)

    def read(self, force_fetch: bool = False, deadline: Deadline | None = None) -> str:
        """The ServerSecret, from the cache while it is fresh; a fetch starts only when `deadline` leaves it time."""
        return server_secret_from(self._read(force_fetch, deadline))

    def read_callback_secret(self, deadline: Deadline | None = None) -> str:
        """The secret ZIM's callbacks are signed with: the same secret's `CallbackSecret` key, else the ServerSecret."""
        return callback_secret_from(self._read(False, deadline))

    def _read(self, force_fetch: bool, deadline: Deadline | None) -> str | bytes:
        reads = self._reads
        with reads.lock:
            now = time.monotonic()
            force_fetch = force_fetch and now - reads.forced_at > FORCED_READ_SHARED_SECONDS
            if not force_fetch and now - reads.fetched_at < CACHE_SECONDS:
                raw = self._get(force_fetch=False)
            elif reads.failure is not None and now - reads.failed_at < FAILURE_SHARED_SECONDS:
                raise reads.failure
            elif deadline is not None and not deadline.allows(clients.SECRETS_MANAGER.worst_seconds):
                raise OutOfTime("no time left in this invocation to read the ServerSecret")
            else:
                try:
                    with tracer.provider.in_subsegment("## read ServerSecret"):
                        raw = self._get(force_fetch=force_fetch)
                except SecretUnavailable as failure:
                    reads.failure, reads.failed_at = failure, time.monotonic()
                    raise
                reads.fetched_at, reads.failure = now, None
                reads.forced_at = now if force_fetch else reads.forced_at
        return raw

    def _get(self, *, force_fetch: bool) -> str | bytes:
        try:
            value = self.provider.get(self.secret_id, max_age=CACHE_SECONDS, force_fetch=force_fetch)
        except (parameters.exceptions.GetParameterError, BotoCoreError, ClientError) as error:
            cause = error.__context__ if isinstance(error.__context__, ClientError) else error
            code = cause.response["Error"]["Code"] if isinstance(cause, ClientError) else type(cause).__name__
            raise SecretUnavailable(f"the ServerSecret could not be read from Secrets Manager ({code})") from None
        if not isinstance(value, str | bytes):
            raise SecretUnavailable("the secret has no SecretString")
        return value


def server_secret_from(stored: str | bytes) -> str:
    """Accept both shapes users store: the bare ServerSecret, or JSON `{"ServerSecret": "..."}`; as text or binary."""
    if isinstance(stored, bytes):
        try:
            stored = stored.decode()
        except UnicodeDecodeError:
            raise SecretUnavailable("the secret is binary and not UTF-8 text") from None
    text = stored.strip()
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            raise SecretUnavailable("the secret looks like JSON but does not parse") from None
        value = document.get("ServerSecret") if isinstance(document, dict) else None
        if not isinstance(value, str):
            raise SecretUnavailable('the secret is JSON without a string "ServerSecret" key')
        text = value.strip()
    if not text:
        raise SecretUnavailable("the secret is empty")
    return text


def callback_secret_from(secret_string: str | bytes) -> str:
    """ZEGO's docs name a CallbackSecret, while their console steps point at the ServerSecret: a JSON secret's
    string `CallbackSecret` key when it has one, else the ServerSecret."""
    text = secret_string.decode(errors="replace") if isinstance(secret_string, bytes) else secret_string
    if text.strip().startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            document = None
        value = document.get("CallbackSecret") if isinstance(document, dict) else None
        if isinstance(value, str) and value.strip():
            return value.strip()
    return server_secret_from(secret_string)
