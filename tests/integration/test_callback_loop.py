"""The whole loop on loopback: the ZIM stand-in calls back over HTTP as ZIM does (a signed room_exit after each kick,
a signed room_enter when a kicked user comes back), through the local API front, to the real handlers:
kick with a window -> confirmed -> re-entry -> kicked again (through the queue) -> confirmed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from handler.app import callbacks_handler_for
from kickout_dev.clock import SimulatedClock
from kickout_dev.event_source import Poller
from kickout_dev.events import load_event, resigned
from kickout_dev.local_http import LocalApi
from kickout_dev.sandbox import REGION, SERVER_SECRET, Sandbox
from tests.conftest import Printed


@pytest.fixture
def front(box: Sandbox) -> Iterator[LocalApi]:
    """The API's front on loopback: POST /zego/callbacks to the callbacks' handler, anything else to the kickouts'."""
    callbacks = callbacks_handler_for(lambda: box.function)

    def invoke(event: dict[str, Any]) -> Any:
        handler = callbacks if event["path"] == "/zego/callbacks" else box.handler
        return handler(event, box.context())

    with LocalApi(invoke) as api:
        box.zim.callback_url = f"{api.url}/zego/callbacks"
        box.zim.retry_delays = (0.05, 0.1)
        yield api


def test_a_kick_with_a_window_is_confirmed_and_a_reentry_is_kicked_again_and_confirmed(
    box: Sandbox, front: LocalApi, printed: Printed
) -> None:
    # GIVEN a user in a room
    box.zim.rooms = {"lobby-7": {"spammer_01", "bystander"}}

    # WHEN they are kicked with an hour's keep-out
    box.handler(
        {"room_id": "lobby-7", "user_ids": ["spammer_01"], "operator_id": "mod-anna", "keep_out_seconds": 3600},
        box.context(),
    )
    box.zim.wait_for_callbacks()

    # THEN ZIM's room_exit came back and the kick is confirmed
    assert [(event, body["exit_user_ids"], status) for event, body, status in box.zim.callbacks_sent] == [
        ("room_exit", ["spammer_01"], 200)
    ]
    assert printed.metric("KickoutsConfirmed") == 1

    # WHEN the user enters the room again
    status = box.zim.reenter("lobby-7", "spammer_01")

    # THEN the callback is answered 200 at once, and the kickout waits in the queue
    assert status == 200
    assert box.zim.rooms["lobby-7"] == {"spammer_01", "bystander"}

    # WHEN Lambda's poller hands the queue's batch to the function
    sqs = boto3.client("sqs", region_name=REGION)
    delivery = Poller(sqs=sqs, queue_url=box.queue_url, invoke=lambda event: box.handler(event, box.context())).poll()
    box.zim.wait_for_callbacks()

    # THEN the user is out again, by mod-anna's order, and that kick is confirmed too
    assert delivery is not None
    assert delivery.failed == frozenset()
    assert box.zim.rooms["lobby-7"] == {"bystander"}
    assert [kickout.operator_id for kickout in box.zim.kickouts] == ["mod-anna", "mod-anna"]
    assert [event for event, _, _ in box.zim.callbacks_sent] == ["room_exit", "room_enter", "room_exit"]
    assert printed.metric("KickoutsConfirmed") == 2
    assert printed.metric("ReentriesKicked") == 1


def test_a_callback_the_function_fails_is_sent_again_until_it_answers(box: Sandbox, front: LocalApi) -> None:
    # GIVEN the callbacks' table unreachable for the first answer only
    healthy = box.function
    box.rewire(keep_out_dynamodb=lambda: boto3.client("dynamodb", region_name="us-west-2"))
    broken = box.function
    answers = iter([broken, healthy])
    box.function = next(answers)

    box.zim.retry_delays = (0.5, 0.5)

    # WHEN a kick's room_exit comes back (503), then is retried once the table is back
    box.handler({"room_id": "lobby-7", "user_ids": ["spammer_01"]}, box.context())
    while not box.zim.callbacks_sent:
        box.zim.wait_for_callbacks(0.01)
    box.function = next(answers)
    box.zim.wait_for_callbacks()

    # THEN ZEGO's retry got its 200
    assert [status for _, _, status in box.zim.callbacks_sent] == [503, 200]


@pytest.mark.parametrize(
    ("name", "outcome"), [("callback_room_enter", "kickout_queued"), ("callback_room_exit", "confirmed")]
)
def test_the_sample_callbacks_are_signed_as_zim_signs_and_handled_once_signed_again_now(
    box: Sandbox, clock: SimulatedClock, name: str, outcome: str
) -> None:
    from handler.zego import callbacks

    callbacks_handler = callbacks_handler_for(lambda: box.function)
    box.handler({"room_id": "lobby-7", "user_ids": ["spammer_01"], "keep_out_seconds": 3600}, box.context())
    sample = load_event(name)
    body = json.loads(sample["body"])

    # GIVEN the sample's signature, checked by the function's own rule at the sample's time
    assert callbacks.signature_matches(SERVER_SECRET, str(body["timestamp"]), body["nonce"], body["signature"])

    # WHEN it is sent as it is, days after its timestamp: refused as a replay
    assert callbacks_handler(sample, box.context())["statusCode"] == 401

    # WHEN it is signed again at the function's now: handled
    answer = callbacks_handler(resigned(sample, SERVER_SECRET, int(clock())), box.context())
    assert (answer["statusCode"], json.loads(answer["body"])) == (200, {"outcome": outcome})
