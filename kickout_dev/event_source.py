"""Lambda's SQS event source mapping (its poller), simulated on moto's SQS: how the tests, the outage replay and the
benchmarks feed the function its batches.

As Lambda does it:

- A `Poller` is one execution environment's poller: it gathers a batch of up to `Batching.size` messages (1-10,000)
  with ReceiveMessage calls of at most 10, until the batch is full, the batching window has passed since its first
  message, or its records near Lambda's 6 MB payload; then it invokes the function once with the batch. Several
  pollers on one queue are several environments (QueueMaximumConcurrency), each with its batch in flight.
- The queue is moto's, made like the template's (kickout_dev.sandbox.make_like_template_queue): the visibility
  timeout, ApproximateReceiveCount, DelaySeconds, and the redrive to the dead-letter queue after maxReceiveCount are
  moto's own, on its clock.
- Records are shaped as Lambda gives them: messageId, receiptHandle, body, attributes (ApproximateReceiveCount,
  SentTimestamp, SenderId, ApproximateFirstReceiveTimestamp and the FIFO ones when set), messageAttributes in
  Lambda's camelCase shape (stringValue or base64 binaryValue, stringListValues, binaryListValues, dataType),
  md5OfBody (and md5OfMessageAttributes when there are some), eventSource, eventSourceARN, awsRegion.
- The answer: a valid partial batch response (None, {}, or batchItemFailures None, [] or a list of
  {"itemIdentifier": <a messageId of the batch>}) deletes every message it does not name, with DeleteMessageBatch
  10 at a time. An error raised, or any other answer (an empty, null, unknown or misspelt itemIdentifier, a
  response that is no object), fails the whole batch: nothing is deleted, every message comes back after its
  visibility timeout (or the backoff the function gave it).

Where it differs, and why: a batch also closes when a receive finds nothing visible (unless `wait_out_window`):
Lambda would wait out the window for more, but on a simulated clock nothing would end that wait, and on the real
one a replay would wait a second per batch. The payload limit is kept by closing a batch once its records leave
too little room for one more receive of the largest messages, not by holding messages back.

The clock is `time.time()`: time-machine's simulated one (kickout_dev/outage.py) or the real one (benchmarks).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kickout_dev.sandbox import template_event_source

RECEIVE_MAX = 10
"""Messages per ReceiveMessage call: SQS's limit."""
DELETE_MAX = 10
PAYLOAD_MAX = 6 * 1024 * 1024
"""Lambda's synchronous invocation payload, the event source mapping's too."""
PAYLOAD_ROOM = RECEIVE_MAX * 270 * 1024
"""What one more receive may add at most: 10 messages of 256 KiB, with their records' envelopes."""
BATCH_SIZE_MAX = 10_000
LAMBDA_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "AWSTraceHeader",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
)

Invoke = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Batching:
    size: int = 10
    window: float = 0.0
    """Most seconds from a batch's first message to its invocation (MaximumBatchingWindowInSeconds)."""
    wait_out_window: bool = False
    """Hold a batch that is not full until its window has passed, as Lambda does, rather than close it when a
    receive finds nothing (for the real clock only)."""
    receive_seconds: float | None = None
    """What one receive counts against the window; None: the time it takes. Lambda receives with several pollers
    at once from an SQS that answers in milliseconds; one receive from the moto server takes tens of them, so
    that on the real clock a window would close on a few hundred messages Lambda would have gathered."""

    def __post_init__(self) -> None:
        if not 1 <= self.size <= BATCH_SIZE_MAX:
            raise ValueError(f"batch size {self.size}: Lambda takes 1-{BATCH_SIZE_MAX} from SQS")
        if self.size > RECEIVE_MAX and self.window < 1:
            raise ValueError("a batch size over 10 needs a batching window of at least 1 s, as Lambda requires")

    @classmethod
    def from_template(cls, *, wait_out_window: bool = False) -> Batching:
        """QueueBatchSize and QueueBatchingWindowSeconds at the template's defaults."""
        source = template_event_source()
        return cls(
            size=int(source.get("BatchSize", 10)),
            window=float(source.get("MaximumBatchingWindowInSeconds", 0)),
            wait_out_window=wait_out_window,
        )


@dataclass(frozen=True)
class Delivery:
    """One invocation of the function: the batch it was given, its answer, what was left to SQS."""

    records: list[dict[str, Any]]
    response: Any
    error: BaseException | None
    failed: frozenset[str]
    """The message ids not deleted: those the answer named, or all of them when the batch failed whole."""
    whole_batch_failed: bool

    @property
    def message_ids(self) -> list[str]:
        return [record["messageId"] for record in self.records]


