"""A ZEGO outage of 90 minutes costs no message and few calls: the replay of kickout_dev/outage.py, checked.

SQS (moto, made like the template's KickoutQueue), three pollers feeding the real handler, the ZIM stand-in down
for 90 simulated minutes, then back; the clock is simulated (time-machine), so the test takes seconds.
"""

from __future__ import annotations

from datetime import timedelta

from handler import health, redelivery
from kickout_dev.outage import Scenario, replay_outage
from kickout_dev.sandbox import Sandbox
from tests.conftest import Invoke, Printed

SCENARIO = Scenario()


def test_a_ninety_minute_zego_outage_parks_nothing_and_drains_after_recovery(
    box: Sandbox, invoke: Invoke, printed: Printed
) -> None:
    # GIVEN ZEGO down for 90 minutes while kickouts keep arriving, and two invalid payloads among them
    # WHEN SQS delivers them to three environments, redelivering by visibility timeout up to maxReceiveCount
    replay = replay_outage(box, invoke, SCENARIO)

    # THEN SQS moved nothing to the dead-letter queue: no message ran out of receives
    assert replay.moved_by_sqs == 0
    assert replay.most_receives < replay.max_receive_count
    # only the invalid payloads were parked, by the function, at their first receive
    assert sorted(replay.parked.values()) == ["invalid_payload"] * SCENARIO.poison
    # every kickout was done once ZEGO came back: within the longest backoff of the circuit's first probe after the
    # recovery (one recovery window at most), give or take the pollers' step
    assert replay.kicked_rooms == replay.expected_rooms
    assert replay.drain is not None
    assert (
        replay.drain <= timedelta(seconds=redelivery.BACKOFF_MAX_SECONDS + health.RECOVERY_SECONDS) + 2 * SCENARIO.step
    )
    # the fleet probed ZEGO about once per recovery window while it was down, whatever the backlog: a few a minute
    outage_minutes = SCENARIO.outage / timedelta(minutes=1)
    probes_allowed = outage_minutes * 60 / health.RECOVERY_SECONDS
    trip = SCENARIO.environments * health.FAILURES_TO_OPEN + 10  # calls in flight when the circuit opened
    assert 0 < replay.calls_during_outage <= probes_allowed + trip
    # and no message cost more than a handful of calls
    assert max(replay.calls_during_outage_by_room.values()) <= 30
    # the circuit's transitions were logged and counted
    assert printed.metric("ZegoCircuitOpen") >= 1
    assert printed.metric("ZegoCircuitClosed") >= 1
    assert printed.metric("FailedCircuitOpen") > 0
    assert any(line.get("message") == "ZEGO circuit CLOSED" for line in printed.logs)
