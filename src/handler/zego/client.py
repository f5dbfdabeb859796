"""One ZEGO KickoutRoomUser call and its retry policy (the return-code table's), given send, secret, clock and budget.

Pure: knows nothing of AWS, boto3 or urllib3; every effect comes through a port handed in.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from handler.core.deadline import Deadline
from handler.core.errors import OutOfTime, ZegoCircuitOpen, ZegoRefused, ZegoUnavailable
from handler.core.ports import AlwaysCall, Health, RateGate, ReadSecret, Send, TransportFailure, ZegoUnwell
from handler.zego import zim


@dataclass(frozen=True, slots=True)
class _Failure:
    detail: str
    reply: zim.Reply | None = None
    timed_out: bool = False
    rate_limited: bool = False

    def unavailable_after(self, attempts: int) -> ZegoUnavailable:
        """The error that ends the call once `attempts` attempts have failed, the last with this failure."""
        return ZegoUnavailable(
            f"{self.detail}; gave up after {attempts} attempts",
            reply=self.reply,
            timed_out=self.timed_out,
            rate_limited=self.rate_limited,
        )


@dataclass(frozen=True, slots=True)
class _Final:
    """ZEGO's answer settles the call: the users are kicked, or there is nothing to do."""

    reply: zim.Reply


@dataclass(frozen=True, slots=True)
class _GoAgain:
    """Sign again and send at once: no backoff, no attempt spent on ZEGO being unwell."""

    fresh_secret: bool
    """Read the ServerSecret past the cache first (ZEGO rejected the signature)."""


_Verdict = _Final | _GoAgain | _Failure
"""What one attempt's outcome means for the call: done, go again at once, or back off from a failure."""


@dataclass(slots=True)
class _RetryState:
    attempts: int = 0
    resigned: bool = False
    secret_reread: bool = False
    force_secret: bool = False
    """Read the secret past the cache on the next attempt only (the one right after a rejected signature)."""
    last_failure: _Failure | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 2.0
    request_timeout: float = 5.0
    safety_margin: float = 1.5
    """Seconds kept free before the Lambda deadline, to report, park a message and flush metrics."""
    min_request_time: float = 0.5


