"""The usual SAM way, for real: `sam local invoke` and `sam local start-api` run the built function in a Docker
container (the base-image stand-in), pointed by `--env-vars` at moto and the ZIM stand-in on the run's own network.
What it answers must be what `make local` answers for the same artifact and events."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kickout_dev.build import Tools
from kickout_dev.command import Case, demo_cases
from kickout_dev.docker_engine import docker, engine_version
from kickout_dev.emulator import Invocation
from kickout_dev.events import load_event, sqs_record
from kickout_dev.local_lambda import Stack
from kickout_dev.processes import free_port
from kickout_dev.sam_docker import DockerStack, docker_stack, post_kickout, start_api

pytestmark = pytest.mark.docker


def poison_case() -> Case:
    good = sqs_record(json.dumps({"room_id": "lobby-7", "user_ids": ["spammer_04"]}), message_id="good")
    poison = sqs_record("kick spammer_05 please", message_id="poison")
    return Case("a batch with a good message and a poison one (not JSON)", {"Records": [good, poison]})


def answer(invocation: Invocation) -> Any:
    """What the caller gets: an API answer's status and body, an error's type and message (its stack trace names
    files where they lie, /var/task in the container), or the returned document."""
    response = invocation.response
    if isinstance(response, dict) and isinstance(response.get("body"), str):
        return {"statusCode": response["statusCode"], "body": json.loads(response["body"])}
    if invocation.error_type is not None:
        return {"errorType": response["errorType"], "errorMessage": response["errorMessage"]}
    return response


def by_order_of_issue(value: Any, issued: list[str]) -> Any:
    """`value` with each ZEGO RequestId replaced by the order in which its stand-in issued it (#1, #2...)."""
    if isinstance(value, dict):
        return {key: by_order_of_issue(item, issued) for key, item in value.items()}
    if isinstance(value, list):
        return [by_order_of_issue(item, issued) for item in value]
    if isinstance(value, str) and value.isdigit() and len(value) >= 18:
        if value not in issued:
            issued.append(value)
        return f"#{issued.index(value) + 1}"
    return value


def received(stack: Stack | DockerStack) -> list[tuple[str, tuple[str, ...], str | None, str | None]]:
    return [(call.room_id, call.user_ids, call.reason, call.operator_id) for call in stack.zim.kickouts]


def parked_summary(stack: Stack | DockerStack) -> list[tuple[str, str, str]]:
    return [
        (
            message["Body"],
            message["MessageAttributes"]["KickoutFailure"]["StringValue"],
            message["MessageAttributes"]["KickoutDetail"]["StringValue"],
        )
        for message in stack.parked()
    ]


def test_sample_events_give_the_same_answers_in_docker_as_under_make_local(
    in_docker: DockerStack, under_make_local: Stack
) -> None:
    # GIVEN the demo's cases (every file of events/, invalid.json also as an API body and an SQS message) and a
    # batch holding a poison message
    cases = [*demo_cases(), poison_case()]
    issued_docker: list[str] = []
    issued_local: list[str] = []
    for case in cases:
        # WHEN each is invoked with `sam local invoke` in Docker and under make local's emulator
        docker_run = in_docker.invoke(case.event)
        local_run = under_make_local.invoke(case.event)
        # THEN the container ran the function (not SAM CLI or Docker failing) and it gave what the case must
        assert not (docker_run.error_type or "").startswith(("Runtime.", "Sandbox.", "Sam.")), docker_run.response
        assert case.expect is None or case.expect(docker_run), (case.title, docker_run.response)
        # AND the caller gets the same answer from both
        assert by_order_of_issue(answer(docker_run), issued_docker) == by_order_of_issue(
            answer(local_run), issued_local
        ), case.title
    # AND ZEGO's stand-in received the same signed calls from both (a batch's messages are sent concurrently)
    assert sorted(received(in_docker)) == sorted(received(under_make_local))
    assert len(received(in_docker)) == 6
    # AND the same two messages were parked in the dead-letter queue, with the same reason: the invalid payload
    # sent as an SQS message and the poison one, each body kept as sent
    parked = parked_summary(in_docker)
    assert parked == parked_summary(under_make_local)
    assert [(body, failure) for body, failure, _ in parked] == [
        (json.dumps(load_event("invalid")), "invalid_payload"),
        ("kick spammer_05 please", "invalid_payload"),
    ]


def test_the_function_in_docker_logs_and_counts_as_in_lambda(in_docker: DockerStack) -> None:
    # GIVEN events/direct.json
    # WHEN it is invoked in Docker
    invocation = in_docker.invoke(load_event("direct"))
    # THEN its Powertools audit line and its EMF metrics come out of the container, not SAM CLI's own lines
    [audit] = [line for line in invocation.logs if line.get("message") == "kickout done"]
    assert audit["kicked_user_ids"] == ["cheater_1", "cheater_2"]
    assert any("UsersKicked" in line for line in invocation.logs if "_aws" in line)
    assert invocation.request_id
    assert not any("SAM_CONTAINER_ID" in line or "Mounting" in line for line in invocation.other)


def test_sam_local_start_api_answers_a_curl_like_post(in_docker: DockerStack) -> None:
    # GIVEN sam local start-api on a free port of 127.0.0.1, with one warm container on the run's network
    in_docker.zim.kickouts.clear()
    with start_api(in_docker, free_port()) as url:
        # WHEN a client POSTs a kickout as curl would, and then a body that is not JSON
        status, body = post_kickout(url, b'{"room_id": "lobby-7", "user_ids": ["spammer_01"], "reason": "spam"}')
        broken_status, broken_body = post_kickout(url, b"{room")
    # THEN the first is kicked and answered 200, the second refused 400 before reaching ZEGO
    assert (status, body["kicked_user_ids"]) == (200, ["spammer_01"])
    assert [call.user_ids for call in in_docker.zim.kickouts] == [("spammer_01",)]
    assert (broken_status, broken_body["error"]) == (400, "invalid_json")


def test_a_run_removes_its_network_containers_and_images_even_when_it_fails(
    docker_tools: Tools, in_docker: DockerStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # GIVEN a second run that invokes the function once (SAM CLI builds its image, runs a container) and then fails
    seen: dict[str, str] = {}

    def failing_run() -> None:
        with docker_stack(docker_tools, in_docker.template, tmp_path_factory.mktemp("failing-run")) as stack:
            seen.update(network=stack.network.name, repository=stack.image.rsplit(":", 1)[0])
            assert stack.invoke(load_event("direct")).error_type is None
            raise RuntimeError("the run failed")

    # WHEN it fails
    with pytest.raises(RuntimeError, match="the run failed"):
        failing_run()
    # THEN its network, every container that was on it and its images (with SAM CLI's rapid image) are gone
    assert engine_version() is not None
    assert seen["network"] not in docker("network", "ls", "--format", "{{.Name}}").split()
    assert docker("ps", "--all", "--quiet", "--filter", f"network={seen['network']}") == ""
    assert docker("images", "--quiet", seen["repository"]) == ""
    # AND the other run's network is untouched
    assert in_docker.network.name in docker("network", "ls", "--format", "{{.Name}}").split()
