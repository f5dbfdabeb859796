"""The function's configuration: environment variables, validated once, before any work."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

DEFAULT_ENDPOINT = "https://zim-api.zego.im/"
DEFAULT_ZEGO_RATE_LIMIT = 20.0
"""ZEGO's KickoutRoomUser limit per AppId, calls per second."""
DEFAULT_IDEMPOTENCY_KEY_SECONDS = 24 * 60 * 60
"""How long the answer to a request with an Idempotency-Key is kept (the template's IdempotencyKeySeconds)."""
MAX_IDEMPOTENCY_KEY_SECONDS = 7 * 24 * 60 * 60
API_DEADLINE_SECONDS = 28.0
"""API Gateway gives up on an integration after 29 s, whatever the function's own timeout: the API answers before."""


class ConfigurationError(Exception):
    """An environment variable is missing or malformed; the message names it."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _checked_endpoint(url: str) -> str:
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError("must be an absolute URL such as https://zim-api.zego.im/")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError("must use https (plain http is allowed for loopback test servers only)")
    if parts.scheme not in ("https", "http"):
        raise ValueError("must use https")
    if "?" in url or "#" in url:
        raise ValueError("must not carry a query or fragment")
    return url


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    app_id: Annotated[int, Field(gt=0, lt=2**32)]
    secret_id: Annotated[str, Field(min_length=1)]
    endpoint: Annotated[str, AfterValidator(_checked_endpoint)] = DEFAULT_ENDPOINT
    dlq_url: Annotated[str, Field(min_length=1)] | None = None
    queue_url: Annotated[str, Field(min_length=1)] | None = None
    state_table: Annotated[str, Field(min_length=3, max_length=255)]
    zego_rate_limit: Annotated[float, Field(gt=0, le=1000)] = DEFAULT_ZEGO_RATE_LIMIT
    # What bounds how many environments run at once (the template's parameters of the same names).
    queue_maximum_concurrency: Annotated[int, Field(ge=1, le=10_000)] = 2
    reserved_concurrency: Annotated[int, Field(ge=0, le=100_000)] = 0
    api_rate_limit: Annotated[float, Field(gt=0, le=100_000)] = 2.0
    api_burst_limit: Annotated[int, Field(ge=0, le=100_000)] = 2
    idempotency_key_seconds: Annotated[int, Field(ge=60, le=MAX_IDEMPOTENCY_KEY_SECONDS)] = (
        DEFAULT_IDEMPOTENCY_KEY_SECONDS
    )

    @property
    def max_environments(self) -> int:
        """The most execution environments of the function that can run at once, from what the template limits.

        Reserved concurrency caps the whole function. Without it, the queue runs at most its event source's
        MaximumConcurrency, and the API at most as many as the stage's throttle lets requests start within the
        API's deadline (its burst, then its rate for 28 s): each runs one request at a time. Direct invokes are
        not bounded by the template; set ReservedConcurrency where they are many (docs/failure-handling.md).
        """
        if self.reserved_concurrency:
            return self.reserved_concurrency
        api = self.api_burst_limit + math.ceil(self.api_rate_limit * API_DEADLINE_SECONDS)
        return self.queue_maximum_concurrency + api


_VARIABLES = {
    "app_id": "ZEGO_APP_ID",
    "secret_id": "ZEGO_SECRET_ID",
    "endpoint": "ZEGO_API_ENDPOINT",
    "dlq_url": "KICKOUT_DLQ_URL",
    "queue_url": "KICKOUT_QUEUE_URL",
    "state_table": "KICKOUT_STATE_TABLE",
    "zego_rate_limit": "ZEGO_RATE_LIMIT_PER_SECOND",
    "queue_maximum_concurrency": "KICKOUT_QUEUE_MAXIMUM_CONCURRENCY",
    "reserved_concurrency": "KICKOUT_RESERVED_CONCURRENCY",
    "api_rate_limit": "KICKOUT_API_RATE_LIMIT",
    "api_burst_limit": "KICKOUT_API_BURST_LIMIT",
    "idempotency_key_seconds": "KICKOUT_IDEMPOTENCY_KEY_SECONDS",
}


def settings_from(environ: Mapping[str, str]) -> Settings:
    values = {field: environ[name] for field, name in _VARIABLES.items() if environ.get(name)}
    try:
        return Settings.model_validate(values)
    except ValidationError as error:
        problems = "; ".join(
            f"{_VARIABLES.get(str(issue['loc'][0]), issue['loc'][0])}: {_describe(issue)}" for issue in error.errors()
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from None


def _describe(issue: Mapping[str, object]) -> str:
    if issue["type"] == "missing":
        return "is not set"
    return str(issue["msg"]).removeprefix("Value error, ")
