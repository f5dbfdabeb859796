"""Every id ZEGO allows reaches the ZIM stand-in, over real HTTP, exactly as it was given."""

from __future__ import annotations

import string
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handler.core.deadline import Deadline
from handler.core.kickout import carry_out
from handler.core.models import KickoutRequest
from handler.zego import transport
from handler.zego.client import ZimClient
from kickout_dev.zim_server import ZimStandIn

APP_ID, SECRET = 4242, "0123456789abcdef0123456789abcdef"
ZEGO_ID_CHARACTERS = string.ascii_letters + string.digits + "!#$%&()+-:;<=.>?@[]^_{}|~, "
zego_ids = st.text(alphabet=ZEGO_ID_CHARACTERS, min_size=1, max_size=32)


@pytest.fixture(scope="module")
def stand_in() -> Iterator[ZimStandIn]:
    with ZimStandIn(APP_ID, SECRET) as server:
        yield server


def client_of(server: ZimStandIn) -> ZimClient:
    return ZimClient(
        endpoint=server.url,
        app_id=APP_ID,
        read_secret=lambda _force, _deadline: SECRET,
        send=transport.send,
        deadline=Deadline.after(20.0),
    )


def test_every_allowed_character_survives_the_trip(stand_in: ZimStandIn) -> None:
    # GIVEN ids that together hold each allowed character, the room holding the ones most likely to break a query
    room_id = "a&UserId[]=admin%20#?+ ="
    user_ids = [ZEGO_ID_CHARACTERS[start : start + 32] for start in range(0, len(ZEGO_ID_CHARACTERS), 32)]
    request = KickoutRequest(room_id=room_id, user_ids=user_ids, reason="100% spam & more", operator_id="mod+1 =x")
    # WHEN kicked through the real transport
    result = carry_out(request, client_of(stand_in).call)
    # THEN the server decoded exactly those ids, and nobody called admin
    received = stand_in.kickouts[-1]
    assert (received.room_id, list(received.user_ids)) == (room_id, user_ids)
    assert (received.reason, received.operator_id) == ("100% spam & more", "mod+1 =x")
    assert "admin" not in received.user_ids
    assert result.kicked_user_ids == user_ids


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(room_id=zego_ids, user_ids=st.lists(zego_ids, min_size=1, max_size=60, unique=True), operator_id=zego_ids)
def test_any_allowed_ids_reach_the_server_unchanged(
    stand_in: ZimStandIn, room_id: str, user_ids: list[str], operator_id: str
) -> None:
    before = len(stand_in.kickouts)
    carry_out(KickoutRequest(room_id=room_id, user_ids=user_ids, operator_id=operator_id), client_of(stand_in).call)
    received = stand_in.kickouts[before:]
    assert all(call.room_id == room_id and call.operator_id == operator_id for call in received)
    assert [user for call in received for user in call.user_ids] == user_ids
    assert not stand_in.refusals
