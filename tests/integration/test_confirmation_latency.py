"""How long after ZEGO's answer ZIM confirmed a kick, through the real callbacks' handler on the sandbox (moto through
the limit-enforcing double, the ZIM stand-in) and a simulated clock: the answer's time rides on the keep-out item a
kick with a window writes anyway; a kick without one is confirmed with its latency unknown, said so."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError

from kickout_dev.clock import SimulatedClock
from kickout_dev.emf import emf_metrics
from kickout_dev.sandbox import REGION, Sandbox
from tests.conftest import Printed
from tests.integration.test_callbacks import answer, callback_body, post


def kick(box: Sandbox, room_id: str, user_ids: list[str], keep_out_seconds: int | None = 3600) -> None:
    request: dict[str, Any] = {"room_id": room_id, "user_ids": user_ids, "operator_id": "mod-anna"}
    if keep_out_seconds is not None:
        request["keep_out_seconds"] = keep_out_seconds
    box.handler(request, box.context())


def confirm(box: Sandbox, room_id: str, user_ids: list[str], timestamp: int, nonce: str = "1") -> None:
    """ZIM's room_exit by Kickout of `user_ids` at `timestamp` (as ZEGO sends it), answered 200 confirmed."""
    body = callback_body(
        "room_exit",
        nonce=nonce,
        room_id=room_id,
        exit_type="Kickout",
        operator_account="mod-anna",
        exit_user_ids=user_ids,
        timestamp=timestamp,
    )
    assert answer(post(box, json.dumps(body))) == (200, {"outcome": "confirmed"})


def confirmed_line(printed: Printed) -> dict[str, Any]:
    line: dict[str, Any] = [line for line in printed.logs if line["message"] == "kickout confirmed"][-1]
    return line


def latencies(printed: Printed) -> list[float]:
    return emf_metrics(printed.text).get("ConfirmationLatency", [])


def test_a_kick_with_a_window_is_confirmed_with_the_time_since_zegos_answer(
    box: Sandbox, clock: SimulatedClock, printed: Printed
) -> None:
    # GIVEN two users kicked with a window, ZEGO's answer at the simulated NOW
    kick(box, "lobby-7", ["spammer_01", "spammer_02"])

    # WHEN ZIM's room_exit says so 850 ms later (a timestamp in milliseconds)
    clock.now += 2
    confirm(box, "lobby-7", ["spammer_01", "spammer_02"], round((clock.now - 2) * 1000) + 850)

    # THEN the audit says both were out 850 ms after the answer, and the metric holds one value each, in ms
    line = confirmed_line(printed)
    assert line["confirmed_after_ms"] == {"spammer_01": 850, "spammer_02": 850}
    assert line["confirmation_latency_unknown"] == {}
    assert latencies(printed) == [850, 850]
    assert printed.metric("KickoutsConfirmed") == 2
    assert printed.metric("ConfirmationReadsFailed") == 0


def test_a_kick_without_a_window_is_confirmed_its_latency_unknown(
    box: Sandbox, clock: SimulatedClock, printed: Printed
) -> None:
    kick(box, "lobby-7", ["spammer_01"], keep_out_seconds=None)

    confirm(box, "lobby-7", ["spammer_01"], int(clock.now))

    line = confirmed_line(printed)
    assert line["confirmed_after_ms"] == {}
    assert line["confirmation_latency_unknown"] == {"spammer_01": "no_keep_out_answer"}
    assert latencies(printed) == []
    assert printed.metric("KickoutsConfirmed") == 1


def test_a_later_kick_of_the_same_user_is_measured_from_its_own_answer(
    box: Sandbox, clock: SimulatedClock, printed: Printed
) -> None:
    # GIVEN a user kicked with an hour's window, then ten minutes later kicked again with a shorter one (the item's
    # window stays the hour's)
    kick(box, "lobby-7", ["spammer_01"], keep_out_seconds=3600)
    clock.now += 600
    kick(box, "lobby-7", ["spammer_01"], keep_out_seconds=60)

    # WHEN ZIM confirms the second kick 300 ms after its answer
    confirm(box, "lobby-7", ["spammer_01"], round(clock.now * 1000) + 300)

    # THEN it is 300 ms, not ten minutes
    assert confirmed_line(printed)["confirmed_after_ms"] == {"spammer_01": 300}
    assert latencies(printed) == [300]


def test_a_later_kick_without_a_window_is_not_measured_from_the_earlier_answer(
    box: Sandbox, clock: SimulatedClock, printed: Printed
) -> None:
    kick(box, "lobby-7", ["spammer_01"], keep_out_seconds=3600)
    clock.now += 600
    kick(box, "lobby-7", ["spammer_01"], keep_out_seconds=None)

    confirm(box, "lobby-7", ["spammer_01"], int(clock.now))

    assert confirmed_line(printed)["confirmation_latency_unknown"] == {"spammer_01": "earlier_answer"}
    assert latencies(printed) == []


@pytest.mark.parametrize(
    ("event_after_ms", "expected"),
    [
        (-400, ({"spammer_01": 0}, {})),  # ZIM's event a little before the answer reached the function: clamped
        (-5_000, ({}, {"spammer_01": "clock_skew"})),  # beyond the clocks' tolerance: flagged, not emitted
    ],
)
def test_an_event_before_the_answer_is_clamped_or_flagged_never_negative(
    box: Sandbox,
    clock: SimulatedClock,
    printed: Printed,
    event_after_ms: int,
    expected: tuple[dict[str, int], dict[str, str]],
) -> None:
    kick(box, "lobby-7", ["spammer_01"])

    confirm(box, "lobby-7", ["spammer_01"], round(clock.now * 1000) + event_after_ms)

    line = confirmed_line(printed)
    assert (line["confirmed_after_ms"], line["confirmation_latency_unknown"]) == expected
    assert latencies(printed) == list(expected[0].values())
    assert all(value >= 0 for value in latencies(printed))


def test_a_timestamp_in_seconds_is_measured_in_whole_seconds(
    box: Sandbox, clock: SimulatedClock, printed: Printed
) -> None:
    clock.now += 0.25  # the answer a quarter second into a second
    kick(box, "lobby-7", ["spammer_01"])

    confirm(box, "lobby-7", ["spammer_01"], int(clock.now) + 3)

    assert confirmed_line(printed)["confirmed_after_ms"] == {"spammer_01": 2750}


def test_a_failed_read_still_confirms_the_kick_and_is_counted(
    box: Sandbox, clock: SimulatedClock, printed: Printed
) -> None:
    # GIVEN a kick with a window, and the state table unreachable for reads of keep-outs only (the claim still works)
    kick(box, "lobby-7", ["spammer_01", "spammer_02"])
    client = boto3.client("dynamodb", region_name=REGION)

    def unreachable(**_: Any) -> None:
        raise EndpointConnectionError(endpoint_url="https://dynamodb.invalid")

    client.meta.events.register("before-call.dynamodb.BatchGetItem", unreachable)
    box.rewire(wall_clock=clock, keep_out_dynamodb=lambda: client)

    # WHEN ZIM confirms the kick
    confirm(box, "lobby-7", ["spammer_01", "spammer_02"], round(clock.now * 1000) + 100)

    # THEN it is confirmed (200), its latency unknown and said why, and the failed read counted per user
    line = confirmed_line(printed)
    assert line["confirmation_latency_unknown"] == {"spammer_01": "read_failed", "spammer_02": "read_failed"}
    assert printed.metric("KickoutsConfirmed") == 2
    assert printed.metric("ConfirmationReadsFailed") == 2
    assert latencies(printed) == []
