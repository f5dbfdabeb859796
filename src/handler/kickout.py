"""The kickout itself: the request model, the plan of ZEGO calls, and carrying the plan out with retries.

Knows nothing of AWS events, boto3 or urllib3: it is handed the secret reader, a `send` callable, the clock
and the time left, so the same code serves the API, the queue and a direct invoke, and runs in unit tests
on plain values.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Protocol, TypeVar, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from handler import zim

MAX_USERS_PER_REQUEST: Final = 500
"""Ten ZEGO calls at most: at the fleet's share of ZEGO's 20 requests/s that still fits one invocation."""
MAX_REASON_CHARACTERS: Final = 1024

# ZEGO's allowed set for RoomId and UserId: ASCII letters, digits, `!#$%&()+-:;<=.>?@[]^_{}|~,` and space.
ZEGO_ID_PATTERN: Final = r"^[A-Za-z0-9!#$%&()+\-:;<=.>?@\[\]^_{}|~, ]+$"

ZegoId = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=ZEGO_ID_PATTERN)]


def _drop_duplicates(user_ids: list[str]) -> list[str]:
    return list(dict.fromkeys(user_ids))


class KickoutRequest(BaseModel):
    """One moderation decision: remove these users from this room."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    room_id: ZegoId
    user_ids: Annotated[
        list[ZegoId],
        Field(min_length=1, max_length=MAX_USERS_PER_REQUEST),
        AfterValidator(_drop_duplicates),
    ]
    reason: Annotated[str, Field(max_length=MAX_REASON_CHARACTERS)] | None = None
    operator_id: ZegoId | None = None


ID_RULE: Final = "1 to 32 characters: ASCII letters, digits, space and !#$%&()+-:;<=.>?@[]^_{}|~,"


MAX_PROBLEMS_SHOWN: Final = 20
"""A body of 100,000 unknown keys must not get an answer of 100,000 problems (Lambda caps responses at 6 MB)."""


