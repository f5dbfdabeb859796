"""The ports the core is given: how a signed URL is sent, how ZEGO's rate and health are respected, how an answer
is kept for its Idempotency-Key.

The adapters (transport, secret, budget, pacing, health) implement them; the core (zim_client) only calls them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from handler.core.deadline import Deadline


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    body: bytes


class TransportFailure(Exception):
    """The request may or may not have reached ZEGO: a timeout or a broken connection."""

    def __init__(self, detail: str, *, timed_out: bool) -> None:
        super().__init__(detail)
        self.timed_out = timed_out


class RateGate(Protocol):
    """Spaces ZEGO calls within ZEGO's rate limit (the fleet's budget, or a local pace)."""

    def acquire(self, max_wait: float) -> bool:
        """Wait for this call's turn; False when it would come later than `max_wait` seconds."""
        ...

    def expect(self, calls: int) -> None:
        """`calls` calls of one request are about to ask at once: the next booking takes slots for them all."""
        ...

    def slow_down(self) -> None:
        """ZEGO answered "over the rate limit"."""
        ...

    def speed_up(self) -> None:
        """ZEGO answered a call."""
        ...


Send = Callable[[str, float], HttpReply]
"""send(url, timeout_seconds) -> HttpReply; raises TransportFailure."""
ReadSecret = Callable[[bool, Deadline], str]
"""read_secret(force_fetch, deadline) -> ServerSecret; raises SecretUnavailable, or OutOfTime when a fetch would not
end by the deadline."""

Outcome = TypeVar("Outcome")


class ZegoUnwell(Exception):
    """Raised inside a guarded attempt whose outcome says ZEGO is not serving: down, failing, or refusing for rate.

    The health guard counts it against ZEGO's health; ZimClient unwraps `outcome` and goes on as without a guard.
    """

    def __init__(self, outcome: object) -> None:
        super().__init__("ZEGO is not serving")
        self.outcome = outcome


class Health(Protocol):
    """The fleet's view of ZEGO's health (a circuit breaker): every attempt runs through `guard`."""

    def guard(self, attempt: Callable[[], Outcome], deadline: Deadline) -> Outcome:
        """Run `attempt`, or raise ZegoCircuitOpen without running it while the fleet knows ZEGO is down.

        An attempt that raises ZegoUnwell counts against ZEGO's health (and is re-raised); one that returns, for it;
        one that raises anything else (OutOfTime: no time was left to send it) counts neither way, and is re-raised.
        What the guard itself reads or writes of the fleet's view must end by `deadline`.
        """
        ...


class AlwaysCall:
    """No shared view of ZEGO's health: every attempt is made."""

    def guard(self, attempt: Callable[[], Outcome], deadline: Deadline) -> Outcome:
        return attempt()


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer as sent: its status and its body's JSON text."""

    status: int
    body: str
    replayed: bool = False
    """Kept from the key's first request, not carried out now."""


class KeyInUse(Exception):
    """The key's first request is still being carried out."""


class KeyReused(Exception):
    """The key was first sent with another payload."""


class KeptAnswers(Protocol):
    """The answers of requests sent with an Idempotency-Key (fleet.idempotency)."""

    def once(self, *, scope: str, key: str, payload: Any, work: Callable[[], Answer], deadline: Deadline) -> Answer:
        """`work`'s answer, or the one kept for (`scope`, `key`) when it was first sent with this `payload`.

        Raises KeyInUse, KeyReused, or what `work` raises (nothing is kept then). What it reads or writes must end
        by `deadline`.
        """
        ...
