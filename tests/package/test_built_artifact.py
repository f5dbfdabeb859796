"""The `sam build` output as Lambda runs it: each trigger's sample event through the Runtime Interface Emulator,
with python3.13 seeing the artifact alone. What the integration tests show of the handler, shown again of the
package: a module or dependency the build leaves out, or bytecode the runtime cannot use, fails here."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from kickout_dev.build import FUNCTION, ROOT, Tools
from kickout_dev.events import load_event, sqs_event, sqs_record
from kickout_dev.local_http import LocalApi
from kickout_dev.local_lambda import Stack, running

pytestmark = pytest.mark.package


def body(response: dict[str, Any]) -> Any:
    assert isinstance(response.get("body"), str), response
    return json.loads(response["body"])


def test_api_event_kicks_both_users_from_the_built_artifact(stack: Stack) -> None:
    # GIVEN the API Gateway event of events/api.json
    event = load_event("api")
    # WHEN the built function is invoked with it
    invocation = stack.invoke(event)
    # THEN it answers 200 with both users kicked, after one signed call to ZEGO with the payload's values
    assert invocation.response["statusCode"] == 200, invocation.response
    assert body(invocation.response)["kicked_user_ids"] == ["spammer_01", "spammer_02"]
    [call] = stack.zim.kickouts
    assert (call.room_id, call.user_ids, call.reason, call.operator_id) == (
        "lobby-7",
        ("spammer_01", "spammer_02"),
        "spam links",
        "mod-bot",
    )
    assert stack.zim.refusals == []
    # AND its audit line carries the API request id as correlation id
    [audit] = [line for line in invocation.logs if line.get("message") == "kickout done"]
    assert audit["correlation_id"] == event["requestContext"]["requestId"]


def test_sqs_event_kicks_every_message_and_reports_no_failure(stack: Stack) -> None:
    # GIVEN the three-message batch of events/sqs.json
    # WHEN the built function is invoked with it
    invocation = stack.invoke(load_event("sqs"))
    # THEN no message goes back to SQS, every user is kicked from its room, nothing is parked
    assert invocation.response == {"batchItemFailures": []}
    kicked = {(call.room_id, user) for call in stack.zim.kickouts for user in call.user_ids}
    assert kicked == {
        ("lobby-7", "flooder_9"),
        ("lobby-7", "spammer_03"),
        ("stream #42 (EU)", "troll&co"),
        ("stream #42 (EU)", "a+b=c"),
        ("stream #42 (EU)", "raid_bot_1"),
    }
    assert stack.zim.refusals == []
    assert stack.parked() == []


def test_direct_event_returns_the_result_with_duplicates_dropped(stack: Stack) -> None:
    # GIVEN events/direct.json, which names cheater_1 twice
    # WHEN the built function is invoked with it
    invocation = stack.invoke(load_event("direct"))
    # THEN it returns the result document; ZEGO was asked once, for each user once
    assert invocation.error_type is None, invocation.response
    assert invocation.response["room_id"] == "match-2026-11-25"
    assert invocation.response["kicked_user_ids"] == ["cheater_1", "cheater_2"]
    assert [call.user_ids for call in stack.zim.kickouts] == [("cheater_1", "cheater_2")]


def test_invalid_event_raises_the_named_error_and_sends_nothing(stack: Stack) -> None:
    # GIVEN events/invalid.json (a "/" in the room, no users)
    seen = stack.zim.requests_seen
    # WHEN the built function is invoked with it
    invocation = stack.invoke(load_event("invalid"))
    # THEN the invocation fails with the name a Step Functions Catch matches, naming both fields
    assert invocation.error_type == "InvalidKickoutRequest"
    assert "room_id" in invocation.response["errorMessage"]
    assert "user_ids" in invocation.response["errorMessage"]
    # AND ZEGO is not called
    assert stack.zim.requests_seen == seen


def test_poison_message_is_parked_in_the_dead_letter_queue_and_the_rest_is_kicked(stack: Stack) -> None:
    # GIVEN a batch with a good message and a poison one (not JSON)
    good = sqs_record(json.dumps({"room_id": "lobby-7", "user_ids": ["spammer_04"]}), message_id="good")
    poison = sqs_record("kick spammer_05 please", message_id="poison")
    # WHEN the built function is invoked with it
    invocation = stack.invoke({"Records": [good, poison]})
    # THEN SQS gets nothing back: the good one is done, the poison one parked in moto's DLQ, body unchanged
    assert invocation.response == {"batchItemFailures": []}
    assert stack.zim.kicked_user_ids == ["spammer_04"]
    [parked] = stack.parked()
    attributes = {name: value["StringValue"] for name, value in parked["MessageAttributes"].items()}
    assert parked["Body"] == "kick spammer_05 please"
    assert attributes["KickoutFailure"] == "invalid_payload"
    assert attributes["SourceMessageId"] == "poison"


def test_invalid_payload_from_sqs_is_parked_not_retried(stack: Stack) -> None:
    # GIVEN events/invalid.json's payload as an SQS message
    payload = json.dumps(load_event("invalid"))
    # WHEN the built function is invoked with it
    invocation = stack.invoke(sqs_event(payload))
    # THEN it is parked with its reason rather than handed back to SQS
    assert invocation.response == {"batchItemFailures": []}
    [parked] = stack.parked()
    assert parked["Body"] == payload
    assert parked["MessageAttributes"]["KickoutFailure"]["StringValue"] == "invalid_payload"


def test_a_curl_like_request_through_the_local_http_front_reaches_the_built_function(stack: Stack) -> None:
    # GIVEN the local HTTP front in front of the emulator
    with LocalApi(lambda event: stack.invoke(event).response) as api:
        # WHEN a client POSTs a kickout as curl would
        request = urllib.request.Request(
            f"{api.url}/kickouts",
            data=b'{"room_id": "lobby-7", "user_ids": ["spammer_01"], "reason": "spam"}',
            headers={"Content-Type": "application/json", "User-Agent": "curl/8.5.0"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            status, answer = reply.status, json.loads(reply.read())
        # AND one whose body is not JSON
        broken = urllib.request.Request(
            f"{api.url}/kickouts", data=b"{room", headers={"Content-Type": "application/json"}, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(broken, timeout=30)
    # THEN the first is kicked and answered 200, the second refused 400 before reaching ZEGO
    assert status == 200
    assert answer["kicked_user_ids"] == ["spammer_01"]
    assert [call.user_ids for call in stack.zim.kickouts] == [("spammer_01",)]
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["error"] == "invalid_json"


def test_the_runtime_ran_the_artifact_not_the_repository(stack: Stack, artifact: Path) -> None:
    # GIVEN an invocation that fails, so that the runtime reports where the code ran from
    invocation = stack.invoke(load_event("invalid"))
    # THEN every frame of its stack trace is a file of the artifact, none of src/
    frames = [line for line in invocation.response["stackTrace"] if line.lstrip().startswith("File ")]
    assert frames
    assert all(f'"{artifact}/' in frame for frame in frames), frames
    assert not any(str(ROOT / "src") in frame for frame in frames)


def test_a_dependency_left_out_of_the_build_fails_as_it_would_in_lambda(
    tools: Tools, artifact: Path, tmp_path: Path
) -> None:
    # GIVEN a copy of the artifact without urllib3 (which the .venv and src/requirements.txt both have)
    broken = tmp_path / FUNCTION
    shutil.copytree(artifact, broken, ignore=lambda folder, names: ["urllib3"] if Path(folder) == artifact else [])
    # WHEN the emulator runs it
    with running(tools, broken) as stack:
        invocation = stack.invoke(load_event("direct"))
    # THEN the runtime cannot import the handler: nothing outside the artifact filled the gap
    assert invocation.error_type == "Runtime.ImportModuleError"
    assert "urllib3" in invocation.response["errorMessage"]


def test_the_shipped_bytecode_is_used_as_it_is(
    stack: Stack, artifact: Path, bytecode_before: dict[Path, float]
) -> None:
    # GIVEN the emulator has run every trigger (this test comes last in the module)
    stack.invoke(load_event("direct"))
    # THEN Python wrote no bytecode into the artifact: the shipped .pyc files were valid for the runtime
    after = {path: path.stat().st_mtime for path in artifact.rglob("*.pyc")}
    assert after == bytecode_before