@dataclass
class Poller:
    """One execution environment's share of the event source mapping on one queue."""

    sqs: Any
    queue_url: str
    invoke: Invoke
    batching: Batching = field(default_factory=Batching)
    receives: dict[str, int] = field(default_factory=dict)
    """Message id -> the highest ApproximateReceiveCount this poller gave the function."""
    invocations: int = 0
    _gathering: list[dict[str, Any]] = field(default_factory=list)
    _since: float = 0.0
    _payload: int = 0
    _found_none: bool = False
    _queue_arn: str = ""

    def __post_init__(self) -> None:
        self._queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]

    def poll(self) -> Delivery | None:
        """Gather what is visible; invoke the function once the batch is due. None: no invocation (yet)."""
        self.gather()
        return self.deliver() if self.due() else None

    def gather(self) -> None:
        """Receive, 10 at a time, until the batch is full, its window has passed, or nothing more is visible."""
        self._found_none = False
        while (room := self.batching.size - len(self._gathering)) > 0 and not self._window_passed():
            if self._payload > PAYLOAD_MAX - PAYLOAD_ROOM:
                return
            began = time.time()
            messages = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(RECEIVE_MAX, room),
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if self._gathering and self.batching.receive_seconds is not None:
                self._since += max(0.0, time.time() - began - self.batching.receive_seconds)
            if not messages:
                self._found_none = True
                return
            if not self._gathering:
                self._since = time.time()
            for message in messages:
                record = self._record(message)
                self._gathering.append(record)
                self._payload += len(json.dumps(record))

    def due(self) -> bool:
        if not self._gathering:
            return False
        closed = self._found_none and not self.batching.wait_out_window
        full = len(self._gathering) >= self.batching.size or self._payload > PAYLOAD_MAX - PAYLOAD_ROOM
        return full or closed or self._window_passed()

    def deliver(self) -> Delivery:
        """Invoke the function with the batch gathered; delete what its answer does not leave to SQS."""
        records, self._gathering, self._payload = self._gathering, [], 0
        ids = [record["messageId"] for record in records]
        for record in records:
            count = int(record["attributes"]["ApproximateReceiveCount"])
            self.receives[record["messageId"]] = max(count, self.receives.get(record["messageId"], 0))
        response: Any = None
        error: BaseException | None = None
        try:
            response = self.invoke({"Records": records})
        except Exception as raised:  # the function failed: Lambda retries the whole batch
            error = raised
        self.invocations += 1
        failed = set(ids) if error is not None else item_failures(response, ids)
        whole = failed is None or error is not None
        left = set(ids) if failed is None else failed
        done = [record for record in records if record["messageId"] not in left]
        for start in range(0, len(done), DELETE_MAX):
            chunk = done[start : start + DELETE_MAX]
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": record["receiptHandle"]} for n, record in enumerate(chunk)],
            )
        return Delivery(records, response, error, frozenset(left), whole)

    def _window_passed(self) -> bool:
        return bool(self._gathering) and time.time() - self._since >= self.batching.window

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        attributes = message.get("Attributes", {})
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": {name: attributes[name] for name in LAMBDA_ATTRIBUTES if name in attributes},
            "messageAttributes": {
                name: lambda_attribute(value) for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": self._queue_arn,
            "awsRegion": self._queue_arn.split(":")[3],
        }
        if "MD5OfMessageAttributes" in message:
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        return record


def lambda_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """A message attribute as ReceiveMessage gives it -> as Lambda's SQS record carries it."""
    shaped: dict[str, Any] = {"stringListValues": [], "binaryListValues": [], "dataType": value["DataType"]}
    if "StringValue" in value:
        shaped["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        shaped["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return shaped


def item_failures(response: Any, ids: list[str]) -> set[str] | None:
    """The message ids a partial batch response leaves to SQS; None when it is no valid one (the whole batch
    failed), as Lambda reads ReportBatchItemFailures answers."""
    if response is None or response == {}:
        return set()
    if not isinstance(response, dict):
        return None
    items = response.get("batchItemFailures")
    if items is None or items == []:
        return set()
    if not isinstance(items, list):
        return None
    failed: set[str] = set()
    for item in items:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or identifier not in ids:
            return None
        failed.add(identifier)
    return failed
