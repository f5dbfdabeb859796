"""Recording the keep-outs of kickouts that ZEGO answered: after the answer, side by side, within the deadline.

A keep-out is written once ZEGO has answered for its users, so it never delays a ZEGO call; the writes of a request
(or of a whole queue batch) run at once on a few threads of their own, each started only while the deadline allows
its worst case. A write that fails or finds no time loses the keep-out, never the kick: it is counted
(`KeepOutsNotRecorded`) and logged, and the kick stands.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from handler.aws.clients import KEEP_OUT_CONNECTIONS
from handler.aws.observability import MetricName, emit, in_current_trace, logger
from handler.core.deadline import Deadline
from handler.core.models import KickoutRequest, KickoutResult
from handler.fleet.keep_outs import DynamoKeepOuts, KeepOut, KeepOutsUnavailable, Written, keep_out_until

_writers = ThreadPoolExecutor(max_workers=KEEP_OUT_CONNECTIONS, thread_name_prefix="keep-out")


def keep_outs_of(request: KickoutRequest, result: KickoutResult, decided_at: float, now: float) -> list[KeepOut]:
    """The keep-outs a kickout asks for: each user ZEGO answered for, kicked or not in the room (who may enter later);
    none without a window, nor when the window had ended by `now` (a message that waited out a long ZEGO outage).
    `now`, taken once ZEGO has answered, is kept as the answer's time (for the confirmation's latency)."""
    if not request.keep_out_seconds:
        return []
    until = keep_out_until(decided_at, request.keep_out_seconds)
    if until <= now:
        return []
    return [
        KeepOut(
            room_id=request.room_id,
            user_id=user,
            until=until,
            reason=request.reason,
            operator_id=request.operator_id,
            answered_at_ms=round(now * 1000),
        )
        for user in (*result.kicked_user_ids, *result.absent_user_ids)
    ]


@dataclass(frozen=True, slots=True)
class Pending:
    """Keep-out writes under way."""

    writes: Sequence[tuple[KeepOut, Future[Written]]] = ()
    refused: str | None = None
    """Why none could start (the store could not be made), for the log line."""
    count: int = 0

    def finish(self, deadline: Deadline) -> None:
        """Wait for the writes until `deadline`, then count and log what became of them."""
        if not self.count:
            return
        if self.refused is not None:
            _not_recorded(self.count, self.refused, {})
            return
        wait([future for _, future in self.writes], timeout=deadline.remaining())
        recorded = 0
        causes: dict[str, int] = {}
        rooms: set[str] = set()
        for keep_out, future in self.writes:
            if not future.done():
                cause = "still in flight at the deadline"
            elif isinstance(error := future.exception(), KeepOutsUnavailable):
                cause = str(error)
            elif error is not None:
                cause = f"failed unexpectedly ({type(error).__name__})"
            else:
                recorded += 1
                continue
            causes[cause] = causes.get(cause, 0) + 1
            rooms.add(keep_out.room_id)
        if recorded:
            emit(MetricName.KEEP_OUTS_RECORDED, recorded)
        if causes:
            _not_recorded(sum(causes.values()), "; ".join(causes), {"room_ids": sorted(rooms)[:20]})


def start(store: Callable[[], DynamoKeepOuts], keep_outs: Sequence[KeepOut], deadline: Deadline) -> Pending:
    """The writes of `keep_outs`, started; `Pending.finish` waits for them."""
    if not keep_outs:
        return Pending()
    try:
        extend = in_current_trace(store().extend)
    except Exception as error:
        return Pending(refused=f"no keep-out store ({type(error).__name__})", count=len(keep_outs))
    writes = [(keep_out, _writers.submit(extend, keep_out, deadline)) for keep_out in keep_outs]
    return Pending(writes=writes, count=len(keep_outs))


def _not_recorded(count: int, cause: str, detail: dict[str, object]) -> None:
    emit(MetricName.KEEP_OUTS_NOT_RECORDED, count)
    logger.warning(
        "keep-outs not recorded: the kicks stand, a re-entry within the window will not be kicked again",
        extra={"keep_outs_not_recorded": count, "error": cause, **detail},
    )
