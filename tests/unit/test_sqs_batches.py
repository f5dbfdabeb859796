"""SQS batch calls cut to SQS's limits (10 entries, 256 KiB), sent side by side, retried once, within a deadline."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from handler.aws import clients, sqs_batches
from handler.aws.sqs_batches import MAX_ENTRIES, MAX_PAYLOAD_BYTES, Batch, Entry
from handler.core.deadline import Deadline

WORKERS = ThreadPoolExecutor(max_workers=4)


class FakeSqs:
    """A batch call that refuses what SQS refuses, and fails the entries named in `fail` (once each, or always)."""

    def __init__(self, fail: set[str] | None = None, *, always: bool = False) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self.fail = fail or set()
        self.always = always

    def __call__(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [entry["Id"] for entry in entries]
        assert 1 <= len(entries) <= MAX_ENTRIES
        assert len(set(ids)) == len(ids)
        assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,80}", entry_id) for entry_id in ids)
        assert sum(len(entry.get("MessageBody", "")) for entry in entries) <= MAX_PAYLOAD_BYTES
        self.calls.append(entries)
        failed = [entry for entry in entries if entry["Name"] in self.fail]
        if not self.always:
            self.fail -= {entry["Name"] for entry in failed}
        return {
            "Successful": [
                {"Id": entry["Id"], "MessageId": f"new-{entry['Name']}"} for entry in entries if entry not in failed
            ],
            "Failed": [{"Id": entry["Id"], "Code": "InternalError", "SenderFault": False} for entry in failed],
        }


def entries(count: int, size: int = 1) -> list[Entry[str]]:
    return [Entry(f"m{index}", {"Name": f"m{index}", "MessageBody": "x" * size}, size) for index in range(count)]


@given(st.lists(st.integers(min_value=0, max_value=MAX_PAYLOAD_BYTES + 10), max_size=60))
def test_chunks_hold_at_most_ten_entries_and_256_kib_and_keep_every_entry_in_order(sizes: list[int]) -> None:
    given_entries = [Entry(index, {}, size) for index, size in enumerate(sizes)]
    chunks, too_large = sqs_batches.chunked(given_entries)
    assert all(1 <= len(chunk) <= MAX_ENTRIES for chunk in chunks)
    assert all(sum(entry.size for entry in chunk) <= MAX_PAYLOAD_BYTES for chunk in chunks)
    assert [entry.key for chunk in chunks for entry in chunk] == [
        index for index, size in enumerate(sizes) if size <= MAX_PAYLOAD_BYTES
    ]
    assert [entry.key for entry in too_large] == [index for index, size in enumerate(sizes) if size > MAX_PAYLOAD_BYTES]


def test_a_thousand_entries_go_in_a_hundred_calls_each_sqs_would_take() -> None:
    sqs = FakeSqs()
    outcome = sqs_batches.send_all([Batch(sqs, entries(1000))], Deadline.after(60), WORKERS)
    assert len(sqs.calls) == 100
    assert len(outcome.succeeded) == 1000
    assert outcome.failed == {}
    assert outcome.succeeded["m999"]["MessageId"] == "new-m999"


def test_large_messages_share_no_call_past_256_kib() -> None:
    sqs = FakeSqs()
    sqs_batches.send_all([Batch(sqs, entries(10, size=100_000))], Deadline.after(60), WORKERS)
    assert [len(call) for call in sqs.calls] == [2, 2, 2, 2, 2]


def test_entries_sqs_fails_are_sent_once_more_then_left_failed() -> None:
    # GIVEN SQS failing m3 once, and m7 every time
    once, always = FakeSqs({"m3"}), FakeSqs({"m7"}, always=True)
    batches = [Batch(once, entries(5)), Batch(always, [Entry("m7", {"Name": "m7"})])]

    outcome = sqs_batches.send_all(batches, Deadline.after(60), WORKERS)

    # THEN m3 got through on its second try; m7 was tried twice and is failed with SQS's code
    assert "m3" in outcome.succeeded
    assert outcome.failed == {"m7": "InternalError"}
    assert [[entry["Name"] for entry in call] for call in once.calls] == [["m0", "m1", "m2", "m3", "m4"], ["m3"]]
    assert len(always.calls) == 2


def test_a_call_that_raises_fails_its_entries_and_the_others_go_on() -> None:
    from botocore.exceptions import EndpointConnectionError

    def unreachable(_: list[dict[str, Any]]) -> dict[str, Any]:
        raise EndpointConnectionError(endpoint_url="https://sqs.example")

    sqs = FakeSqs()
    outcome = sqs_batches.send_all(
        [Batch(unreachable, entries(3)), Batch(sqs, [Entry("other", {"Name": "other"})])], Deadline.after(60), WORKERS
    )
    assert outcome.failed == dict.fromkeys(["m0", "m1", "m2"], "EndpointConnectionError")
    assert list(outcome.succeeded) == ["other"]


def test_no_call_starts_that_could_not_end_before_the_deadline() -> None:
    sqs = FakeSqs()
    deadline = Deadline.after(clients.SQS.worst_seconds - 0.01)
    outcome = sqs_batches.send_all([Batch(sqs, entries(25))], deadline, WORKERS)
    assert sqs.calls == []
    assert set(outcome.failed) == {f"m{index}" for index in range(25)}
