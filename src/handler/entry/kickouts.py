"""One kickout as every entry point carries it out: ZEGO's calls in the lane's place of the fleet's budget, the
users of each call counted; audited too when a caller waits for it.

Handed its parts by the composition root (handler/wiring.py): the ZEGO client for a lane and a deadline, the
settings, the SQS client. The adapters (api, queue, direct) know nothing else of the function's wiring.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from aws_lambda_powertools.utilities.typing import LambdaContext

from handler.aws.observability import MetricName, emit, in_current_trace
from handler.aws.settings import Settings
from handler.core.deadline import Deadline
from handler.core.errors import KickoutError
from handler.core.kickout import CallZego, carry_out, one_at_a_time
from handler.core.models import KickoutRequest, KickoutResult
from handler.core.ports import KeptAnswers
from handler.entry import audit, keep_out_writes
from handler.fleet.budget import Lane
from handler.fleet.keep_outs import DynamoKeepOuts, keep_out_until
from handler.zego import transport, zim
from handler.zego.client import ZimClient

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient


_side_by_side = ThreadPoolExecutor(max_workers=transport.POOL_SIZE, thread_name_prefix="kickout-call")
"""The calls of one API request at once: at most 10 (500 users), one connection of the pool each."""


def side_by_side(
    client: ZimClient, call_zego: CallZego, calls: Sequence[zim.KickoutCall]
) -> list[zim.Reply | KickoutError]:
    """The calls at once, each on a thread of its own under the invocation's trace, their slots booked as one block
    (`expect`): each still signed with its own nonce and timestamp, retried and guarded by the circuit on its own,
    each answer kept. All are sent, whichever fails: they leave within one block's half second of one another, so
    a failure is known only once the others are on their way (kicking is idempotent: a retry harms nothing)."""
    client.expect(len(calls))
    if len(calls) <= 1:
        return one_at_a_time(call_zego, calls)

    def one(call: zim.KickoutCall) -> zim.Reply | KickoutError:
        try:
            return call_zego(call)
        except KickoutError as error:
            return error

    running = [_side_by_side.submit(in_current_trace(partial(one, call))) for call in calls]
    wait(running)  # all of them, even when one raised (a bug): no call may still be on its way once this returns
    return [future.result() for future in running]


def deadline_of(context: LambdaContext, *, at_most: float | None = None) -> Deadline:
    """The invocation's deadline, as Lambda counts it down; never more than `at_most` seconds from now."""
    deadline = Deadline.counting_down(lambda: context.get_remaining_time_in_millis() / 1000)
    return deadline if at_most is None else deadline.within(at_most)


def keep_out_field(request: KickoutRequest, decided_at: float) -> dict[str, int]:
    """The audit's `keep_out_until` (Unix seconds) of a kickout with a window; nothing without one."""
    if not request.keep_out_seconds:
        return {}
    return {"keep_out_until": keep_out_until(decided_at, request.keep_out_seconds)}


@dataclass(frozen=True)
class Kickouts:
    zim_client: Callable[[Lane, Deadline], ZimClient]
    """The ZEGO client for one request: its lane's place in the budget, its deadline."""
    settings: Callable[[], Settings]
    """The function's configuration; raises ConfigurationError while it is wrong."""
    sqs: Callable[[], SQSClient]
    answers: Callable[[], KeptAnswers]
    """The API's answers kept by Idempotency-Key."""
    keep_outs: Callable[[], DynamoKeepOuts]
    """The keep-outs' store; raises ConfigurationError while the configuration is wrong."""
    wall_clock: Callable[[], float]
    """Unix seconds: when a request was decided, the start of its keep-out window."""

    def kick_out(
        self, request: KickoutRequest, deadline: Deadline, origin: Mapping[str, object] | None = None
    ) -> KickoutResult:
        """One kickout a caller waits for (API, direct invoke): audited, counted, first in line for ZEGO's budget;
        its keep-outs recorded once ZEGO has answered, within `deadline`.

        `origin`: who or what sent the request (plain fields, e.g. the IAM principal), for its audit line.
        """
        decided_at = self.wall_clock()
        fields = audit.audit_fields(request, **(origin or {}), **keep_out_field(request, decided_at))
        try:
            result = self.send_calls(request, deadline, Lane.API)
        except Exception as error:
            audit.record_failure(error, fields)  # an unexpected one too: counted FailedUnexpected, then raised
            raise
        audit.record_success(result, fields)
        self.record_keep_outs([(request, result, decided_at)], deadline).finish(deadline)
        return result

    def record_keep_outs(
        self, kickouts: list[tuple[KickoutRequest, KickoutResult, float]], deadline: Deadline
    ) -> keep_out_writes.Pending:
        """Start writing the keep-outs of answered kickouts (request, result, when it was decided)."""
        now = self.wall_clock()
        keep_outs = [
            keep_out
            for request, result, decided_at in kickouts
            for keep_out in keep_out_writes.keep_outs_of(request, result, decided_at, now)
        ]
        return keep_out_writes.start(self.keep_outs, keep_outs, deadline)

    def send_calls(self, request: KickoutRequest, deadline: Deadline, lane: Lane) -> KickoutResult:
        """The ZEGO calls of one request, unaudited; raises KickoutError or ConfigurationError."""
        client = self.zim_client(lane, deadline)
        if lane is Lane.API:
            result = carry_out(request, client.call, partial(side_by_side, client))
        else:
            # A queue batch's calls already go out side by side, one message's (or merged group's) on each of the
            # pool's threads, and its lane books for every thread waiting: a message's own calls go in turn.
            result = carry_out(request, client.call)
        for call in result.calls:
            emit(MetricName.USERS_PER_CALL, len(call.user_ids))
        return result
