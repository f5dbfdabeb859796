"""Direct invoke (Step Functions, `sam local invoke`, the AWS CLI): the event is the kickout payload."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from handler.core.models import KickoutRequest, describe_invalid
from handler.entry import audit
from handler.entry.kickouts import Kickouts, deadline_of


class InvalidKickoutRequest(ValueError):
    """The payload breaks the rules; a Step Functions `Catch` can match this name."""


def handle(event: Any, context: LambdaContext, kickouts: Kickouts) -> dict[str, Any]:
    try:
        request = KickoutRequest.model_validate(event)
    except ValidationError as error:
        audit.record_failure(error, {})
        raise InvalidKickoutRequest(f"invalid kickout request: {describe_invalid(error)}") from None
    result = kickouts.kick_out(request, deadline_of(context))
    return result.model_dump(mode="json")
