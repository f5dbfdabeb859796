"""The kickout core on plain values: what a valid request is, how it becomes ZEGO calls, and the retry policy."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from pydantic import ValidationError

from handler.core.deadline import Deadline
from handler.core.errors import OutOfTime, ZegoCircuitOpen, ZegoRefused, ZegoUnavailable
from handler.core.kickout import carry_out, coalesce, plan
from handler.core.models import MAX_USERS_PER_REQUEST, KickoutRequest, describe_invalid, field_problems
from handler.core.ports import HttpReply, TransportFailure, ZegoUnwell
from handler.fleet.pacing import Pacer
from handler.zego import zim
from handler.zego.client import RetryPolicy, ZimClient
from kickout_dev.clock import SimulatedClock
from kickout_dev.zim_server import parse_query

GOOD = {"room_id": "lobby-7", "user_ids": ["u1"]}


@pytest.mark.parametrize(
    "payload",
    [
        GOOD,
        {**GOOD, "reason": "spam", "operator_id": "mod"},
        {**GOOD, "reason": ""},
        {**GOOD, "reason": None, "operator_id": None},
        {"room_id": "a&UserId[]=admin", "user_ids": ["x" * 32, "!#$%&()+-:;<=.>?@[]^_{}|~, "]},
        {**GOOD, "user_ids": [f"u{index}" for index in range(MAX_USERS_PER_REQUEST)]},
        {**GOOD, "reason": "理由" * 500},
    ],
)
def test_valid_payloads_are_accepted_as_given(payload: dict[str, Any]) -> None:
    for request in (KickoutRequest.model_validate(payload), KickoutRequest.model_validate_json(json.dumps(payload))):
        # the ids exactly as sent (each user once, in order), the optional fields as given or None
        assert request.room_id == payload["room_id"]
        assert request.user_ids == list(dict.fromkeys(payload["user_ids"]))
        assert request.reason == payload.get("reason")
        assert request.operator_id == payload.get("operator_id")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"user_ids": ["u1"]}, "room_id"),
        ({**GOOD, "room_id": ""}, "room_id"),
        ({**GOOD, "room_id": "r" * 33}, "room_id"),
        ({**GOOD, "room_id": "lobby/7"}, "room_id"),
        ({**GOOD, "room_id": "lobby\n7"}, "room_id"),
        ({**GOOD, "room_id": "lobby-ü"}, "room_id"),
        ({**GOOD, "room_id": "lobby\u00a07"}, "room_id"),
        ({**GOOD, "room_id": 7}, "room_id"),
        ({**GOOD, "room_id": None}, "room_id"),
        ({"room_id": "r"}, "user_ids"),
        ({**GOOD, "user_ids": []}, "user_ids"),
        ({**GOOD, "user_ids": "u1"}, "user_ids"),
        ({**GOOD, "user_ids": [""]}, "user_ids.0"),
        ({**GOOD, "user_ids": ["ok", 5]}, "user_ids.1"),
        ({**GOOD, "user_ids": ["ok", "用户"]}, "user_ids.1"),
        ({**GOOD, "user_ids": ["u" * 33]}, "user_ids.0"),
        ({**GOOD, "user_ids": [f"u{index}" for index in range(MAX_USERS_PER_REQUEST + 1)]}, "user_ids"),
        ({**GOOD, "reason": 42}, "reason"),
        ({**GOOD, "reason": "r" * 1025}, "reason"),
        ({**GOOD, "operator_id": ""}, "operator_id"),
        ({**GOOD, "operator_id": "mod/1"}, "operator_id"),
        ({**GOOD, "userIds": ["u2"]}, "userIds"),
    ],
)
def test_invalid_payloads_are_refused_naming_the_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        KickoutRequest.model_validate_json(json.dumps(payload))
    assert field in describe_invalid(refused.value)


def test_refusal_never_repeats_the_input() -> None:
    hostile = "a/b<img src=x onerror=1>"
    with pytest.raises(ValidationError) as refused:
        KickoutRequest.model_validate({**GOOD, "room_id": hostile, "user_ids": ["x" * 5000]})
    described = describe_invalid(refused.value)
    assert "room_id: must be 1 to 32 characters: ASCII letters, digits, space and" in described
    assert "user_ids.0: String should have at most 32 characters" in described
    assert "img" not in described
    assert "xxx" not in described


def test_duplicate_users_are_dropped_keeping_first_order() -> None:
    request = KickoutRequest.model_validate({**GOOD, "user_ids": ["b", "a", "b", "c", "a"]})
    assert request.user_ids == ["b", "a", "c"]


def test_more_than_50_users_become_calls_of_at_most_50() -> None:
    request = KickoutRequest.model_validate({**GOOD, "user_ids": [f"u{index}" for index in range(120)]})
    calls = plan(request).calls
    assert [len(call.user_ids) for call in calls] == [50, 50, 20]
    assert [user for call in calls for user in call.user_ids] == request.user_ids


def test_a_long_reason_is_cut_and_said_so() -> None:
    kickout_plan = plan(KickoutRequest.model_validate({**GOOD, "reason": "é" * 20}))
    assert kickout_plan.calls[0].reason == "é" * 16
    assert kickout_plan.reason_truncated


def test_a_short_reason_is_sent_whole() -> None:
    kickout_plan = plan(KickoutRequest.model_validate({**GOOD, "reason": "spam", "operator_id": "mod"}))
    assert kickout_plan.calls[0] == zim.KickoutCall("lobby-7", ("u1",), reason="spam", operator_id="mod")
    assert not kickout_plan.reason_truncated


# --- the retry policy, with ZEGO's answers scripted --------------------------------------------------------


def zego(code: int) -> HttpReply:
    return HttpReply(200, json.dumps({"Code": code, "Message": f"code {code}", "RequestId": f"rid-{code}"}).encode())


@dataclass
class ScriptedZego:
    """Answers each request with the next scripted answer, and keeps what it was sent."""

    answers: list[HttpReply | TransportFailure]
    urls: list[str] = field(default_factory=list)
    timeouts: list[float] = field(default_factory=list)

    def __call__(self, url: str, timeout: float) -> HttpReply:
        self.urls.append(url)
        self.timeouts.append(timeout)
        answer = self.answers[min(len(self.urls), len(self.answers)) - 1]
        if isinstance(answer, TransportFailure):
            raise answer
        return answer

    @property
    def params(self) -> list[dict[str, list[str]]]:
        return [parse_query(url.partition("?")[2]) for url in self.urls]


def client_for(
    zego_answers: ScriptedZego,
    clock: SimulatedClock,
    secrets: Iterator[str] | None = None,
    *,
    seconds_left: float = 20.0,
) -> tuple[ZimClient, list[bool]]:
    """A client on the simulated clock, its invocation `seconds_left` from its deadline."""
    forced: list[bool] = []
    secret_values = secrets or itertools.repeat("secret-1")

    def read_secret(force_fetch: bool, _deadline: Deadline) -> str:
        forced.append(force_fetch)
        return next(secret_values)

    nonces = (f"{index:016x}" for index in itertools.count(1))
    client = ZimClient(
        endpoint="https://zim-api.zego.im/",
        app_id=12345,
        read_secret=read_secret,
        send=zego_answers,
        deadline=clock.deadline_in(seconds_left),
        now=clock,
        new_nonce=lambda: next(nonces),
        sleep=clock.sleep,
        jitter=lambda: 1.0,
    )
    return client, forced


CALL = zim.KickoutCall("lobby-7", ("u1",))


@pytest.mark.parametrize("code", [0, 660300001, 660300002])
def test_done_and_nothing_to_do_end_at_the_first_answer(code: int) -> None:
    zego_answers, clock = ScriptedZego([zego(code)]), SimulatedClock()
    client, _ = client_for(zego_answers, clock)
    assert client.call(CALL).code == code
    assert len(zego_answers.urls) == 1


@pytest.mark.parametrize("code", [2, 3, 100000001, 660000011, 660000012, 660500002, 123456])
def test_permanent_refusals_are_never_retried(code: int) -> None:
    zego_answers, clock = ScriptedZego([zego(code), zego(0)]), SimulatedClock()
    client, _ = client_for(zego_answers, clock)
    with pytest.raises(ZegoRefused) as refused:
        client.call(CALL)
    assert refused.value.reply.code == code
    assert len(zego_answers.urls) == 1


@pytest.mark.parametrize(
    "failure",
    [
        zego(1),
        zego(7),
        zego(660300005),
        zego(660000001),
        zego(100000010),
        HttpReply(500, b"oops"),
        HttpReply(503, b""),
        HttpReply(200, b"<html>"),
        TransportFailure("reset", timed_out=False),
        TransportFailure("slow", timed_out=True),
    ],
)
def test_transient_failures_are_retried_with_a_fresh_signature(failure: HttpReply | TransportFailure) -> None:
    zego_answers, clock = ScriptedZego([failure, failure, zego(0)]), SimulatedClock()
    client, _ = client_for(zego_answers, clock)
    assert client.call(CALL).code == 0
    params = zego_answers.params
    assert len(params) == 3
    assert len({p["SignatureNonce"][0] for p in params}) == 3
    assert len({p["Signature"][0] for p in params}) == 3
    assert [int(p["Timestamp"][0]) for p in params] == sorted(int(p["Timestamp"][0]) for p in params)
    assert clock.slept == [0.2, 0.4]  # exponential; jitter pinned to its ceiling here


def test_backoff_is_jittered_below_its_ceiling() -> None:
    zego_answers, clock = ScriptedZego([zego(1), zego(1), zego(0)]), SimulatedClock()
    client, _ = client_for(zego_answers, clock)
    client.jitter = lambda: 0.25
    client.call(CALL)
    assert clock.slept == [0.05, 0.1]


def test_transient_failures_give_up_after_the_attempt_limit() -> None:
    zego_answers, clock = ScriptedZego([zego(1)]), SimulatedClock()
    client, _ = client_for(zego_answers, clock)
    with pytest.raises(ZegoUnavailable) as unavailable:
        client.call(CALL)
    assert len(zego_answers.urls) == RetryPolicy().max_attempts
    assert unavailable.value.reply is not None
    assert unavailable.value.reply.code == 1
    assert not unavailable.value.rate_limited


def test_rate_limited_failures_say_so() -> None:
    client, _ = client_for(ScriptedZego([zego(660300006)]), SimulatedClock())
    with pytest.raises(ZegoUnavailable) as unavailable:
        client.call(CALL)
    assert unavailable.value.rate_limited


def test_http_429_counts_as_rate_limited() -> None:
    client, _ = client_for(ScriptedZego([HttpReply(429, b"")]), SimulatedClock())
    with pytest.raises(ZegoUnavailable) as unavailable:
        client.call(CALL)
    assert unavailable.value.rate_limited


def test_timeouts_say_so() -> None:
    client, _ = client_for(ScriptedZego([TransportFailure("slow", timed_out=True)]), SimulatedClock())
    with pytest.raises(ZegoUnavailable) as unavailable:
        client.call(CALL)
    assert unavailable.value.timed_out


def test_retries_stop_before_the_lambda_deadline() -> None:
    # GIVEN 2.5 s left, 1.5 s of which are kept as the safety margin
    zego_answers, clock = ScriptedZego([zego(1)]), SimulatedClock()
    client, _ = client_for(zego_answers, clock, seconds_left=2.5)
    client.jitter = lambda: 1.0
    with pytest.raises(ZegoUnavailable):
        client.call(CALL)
    # THEN no request is given more time than is left, and no sleep runs past the margin
    assert all(timeout <= 1.0 for timeout in zego_answers.timeouts)
    assert client.deadline.remaining() >= RetryPolicy().safety_margin


def test_no_request_is_sent_without_time_to_wait_for_it() -> None:
    zego_answers, clock = ScriptedZego([zego(0)]), SimulatedClock()
    client, _ = client_for(zego_answers, clock, seconds_left=1.0)
    with pytest.raises(OutOfTime):
        client.call(CALL)
    assert zego_answers.urls == []


def test_an_expired_signature_is_signed_again_once_at_once() -> None:
    zego_answers, clock = ScriptedZego([zego(100000004), zego(0)]), SimulatedClock()
    client, _ = client_for(zego_answers, clock)
    assert client.call(CALL).code == 0
    assert clock.slept == []
    first, second = zego_answers.params
    assert first["SignatureNonce"] != second["SignatureNonce"]


def test_an_expired_signature_twice_means_a_wrong_clock_and_is_transient() -> None:
    zego_answers, clock = ScriptedZego([zego(100000004)]), SimulatedClock()
    client, _ = client_for(zego_answers, clock)
    with pytest.raises(ZegoUnavailable, match="clock"):
        client.call(CALL)
    assert len(zego_answers.urls) == 2


def test_an_invalid_signature_rereads_the_secret_once() -> None:
    # GIVEN the secret was rotated: the cached value is stale, a fresh read gives the new one
    zego_answers, clock = ScriptedZego([zego(100000005), zego(0)]), SimulatedClock()
    client, forced = client_for(zego_answers, clock, secrets=iter(["stale", "rotated"]))
    assert client.call(CALL).code == 0
    assert forced == [False, True]
    first, second = zego_answers.params
    assert second["Signature"] == [zim.sign(12345, second["SignatureNonce"][0], "rotated", int(second["Timestamp"][0]))]
    assert first["Signature"] != second["Signature"]


def test_an_invalid_signature_after_a_fresh_read_is_permanent_and_says_why() -> None:
    zego_answers, clock = ScriptedZego([zego(100000005)]), SimulatedClock()
    client, forced = client_for(zego_answers, clock)
    with pytest.raises(ZegoRefused, match="ServerSecret or the AppId is wrong"):
        client.call(CALL)
    assert forced == [False, True]


def test_a_plan_of_several_calls_reports_each() -> None:
    zego_answers = ScriptedZego([zego(0), zego(660300002), zego(0)])
    client, _ = client_for(zego_answers, SimulatedClock())
    request = KickoutRequest.model_validate({**GOOD, "user_ids": [f"u{index}" for index in range(101)]})
    result = carry_out(request, client.call)
    assert result.kicked_user_ids == [f"u{index}" for index in range(50)] + ["u100"]
    assert result.absent_user_ids == [f"u{index}" for index in range(50, 100)]
    assert result.request_ids == ["rid-0", "rid-660300002", "rid-0"]


def test_an_empty_reason_is_not_sent_and_not_reported_as_cut() -> None:
    kickout_plan = plan(KickoutRequest.model_validate({**GOOD, "reason": ""}))
    assert kickout_plan.calls[0].reason is None
    assert not kickout_plan.reason_truncated


# --- coalescing ---------------------------------------------------------------------------------------------


def request(room: str, *users: str, reason: str | None = None, operator: str | None = None) -> KickoutRequest:
    return KickoutRequest(room_id=room, user_ids=list(users), reason=reason, operator_id=operator)


def test_messages_for_one_room_reason_and_operator_share_one_call() -> None:
    requests = [(f"m{index}", request("lobby", f"u{index}", reason="spam")) for index in range(10)]
    groups = coalesce(requests)
    assert len(groups) == 1
    assert groups[0].request.user_ids == [f"u{index}" for index in range(10)]
    assert [key for key, _ in groups[0].members] == [f"m{index}" for index in range(10)]
    assert len(plan(groups[0].request).calls) == 1


def test_another_room_reason_or_operator_is_another_call() -> None:
    requests = [
        ("a", request("lobby", "u1", reason="spam")),
        ("b", request("other", "u2", reason="spam")),
        ("c", request("lobby", "u3", reason="abuse")),
        ("d", request("lobby", "u4", reason="spam", operator="mod")),
        ("e", request("lobby", "u5", reason="spam")),
    ]
    assert [[key for key, _ in group.members] for group in coalesce(requests)] == [["a", "e"], ["b"], ["c"], ["d"]]


def test_a_merged_call_never_holds_more_than_50_users() -> None:
    requests = [(f"m{index}", request("lobby", *(f"u{index}-{n}" for n in range(20)))) for index in range(5)]
    groups = coalesce(requests)
    assert [len(group.request.user_ids) for group in groups] == [40, 40, 20]
    assert all(len(plan(group.request).calls) == 1 for group in groups)


def test_a_request_of_over_50_users_stays_alone() -> None:
    big = request("lobby", *(f"u{n}" for n in range(60)))
    groups = coalesce([("big", big), ("small", request("lobby", "x"))])
    assert [[key for key, _ in group.members] for group in groups] == [["big"], ["small"]]


def test_users_shared_by_merged_messages_are_sent_once() -> None:
    groups = coalesce([("a", request("lobby", "u1", "u2")), ("b", request("lobby", "u2", "u3"))])
    assert groups[0].request.user_ids == ["u1", "u2", "u3"]


def test_a_merged_result_is_split_back_per_message() -> None:
    zego_answers = ScriptedZego([zego(0)])
    client, _ = client_for(zego_answers, SimulatedClock())
    group = coalesce([("a", request("lobby", "u1", "u2")), ("b", request("lobby", "u3"))])[0]
    merged = carry_out(group.request, client.call)
    assert merged.for_users(["u1", "u2"]).kicked_user_ids == ["u1", "u2"]
    assert merged.for_users(["u3"]).kicked_user_ids == ["u3"]
    assert merged.for_users(["u3"]).request_ids == ["rid-0"]


# --- pace and secret reads across attempts -------------------------------------------------------------------


@pytest.mark.parametrize("answer", [zego(660300005), HttpReply(429, b"")])
def test_any_rate_limit_answer_slows_the_pace(answer: HttpReply) -> None:
    # GIVEN a paced client whose first call is answered "over the rate limit" (as a ZEGO code or HTTP 429)
    clock = SimulatedClock()
    gate = Pacer(share=8, clock=clock, sleep=clock.sleep)
    client, _ = client_for(ScriptedZego([answer, zego(0)]), clock)
    client.pacer = gate
    # WHEN the call is retried to success
    client.call(CALL)
    # THEN the pace was halved, then given back a tenth of the share by the success
    assert gate.rate == pytest.approx(4 + 0.8)


def test_no_pacing_slot_before_the_deadline_is_out_of_time_and_asks_zego_nothing() -> None:
    clock = SimulatedClock()
    gate = Pacer(share=0.5, clock=clock, sleep=clock.sleep)
    assert gate.acquire(max_wait=0)  # someone took the slot: the next is 2 s away, past what is left
    zego_answers = ScriptedZego([zego(0)])
    client, _ = client_for(zego_answers, clock, seconds_left=3.0)
    client.pacer = gate
    with pytest.raises(OutOfTime, match="slot"):
        client.call(CALL)
    assert zego_answers.urls == []


def test_only_the_attempt_after_a_rejected_signature_reads_the_secret_past_the_cache() -> None:
    zego_answers = ScriptedZego([zego(100000005), zego(1), zego(1), zego(0)])
    client, forced = client_for(zego_answers, SimulatedClock())
    client.call(CALL)
    assert forced == [False, True, False, False]


def test_running_out_of_time_after_zego_answered_reports_what_zego_said() -> None:
    # GIVEN ZEGO busy on the first attempt, and then no time left for a second
    clock = SimulatedClock()
    zego_answers = ScriptedZego([zego(1), zego(0)])
    client, _ = client_for(zego_answers, clock, seconds_left=3.0)
    client.sleep = lambda seconds: setattr(clock, "now", client.deadline.at - 1.6)  # the backoff ate the time
    # WHEN the call gives up
    with pytest.raises(ZegoUnavailable) as unavailable:
        client.call(CALL)
    # THEN it is ZEGO's answer that is reported (not "no time to call ZEGO": ZEGO was called)
    assert unavailable.value.reply is not None
    assert unavailable.value.reply.code == 1
    assert len(zego_answers.urls) == 1


def test_a_flood_of_problems_is_listed_in_twenty_lines_the_last_counting_the_rest() -> None:
    with pytest.raises(ValidationError) as refused:
        KickoutRequest.model_validate({**GOOD, **{f"extra{index}": 1 for index in range(1000)}})
    problems = field_problems(refused.value.errors())
    assert len(problems) == 20
    assert problems[-1] == {"field": "…", "problem": "and 981 more problems"}


# --- the health port: every attempt through the fleet's circuit --------------------------------------------------

Outcome = TypeVar("Outcome")


@dataclass
class RecordingCircuit:
    """The Health port as a circuit breaker would use it: runs attempts until `open_after` of them, noting verdicts."""

    open_after: int = 1000
    verdicts: list[str] = field(default_factory=list)

    def guard(self, attempt: Callable[[], Outcome], deadline: Deadline) -> Outcome:
        if len(self.verdicts) >= self.open_after:
            raise ZegoCircuitOpen("ZEGO kept failing", retry_after=12)
        try:
            result = attempt()
        except ZegoUnwell:
            self.verdicts.append("unwell")
            raise
        self.verdicts.append("served")
        return result


def test_every_attempt_tells_the_health_guard_whether_zego_served() -> None:
    # GIVEN ZEGO busy, then down, then over the rate limit, then answering
    circuit = RecordingCircuit()
    client, _ = client_for(ScriptedZego([zego(1), HttpReply(503, b""), zego(660300005), zego(0)]), SimulatedClock())
    client.health = circuit
    # WHEN the call is retried to success
    assert client.call(CALL).code == 0
    # THEN each attempt went through the guard, and only the answer counts for ZEGO's health
    assert circuit.verdicts == ["unwell", "unwell", "unwell", "served"]


@pytest.mark.parametrize("code", [660500002, 660300002])
def test_a_refusal_or_nothing_to_do_comes_from_a_zego_that_serves(code: int) -> None:
    circuit = RecordingCircuit()
    client, _ = client_for(ScriptedZego([zego(code)]), SimulatedClock())
    client.health = circuit
    with contextlib.suppress(ZegoRefused):
        client.call(CALL)
    assert circuit.verdicts == ["served"]


def test_an_open_circuit_asks_zego_nothing_and_says_when_to_come_back() -> None:
    zego_answers = ScriptedZego([zego(0)])
    client, _ = client_for(zego_answers, SimulatedClock())
    client.health = RecordingCircuit(open_after=0)
    with pytest.raises(ZegoCircuitOpen) as circuit_open:
        client.call(CALL)
    assert circuit_open.value.retry_after == 12
    assert zego_answers.urls == []


def test_a_circuit_opened_by_this_request_reports_what_zego_said() -> None:
    # GIVEN ZEGO busy on the first attempt, after which the circuit opens
    zego_answers = ScriptedZego([zego(1), zego(0)])
    client, _ = client_for(zego_answers, SimulatedClock())
    client.health = RecordingCircuit(open_after=1)
    # WHEN the call gives up at once
    with pytest.raises(ZegoUnavailable) as unavailable:
        client.call(CALL)
    # THEN ZEGO's answer is the news, not the circuit (ZEGO was asked), and no second attempt was made
    assert not isinstance(unavailable.value, ZegoCircuitOpen)
    assert unavailable.value.reply is not None
    assert unavailable.value.reply.code == 1
    assert len(zego_answers.urls) == 1


UNREADABLE_REPLIES = {
    "nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
    "a Code of 5,000 digits": b'{"Code": ' + b"9" * 5000 + b"}",
    "a negative Code": b'{"Code": -1}',
    "a Code given twice": b'{"Code": 0, "Code": 660500002}',
    "not UTF-8": b'{"Code": 0, "Message": "\xff"}',
    "NaN": b'{"Code": NaN}',
}


@pytest.mark.parametrize("body", UNREADABLE_REPLIES.values(), ids=UNREADABLE_REPLIES.keys())
def test_an_unreadable_reply_is_retried_with_backoff_and_counts_against_zegos_health(body: bytes) -> None:
    # GIVEN ZEGO answering 200 with something that is not its envelope, twice, then properly
    circuit, clock = RecordingCircuit(), SimulatedClock()
    client, _ = client_for(ScriptedZego([HttpReply(200, body), HttpReply(200, body), zego(0)]), clock)
    client.health = circuit
    # WHEN the call is made THEN it is retried as a transport failure, with backoff, to success
    assert client.call(CALL).code == 0
    assert clock.slept == [0.2, 0.4]
    # AND each unreadable reply told the health guard that ZEGO did not serve
    assert circuit.verdicts == ["unwell", "unwell", "served"]


@pytest.mark.parametrize("body", UNREADABLE_REPLIES.values(), ids=UNREADABLE_REPLIES.keys())
def test_unreadable_replies_every_time_end_as_zego_unavailable_not_as_a_refusal(body: bytes) -> None:
    zego_answers = ScriptedZego([HttpReply(200, body)])
    client, _ = client_for(zego_answers, SimulatedClock())
    with pytest.raises(ZegoUnavailable) as unavailable:
        client.call(CALL)
    assert type(unavailable.value) is ZegoUnavailable
    assert unavailable.value.reply is None
    assert not unavailable.value.timed_out
    assert not unavailable.value.rate_limited
    assert len(zego_answers.urls) == RetryPolicy().max_attempts


@dataclass
class SlowCircuit(RecordingCircuit):
    """A circuit whose store read takes `read_seconds` of the invocation's time before each attempt."""

    clock: SimulatedClock = field(default_factory=SimulatedClock)
    read_seconds: float = 0.0

    def guard(self, attempt: Callable[[], Outcome], deadline: Deadline) -> Outcome:
        self.clock.now += self.read_seconds
        return super().guard(attempt, deadline)


