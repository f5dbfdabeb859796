"""The local HTTP front (kickout_dev.local_http) on its own: plain HTTP in, the REST API's proxy event out, the
function's answer back as API Gateway gives it. In-process and fast; test_built_artifact.py drives it in
front of the built function."""

from __future__ import annotations

import base64
import json
import urllib.request

from kickout_dev.local_http import LocalApi, http_answer, proxy_event
from kickout_dev.sandbox import Sandbox
from tests.conftest import Invoke


def test_a_request_becomes_the_proxy_event_api_gateway_sends() -> None:
    # GIVEN a POST to the stage's path, with a repeated query parameter
    headers = [("Content-Type", "application/json"), ("X-Tag", "a"), ("X-Tag", "b")]
    # WHEN it is translated
    event = proxy_event("POST", "/v1/kickouts?tag=x&tag=y", headers, b'{"room_id": "lobby-7"}')
    # THEN the event has the shape of events/api.json, with this request's method, path, headers, query and body
    assert (event["httpMethod"], event["path"], event["resource"]) == ("POST", "/kickouts", "/kickouts")
    assert event["requestContext"]["path"] == "/v1/kickouts"
    assert event["headers"] == {"Content-Type": "application/json", "X-Tag": "b"}
    assert event["multiValueHeaders"]["X-Tag"] == ["a", "b"]
    assert event["queryStringParameters"] == {"tag": "y"}
    assert event["multiValueQueryStringParameters"] == {"tag": ["x", "y"]}
    assert (event["body"], event["isBase64Encoded"]) == ('{"room_id": "lobby-7"}', False)


def test_a_body_that_is_not_utf8_is_passed_base64_encoded() -> None:
    event = proxy_event("POST", "/kickouts", [], b"\xff\xfe")
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\xfe"


def test_an_empty_request_has_no_body_headers_or_query() -> None:
    event = proxy_event("POST", "/kickouts", [], b"")
    assert (event["body"], event["headers"], event["queryStringParameters"]) == (None, None, None)


def test_a_function_error_is_answered_502_as_api_gateway_does() -> None:
    status, _, body = http_answer({"errorType": "Runtime.ImportModuleError", "errorMessage": "no module"})
    assert status == 502
    assert json.loads(body) == {"message": "Internal server error"}


def test_the_function_answer_keeps_its_status_headers_and_body() -> None:
    status, headers, body = http_answer(
        {"statusCode": 429, "multiValueHeaders": {"Retry-After": ["1"]}, "body": '{"error": "zego_rate_limited"}'}
    )
    assert (status, headers, json.loads(body)) == (429, [("Retry-After", "1")], {"error": "zego_rate_limited"})


def test_a_kickout_posted_to_the_front_reaches_the_handler_in_process(invoke: Invoke, box: Sandbox) -> None:
    # GIVEN the front around the real handler, in this process
    with LocalApi(invoke) as api:
        # WHEN a client POSTs a kickout
        request = urllib.request.Request(
            f"{api.url}/kickouts",
            data=b'{"room_id": "lobby-7", "user_ids": ["spammer_01"]}',
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            status, answer = reply.status, json.loads(reply.read())
    # THEN it is answered as the API would, and ZEGO got the call
    assert status == 200
    assert answer["kicked_user_ids"] == ["spammer_01"]
    assert box.zim.kicked_user_ids == ["spammer_01"]
