"""A kick confirmed by ZIM's `room_exit` (exit_type Kickout): how long after ZEGO's answer, where that is known.

The answer's time is on the user's keep-out item (fleet/keep_outs.py `answered_at_ms`), so only kicks with a window
have one: a kick without a window costs no write, and its latency is unknown, said so in the audit, never guessed.
The latency is ZIM's event time (the callback's `timestamp`) minus the answer's time (the function's clock): two
clocks, and ZIM's event may come before the answer reaches the function. So a small negative difference (under
`CLOCK_TOLERANCE_MS`: the answer's way back, a timestamp in whole seconds) is clamped to 0; a larger one is flagged
`clock_skew` and not emitted. An answer more than `MAX_BELIEVED_MS` before the event belongs to an earlier kick (this
one had no window, or its write had not landed): flagged `earlier_answer`, not emitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from aws_lambda_powertools.metrics import MetricUnit

from handler.aws.observability import MetricName, emit, logger
from handler.core.deadline import Deadline
from handler.fleet.keep_outs import Answers, DynamoKeepOuts, KeepOutsUnavailable

CLOCK_TOLERANCE_MS: Final = 1_000
MAX_BELIEVED_MS: Final = 60_000
"""ZIM reports a kick as it carries it out, about when ZEGO answers it: a minute apart is another kick's answer."""


@dataclass(frozen=True, slots=True)
class Latencies:
    """Each confirmed user's latency (ms), or why it is unknown."""

    confirmed_after_ms: dict[str, int] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)


def latencies(user_ids: Sequence[str], event_at: float, answers: Answers | None) -> Latencies:
    """The latencies of `user_ids` confirmed by an event at `event_at` (Unix s), from their answers' times (None: the
    read failed)."""
    result = Latencies()
    for user in user_ids:
        answered = None if answers is None else answers.answered_at_ms.get(user)
        if answered is None:
            result.unknown[user] = "read_failed" if answers is None or user in answers.unread else "no_keep_out_answer"
            continue
        after = round(event_at * 1000) - answered
        if after > MAX_BELIEVED_MS:
            result.unknown[user] = "earlier_answer"
        elif after < -CLOCK_TOLERANCE_MS:
            result.unknown[user] = "clock_skew"
        else:
            result.confirmed_after_ms[user] = max(after, 0)
    return result


def measure(
    store: DynamoKeepOuts, room_id: str, user_ids: Sequence[str], event_at: float, deadline: Deadline
) -> Latencies:
    """The latencies of a confirmed kick, emitted (`ConfirmationLatency`, one value per user known); a read that fails
    or finds no time is counted (`ConfirmationReadsFailed`, per user) and leaves them unknown, never fails the
    confirmation."""
    try:
        answers: Answers | None = store.answers(room_id, user_ids, deadline)
    except KeepOutsUnavailable as error:
        answers = None
        logger.warning("confirmation latency not read: the kick is confirmed", extra={"error": str(error)})
    measured = latencies(user_ids, event_at, answers)
    unread = len(user_ids) if answers is None else len(answers.unread)
    if unread:
        emit(MetricName.CONFIRMATION_READS_FAILED, unread)
    for after in measured.confirmed_after_ms.values():
        emit(MetricName.CONFIRMATION_LATENCY, after, MetricUnit.Milliseconds)
    return measured
