"""The whole API Gateway event, not only its payload: header maps, the base64 flag, raw bodies of any bytes.

Every client mistake is a 4xx naming it and no ZEGO call; a 500 would be a bug. The property below judges the
real handler against an oracle written here, apart from handler/entry/api_request.py.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kickout_dev.events import api_event
from kickout_dev.sandbox import Sandbox
from tests.conftest import Invoke
from tests.integration.test_hostile_input import is_valid, payloads

KICKOUT = {"room_id": "lobby-7", "user_ids": ["spammer_01"]}


def event_with(body: str | None, **fields: Any) -> dict[str, Any]:
    event = api_event(body)
    event.update(fields)
    return event


def content_type(value: str) -> dict[str, Any]:
    """Header maps that agree, as API Gateway builds them for one Content-Type header."""
    return {"headers": {"Content-Type": value}, "multiValueHeaders": {"Content-Type": [value]}}


def answer(response: dict[str, Any]) -> tuple[int, str | None]:
    body = json.loads(response["body"])
    return response["statusCode"], body.get("error")


# --- the defects, one by one -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param([KICKOUT, {**KICKOUT, "user_ids": ["spammer_02"]}], id="array-of-kickouts"),
        pytest.param([KICKOUT], id="array-of-one"),
        pytest.param([], id="empty-array"),
        pytest.param("lobby-7", id="string"),
        pytest.param(7, id="number"),
        pytest.param(None, id="null"),
    ],
)
def test_a_body_that_is_not_one_json_object_is_refused_whole_without_calling_zego(
    invoke: Invoke, box: Sandbox, body: Any
) -> None:
    # GIVEN a JSON body that is not one object (an array of kickouts would have been half done before)
    response = invoke(api_event(json.dumps(body)))
    # THEN 422 invalid_request naming the body, and ZEGO hears of none of it
    assert answer(response) == (422, "invalid_request")
    fields = json.loads(response["body"])["fields"]
    assert [field["field"] for field in fields] == ["body"]
    assert "one JSON object" in fields[0]["problem"]
    assert box.zim.requests_seen == 0


@pytest.mark.parametrize(
    "value",
    [
        "APPLICATION/JSON",
        "Application/Json; charset=utf-8",
        "application/json; CHARSET=UTF-8",
        'application/json;charset="utf-8"',
        "application/json ; charset=UTF8",
    ],
)
def test_json_content_type_is_matched_in_any_case_with_a_utf8_charset_in_any_case(
    invoke: Invoke, box: Sandbox, value: str
) -> None:
    response = invoke(event_with(json.dumps(KICKOUT), **content_type(value)))
    assert response["statusCode"] == 200
    assert box.zim.requests_seen == 1


def test_another_charset_is_refused_415(invoke: Invoke, box: Sandbox) -> None:
    response = invoke(event_with(json.dumps(KICKOUT), **content_type("application/json; charset=ISO-8859-1")))
    assert answer(response) == (415, "unsupported_media_type")
    assert "UTF-8" in json.loads(response["body"])["message"]
    assert box.zim.requests_seen == 0


@pytest.mark.parametrize(
    ("headers", "multi_value_headers", "status"),
    [
        pytest.param({"content-type": "application/json"}, {"Content-Type": ["text/plain"]}, 415, id="maps-disagree"),
        pytest.param({"Content-Type": "text/plain"}, {"content-type": ["application/json"]}, 415, id="disagree-too"),
        pytest.param(
            {"Content-Type": "application/json"},
            {"Content-Type": ["application/json", "application/x-www-form-urlencoded"]},
            415,
            id="sent-twice-differently",
        ),
        pytest.param(
            {"Content-Type": "application/json", "content-type": "APPLICATION/JSON"},
            {"Content-Type": ["application/json", "application/json; charset=utf-8"]},
            200,
            id="sent-twice-alike",
        ),
        pytest.param({}, {"Content-Type": ["application/json"]}, 200, id="only-in-the-multi-value-map"),
        pytest.param(None, None, 200, id="no-headers-at-all"),
    ],
)
def test_duplicate_or_conflicting_content_types_get_415_or_the_right_answer(
    invoke: Invoke, box: Sandbox, headers: Any, multi_value_headers: Any, status: int
) -> None:
    event = event_with(json.dumps(KICKOUT), headers=headers, multiValueHeaders=multi_value_headers)
    response = invoke(event)
    assert response["statusCode"] == status
    assert box.zim.requests_seen == (1 if status == 200 else 0)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        pytest.param(
            api_event('{"room_id": "lobby-7", "user_ids": [' + "9" * 5000 + "]}"), "too many digits", id="huge-int"
        ),
        pytest.param(event_with("not base64!", isBase64Encoded=True), "not valid base64", id="not-base64"),
        pytest.param(
            event_with(base64.b64encode(b'{"room_id": "\xff"}').decode(), isBase64Encoded=True),
            "not UTF-8",
            id="not-utf-8",
        ),
    ],
)
def test_bodies_refused_beyond_json_syntax_get_400_invalid_json_saying_why(
    invoke: Invoke, box: Sandbox, event: dict[str, Any], message: str
) -> None:
    response = invoke(event)
    assert answer(response) == (400, "invalid_json")
    assert message in json.loads(response["body"])["message"]
    assert box.zim.requests_seen == 0


def test_a_base64_body_of_a_kickout_is_a_kickout(invoke: Invoke, box: Sandbox) -> None:
    encoded = base64.b64encode(json.dumps(KICKOUT).encode()).decode()
    assert invoke(event_with(encoded, isBase64Encoded=True))["statusCode"] == 200
    assert box.zim.requests_seen == 1


# --- any event -----------------------------------------------------------------------------------------------------

JSON_MEDIA_TYPE = re.compile(r"\s*application/json\s*(;.*)?", re.IGNORECASE | re.DOTALL)
CHARSET = re.compile(r';\s*charset\s*=\s*"?([^";]*)"?', re.IGNORECASE)


def oracle(event: dict[str, Any], raw: bytes | None) -> tuple[int, str | None]:
    """What the API must answer, from the HTTP rules and the payload rules (status, error; None for 200)."""
    sent = [value for name, value in (event["headers"] or {}).items() if name.lower() == "content-type"]
    for name, values in (event["multiValueHeaders"] or {}).items():
        if name.lower() == "content-type":
            sent.extend(values)
    for value in (value for value in sent if value.strip()):
        if not JSON_MEDIA_TYPE.fullmatch(value):
            return 415, "unsupported_media_type"
        if any(charset.strip().lower() not in {"utf-8", "utf8", "us-ascii"} for charset in CHARSET.findall(value)):
            return 415, "unsupported_media_type"
    if event["body"] is None:
        return 422, "invalid_request"
    if event["isBase64Encoded"]:
        try:
            raw = base64.b64decode(event["body"], validate=True)
        except ValueError:
            return 400, "invalid_json"
    assert raw is not None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return 400, "invalid_json"
    if not text:
        return 422, "invalid_request"  # no body: the field "body" is required
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return 400, "invalid_json"
    if not is_valid(document):
        return 422, "invalid_request"
    return 200, None


header_names = st.sampled_from(["Content-Type", "content-type", "CONTENT-TYPE", "Content-type"])
content_types = st.one_of(
    st.builds(
        str.__add__,
        st.sampled_from(["application/json", "APPLICATION/JSON", "Application/Json", " application/json "]),
        st.sampled_from(["", ";charset=utf-8", "; Charset=UTF-8", '; charset="utf-8"', "; charset=latin-1", "; q=1"]),
    ),
    st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "application/json-patch+json", "", "  "]),
    st.text(max_size=30),
)
single_maps = st.none() | st.dictionaries(header_names, content_types, max_size=2)
multi_maps = st.none() | st.dictionaries(header_names, st.lists(content_types, max_size=3), max_size=2)
raw_bodies = st.one_of(
    st.just(json.dumps(KICKOUT).encode()),
    payloads.map(lambda payload: json.dumps(payload).encode()),
    st.binary(max_size=200),
    st.integers(min_value=4200, max_value=4400).map(lambda digits: b'{"room_id": ' + b"7" * digits + b"}"),
)
# A base64 body as API Gateway sends it, or spoiled by a character outside the alphabet or by a padding.
spoilers = st.sampled_from(["", "", "!", "=", "*", "A"])


@st.composite
def api_events(draw: st.DrawFn) -> dict[str, Any]:
    """An event with any header maps and any body, flagged base64 or sent as text."""
    flagged = draw(st.booleans())
    raw = draw(st.none() | raw_bodies)
    if raw is None:
        body = None
    elif flagged:
        encoded = base64.b64encode(raw).decode()
        at = draw(st.integers(min_value=0, max_value=len(encoded)))
        body = encoded[:at] + draw(spoilers) + encoded[at:]
    else:
        body = raw.decode("utf-8", errors="replace")
    return event_with(body, headers=draw(single_maps), multiValueHeaders=draw(multi_maps), isBase64Encoded=flagged)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(event=api_events())
def test_any_event_gets_the_answer_the_http_and_payload_rules_give_and_zego_only_for_a_200(
    invoke: Invoke, box: Sandbox, event: dict[str, Any]
) -> None:
    # GIVEN any event, and the answer the rules give it
    body = event["body"]
    expected = oracle(event, None if body is None or event["isBase64Encoded"] else body.encode("utf-8"))
    before = box.zim.requests_seen
    # WHEN it reaches the function
    response = invoke(event)
    # THEN the answer is the oracle's, and ZEGO is called for a 200 only
    assert response["statusCode"] == expected[0], (response["body"], expected)
    if expected[1] is not None:
        assert answer(response) == expected
        assert box.zim.requests_seen == before
    else:
        assert box.zim.requests_seen > before
