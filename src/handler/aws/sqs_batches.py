"""SQS batch calls within AWS's documented limits and within the invocation's deadline.

`SendMessageBatch`, `ChangeMessageVisibilityBatch` and `DeleteMessageBatch` take at most 10 entries, with ids
unique within the call and of `[A-Za-z0-9_-]{1,80}`, and `SendMessageBatch` at most 256 KiB of messages in all
(moto accepts more and says nothing; SQS refuses the whole call). So entries go in chunks of at most 10 and
256 KiB, with ids "0" to "9"; the chunks of every batch call of an invocation run side by side on the given
workers; a chunk starts only while the deadline leaves one call's worst case (`clients.SQS`), and entries SQS
answers in `Failed` (or whose whole call failed) are sent once more when time allows. What does not get through is
the caller's to report: SQS keeps those messages.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, Generic, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from handler.aws import clients
from handler.core.deadline import Deadline

MAX_ENTRIES: Final = 10
MAX_PAYLOAD_BYTES: Final = 256 * 1024
"""SendMessageBatch: the messages of one call, bodies and attributes, at most 256 KiB together."""

Key = TypeVar("Key", bound=Hashable)
BatchCall = Callable[[list[dict[str, Any]]], Mapping[str, Any]]
"""One batch call (its queue bound): entries without ids are given theirs; returns SQS's answer."""


@dataclass(frozen=True, slots=True)
class Entry(Generic[Key]):
    key: Key
    """The caller's name for the entry (a message id)."""
    request: dict[str, Any]
    """The entry as SQS takes it, without its `Id`."""
    size: int = 0
    """Bytes it adds to the call's payload (SendMessageBatch: body and attributes; 0 where there is no limit)."""


@dataclass(frozen=True, slots=True)
class Batch(Generic[Key]):
    """Entries for one batch call on one queue."""

    call: BatchCall
    entries: Sequence[Entry[Key]]


@dataclass(slots=True)
class Outcome(Generic[Key]):
    succeeded: dict[Key, Mapping[str, Any]] = field(default_factory=dict)
    """Each entry SQS took, with its `Successful` answer (a sent message's `MessageId`)."""
    failed: dict[Key, str] = field(default_factory=dict)
    """Each entry that did not get through, and why (SQS's code, the call's error, or no time)."""


def message_size(body: str, attributes: Mapping[str, Mapping[str, Any]]) -> int:
    """What one message counts toward SQS's size limit: its body and each attribute's name, type and value."""
    size = len(body.encode())
    for name, attribute in attributes.items():
        size += len(name.encode()) + len(str(attribute.get("DataType", "")).encode())
        value = attribute.get("StringValue", attribute.get("BinaryValue", b""))
        size += len(value) if isinstance(value, bytes) else len(str(value).encode())
    return size


def chunked(entries: Sequence[Entry[Key]]) -> tuple[list[list[Entry[Key]]], list[Entry[Key]]]:
    """Chunks of at most 10 entries and 256 KiB, in order; and the entries too large to go in any call."""
    chunks: list[list[Entry[Key]]] = []
    too_large: list[Entry[Key]] = []
    current: list[Entry[Key]] = []
    current_size = 0
    for entry in entries:
        if entry.size > MAX_PAYLOAD_BYTES:
            too_large.append(entry)
            continue
        if len(current) == MAX_ENTRIES or current_size + entry.size > MAX_PAYLOAD_BYTES:
            chunks.append(current)
            current, current_size = [], 0
        current.append(entry)
        current_size += entry.size
    if current:
        chunks.append(current)
    return chunks, too_large


def send_all(batches: Sequence[Batch[Key]], deadline: Deadline, workers: Executor) -> Outcome[Key]:
    """Every entry of `batches`, in calls SQS accepts, side by side; what failed is sent once more if time allows."""
    outcome: Outcome[Key] = Outcome()
    pending = list(batches)
    for _ in range(2):  # the first try, and one more for what failed
        jobs: list[Batch[Key]] = []
        for batch in pending:
            chunks, too_large = chunked(batch.entries)
            outcome.failed |= {entry.key: "too large for an SQS message" for entry in too_large}
            jobs += [Batch(batch.call, chunk) for chunk in chunks]
        pending = []
        for job, results in zip(jobs, workers.map(partial(_send, deadline=deadline), jobs), strict=True):
            failed = []
            for entry, result in zip(job.entries, results, strict=True):
                if isinstance(result, str):
                    outcome.failed[entry.key] = result
                    failed.append(entry)
                else:
                    outcome.succeeded[entry.key] = result
                    outcome.failed.pop(entry.key, None)
            if failed:
                pending.append(Batch(job.call, failed))
        if not pending:
            break
    return outcome


def _send(chunk: Batch[Key], deadline: Deadline) -> list[Mapping[str, Any] | str]:
    """SQS's answer for each entry of one call (at most 10 entries): its `Successful` item, or why it failed."""
    if not deadline.allows(clients.SQS.worst_seconds):
        return ["no time left in this invocation"] * len(chunk.entries)
    try:
        answer = chunk.call([{**entry.request, "Id": str(index)} for index, entry in enumerate(chunk.entries)])
    except (BotoCoreError, ClientError) as error:
        code = error.response.get("Error", {}).get("Code") if isinstance(error, ClientError) else None
        return [str(code or type(error).__name__)] * len(chunk.entries)
    results: list[Mapping[str, Any] | str] = ["SQS did not answer for this entry"] * len(chunk.entries)
    for item in answer.get("Successful", []):
        results[int(item["Id"])] = item
    for item in answer.get("Failed", []):
        results[int(item["Id"])] = str(item.get("Code") or "Failed")
    return results