@dataclass(slots=True)
class ZimClient:
    """Sends one KickoutRoomUser call, applying the retry policy of the return-code table."""

    endpoint: str
    app_id: int
    read_secret: ReadSecret
    send: Send
    deadline: Deadline
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    now: Callable[[], float] = time.time
    new_nonce: Callable[[], str] = lambda: secrets.token_hex(8)
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[], float] = random.random
    pacer: RateGate | None = None
    """Spaces the calls within ZEGO's rate limit; None sends at once."""
    health: Health = field(default_factory=AlwaysCall)

    def call(self, call: zim.KickoutCall) -> zim.Reply:
        """ZEGO's answer to `call` once final (done, or nothing to do); raises KickoutError when it cannot be had."""
        state = _RetryState()
        while True:
            state.attempts += 1
            # The secret first: a missing secret must not spend a pacing slot.
            server_secret = self.read_secret(state.force_secret, self.deadline)
            state.force_secret = False
            try:
                self._wait_for_turn()
                outcome = self._guarded_attempt(call, server_secret, state=state)
            except OutOfTime:
                if state.last_failure is None:
                    raise
                # ZEGO was asked already: what it said is the news, not that there is no time for another try.
                raise state.last_failure.unavailable_after(state.attempts - 1) from None
            self._adjust_pace(outcome)
            match self._judge(outcome, state):
                case _Final(reply=reply):
                    return reply
                case _GoAgain(fresh_secret=fresh_secret):
                    state.force_secret = fresh_secret
                case _Failure() as failure:
                    # Transient, rate limited or a transport failure. Kicking is idempotent (a user kicked twice is
                    # simply not in the room the second time), so retrying a call that may have reached ZEGO is safe.
                    state.last_failure = failure
                    delay = self._backoff(state.attempts)
                    time_left = self.deadline.remaining() - self.policy.safety_margin
                    if state.attempts >= self.policy.max_attempts or delay + self.policy.min_request_time > time_left:
                        raise failure.unavailable_after(state.attempts)
                    self.sleep(delay)

    def expect(self, calls: int) -> None:
        """`calls` calls are about to be made at once, side by side: their slots are booked as one block."""
        if self.pacer is not None:
            self.pacer.expect(calls)

    def _wait_for_turn(self) -> None:
        """Wait for a pacing slot that leaves time for a request before the invocation's deadline."""
        time_left = self.deadline.remaining() - self.policy.safety_margin
        if time_left < self.policy.min_request_time:
            raise OutOfTime("no time left in this invocation to call ZEGO")
        if self.pacer is not None and not self.pacer.acquire(max_wait=time_left - self.policy.min_request_time):
            raise OutOfTime("no slot in ZEGO's rate budget before the deadline")

    def _request_timeout(self) -> float:
        """The time the request about to be sent may take: read off the deadline now, at the send, not before the
        pacing slot and the circuit's read (on a slow store or a starved CPU they take time of their own).

        Less than `min_request_time` is no request: OutOfTime, ZEGO not asked, nothing for its health to count (a
        timeout that short would say only that this invocation ran out of time).
        """
        time_left = self.deadline.remaining() - self.policy.safety_margin
        if time_left < self.policy.min_request_time:
            raise OutOfTime("no time left in this invocation to call ZEGO once its turn came")
        return min(self.policy.request_timeout, time_left)

    @staticmethod
    def _judge(outcome: zim.Reply | _Failure, state: _RetryState) -> _Verdict:
        """What an attempt's outcome means for the call (the return-code table); raises when it is hopeless."""
        if isinstance(outcome, _Failure):
            return outcome
        reply = outcome
        match reply.code_class:
            case zim.CodeClass.DONE | zim.CodeClass.NOTHING_TO_DO:
                return _Final(reply)
            case zim.CodeClass.PERMANENT:
                raise ZegoRefused("ZEGO refused the kickout", reply)
            case zim.CodeClass.RESIGN if not state.resigned:
                state.resigned = True
                return _GoAgain(fresh_secret=False)
            case zim.CodeClass.RESIGN:
                # A fresh signature expired again: the clock is off by over 10 minutes. Retrying here cannot help;
                # hand it back as transient so a later delivery (maybe on another machine) tries again.
                raise ZegoUnavailable(
                    "ZEGO says a fresh signature expired: this machine's clock is off by over 10 minutes", reply=reply
                )
            case zim.CodeClass.REREAD_SECRET if not state.secret_reread:
                # The secret may have been rotated since it was cached: read it again, once.
                state.secret_reread = True
                return _GoAgain(fresh_secret=True)
            case zim.CodeClass.REREAD_SECRET:
                raise ZegoRefused("ZEGO rejects the signature: the ServerSecret or the AppId is wrong", reply)
        return _Failure(
            f"ZEGO answered Code {reply.code}",
            reply=reply,
            rate_limited=reply.code_class is zim.CodeClass.RATE_LIMITED,
        )

    def _guarded_attempt(
        self, call: zim.KickoutCall, server_secret: str, *, state: _RetryState
    ) -> zim.Reply | _Failure:
        """One attempt through the health guard; raises ZegoCircuitOpen (or the last failure) when the fleet waits,
        and OutOfTime when no time is left to send it (the guard counts neither: ZEGO was not asked)."""

        def attempt() -> zim.Reply | _Failure:
            timeout = self._request_timeout()
            outcome = self._attempt(call, server_secret, timeout=timeout)
            if isinstance(outcome, _Failure) and outcome.timed_out and timeout < self.policy.request_timeout:
                # Cut short by this invocation's deadline: that ZEGO did not answer in the time left says as much of
                # this invocation (a slow store, a starved CPU spent its time) as of ZEGO. Neither way, then.
                raise _Unjudged(outcome)
            if _unwell(outcome):
                raise ZegoUnwell(outcome)
            return outcome

        try:
            return self.health.guard(attempt, self.deadline)
        except ZegoUnwell as unwell:
            return cast("zim.Reply | _Failure", unwell.outcome)
        except _Unjudged as unjudged:
            return unjudged.outcome
        except ZegoCircuitOpen:
            if state.last_failure is None:
                raise
            # This request asked ZEGO already (maybe its failure tripped the circuit): what ZEGO said is the news.
            raise state.last_failure.unavailable_after(state.attempts - 1) from None

    def _attempt(self, call: zim.KickoutCall, server_secret: str, *, timeout: float) -> zim.Reply | _Failure:
        # Every attempt is a new signed request: fresh nonce, fresh timestamp.
        url = zim.kickout_url(
            self.endpoint,
            call,
            app_id=self.app_id,
            server_secret=server_secret,
            nonce=self.new_nonce(),
            timestamp=int(self.now()),
        )
        try:
            http = self.send(url, timeout)
        except TransportFailure as failure:
            return _Failure(str(failure), timed_out=failure.timed_out)
        if http.status != 200:
            return _Failure(f"ZEGO answered HTTP {http.status}", rate_limited=http.status == 429)
        try:
            return zim.parse_reply(http.body)
        except zim.MalformedReply as error:
            return _Failure(str(error))

    def _adjust_pace(self, outcome: zim.Reply | _Failure) -> None:
        """Slower on any rate-limit answer (a ZEGO code or HTTP 429), faster again on each answered call."""
        if self.pacer is None:
            return
        if isinstance(outcome, _Failure):
            if outcome.rate_limited:
                self.pacer.slow_down()
        elif outcome.code_class is zim.CodeClass.RATE_LIMITED:
            self.pacer.slow_down()
        elif outcome.code_class in (zim.CodeClass.DONE, zim.CodeClass.NOTHING_TO_DO):
            self.pacer.speed_up()

    def _backoff(self, attempts: int) -> float:
        """Full jitter (AWS Architecture Blog, 'Exponential Backoff And Jitter')."""
        ceiling: float = min(self.policy.max_delay, self.policy.base_delay * 2 ** (attempts - 1))
        return self.jitter() * ceiling


class _Unjudged(Exception):
    """Raised inside a guarded attempt whose outcome says nothing of ZEGO's health: the guard counts it neither way."""

    def __init__(self, outcome: _Failure) -> None:
        super().__init__("not ZEGO's health")
        self.outcome = outcome


def _unwell(outcome: zim.Reply | _Failure) -> bool:
    """Whether an attempt says ZEGO is not serving: no answer, an HTTP error, a busy, failing or rate-limit code.

    Any other answer, a refusal included, comes from a ZEGO that works.
    """
    if isinstance(outcome, _Failure):
        return True
    return outcome.code_class in (zim.CodeClass.TRANSIENT, zim.CodeClass.RATE_LIMITED)