def test_a_request_is_given_what_is_left_when_it_is_sent_not_before_the_circuits_read() -> None:
    # GIVEN 6 s left, and a circuit whose store read takes 3 s (a slow store, a starved CPU)
    clock = SimulatedClock()
    zego_answers = ScriptedZego([zego(0)])
    client, _ = client_for(zego_answers, clock, seconds_left=6.0)
    client.health = SlowCircuit(clock=clock, read_seconds=3.0)
    # WHEN the call is made
    client.call(CALL)
    # THEN the request was given what was left after the read, less the safety margin: not the 4.5 s left before it
    assert zego_answers.timeouts == [pytest.approx(6.0 - 3.0 - RetryPolicy().safety_margin)]


def test_no_time_left_once_the_turn_comes_is_out_of_time_zego_not_asked_nothing_counted() -> None:
    # GIVEN 3 s left, and a circuit read that takes 1.2 s of it (leaving 0.3 s after the safety margin)
    clock = SimulatedClock()
    zego_answers = ScriptedZego([zego(0)])
    circuit = SlowCircuit(clock=clock, read_seconds=1.2)
    client, _ = client_for(zego_answers, clock, seconds_left=3.0)
    client.health = circuit
    # WHEN the call is made THEN no request too short to be answered goes out: OutOfTime, not a ZEGO timeout
    with pytest.raises(OutOfTime):
        client.call(CALL)
    assert zego_answers.urls == []
    # AND ZEGO's health heard nothing of it: it was not asked
    assert circuit.verdicts == []


