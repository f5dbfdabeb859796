"""A ZEGO outage replayed on a simulated clock, through the real handler: the proof behind docs/failure-handling.md.

- SQS is moto's, made like the template's KickoutQueue (its VisibilityTimeout and RedrivePolicy: maxReceiveCount
  and the dead-letter queue), held to AWS's limits (kickout_dev/moto_server.py): moto keeps the visibility
  timeouts, the receive counts and the redrive itself.
- Lambda's poller is kickout_dev.event_source: `environments` pollers, batches as the template configures them
  (1000 messages, 1 s) unless the scenario says otherwise. At each step every poller polls in turn, round after
  round, until none finds a batch: invocations take no simulated time.
- ZEGO is the ZIM stand-in, told to answer HTTP 503 to everything during the outage.
- The clock is time-machine's: datetime.now() and time.time() of the whole process (moto's SQS, Powertools'
  circuit breaker and caches, the budget's slots, the signatures' timestamps, the stand-in's skew check) jump by
  `step` between polls, and between jumps run at the real clock's pace (so that what waits inside an
  invocation, the budget's slots, sees time pass). It starts at the real time of the run: no date is built in.
  Nothing sleeps for simulated minutes; the retries inside one invocation still sleep their real fraction of a
  second.

The environments share this process, so what an execution environment keeps to itself (Powertools' failure
streak, the state it cached for 5 s) they share too; what the fleet shares (the circuit in DynamoDB, the queue)
is shared as in the cloud.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import time_machine

from kickout_dev.event_source import Batching, Delivery, Poller
from kickout_dev.sandbox import REGION, Sandbox, make_like_template_queue, template_queue

Invoke = Callable[[dict[str, Any]], Any]
ROUNDS_PER_STEP = 1000
"""Bounds the polls at one simulated instant, whatever the function does."""


@dataclass(frozen=True)
class Scenario:
    outage_begins_after: timedelta = timedelta(minutes=2)
    outage: timedelta = timedelta(minutes=90)
    messages: int = 40
    """Kickouts sent one every `send_every`, from the start: a few before the outage, most during it."""
    send_every: timedelta = timedelta(seconds=90)
    poison: int = 2
    """Invalid payloads sent during the outage: parked at their first receive whatever ZEGO does."""
    wave: int = 0
    """Kickouts sent all at once `wave_after` into the outage (an abuse wave), one user each in `wave_rooms` rooms:
    they fill large batches, fail together and are hidden together."""
    wave_after: timedelta = timedelta(minutes=10)
    wave_rooms: int = 10
    environments: int = 3
    batching: Batching = field(default_factory=Batching.from_template)
    step: timedelta = timedelta(seconds=10)
    drain_limit: timedelta = timedelta(minutes=30)


@dataclass
class OutageReplay:
    calls_during_outage: int = 0
    calls_during_outage_by_room: Counter[str] = field(default_factory=Counter)
    drain: timedelta | None = None
    """From ZEGO's recovery until every kickout was done; None if not within the scenario's drain limit."""
    kicked_users: set[str] = field(default_factory=set)
    expected_users: set[str] = field(default_factory=set)
    parked: dict[str, str] = field(default_factory=dict)
    """Source message id -> KickoutFailure, for the copies the function parked in the dead-letter queue."""
    moved_by_sqs: int = 0
    """Messages SQS itself moved to the dead-letter queue after maxReceiveCount receives."""
    max_receive_count: int = 0
    most_receives: int = 0
    invocations: int = 0
    invocations_during_outage: int = 0
    largest_batch: int = 0
    receive_times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    """Message id -> the simulated seconds since the start at which the function was given it."""

    @property
    def single_message_calls(self) -> Counter[str]:
        """ZEGO calls during the outage for each room of one message (the trickle's, not the wave's)."""
        return Counter({room: n for room, n in self.calls_during_outage_by_room.items() if room.startswith("room-")})

    def summary(self) -> dict[str, Any]:
        return {
            "calls_during_outage": self.calls_during_outage,
            "most_calls_for_one_message": max(self.single_message_calls.values(), default=0),
            "drain_seconds": None if self.drain is None else self.drain.total_seconds(),
            "kicked": len(self.kicked_users),
            "expected": len(self.expected_users),
            "parked": len(self.parked),
            "moved_by_sqs": self.moved_by_sqs,
            "max_receive_count": self.max_receive_count,
            "most_receives": self.most_receives,
            "invocations": self.invocations,
            "invocations_during_outage": self.invocations_during_outage,
            "largest_batch": self.largest_batch,
        }


def replay_outage(box: Sandbox, invoke: Invoke, scenario: Scenario | None = None) -> OutageReplay:
    scenario = scenario or Scenario()
    replay = OutageReplay(max_receive_count=int(template_queue()["RedrivePolicy"]["maxReceiveCount"]))
    start = datetime.fromtimestamp(int(time.time()), UTC)
    with time_machine.travel(start, tick=True) as clock:
        sqs: Any = boto3.client("sqs", region_name=REGION)
        make_like_template_queue(sqs, box.queue_url, box.dlq_url)
        sends = _schedule(scenario, replay, start)
        outage_begins = start + scenario.outage_begins_after
        outage_ends = outage_begins + scenario.outage
        calls_before = Counter[str]()
        pollers = [Poller(sqs, box.queue_url, invoke, scenario.batching) for _ in range(scenario.environments)]
        now = start
        while now < outage_ends + scenario.drain_limit:
            now = datetime.now(UTC)
            if outage_begins <= now < outage_ends and box.zim.outage is None:
                box.zim.go_down()
                calls_before = Counter(box.zim.requests_by_room)
            elif now >= outage_ends and box.zim.outage is not None:
                box.zim.come_back()
                replay.calls_during_outage_by_room = Counter(box.zim.requests_by_room) - calls_before
                replay.calls_during_outage = sum(replay.calls_during_outage_by_room.values())
            due = [body for at, body in sends if at <= now]
            sends = sends[len(due) :]
            for first in range(0, len(due), 10):
                entries = [{"Id": str(n), "MessageBody": body} for n, body in enumerate(due[first : first + 10])]
                sqs.send_message_batch(QueueUrl=box.queue_url, Entries=entries)
            for _ in range(ROUNDS_PER_STEP):
                deliveries = [delivery for poller in pollers if (delivery := poller.poll()) is not None]
                if not deliveries:
                    break
                for delivery in deliveries:
                    _count(replay, delivery, (now - start).total_seconds(), outage_begins <= now < outage_ends)
            replay.kicked_users = set(box.zim.kicked_user_ids)
            if now >= outage_ends and not sends and replay.kicked_users >= replay.expected_users:
                replay.drain = now - outage_ends
                break
            clock.shift(scenario.step)
        replay.most_receives = max((n for poller in pollers for n in poller.receives.values()), default=0)
        _read_dead_letters(box, replay)
    return replay


def _count(replay: OutageReplay, delivery: Delivery, at: float, during_outage: bool) -> None:
    replay.invocations += 1
    replay.invocations_during_outage += during_outage
    replay.largest_batch = max(replay.largest_batch, len(delivery.records))
    for message_id in delivery.message_ids:
        replay.receive_times[message_id].append(at)


def _schedule(scenario: Scenario, replay: OutageReplay, start: datetime) -> list[tuple[datetime, str]]:
    sends: list[tuple[datetime, str]] = []
    for index in range(scenario.messages):
        replay.expected_users.add(user := f"user-{index}")
        body = {"room_id": f"room-{index}", "user_ids": [user], "reason": "outage replay"}
        sends.append((start + index * scenario.send_every, json.dumps(body)))
    wave_at = start + scenario.outage_begins_after + scenario.wave_after
    for index in range(scenario.wave):
        replay.expected_users.add(user := f"wave-user-{index}")
        body = {"room_id": f"wave-room-{index % scenario.wave_rooms}", "user_ids": [user], "reason": "abuse wave"}
        sends.append((wave_at, json.dumps(body)))
    middle = start + scenario.outage_begins_after + scenario.outage / 2
    sends.extend((middle + index * scenario.step, f"not a kickout {index}") for index in range(scenario.poison))
    return sorted(sends, key=lambda send: send[0])


def _read_dead_letters(box: Sandbox, replay: OutageReplay) -> None:
    for message in box.parked():
        failure = message.get("MessageAttributes", {}).get("KickoutFailure")
        if failure is None:
            replay.moved_by_sqs += 1
        else:
            source = message["MessageAttributes"]["SourceMessageId"]["StringValue"]
            replay.parked[source] = failure["StringValue"]
