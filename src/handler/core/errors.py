"""What goes wrong in a kickout: each failure the entry points map to a response, a parked message or a retry.

Pure: raised by the core (zim_client, kickout) and by the adapters it is given (secret); no I/O.
"""

from __future__ import annotations

from handler.core.models import CallReport
from handler.zego import zim


class KickoutError(Exception):
    """Base of every failure the entry points map to a response, a parked message or a retry."""

    completed: list[CallReport]
    """The calls of the same request that ZEGO had already answered when this one failed (more than 50 users)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.completed = []


class ZegoRefused(KickoutError):
    """ZEGO refused for good (the return-code table's 'permanent'): retrying cannot help."""

    def __init__(self, detail: str, reply: zim.Reply) -> None:
        super().__init__(f"{detail} (ZEGO Code {reply.code}: {reply.message})")
        self.detail = detail
        self.reply = reply


class ZegoUnavailable(KickoutError):
    """Still failing after the retries the remaining time allowed; a later attempt may succeed."""

    def __init__(
        self, detail: str, *, reply: zim.Reply | None = None, timed_out: bool = False, rate_limited: bool = False
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.reply = reply
        self.timed_out = timed_out
        self.rate_limited = rate_limited


class ZegoCircuitOpen(ZegoUnavailable):
    """The fleet has seen ZEGO failing and stopped calling it for a while (its circuit is open): ZEGO was not asked.

    `retry_after` is the number of seconds until the fleet's next probe of ZEGO may be made.
    """

    def __init__(self, detail: str, *, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class OutOfTime(KickoutError):
    """The function's own limits left no room to call ZEGO: the invocation's deadline, or no pacing slot before it.

    ZEGO was not asked, so this says nothing about ZEGO; a later delivery will have the time.
    """


class SecretUnavailable(KickoutError):
    """The ServerSecret could not be read; nothing can be signed."""