def field_problems(issues: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Field and problem for each validation issue; never the input values (they may be huge or hostile)."""
    issues = list(issues)
    problems = []
    if len(issues) > MAX_PROBLEMS_SHOWN:
        hidden = len(issues) - MAX_PROBLEMS_SHOWN + 1
        issues = issues[: MAX_PROBLEMS_SHOWN - 1]
        problems_after = [{"field": "…", "problem": f"and {hidden} more problems"}]
    else:
        problems_after = []
    for issue in issues:
        # An unknown field's name is the caller's text: shown, so a typo is found, but never more than 40 characters.
        field_name = ".".join(str(part)[:40] for part in issue["loc"] if part != "body") or "body"
        problem = f"must be {ID_RULE}" if issue["type"] == "string_pattern_mismatch" else str(issue["msg"])
        problems.append({"field": field_name, "problem": problem})
    return problems + problems_after


def describe_invalid(error: ValidationError) -> str:
    return "; ".join(f"{problem['field']}: {problem['problem']}" for problem in field_problems(error.errors()))


@dataclass(frozen=True, slots=True)
class KickoutPlan:
    calls: tuple[zim.KickoutCall, ...]
    reason_truncated: bool


def plan(request: KickoutRequest) -> KickoutPlan:
    """Calls of at most 50 users each; the reason cut to ZEGO's 32 bytes at a character boundary."""
    reason = zim.truncate_utf8(request.reason) if request.reason else None
    calls = tuple(
        zim.KickoutCall(room_id=request.room_id, user_ids=users, reason=reason, operator_id=request.operator_id)
        for users in zim.chunk(request.user_ids)
    )
    return KickoutPlan(calls=calls, reason_truncated=bool(request.reason) and reason != request.reason)


class CallReport(BaseModel):
    """What ZEGO answered to one call of at most 50 users."""

    user_ids: list[str]
    code: int
    message: str
    request_id: str
    outcome: zim.CodeClass


class KickoutResult(BaseModel):
    """The answer to a kickout: the API's 200 body and a direct invoke's return value."""

    room_id: str
    kicked_user_ids: list[str]
    absent_user_ids: list[str] = Field(description="Users ZEGO reports as not in the room (or the room is gone).")
    request_ids: list[str] = Field(description="ZEGO's RequestId of each call, for support tickets.")
    reason_truncated: bool = Field(description="True when the reason was cut to ZEGO's 32 UTF-8 bytes.")
    calls: list[CallReport]

    @classmethod
    def from_calls(cls, room_id: str, calls: list[CallReport], *, reason_truncated: bool) -> KickoutResult:
        return cls(
            room_id=room_id,
            kicked_user_ids=[user for call in calls if call.outcome is zim.CodeClass.DONE for user in call.user_ids],
            absent_user_ids=[
                user for call in calls if call.outcome is zim.CodeClass.NOTHING_TO_DO for user in call.user_ids
            ],
            request_ids=[call.request_id for call in calls],
            reason_truncated=reason_truncated,
            calls=calls,
        )

    def for_users(self, user_ids: Sequence[str]) -> KickoutResult:
        """The part of a merged kickout that concerns `user_ids` (one message of a coalesced batch)."""
        wanted = set(user_ids)
        calls = [
            call.model_copy(update={"user_ids": [user for user in call.user_ids if user in wanted]})
            for call in self.calls
            if wanted.intersection(call.user_ids)
        ]
        return KickoutResult.from_calls(self.room_id, calls, reason_truncated=self.reason_truncated)


# --- failures -------------------------------------------------------------------------------------------------


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


# --- ports ------------------------------------------------------------------------------------------------------


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

    def slow_down(self) -> None:
        """ZEGO answered "over the rate limit"."""
        ...

    def speed_up(self) -> None:
        """ZEGO answered a call."""
        ...


Send = Callable[[str, float], HttpReply]
"""send(url, timeout_seconds) -> HttpReply; raises TransportFailure."""
ReadSecret = Callable[[bool], str]
"""read_secret(force_fetch) -> ServerSecret; raises SecretUnavailable."""

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

    def guard(self, attempt: Callable[[], Outcome]) -> Outcome:
        """Run `attempt`, or raise ZegoCircuitOpen without running it while the fleet knows ZEGO is down.

        An attempt that raises ZegoUnwell counts against ZEGO's health (and is re-raised); one that returns, for it.
        """
        ...


class AlwaysCall:
    """No shared view of ZEGO's health: every attempt is made."""

    def guard(self, attempt: Callable[[], Outcome]) -> Outcome:
        return attempt()


@dataclass(frozen=True, slots=True)
class _Failure:
    detail: str
    reply: zim.Reply | None = None
    timed_out: bool = False
    rate_limited: bool = False

    def giving_up(self, attempts: int) -> ZegoUnavailable:
        return ZegoUnavailable(
            f"{self.detail}; gave up after {attempts} attempts",
            reply=self.reply,
            timed_out=self.timed_out,
            rate_limited=self.rate_limited,
        )


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
    remaining_seconds: Callable[[], float]
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    now: Callable[[], float] = time.time
    new_nonce: Callable[[], str] = lambda: secrets.token_hex(8)
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[], float] = random.random
    pacer: RateGate | None = None
    """Spaces the calls within ZEGO's rate limit; None sends at once."""
    health: Health = field(default_factory=AlwaysCall)

    def kick(self, call: zim.KickoutCall) -> zim.Reply:
        state = _RetryState()
        while True:
            state.attempts += 1
            # The secret first: a missing secret must not spend a pacing slot.
            server_secret = self.read_secret(state.force_secret)
            state.force_secret = False
            try:
                timeout = self._wait_for_turn()
            except OutOfTime:
                if state.last_failure is None:
                    raise
                # ZEGO was asked already: what it said is the news, not that there is no time for another try.
                raise state.last_failure.giving_up(state.attempts - 1) from None
            outcome = self._guarded_attempt(call, server_secret, timeout=timeout, state=state)
            self._adjust_pace(outcome)
            if isinstance(outcome, zim.Reply):
                judged = self._judge(outcome, state)
                if judged is None:
                    continue  # re-sign or re-read the secret, and go again at once
                if isinstance(judged, zim.Reply):
                    return judged
                outcome = judged

            # Transient, rate limited or a transport failure. Kicking is idempotent (a user kicked twice is simply
            # not in the room the second time), so retrying a call that may already have reached ZEGO is safe.
            state.last_failure = outcome
            delay = self._backoff(state.attempts)
            time_left = self.remaining_seconds() - self.policy.safety_margin
            if state.attempts >= self.policy.max_attempts or delay + self.policy.min_request_time > time_left:
                raise outcome.giving_up(state.attempts)
            self.sleep(delay)

    def _wait_for_turn(self) -> float:
        """Wait for a pacing slot; the time the request may then take, within the invocation's deadline."""
        time_left = self.remaining_seconds() - self.policy.safety_margin
        if time_left < self.policy.min_request_time:
            raise OutOfTime("no time left in this invocation to call ZEGO")
        if self.pacer is not None:
            if not self.pacer.acquire(max_wait=time_left - self.policy.min_request_time):
                raise OutOfTime("no slot in ZEGO's rate budget before the deadline")
            time_left = self.remaining_seconds() - self.policy.safety_margin
        return min(self.policy.request_timeout, time_left)

    @staticmethod
    def _judge(reply: zim.Reply, state: _RetryState) -> zim.Reply | _Failure | None:
        """The reply if final, a failure to back off from, or None to go again at once; raises when hopeless."""
        match reply.code_class:
            case zim.CodeClass.DONE | zim.CodeClass.NOTHING_TO_DO:
                return reply
            case zim.CodeClass.PERMANENT:
                raise ZegoRefused("ZEGO refused the kickout", reply)
            case zim.CodeClass.RESIGN if not state.resigned:
                state.resigned = True
                return None
            case zim.CodeClass.RESIGN:
                # A fresh signature expired again: the clock is off by over 10 minutes. Retrying here cannot help;
                # hand it back as transient so a later delivery (maybe on another machine) tries again.
                raise ZegoUnavailable(
                    "ZEGO says a fresh signature expired: this machine's clock is off by over 10 minutes", reply=reply
                )
            case zim.CodeClass.REREAD_SECRET if not state.secret_reread:
                # The secret may have been rotated since it was cached: read it again, once.
                state.secret_reread = state.force_secret = True
                return None
            case zim.CodeClass.REREAD_SECRET:
                raise ZegoRefused("ZEGO rejects the signature: the ServerSecret or the AppId is wrong", reply)
        return _Failure(
            f"ZEGO answered Code {reply.code}",
            reply=reply,
            rate_limited=reply.code_class is zim.CodeClass.RATE_LIMITED,
        )

    def _guarded_attempt(
        self, call: zim.KickoutCall, server_secret: str, *, timeout: float, state: _RetryState
    ) -> zim.Reply | _Failure:
        """One attempt through the health guard; raises ZegoCircuitOpen (or the last failure) when the fleet waits."""

        def attempt() -> zim.Reply | _Failure:
            outcome = self._attempt(call, server_secret, timeout=timeout)
            if _unwell(outcome):
                raise ZegoUnwell(outcome)
            return outcome

        try:
            return self.health.guard(attempt)
        except ZegoUnwell as unwell:
            return cast("zim.Reply | _Failure", unwell.outcome)
        except ZegoCircuitOpen:
            if state.last_failure is None:
                raise
            # This request asked ZEGO already (maybe its failure tripped the circuit): what ZEGO said is the news.
            raise state.last_failure.giving_up(state.attempts - 1) from None

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


