"""The function's configuration: environment variables, validated once, before any work."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from functools import cache
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

DEFAULT_ENDPOINT = "https://zim-api.zego.im/"
DEFAULT_FALLBACK_RATE_PER_SECOND = 1.9
"""This environment's pace while the budget's store fails: x the most environments it may run <= ZEGO's limit."""
DEFAULT_ZEGO_RATE_LIMIT = 20.0
"""ZEGO's KickoutRoomUser limit per AppId, calls per second."""


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
    fallback_rate_per_second: Annotated[float, Field(gt=0, le=1000)] = DEFAULT_FALLBACK_RATE_PER_SECOND
    zego_rate_limit: Annotated[float, Field(gt=0, le=1000)] = DEFAULT_ZEGO_RATE_LIMIT


_VARIABLES = {
    "app_id": "ZEGO_APP_ID",
    "secret_id": "ZEGO_SECRET_ID",
    "endpoint": "ZEGO_API_ENDPOINT",
    "dlq_url": "KICKOUT_DLQ_URL",
    "queue_url": "KICKOUT_QUEUE_URL",
    "state_table": "KICKOUT_STATE_TABLE",
    "fallback_rate_per_second": "KICKOUT_FALLBACK_RATE_PER_SECOND",
    "zego_rate_limit": "ZEGO_RATE_LIMIT_PER_SECOND",
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


@cache
def current() -> Settings:
    """The settings of this execution environment (read once; `current.cache_clear()` in tests)."""
    return settings_from(os.environ)
