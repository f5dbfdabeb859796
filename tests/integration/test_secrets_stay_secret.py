"""The ServerSecret and the signatures made from it never leave the function: not in its logs or metrics, not
on stdout or stderr, not in an API answer, an exception or a parked message — when all goes well and when
ZEGO rejects the signature or the connection breaks."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest

from kickout_dev.events import load_event, sqs_record
from kickout_dev.sandbox import SERVER_SECRET, Sandbox
from kickout_dev.zim_server import Fault, ZimStandIn
from tests.conftest import Invoke, Printed

ROTATED_SECRET = "fedcba9876543210fedcba9876543210"


def watch_signatures(zim: ZimStandIn, fault: Fault | None = None) -> list[str]:
    """Every Signature the stand-in receives, in order; each request then meets `fault` (None: served normally)."""
    signatures: list[str] = []

    def fault_for(params: dict[str, list[str]]) -> Fault | None:
        signatures.extend(params.get("Signature", []))
        return fault

    zim.fault_for = fault_for
    return signatures


def outcome(call: Callable[[], Any]) -> str:
    """What the caller of the function can see: the response as JSON, or the raised exception with its traceback."""
    try:
        return json.dumps(call(), default=str)
    except Exception as error:
        return "".join(traceback.format_exception(error))


@pytest.fixture
def debug_logger() -> Iterator[None]:
    """The function's logger at DEBUG, as POWERTOOLS_LOG_LEVEL=DEBUG (a template parameter value) would set it."""
    from handler.aws.observability import logger

    level = logger.log_level
    logger.setLevel("DEBUG")
    yield
    logger.setLevel(level)


def assert_nowhere(secrets: list[str], *outputs: str) -> None:
    for secret in secrets:
        for output in outputs:
            assert secret not in output


Output = Callable[[], list[str]]


@pytest.fixture
def everything_output(printed: Printed, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Output:
    """Reads all the function has written so far: stdout (logs, metrics), stderr and every log record."""

    def read() -> list[str]:
        captured = capsys.readouterr()  # for stderr; the stdout it takes is in captured.out, not printed.text
        return [printed.text, captured.out, captured.err, caplog.text]

    return read


@dataclass(frozen=True)
class Scenario:
    """How ZEGO behaves (it returns the list the stand-in notes signatures in), which sample events are handled,
    and what they must give: (box, answers by event, parked messages, signatures) -> assertions."""

    given: Callable[[ZimStandIn], list[str]]
    events: tuple[str, ...]
    then: Callable[[Sandbox, dict[str, str], list[dict[str, Any]], list[str]], None]


def all_goes_well(zim: ZimStandIn) -> list[str]:
    # GIVEN the stand-in accepts every well-signed request
    return watch_signatures(zim)


def every_request_signed_and_accepted(
    box: Sandbox, answers: dict[str, str], parked: list[dict[str, Any]], signatures: list[str]
) -> None:
    # THEN every request was signed and accepted
    assert len(signatures) == len(box.zim.kickouts) == 5
    assert box.zim.refusals == []


def zego_rejects_the_signature(zim: ZimStandIn) -> list[str]:
    # GIVEN ZEGO's ServerSecret was rotated and Secrets Manager still holds the old one
    signatures = watch_signatures(zim)
    zim.rotate_secret(ROTATED_SECRET)
    return signatures


def every_kickout_refused_for_its_signature(
    box: Sandbox, answers: dict[str, str], parked: list[dict[str, Any]], signatures: list[str]
) -> None:
    # THEN each kickout failed on "signature invalid": a 502, parked messages, a ZegoRefused
    assert json.loads(answers["api"])["statusCode"] == 502
    assert json.loads(answers["sqs"]) == {"batchItemFailures": []}
    assert "ZegoRefused" in answers["direct"]
    assert "100000005" in answers["direct"]
    assert [message["MessageAttributes"]["KickoutFailure"]["StringValue"] for message in parked] == ["zego_refused"] * 3
    assert len(signatures) >= 5
    assert {code for code, _ in box.zim.refusals} == {100000005}


def the_connection_breaks(zim: ZimStandIn) -> list[str]:
    # GIVEN ZEGO resets every connection, after reading the signed request line
    return watch_signatures(zim, Fault.reset())


def every_kickout_failed_in_transport(
    box: Sandbox, answers: dict[str, str], parked: list[dict[str, Any]], signatures: list[str]
) -> None:
    # THEN both failed as transport failures (502 and ZegoUnavailable), after retries
    assert json.loads(answers["api"])["statusCode"] == 502
    assert "ZegoUnavailable" in answers["direct"]
    assert len(signatures) >= 4


@pytest.mark.usefixtures("debug_logger")
@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(
            Scenario(all_goes_well, ("api", "sqs", "direct"), every_request_signed_and_accepted),
            id="when_all_goes_well",
        ),
        pytest.param(
            Scenario(zego_rejects_the_signature, ("api", "sqs", "direct"), every_kickout_refused_for_its_signature),
            id="when_zego_rejects_the_signature",
        ),
        pytest.param(
            Scenario(the_connection_breaks, ("api", "direct"), every_kickout_failed_in_transport),
            id="when_the_connection_breaks",
        ),
    ],
)
def test_secret_and_signatures_stay_secret(
    invoke: Invoke, box: Sandbox, everything_output: Output, scenario: Scenario
) -> None:
    # GIVEN the function logs at DEBUG; ZEGO behaves as the scenario says, the stand-in noting every signature
    signatures = scenario.given(box.zim)

    # WHEN the scenario's sample events are handled (the API event, the SQS batch, the direct invoke)
    answers = {name: outcome(partial(invoke, load_event(name))) for name in scenario.events}

    # THEN they give what the scenario says
    parked = box.parked()
    scenario.then(box, answers, parked, signatures)
    # AND neither secret nor any signature appears in what the function printed, logged, answered or parked
    assert_nowhere(
        [SERVER_SECRET, ROTATED_SECRET, *signatures],
        *everything_output(),
        json.dumps(parked, default=str),
        *answers.values(),
    )


def test_secret_stays_out_of_library_logs_when_lambda_sets_the_root_logger_to_debug(
    invoke: Invoke, box: Sandbox, printed: Printed, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN the Lambda runtime's root logger at DEBUG (the function's LoggingConfig ApplicationLogLevel=DEBUG),
    # where botocore would log GetSecretValue's response body and urllib3 the signed request line
    caplog.set_level(logging.DEBUG)
    signatures = watch_signatures(box.zim)
    # the poison message makes the queue path use boto3 (SQS) too
    event = load_event("sqs")
    event["Records"].append(sqs_record("not json"))

    # WHEN the API, SQS and direct events are handled
    answers = [outcome(partial(invoke, sample)) for sample in (load_event("api"), event, load_event("direct"))]

    # THEN all went through, and no library log line holds the secret or a signature
    assert len(box.zim.kickouts) == 5
    assert len(box.parked()) == 1
    assert caplog.records, "the root logger captured nothing: the check would be empty"
    assert_nowhere([SERVER_SECRET, *signatures], caplog.text, printed.text, *answers)
