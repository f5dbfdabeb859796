"""The ZEGO ServerSecret from AWS Secrets Manager, cached by Powertools' parameters utility."""

from __future__ import annotations

import json
from typing import Final

from aws_lambda_powertools.utilities import parameters
from botocore.exceptions import BotoCoreError, ClientError

from handler.kickout import SecretUnavailable
from handler.observability import tracer

CACHE_SECONDS: Final = 300
"""A rotated secret is picked up within five minutes, or at once when ZEGO rejects a signature."""


def read_server_secret(secret_id: str, force_fetch: bool = False) -> str:
    with tracer.provider.in_subsegment("## read ServerSecret"):
        try:
            raw = parameters.get_secret(secret_id, max_age=CACHE_SECONDS, force_fetch=force_fetch)
        except (parameters.exceptions.GetParameterError, BotoCoreError, ClientError) as error:
            cause = error.__context__ if isinstance(error.__context__, ClientError) else error
            code = cause.response["Error"]["Code"] if isinstance(cause, ClientError) else type(cause).__name__
            raise SecretUnavailable(f"the ServerSecret could not be read from Secrets Manager ({code})") from None
    return server_secret_from(raw)


def server_secret_from(secret_string: str) -> str:
    """Accept both shapes users store: the bare ServerSecret, or JSON `{"ServerSecret": "..."}`."""
    text = secret_string.strip()
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            raise SecretUnavailable("the secret looks like JSON but does not parse") from None
        value = document.get("ServerSecret") if isinstance(document, dict) else None
        if not isinstance(value, str):
            raise SecretUnavailable('the secret is JSON without a string "ServerSecret" key') from None
        text = value.strip()
    if not text:
        raise SecretUnavailable("the secret is empty")
    return text
