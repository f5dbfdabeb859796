"""Nothing lost, nothing wasted: a stream of SQS messages replayed the way SQS delivers them, under faults.

The replay is SQS and Lambda's event source mapping as the template configures them (kickout_dev.event_source on
moto's SQS, made like KickoutQueue and held to AWS's limits): batches of up to 1000 gathered for up to 1 s (and,
as a second variant, batches of 10); what the function reports failed comes back after its visibility timeout or
its backoff, its receive count one higher; after maxReceiveCount receives SQS moves it to the dead-letter queue.
The clock is simulated (time-machine, running at the real pace between jumps of 30 s): the visibility timeouts and
backoffs pass in no time.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import time_machine

from handler.zego import transport
from handler.zego.client import RetryPolicy
from kickout_dev.event_source import Batching, Delivery, Poller
from kickout_dev.queues import queue_is_empty
from kickout_dev.sandbox import (
    REGION,
    SERVER_SECRET,
    Sandbox,
    make_like_template_queue,
    template_event_source,
    template_function_timeout,
    template_queue,
)
from kickout_dev.zim_server import Fault
from tests.conftest import Invoke, Printed

MAX_RECEIVES = int(template_queue()["RedrivePolicy"]["maxReceiveCount"])
ENVIRONMENTS = int(template_event_source()["ScalingConfig"]["MaximumConcurrency"])
BATCHINGS = {"template-batches": Batching.from_template(), "batches-of-10": Batching(size=10)}
STEP = timedelta(seconds=30)
LONGEST = timedelta(hours=5)
ROUNDS_PER_STEP = 100
"""Bounds a replay in simulated time: 20 receives, each after at most the 10-minute backoff or 370 s."""
# The time a request may take: RetryPolicy's own 5 s. At 1 s (not to wait out the slow answers) the replay held only
# at full speed: the stand-in answers from this process, on the CPU the function has, and with the test held to 1/60
# of a core 41 of its ordinary answers took over 1 s (up to 4.6 s) and timed out. ZEGO's slow answers: twice that.
REQUEST_TIMEOUT = 5.0
SLOW_SECONDS = 2 * REQUEST_TIMEOUT


@dataclass
class Message:
    message_id: str
    body: str
    expect: str  # kicked | parked | nothing_to_do


@dataclass
class Replay:
    acknowledged: Counter[str] = field(default_factory=Counter)
    """Test message id -> deliveries deleted, less the copies the function sent again in their place (deferred)."""
    failed_receives: Counter[str] = field(default_factory=Counter)
    receives: Counter[str] = field(default_factory=Counter)
    exhausted: list[str] = field(default_factory=list)
    """Test message ids SQS moved to the dead-letter queue after maxReceiveCount receives."""
    parked: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    """Test message id -> the copies the function parked in the dead-letter queue."""
    whole_batches_failed: int = 0


def replay(
    box: Sandbox,
    invoke: Invoke,
    halves: tuple[list[Message], list[Message]],
    batching: Batching,
    *,
    between: Callable[[], None] = lambda: None,
) -> Replay:
    """Send the first half, deliver until the queue is empty; `between`; the same for the second half."""
    outcome = Replay()
    names: dict[str, str] = {}  # SQS message id -> the test's message id
    copies: dict[str, set[str]] = defaultdict(set)  # test message id -> ids of the copies the function sent again
    with time_machine.travel(datetime.fromtimestamp(int(time.time()), UTC), tick=True) as clock:
        sqs = boto3.client("sqs", region_name=REGION)
        make_like_template_queue(sqs, box.queue_url, box.dlq_url)
        timeout = template_function_timeout()
        pollers = [
            Poller(sqs, box.queue_url, lambda event: invoke(event, timeout_seconds=timeout), batching)
            for _ in range(ENVIRONMENTS)
        ]
        for half, messages in enumerate(halves):
            if half:
                between()
            for start in range(0, len(messages), 10):
                chunk = messages[start : start + 10]
                answer = sqs.send_message_batch(
                    QueueUrl=box.queue_url,
                    Entries=[{"Id": str(n), "MessageBody": message.body} for n, message in enumerate(chunk)],
                )
                names |= {sent["MessageId"]: chunk[int(sent["Id"])].message_id for sent in answer["Successful"]}
            ends = datetime.now(UTC) + LONGEST
            while not queue_is_empty(sqs, box.queue_url) and datetime.now(UTC) < ends:
                for _ in range(ROUNDS_PER_STEP):
                    deliveries = [delivery for poller in pollers if (delivery := poller.poll()) is not None]
                    if not deliveries:
                        break
                    for delivery in deliveries:
                        tally(outcome, delivery, names, copies)
                clock.shift(STEP)
        for name, copied in copies.items():
            outcome.acknowledged[name] -= len(copied)
        for message in box.parked():
            attributes = message.get("MessageAttributes", {})
            if "KickoutFailure" in attributes:
                outcome.parked[names[attributes["SourceMessageId"]["StringValue"]]].append(message)
            else:
                source = attributes.get("SourceMessageId", {}).get("StringValue")
                outcome.exhausted.append(names[source or message["MessageId"]])
    return outcome


def tally(outcome: Replay, delivery: Delivery, names: dict[str, str], copies: dict[str, set[str]]) -> None:
    """One invocation's records, under the test's names (a copy the function sent again by its source's)."""
    outcome.whole_batches_failed += delivery.whole_batch_failed
    for record in delivery.records:
        source = record["messageAttributes"].get("SourceMessageId", {}).get("stringValue")
        name = names[source or record["messageId"]]
        if source is not None:
            copies[name].add(record["messageId"])
        outcome.receives[name] += 1
        if record["messageId"] in delivery.failed:
            outcome.failed_receives[name] += 1
        else:
            outcome.acknowledged[name] += 1


class FaultyZego:
    """Per room, a script of faults played on the first requests for that room, then normal answers."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Fault]] = {}
        self.seen: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, params: dict[str, list[str]]) -> Fault | None:
        room = params.get("RoomId", [""])[0]
        with self._lock:
            script = self.scripts.get(room, [])
            index = self.seen[room]
            self.seen[room] += 1
        return script[index] if index < len(script) else None


# Each kind of message: how many, the faults ZEGO plays for its room, and what must become of it.
STREAM: list[tuple[str, int, list[Fault], str]] = [
    ("ok", 150, [], "kicked"),
    ("busy", 10, [Fault.code(1)] * 2, "kicked"),
    ("down", 6, [Fault.http(503)] * 6, "kicked"),  # outlasts one invocation's 4 attempts
    ("http500", 10, [Fault.http(500)], "kicked"),
    ("ratelimited", 6, [Fault.code(660300005)] * 5, "kicked"),
    ("roomlimit", 5, [Fault.code(660300006), Fault.code(7)], "kicked"),
    ("servererror", 10, [Fault.code(660000001), Fault.code(660000003), Fault.code(100000011)], "kicked"),
    ("internal", 5, [Fault.code(105001), Fault.code(660300007)], "kicked"),
    ("reset", 10, [Fault.reset()], "kicked"),
    ("junk", 10, [Fault.not_json()] * 2, "kicked"),
    ("expired", 10, [Fault.code(100000004)], "kicked"),
    ("slow", 2, [Fault.slow(SLOW_SECONDS)], "kicked"),  # longer than a request may take: timed out, retried
    ("gone", 10, [Fault.code(660300001)], "nothing_to_do"),
    ("absent", 10, [Fault.code(660300002)], "nothing_to_do"),
    ("operator", 8, [Fault.code(660500002)] * MAX_RECEIVES, "parked"),
    ("badparam", 4, [Fault.code(660000002)] * MAX_RECEIVES, "parked"),
    ("badapp", 4, [Fault.code(100000001)] * MAX_RECEIVES, "parked"),
]
# SQS bodies are 1+ characters of XML's character set: no NUL, no lone surrogates.
POISON = [
    "not json",
    " ",
    "{}",
    "[]",
    "null",
    '{"room_id": 1, "user_ids": ["a"]}',
    '{"room_id": "r/1", "user_ids": ["a"]}',
    '{"room_id": "r", "user_ids": []}',
    '{"room_id": "r", "user_ids": ["a"], "extra": 1}',
    "\t\ud7ff" * 100,
]


def build_stream(zego: FaultyZego) -> list[Message]:
    messages: list[Message] = []
    for kind, count, faults, expect in STREAM:
        for index in range(count):
            room = f"{kind}-{index}"
            zego.scripts[room] = list(faults)
            body = {"room_id": room, "user_ids": [f"{kind}-user-{index}", f"{kind}-mate-{index}"], "reason": kind}
            messages.append(Message(f"{kind}-{index}", json.dumps(body), expect))
    for repeat in range(3):
        messages.extend(Message(f"poison-{repeat}-{index}", body, "parked") for index, body in enumerate(POISON))
    # interleave kinds the way a real stream would mix them
    return sorted(messages, key=lambda message: zlib.crc32(message.message_id.encode()))


@pytest.fixture
def faulty_box(box: Sandbox, monkeypatch: pytest.MonkeyPatch) -> tuple[Sandbox, FaultyZego]:
    """The sandbox (retry backoff skipped but counted as time spent) with ZEGO playing each room's faults."""
    # The circuit stays closed here, so that each fault plays out through the retries it is meant to meet;
    # tests/integration/test_outage.py replays what the circuit does.
    box.rewire(retry_policy=RetryPolicy(request_timeout=REQUEST_TIMEOUT), failures_to_open=10**9)
    zego = FaultyZego()
    box.zim.fault_for = zego
    return box, zego


def halves(messages: list[Message]) -> tuple[list[Message], list[Message]]:
    return messages[: len(messages) // 2], messages[len(messages) // 2 :]


@pytest.mark.parametrize("batching", BATCHINGS.values(), ids=BATCHINGS.keys())
def test_a_faulty_stream_is_fully_accounted_for(
    faulty_box: tuple[Sandbox, FaultyZego], invoke: Invoke, printed: Printed, batching: Batching
) -> None:
    box, zego = faulty_box
    messages = build_stream(zego)
    assert len(messages) >= 300

    def rotate() -> None:
        # halfway, the ServerSecret is rotated: ZEGO and Secrets Manager change, the function's cache does not
        box.zim.rotate_secret("fedcba9876543210fedcba9876543210")
        box.put_secret(json.dumps({"ServerSecret": "fedcba9876543210fedcba9876543210"}))

    outcome = replay(box, invoke, halves(messages), batching, between=rotate)

    # THEN no message exhausted its receives (none reached the DLQ by redrive), no batch failed whole
    assert outcome.exhausted == []
    assert outcome.whole_batches_failed == 0
    # every message was acknowledged exactly once (a copy sent again in its place counts as the message)
    assert outcome.acknowledged == Counter(message.message_id for message in messages)
    # each kicked message's users were kicked from its room by an accepted, signed request
    kicked = {(call.room_id, user) for call in box.zim.kickouts if call.code == 0 for user in call.user_ids}
    for message in messages:
        body = json.loads(message.body) if message.expect != "parked" else None
        if message.expect == "kicked" and body is not None:
            assert {(body["room_id"], user) for user in body["user_ids"]} <= kicked, message.message_id
    # parked messages: once each, body unchanged, with their reason, on their first receive, never reported failed
    expected_parked = {message.message_id: message for message in messages if message.expect == "parked"}
    assert set(outcome.parked) == set(expected_parked)
    for message_id, copies in outcome.parked.items():
        assert len(copies) == 1, message_id
        assert copies[0]["Body"] == expected_parked[message_id].body
        reason = copies[0]["MessageAttributes"]["KickoutFailure"]["StringValue"]
        assert reason == ("invalid_payload" if message_id.startswith("poison") else "zego_refused")
        assert outcome.failed_receives[message_id] == 0
    # nothing-to-do messages are acknowledged at once, never parked or retried
    for message in messages:
        if message.expect == "nothing_to_do":
            assert outcome.failed_receives[message.message_id] == 0
    # only what outlasts one invocation's retries came back: `down` (6 x 503) and some `ratelimited`, each after
    # the backoff the function gave it (none refused)
    retried_kinds = {message_id.rsplit("-", 1)[0] for message_id in outcome.failed_receives}
    assert retried_kinds <= {"down", "ratelimited"}
    assert printed.metric("BackoffFailed") == 0
    # the slow answers were given up on and asked again; the retries backed off (in no time: the sandbox's clock)
    assert all(zego.seen[room] >= 2 for room in zego.scripts if room.startswith("slow-"))
    assert box.backoff is not None
    assert box.backoff.sleeps, "the retries did not back off through the sandbox's clock"
    # the rotation cost at most one refused signature per call in flight (a batch's, on the pool), then the secret
    # was re-read
    in_flight = min(batching.size, transport.POOL_SIZE) * ENVIRONMENTS
    assert 1 <= sum(1 for code, _ in box.zim.refusals if code == 100000005) <= in_flight
    # and the secret and signatures never reached the output
    assert SERVER_SECRET not in printed.text
    assert "fedcba9876543210fedcba9876543210" not in printed.text
    assert not any(kickout.nonce in printed.text for kickout in box.zim.kickouts[:50])


@pytest.mark.parametrize("batching", BATCHINGS.values(), ids=BATCHINGS.keys())
def test_with_the_dead_letter_queue_unreachable_nothing_is_acknowledged_that_was_not_done(
    faulty_box: tuple[Sandbox, FaultyZego], invoke: Invoke, monkeypatch: pytest.MonkeyPatch, batching: Batching
) -> None:
    box, zego = faulty_box
    messages = [m for m in build_stream(zego) if not m.message_id.startswith(("slow", "down", "ratelimited"))][:120]
    # GIVEN the function cannot reach its dead-letter queue (SQS's redrive to it still works)
    box.rewire(
        environ={"KICKOUT_DLQ_URL": box.dlq_url.rsplit("/", 1)[0] + "/kickout-dlq-that-was-never-created"},
        retry_policy=box.function.parts.retry_policy,
        failures_to_open=box.function.parts.failures_to_open,
    )

    outcome = replay(box, invoke, halves(messages), batching)

    acknowledged = {message_id for message_id, count in outcome.acknowledged.items() if count}
    must_park = {message.message_id for message in messages if message.expect == "parked"}
    assert must_park, "the sample holds messages that must be parked"
    # what had to be parked could not be: it stayed with SQS until its redrive (exhausted), never acknowledged
    assert not acknowledged & must_park, sorted(acknowledged & must_park)
    assert sorted(outcome.exhausted) == sorted(must_park)
    assert all(outcome.receives[message_id] == MAX_RECEIVES for message_id in must_park)
    # everything else went through as usual
    assert acknowledged == {message.message_id for message in messages} - must_park


@pytest.mark.parametrize("batching", BATCHINGS.values(), ids=BATCHINGS.keys())
def test_with_the_secret_missing_no_kickout_is_acknowledged(
    faulty_box: tuple[Sandbox, FaultyZego], invoke: Invoke, printed: Printed, batching: Batching
) -> None:
    box, zego = faulty_box
    messages = [m for m in build_stream(zego) if not m.message_id.startswith(("slow", "down", "ratelimited"))][:60]
    boto3.client("secretsmanager", region_name=REGION).delete_secret(
        SecretId=box.secret_arn, ForceDeleteWithoutRecovery=True
    )

    outcome = replay(box, invoke, halves(messages), batching)

    assert box.zim.requests_seen == 0
    acknowledged = {message_id for message_id, count in outcome.acknowledged.items() if count}
    # only poison could be dealt with (parked: it needs no secret); every kickout stayed with SQS until its redrive
    assert acknowledged == {message.message_id for message in messages if message.message_id.startswith("poison")}
    assert sorted(outcome.exhausted) == sorted({m.message_id for m in messages} - acknowledged)
    # each time hidden for its backoff (Secrets Manager failed): none of the hides was refused
    assert printed.metric("BackoffFailed") == 0
    assert printed.metric("MessagesBackedOff") == MAX_RECEIVES * len(outcome.exhausted)