def _unwell(outcome: zim.Reply | _Failure) -> bool:
    """Whether an attempt says ZEGO is not serving: no answer, an HTTP error, a busy, failing or rate-limit code.

    Any other answer, a refusal included, comes from a ZEGO that works.
    """
    if isinstance(outcome, _Failure):
        return True
    return outcome.code_class in (zim.CodeClass.TRANSIENT, zim.CodeClass.RATE_LIMITED)


def kick(request: KickoutRequest, client: ZimClient) -> KickoutResult:
    """Carry out the plan, one call at a time; the first call that fails for good stops the rest."""
    kickout_plan = plan(request)
    reports: list[CallReport] = []
    for call in kickout_plan.calls:
        try:
            reply = client.kick(call)
        except KickoutError as error:
            error.completed = reports  # those users are kicked all the same: the caller must be able to know
            raise
        reports.append(
            CallReport(
                user_ids=list(call.user_ids),
                code=reply.code,
                message=reply.message,
                request_id=reply.request_id,
                outcome=reply.code_class,
            )
        )
    return KickoutResult.from_calls(request.room_id, reports, reason_truncated=kickout_plan.reason_truncated)


@dataclass(frozen=True, slots=True)
class Group:
    """Requests that can share ZEGO calls: same room, reason and operator, and together at most 50 users."""

    request: KickoutRequest
    """The merged request: the members' users, each once, in order."""
    members: tuple[tuple[str, KickoutRequest], ...]


def coalesce(requests: Sequence[tuple[str, KickoutRequest]], max_users: int = zim.MAX_USERS_PER_CALL) -> list[Group]:
    """Merge keyed requests into as few ZEGO calls as they allow; order within and across groups is kept."""
    members: list[list[tuple[str, KickoutRequest]]] = []
    users: list[dict[str, None]] = []
    open_group: dict[tuple[str, str | None, str | None], int] = {}
    for key, request in requests:
        kind = (request.room_id, request.reason, request.operator_id)
        index = open_group.get(kind)
        if index is not None and len(users[index].keys() | request.user_ids) <= max_users:
            members[index].append((key, request))
            users[index].update(dict.fromkeys(request.user_ids))
            continue
        if len(request.user_ids) <= max_users:
            open_group[kind] = len(members)
        members.append([(key, request)])
        users.append(dict.fromkeys(request.user_ids))
    return [
        Group(
            request=group[0][1] if len(group) == 1 else group[0][1].model_copy(update={"user_ids": list(group_users)}),
            members=tuple(group),
        )
        for group, group_users in zip(members, users, strict=True)
    ]
