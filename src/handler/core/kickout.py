"""The kickout itself: the plan of ZEGO calls for a request, carrying it out, and merging requests into fewer calls.

Knows nothing of AWS events, boto3 or urllib3: it is handed the function that makes one ZEGO call (ZimClient.call),
so the same code serves the API, the queue and a direct invoke, and runs in unit tests on plain values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from handler.core.errors import KickoutError
from handler.core.models import CallReport, KickoutRequest, KickoutResult
from handler.zego import zim


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


CallZego = Callable[[zim.KickoutCall], zim.Reply]
"""One ZEGO call made final (ZimClient.call): its reply, or KickoutError."""
SendAll = Callable[[CallZego, Sequence[zim.KickoutCall]], Sequence[zim.Reply | KickoutError]]
"""How a plan's calls are made: each call's reply or failure, in the plan's order (fewer when it stopped early)."""


def one_at_a_time(call_zego: CallZego, calls: Sequence[zim.KickoutCall]) -> list[zim.Reply | KickoutError]:
    """The calls one after another; the first that fails stops the rest."""
    outcomes: list[zim.Reply | KickoutError] = []
    for call in calls:
        try:
            outcomes.append(call_zego(call))
        except KickoutError as error:
            outcomes.append(error)
            break
    return outcomes


def carry_out(request: KickoutRequest, call_zego: CallZego, send_all: SendAll = one_at_a_time) -> KickoutResult:
    """The request's plan, its calls made through `call_zego` as `send_all` makes them (one at a time, or side by
    side); raises the first failure in the plan's order, with every call that was answered in `completed`."""
    kickout_plan = plan(request)
    outcomes = send_all(call_zego, kickout_plan.calls)
    reports = [
        CallReport(
            user_ids=list(call.user_ids),
            code=reply.code,
            message=reply.message,
            request_id=reply.request_id,
            outcome=reply.code_class,
        )
        for call, reply in zip(kickout_plan.calls, outcomes, strict=False)
        if not isinstance(reply, KickoutError)
    ]
    failure = next((outcome for outcome in outcomes if isinstance(outcome, KickoutError)), None)
    if failure is not None:
        failure.completed = reports  # those users are kicked all the same: the caller must be able to know
        raise failure
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
