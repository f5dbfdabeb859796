"""Nothing lost, nothing wasted: a stream of SQS messages replayed the way SQS delivers them, under faults.

The replay keeps SQS's contract: a batch of up to 10; what the function reports failed comes back later with
its receive count one higher; after `MAX_RECEIVES` receives SQS would move it to the dead-letter queue.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import boto3
import pytest

from handler import health, service
from kickout_dev.events import sqs_record
from kickout_dev.sandbox import REGION, SERVER_SECRET, Sandbox, template_queue
from kickout_dev.zim_server import Fault
from tests.conftest import Invoke, Printed

MAX_RECEIVES = int(template_queue()["RedrivePolicy"]["maxReceiveCount"])
BATCH_SIZE = 10
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
    receives: int = 0


@dataclass
class Replay:
    acknowledged: list[Message] = field(default_factory=list)
    failed_receives: Counter[str] = field(default_factory=Counter)
    exhausted: list[Message] = field(default_factory=list)


def replay(invoke: Invoke, messages: list[Message], *, on_batch: Callable[[int], None] = lambda _: None) -> Replay:
    """Deliver like SQS: batches of 10 in order, reported failures back at the end with one more receive."""
    outcome = Replay()
    pending = list(messages)
    batches = 0
    while pending and batches < 10 * len(messages):  # bounded whatever the function does
        batch, pending = pending[:BATCH_SIZE], pending[BATCH_SIZE:]
        for message in batch:
            message.receives += 1
        on_batch(batches)
        event = {
            "Records": [
                sqs_record(message.body, receive_count=message.receives, message_id=message.message_id)
                for message in batch
            ]
        }
        response = invoke(event)
        batches += 1
        failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
        for message in batch:
            if message.message_id not in failed:
                outcome.acknowledged.append(message)
            elif message.receives >= MAX_RECEIVES:
                outcome.exhausted.append(message)
            else:
                outcome.failed_receives[message.message_id] += 1
                pending.append(message)
    return outcome


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
    monkeypatch.setattr(service, "retry_policy", replace(service.retry_policy, request_timeout=REQUEST_TIMEOUT))
    # This replay has no clock: a circuit its faults opened would never see its recovery window pass, and every
    # message would wait out its receives. The circuit stays closed here; tests/integration/test_outage.py
    # replays with time.
    monkeypatch.setattr(health, "FAILURES_TO_OPEN", 10**9)
    health.zego_health.cache_clear()
    zego = FaultyZego()
    box.zim.fault_for = zego
    return box, zego


def parked_by_source(box: Sandbox) -> dict[str, list[dict[str, object]]]:
    parked: dict[str, list[dict[str, object]]] = defaultdict(list)
    for message in box.parked():
        parked[message["MessageAttributes"]["SourceMessageId"]["StringValue"]].append(message)
    return parked


def test_a_faulty_stream_is_fully_accounted_for(
    faulty_box: tuple[Sandbox, FaultyZego], invoke: Invoke, printed: Printed
) -> None:
    box, zego = faulty_box
    messages = build_stream(zego)
    assert len(messages) >= 300

    def rotate_mid_stream(batch_number: int) -> None:
        # halfway, the ServerSecret is rotated: ZEGO and Secrets Manager change, the function's cache does not
        if batch_number == 15:
            box.zim.rotate_secret("fedcba9876543210fedcba9876543210")
            box.put_secret(json.dumps({"ServerSecret": "fedcba9876543210fedcba9876543210"}))

    outcome = replay(invoke, messages, on_batch=rotate_mid_stream)

    # THEN no message exhausted its receives (none would reach the DLQ by redrive)
    assert outcome.exhausted == []
    # every message was acknowledged exactly once
    assert Counter(message.message_id for message in outcome.acknowledged) == Counter(m.message_id for m in messages)
    # each kicked message's users were kicked from its room by an accepted, signed request
    kicked = {(call.room_id, user) for call in box.zim.kickouts if call.code == 0 for user in call.user_ids}
    for message in messages:
        body = json.loads(message.body) if message.expect != "parked" else None
        if message.expect == "kicked" and body is not None:
            assert {(body["room_id"], user) for user in body["user_ids"]} <= kicked, message.message_id
    # parked messages: once each, body unchanged, with their reason, on their first receive, never reported failed
    parked = parked_by_source(box)
    expected_parked = {message.message_id: message for message in messages if message.expect == "parked"}
    assert set(parked) == set(expected_parked)
    for message_id, copies in parked.items():
        assert len(copies) == 1, message_id
        assert copies[0]["Body"] == expected_parked[message_id].body
        reason = copies[0]["MessageAttributes"]["KickoutFailure"]["StringValue"]  # type: ignore[index]
        assert reason == ("invalid_payload" if message_id.startswith("poison") else "zego_refused")
        assert outcome.failed_receives[message_id] == 0
    # nothing-to-do messages are acknowledged at once, never parked or retried
    for message in messages:
        if message.expect == "nothing_to_do":
            assert outcome.failed_receives[message.message_id] == 0
    # only what outlasts one invocation's retries came back: `down` (6 x 503) and some `ratelimited`
    retried_kinds = {message_id.rsplit("-", 1)[0] for message_id in outcome.failed_receives}
    assert retried_kinds <= {"down", "ratelimited"}
    # the slow answers were given up on and asked again; the retries backed off (in no time: the sandbox's clock)
    assert all(zego.seen[room] >= 2 for room in zego.scripts if room.startswith("slow-"))
    assert box.backoff is not None
    assert box.backoff.sleeps, "the retries did not back off through the sandbox's clock"
    # the rotation cost at most one refused signature per call in flight (a batch's), then the secret was re-read
    assert 1 <= sum(1 for code, _ in box.zim.refusals if code == 100000005) <= BATCH_SIZE
    # and the secret and signatures never reached the output
    assert SERVER_SECRET not in printed.text
    assert "fedcba9876543210fedcba9876543210" not in printed.text
    assert not any(kickout.nonce in printed.text for kickout in box.zim.kickouts[:50])


def test_with_the_dead_letter_queue_unreachable_nothing_is_acknowledged_that_was_not_done(
    faulty_box: tuple[Sandbox, FaultyZego], invoke: Invoke
) -> None:
    box, zego = faulty_box
    messages = [m for m in build_stream(zego) if not m.message_id.startswith(("slow", "down", "ratelimited"))][:120]
    boto3.client("sqs", region_name=REGION).delete_queue(QueueUrl=box.dlq_url)

    outcome = replay(invoke, messages)

    acknowledged = {message.message_id for message in outcome.acknowledged}
    must_park = {message.message_id for message in messages if message.expect == "parked"}
    assert must_park, "the sample holds messages that must be parked"
    # what had to be parked could not be: it stayed with SQS until redrive (exhausted), never acknowledged
    assert not acknowledged & must_park, sorted(acknowledged & must_park)
    assert {message.message_id for message in outcome.exhausted} == must_park
    # everything else went through as usual
    assert acknowledged == {message.message_id for message in messages} - must_park


def test_with_the_secret_missing_no_kickout_is_acknowledged(
    faulty_box: tuple[Sandbox, FaultyZego], invoke: Invoke
) -> None:
    box, zego = faulty_box
    messages = [m for m in build_stream(zego) if not m.message_id.startswith(("slow", "down", "ratelimited"))][:60]
    boto3.client("secretsmanager", region_name=REGION).delete_secret(
        SecretId=box.secret_arn, ForceDeleteWithoutRecovery=True
    )

    outcome = replay(invoke, messages)

    assert box.zim.requests_seen == 0
    acknowledged = {message.message_id for message in outcome.acknowledged}
    # only poison could be dealt with (parked: it needs no secret); every kickout stayed with SQS
    assert acknowledged == {message.message_id for message in messages if message.message_id.startswith("poison")}
    assert {message.message_id for message in outcome.exhausted} == {m.message_id for m in messages} - acknowledged
