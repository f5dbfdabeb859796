"""A ZEGO outage of 90 minutes costs no message and few calls: the replay of kickout_dev/outage.py, checked.

SQS (moto, made like the template's KickoutQueue and held to AWS's limits), three pollers as Lambda's event source
mapping feeds the real handler, the ZIM stand-in down for 90 simulated minutes, then back; the clock is simulated
(time-machine), so the test takes seconds. Batches as the template configures them (1000 messages, 1 s window), and
of 10: an abuse wave of 120 kickouts fails together in one batch of the first, in twelve of the second.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from handler.entry import redelivery
from handler.fleet import circuit
from kickout_dev.event_source import Batching
from kickout_dev.outage import Scenario, replay_outage
from kickout_dev.sandbox import Sandbox
from tests.conftest import Invoke, Printed

WAVE = 120
SCENARIOS = {
    "template-batches": Scenario(wave=WAVE),
    "batches-of-10": Scenario(wave=WAVE, batching=Batching(size=10)),
}


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_a_ninety_minute_zego_outage_parks_nothing_and_drains_after_recovery(
    box: Sandbox, invoke: Invoke, printed: Printed, scenario: Scenario
) -> None:
    # GIVEN ZEGO down for 90 minutes while kickouts keep arriving, a wave of them at once, two invalid payloads
    # WHEN SQS delivers them to three environments, redelivering by visibility timeout up to maxReceiveCount
    replay = replay_outage(box, lambda event: invoke(event, timeout_seconds=60.0), scenario)

    # THEN the batches were as large as configured: the wave in batches larger than one receive's 10 (as many as
    # the 1 s window gathered), or of 10
    assert replay.largest_batch > 10 if scenario.batching.size > 10 else replay.largest_batch == 10
    # AND every message ZEGO failed was hidden for its backoff: none failed to be, and each came back after its
    # first backoff (1 minute less up to a fifth), not after the queue's visibility timeout of 370 s
    assert printed.metric("BackoffFailed") == 0
    assert printed.metric("MessagesBackedOff") >= WAVE
    step = scenario.step.total_seconds()
    for message_id, times in replay.receive_times.items():
        if len(times) >= 2:
            assert times[1] - times[0] <= redelivery.BACKOFF_FIRST_SECONDS + step, message_id
    # AND SQS moved nothing to the dead-letter queue: no message ran out of receives
    assert replay.moved_by_sqs == 0
    assert replay.most_receives < replay.max_receive_count
    # only the invalid payloads were parked, by the function, at their first receive
    assert sorted(replay.parked.values()) == ["invalid_payload"] * scenario.poison
    # every kickout was done once ZEGO came back: within the longest backoff of the circuit's first probe after the
    # recovery (one recovery window at most), give or take the pollers' step
    assert replay.kicked_users == replay.expected_users
    assert replay.drain is not None
    assert (
        replay.drain <= timedelta(seconds=redelivery.BACKOFF_MAX_SECONDS + circuit.RECOVERY_SECONDS) + 2 * scenario.step
    )
    # the fleet probed ZEGO about once per recovery window while it was down, whatever the backlog: a few a minute
    outage_minutes = scenario.outage / timedelta(minutes=1)
    probes_allowed = outage_minutes * 60 / circuit.RECOVERY_SECONDS
    trip = scenario.environments * circuit.FAILURES_TO_OPEN + 10  # calls in flight when the circuit opened
    assert 0 < replay.calls_during_outage <= probes_allowed + trip
    # and no message cost more than a handful of calls
    assert max(replay.single_message_calls.values()) <= 30
    # the circuit's transitions were logged and counted
    assert printed.metric("ZegoCircuitOpen") >= 1
    assert printed.metric("ZegoCircuitClosed") >= 1
    assert printed.metric("FailedCircuitOpen") > 0
    assert any(line.get("message") == "ZEGO circuit CLOSED" for line in printed.logs)
