"""Whatever ZEGO (or a proxy before it) sends back, through the real handler: a reply that trickles in, one far too
large, one that is no envelope at all. Each is ZEGO's fault, never the caller's: a transport failure, retried with
backoff, counted by ZEGO's circuit, answered 502 or 504 (never 400 or 500), and always within the deadline.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from handler.core.errors import ZegoUnavailable
from handler.fleet import circuit
from handler.zego.client import RetryPolicy
from kickout_dev.events import api_event, body_of, sqs_record
from kickout_dev.sandbox import Sandbox
from kickout_dev.zim_server import Fault
from tests.conftest import Invoke, Printed

KICKOUT = {"room_id": "lobby-7", "user_ids": ["spammer_01"]}
ATTEMPTS = RetryPolicy().max_attempts
SLACK = 1.0
"""How far past its deadline an invocation may end on a loaded machine: far less than any trickle here takes."""

UNREADABLE: dict[str, bytes] = {
    "nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,  # was the caller's 400 "nested too deeply"
    "a Code of 5,000 digits": b'{"Code": ' + b"7" * 5000 + b"}",  # was a 500 (int() refuses it)
    "a Code given twice": b'{"Code": 0, "Code": 660500002}',  # was the second one's 422
    "a negative Code": b'{"Code": -1, "Message": "system busy"}',  # was a permanent refusal: parked
    "a Code of 20 digits": b'{"Code": 12345678901234567890}',
    "Code NaN": b'{"Code": NaN}',
    "not UTF-8": b'{"Code": 0, "Message": "\xc3\x28"}',
    "UTF-16": '{"Code": 0}'.encode("utf-16"),
    "empty": b"",
    "JSON null": b"null",
    "a BOM alone": b"\xef\xbb\xbf",
    "10 MB": b'{"Code": 0, "Message": "' + b"x" * 10_000_000 + b'"}',
}


def post(invoke: Invoke, *, timeout_seconds: float = 20.0) -> dict[str, Any]:
    response: dict[str, Any] = invoke(api_event(json.dumps(KICKOUT)), timeout_seconds=timeout_seconds)
    return response


@pytest.mark.parametrize("body", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_an_unreadable_reply_every_time_is_zegos_failure_502_after_backing_off(
    invoke: Invoke, box: Sandbox, printed: Printed, body: bytes
) -> None:
    # GIVEN ZEGO answering 200 with something that is not its envelope, every time
    box.zim.script(*[Fault.body(body)] * ATTEMPTS)
    # WHEN a kickout is posted
    response = post(invoke)
    # THEN 502 zego_unavailable: not the caller's 400 or 422, not the function's 500
    assert response["statusCode"] == 502
    assert body_of(response)["error"] == "zego_unavailable"
    # AND it was retried like any transport failure, with backoff, and counted as such
    assert box.zim.requests_seen == ATTEMPTS
    assert box.backoff is not None
    assert len(box.backoff.sleeps) == ATTEMPTS - 1
    assert printed.metric("FailedTransient") == 1
    assert printed.metric("FailedUnexpected") == 0
    assert printed.metric("FailedInvalid") == 0
    # AND the body was never repeated into the answer or the logs
    if len(body) > 100:
        assert body[40:90].decode(errors="replace") not in response["body"] + printed.text


@pytest.mark.parametrize("body", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_one_unreadable_reply_is_retried_and_the_kickout_succeeds(invoke: Invoke, box: Sandbox, body: bytes) -> None:
    box.zim.script(Fault.body(body))
    response = post(invoke)
    assert response["statusCode"] == 200
    assert body_of(response)["kicked_user_ids"] == ["spammer_01"]
    assert box.zim.requests_seen == 2


def test_unreadable_replies_count_against_zegos_circuit(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN ZEGO answering 200 with a body nested too deeply, again and again
    box.zim.script(*[Fault.body(UNREADABLE["nested 100,000 deep"])] * 20)
    # WHEN requests keep coming
    statuses = [post(invoke)["statusCode"] for _ in range(3)]
    # THEN five in a row opened the circuit (as five timeouts would), and the third request spared ZEGO
    assert statuses == [502, 502, 503]
    assert box.zim.requests_seen == circuit.FAILURES_TO_OPEN


def test_a_direct_invoke_raises_zego_unavailable_for_an_unreadable_reply(invoke: Invoke, box: Sandbox) -> None:
    box.zim.script(*[Fault.body(UNREADABLE["a Code of 5,000 digits"])] * ATTEMPTS)
    with pytest.raises(ZegoUnavailable, match="larger than allowed"):
        invoke(dict(KICKOUT))


def test_a_queue_message_zego_answers_unreadably_goes_back_to_sqs_and_is_not_parked(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    box.zim.script(*[Fault.body(UNREADABLE["nested 100,000 deep"])] * ATTEMPTS)
    response = invoke({"Records": [sqs_record(json.dumps(KICKOUT), message_id="m1")]})
    assert response["batchItemFailures"] == [{"itemIdentifier": "m1"}]
    assert box.parked() == []
    assert printed.metric("FailedTransient") == 1


@pytest.mark.parametrize("head", [False, True], ids=["body", "status line and headers"])
def test_a_reply_that_trickles_is_a_504_within_the_invocations_deadline(
    invoke: Invoke, box: Sandbox, head: bool
) -> None:
    # GIVEN a warm environment (the secret read), then ZEGO sending each answer a byte every 150 ms (~10 s each)
    assert post(invoke)["statusCode"] == 200
    box.zim.script(*[Fault.trickle(0.15, head=head)] * ATTEMPTS)
    # WHEN a kickout is posted with 3.5 s left (2 s for a request after the function's safety margin)
    started = time.monotonic()
    response = post(invoke, timeout_seconds=3.5)
    elapsed = time.monotonic() - started
    # THEN 504 zego_unavailable, as for any timeout, within the invocation's time (not after the 10 s of the reply)
    assert response["statusCode"] == 504
    assert body_of(response)["error"] == "zego_unavailable"
    assert elapsed <= 3.5 + SLACK


@pytest.mark.parametrize(
    "fault", [Fault.oversize(10_000_000), Fault.oversize(10_000_000, chunked=True), Fault.huge_head(200_000)]
)
def test_a_reply_far_larger_than_an_answer_is_a_502_and_read_no_further(
    invoke: Invoke, box: Sandbox, fault: Fault
) -> None:
    # GIVEN ZEGO answering 200 with a body (or headers) of megabytes, every time
    box.zim.script(*[fault] * ATTEMPTS)
    # WHEN a kickout is posted
    started = time.monotonic()
    response = post(invoke, timeout_seconds=8.0)
    # THEN 502 zego_unavailable after the retries, within the invocation's time
    assert response["statusCode"] == 502
    assert body_of(response)["error"] == "zego_unavailable"
    assert "larger than allowed" in body_of(response)["message"]
    assert box.zim.requests_seen == ATTEMPTS
    assert time.monotonic() - started <= 8.0 + SLACK
    # AND the next kickout, on a connection of its own, succeeds
    assert post(invoke)["statusCode"] == 200
