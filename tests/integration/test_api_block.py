"""One API request's calls as one block: booked together in the fleet's budget, sent side by side over the shared
pool, each signed, answered and reported on its own (the loopback ZIM stand-in at ZEGO's 20 calls/s, moto)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from kickout_dev.events import api_event
from kickout_dev.sandbox import Sandbox, sandbox
from kickout_dev.zim_server import Fault
from tests.conftest import Invoke, Printed

USERS = [f"user-{index:03}" for index in range(500)]


@pytest.fixture
def box() -> Iterator[Sandbox]:
    """ZEGO's own limit, enforced by the stand-in (a 21st call in any second is refused), and 100 ms an answer."""
    with sandbox(rate_limit_per_second=20, max_requests_per_second=20, instant_backoff=True) as running:
        running.zim.latency = 0.1
        yield running


def post(users: list[str]) -> dict[str, Any]:
    return api_event(json.dumps({"room_id": "lobby", "user_ids": users}))


def test_a_500_user_request_books_its_ten_calls_at_once_and_sends_them_side_by_side(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    # WHEN 500 users are kicked through the API (10 ZEGO calls) on an idle budget
    response = invoke(post(USERS))
    # THEN all are kicked, each call accepted by ZEGO's checks (its own signature, nonce and timestamp), none refused
    # for rate, and ZEGO had more than one call in hand at a time
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["kicked_user_ids"] == USERS
    assert sorted(user for kickout in box.zim.kickouts for user in kickout.user_ids) == USERS
    assert len({kickout.nonce for kickout in box.zim.kickouts}) == 10
    assert box.zim.refusals == []
    assert box.zim.max_in_flight > 1
    # AND the ten slots cost the budget one conditional write (a few more only if a loaded machine woke a call past
    # its slot, which then books again; one at a time, they cost ten), and the audit counted each call
    assert printed.metric("BudgetStoreCalls") <= 3
    assert printed.metric("ZegoCalls") == 10
    assert printed.metric("UsersPerCall") == 500


def test_a_call_refused_amid_the_block_is_reported_with_every_other_call_done(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN ZEGO refusing for good the call that holds user-250 (the sixth of ten)
    box.zim.fault_for = lambda params: Fault.code(3) if "user-250" in params.get("UserId[]", []) else None
    # WHEN the 500 users are kicked
    response = invoke(post(USERS))
    # THEN the refusal is the answer, and the nine other calls, sent side by side, are listed as done: their users
    # are kicked all the same, and the caller is told which
    assert response["statusCode"] == 502
    body = json.loads(response["body"])
    assert body["zego"]["code"] == 3
    done = [call["user_ids"] for call in body["completed_calls"]]
    assert done == [USERS[start : start + 50] for start in range(0, 500, 50) if start != 250]
    assert sorted(box.zim.kicked_user_ids) == sorted(user for call in done for user in call)
