"""A ZEGO outage replayed on a simulated clock, through the real handler: the proof behind docs/failure-handling.md.

- SQS is moto's, made like the template's KickoutQueue (its VisibilityTimeout and RedrivePolicy: maxReceiveCount
  and the dead-letter queue): moto keeps the visibility timeouts, the receive counts and the redrive itself.
- Lambda's poller is the loop below: every `step_seconds`, each of `environments` pollers receives a batch of up
  to 10 visible messages, invokes the handler with the records SQS would give it (receipt handle, attributes,
  eventSourceARN), and deletes what the answer does not report failed.
- ZEGO is the ZIM stand-in, told to answer HTTP 503 to everything during the outage.
- The clock is time-machine's: datetime.now() and time.time() of the whole process (moto's SQS, Powertools'
  circuit breaker and caches, the signatures' timestamps, the stand-in's skew check) move by `step_seconds` at
  each step. Nothing sleeps for simulated minutes; the retries inside one invocation still sleep their real
  fraction of a second.

The environments share this process, so what an execution environment keeps to itself (Powertools' failure
streak, the state it cached for 5 s) they share too; what the fleet shares (the circuit in DynamoDB, the queue)
is shared as in the cloud.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import time_machine

from kickout_dev.sandbox import REGION, Sandbox, template_queue

START = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
BATCH_SIZE = 10

Invoke = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Scenario:
    outage_begins_after: timedelta = timedelta(minutes=2)
    outage: timedelta = timedelta(minutes=90)
    messages: int = 40
    """Kickouts sent one every `send_every`, from the start: a few before the outage, most during it."""
    send_every: timedelta = timedelta(seconds=90)
    poison: int = 2
    """Invalid payloads sent during the outage: parked at their first receive whatever ZEGO does."""
    environments: int = 3
    step: timedelta = timedelta(seconds=10)
    drain_limit: timedelta = timedelta(minutes=30)


@dataclass
class OutageReplay:
    calls_during_outage: int = 0
    calls_during_outage_by_room: Counter[str] = field(default_factory=Counter)
    drain: timedelta | None = None
    """From ZEGO's recovery until every kickout was done; None if not within the scenario's drain limit."""
    kicked_rooms: set[str] = field(default_factory=set)
    expected_rooms: set[str] = field(default_factory=set)
    parked: dict[str, str] = field(default_factory=dict)
    """Source message id -> KickoutFailure, for the copies the function parked in the dead-letter queue."""
    moved_by_sqs: int = 0
    """Messages SQS itself moved to the dead-letter queue after maxReceiveCount receives."""
    max_receive_count: int = 0
    most_receives: int = 0
    invocations: int = 0
    invocations_during_outage: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "calls_during_outage": self.calls_during_outage,
            "most_calls_for_one_message": max(self.calls_during_outage_by_room.values(), default=0),
            "drain_seconds": None if self.drain is None else self.drain.total_seconds(),
            "kicked": len(self.kicked_rooms),
            "expected": len(self.expected_rooms),
            "parked": len(self.parked),
            "moved_by_sqs": self.moved_by_sqs,
            "max_receive_count": self.max_receive_count,
            "most_receives": self.most_receives,
            "invocations": self.invocations,
            "invocations_during_outage": self.invocations_during_outage,
        }


def replay_outage(box: Sandbox, invoke: Invoke, scenario: Scenario | None = None) -> OutageReplay:
    scenario = scenario or Scenario()
    replay = OutageReplay()
    with time_machine.travel(START, tick=False) as clock:
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url, queue_arn = _create_queue(sqs, box, replay)
        sends = _schedule(scenario, replay)
        outage_begins = START + scenario.outage_begins_after
        outage_ends = outage_begins + scenario.outage
        calls_before = Counter[str]()
        poller = _Poller(sqs, queue_url, queue_arn, invoke, box, replay)
        now = START
        while now < outage_ends + scenario.drain_limit:
            if outage_begins <= now < outage_ends and box.zim.outage is None:
                box.zim.go_down()
                calls_before = Counter(box.zim.requests_by_room)
            elif now >= outage_ends and box.zim.outage is not None:
                box.zim.come_back()
                replay.calls_during_outage_by_room = Counter(box.zim.requests_by_room) - calls_before
                replay.calls_during_outage = sum(replay.calls_during_outage_by_room.values())
            while sends and sends[0][0] <= now:
                sqs.send_message(QueueUrl=queue_url, MessageBody=sends.pop(0)[1])
            for _ in range(scenario.environments):
                if not poller.poll():
                    break
                if outage_begins <= now < outage_ends:
                    replay.invocations_during_outage += 1
            if now >= outage_ends and not sends and replay.kicked_rooms >= replay.expected_rooms:
                replay.drain = now - outage_ends
                break
            clock.shift(scenario.step)
            now += scenario.step
        replay.most_receives = max(poller.receives.values(), default=0)
        _read_dead_letters(box, replay)
    return replay


def _create_queue(sqs: Any, box: Sandbox, replay: OutageReplay) -> tuple[str, str]:
    """The template's KickoutQueue in moto, redriving to the sandbox's dead-letter queue."""
    properties = template_queue()
    replay.max_receive_count = int(properties["RedrivePolicy"]["maxReceiveCount"])
    dlq_arn = sqs.get_queue_attributes(QueueUrl=box.dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    # The sandbox's kickout queue (KICKOUT_QUEUE_URL, where deferred messages go), made like the template's.
    queue_url = box.queue_url
    sqs.set_queue_attributes(
        QueueUrl=queue_url,
        Attributes={
            "VisibilityTimeout": str(properties["VisibilityTimeout"]),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": replay.max_receive_count}),
        },
    )
    queue_arn: str = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return queue_url, queue_arn


def _schedule(scenario: Scenario, replay: OutageReplay) -> list[tuple[datetime, str]]:
    sends: list[tuple[datetime, str]] = []
    for index in range(scenario.messages):
        room = f"room-{index}"
        replay.expected_rooms.add(room)
        body = {"room_id": room, "user_ids": [f"user-{index}"], "reason": "outage replay"}
        sends.append((START + index * scenario.send_every, json.dumps(body)))
    middle = START + scenario.outage_begins_after + scenario.outage / 2
    sends.extend((middle + index * scenario.step, f"not a kickout {index}") for index in range(scenario.poison))
    return sorted(sends, key=lambda send: send[0])


@dataclass
class _Poller:
    """Lambda's SQS poller: one invocation per batch, then the messages not reported failed deleted."""

    sqs: Any
    queue_url: str
    queue_arn: str
    invoke: Invoke
    box: Sandbox
    replay: OutageReplay
    receives: Counter[str] = field(default_factory=Counter)

    def poll(self) -> bool:
        """One batch, if any message is visible; False when none is."""
        messages: list[dict[str, Any]] = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=BATCH_SIZE, AttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            return False
        records = [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message["Attributes"],
                "messageAttributes": {},
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": self.queue_arn,
                "awsRegion": REGION,
            }
            for message in messages
        ]
        kicked_before = set(self.box.zim.kicked_user_ids)
        response = self.invoke({"Records": records})
        self.replay.invocations += 1
        failed = {failure["itemIdentifier"] for failure in response["batchItemFailures"]}
        done = [message for message in messages if message["MessageId"] not in failed]
        for message in messages:
            self.receives[message["MessageId"]] = int(message["Attributes"]["ApproximateReceiveCount"])
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(index), "ReceiptHandle": m["ReceiptHandle"]} for index, m in enumerate(done)],
            )
        for user in set(self.box.zim.kicked_user_ids) - kicked_before:
            self.replay.kicked_rooms.add(user.replace("user-", "room-"))
        return True


def _read_dead_letters(box: Sandbox, replay: OutageReplay) -> None:
    for message in box.parked():
        failure = message.get("MessageAttributes", {}).get("KickoutFailure")
        if failure is None:
            replay.moved_by_sqs += 1
        else:
            source = message["MessageAttributes"]["SourceMessageId"]["StringValue"]
            replay.parked[source] = failure["StringValue"]