def test_a_pacing_slot_that_comes_late_is_out_of_time_not_a_short_request() -> None:
    # GIVEN a pacer that grants its slot only after 1.4 s of a 3 s invocation (a slow budget store)
    clock = SimulatedClock()

    @dataclass
    class LatePacer:
        def acquire(self, max_wait: float) -> bool:
            clock.now += 1.4
            return True

        def expect(self, calls: int) -> None: ...

        def slow_down(self) -> None: ...

        def speed_up(self) -> None: ...

    zego_answers = ScriptedZego([zego(0)])
    client, _ = client_for(zego_answers, clock, seconds_left=3.0)
    client.pacer = LatePacer()
    with pytest.raises(OutOfTime):
        client.call(CALL)
    assert zego_answers.urls == []


def test_a_timeout_cut_short_by_the_deadline_says_nothing_of_zegos_health() -> None:
    # GIVEN 3 s left: a request may take 1.5 s, less than the policy's 5 s; ZEGO does not answer in it
    clock = SimulatedClock()
    circuit = RecordingCircuit()
    client, _ = client_for(ScriptedZego([TransportFailure("slow", timed_out=True)]), clock, seconds_left=3.0)
    client.health = circuit
    # WHEN the call gives up
    with pytest.raises(ZegoUnavailable) as unavailable:
        client.call(CALL)
    # THEN it is a timeout for the caller, and nothing for ZEGO's circuit: this invocation's deadline cut it short
    assert unavailable.value.timed_out
    assert circuit.verdicts == []


def test_a_timeout_of_the_full_request_time_counts_against_zego() -> None:
    circuit = RecordingCircuit()
    zego_answers = ScriptedZego([TransportFailure("slow", timed_out=True), zego(0)])
    client, _ = client_for(zego_answers, SimulatedClock())
    client.health = circuit
    assert client.call(CALL).code == 0
    assert zego_answers.timeouts[0] == RetryPolicy().request_timeout
    assert circuit.verdicts == ["unwell", "served"]
