"""The ServerSecret and the signatures made from it never leave the function: not in its logs or metrics, not
on stdout or stderr, not in an API answer, an exception or a parked message — when all goes well and when
ZEGO rejects the signature or the connection breaks."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable, Iterator
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
    from handler.observability import logger

    level = logger.log_level
    logger.setLevel("DEBUG")
    yield
    logger.setLevel(level)


def assert_nowhere(secrets: list[str], *outputs: str) -> None:
    for secret in secrets:
        for output in outputs:
            assert secret not in output


@pytest.mark.usefixtures("debug_logger")
def test_secret_and_signatures_stay_secret_when_all_goes_well(
    invoke: Invoke,
    box: Sandbox,
    printed: Printed,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN the stand-in notes every signature it receives, and the function logs at DEBUG
    signatures = watch_signatures(box.zim)

    # WHEN the API, SQS and direct sample events are handled
    answers = [outcome(partial(invoke, load_event(name))) for name in ("api", "sqs", "direct")]

    # THEN every request was signed and accepted
    assert len(signatures) == len(box.zim.kickouts) == 5
    assert box.zim.refusals == []
    # AND neither the secret nor any signature appears in what the function printed, logged or answered
    captured = capsys.readouterr()  # for stderr; the stdout it takes is in captured.out, not printed.text
    assert_nowhere(
        [SERVER_SECRET, *signatures],
        printed.text,
        captured.out,
        captured.err,
        caplog.text,
        json.dumps(box.parked()),
        *answers,
    )


def test_secret_and_signatures_stay_secret_when_zego_rejects_the_signature(
    invoke: Invoke,
    box: Sandbox,
    printed: Printed,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN ZEGO's ServerSecret was rotated and Secrets Manager still holds the old one
    signatures = watch_signatures(box.zim)
    box.zim.rotate_secret(ROTATED_SECRET)

    # WHEN the API, SQS and direct sample events are handled
    api, sqs, direct = (outcome(partial(invoke, load_event(name))) for name in ("api", "sqs", "direct"))

    # THEN each kickout failed on "signature invalid": a 502, parked messages, a ZegoRefused
    assert json.loads(api)["statusCode"] == 502
    assert json.loads(sqs) == {"batchItemFailures": []}
    assert "ZegoRefused" in direct
    assert "100000005" in direct
    parked_messages = box.parked()
    assert [message["MessageAttributes"]["KickoutFailure"]["StringValue"] for message in parked_messages] == [
        "zego_refused"
    ] * 3
    parked = json.dumps(parked_messages, default=str)
    assert len(signatures) >= 5
    assert {code for code, _ in box.zim.refusals} == {100000005}
    # AND the answers, the exception, the DLQ and the logs hold neither the secret nor any signature
    captured = capsys.readouterr()  # for stderr; the stdout it takes is in captured.out, not printed.text
    assert_nowhere(
        [SERVER_SECRET, ROTATED_SECRET, *signatures],
        printed.text,
        captured.out,
        captured.err,
        caplog.text,
        parked,
        api,
        sqs,
        direct,
    )


def test_secret_and_signatures_stay_secret_when_the_connection_breaks(
    invoke: Invoke,
    box: Sandbox,
    printed: Printed,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN ZEGO resets every connection, after reading the signed request line
    signatures = watch_signatures(box.zim, Fault.reset())

    # WHEN a kickout is posted and one is invoked directly
    api = outcome(partial(invoke, load_event("api")))
    direct = outcome(partial(invoke, load_event("direct")))

    # THEN both failed as transport failures (502 and ZegoUnavailable), after retries
    assert json.loads(api)["statusCode"] == 502
    assert "ZegoUnavailable" in direct
    assert len(signatures) >= 4
    # AND no error message or log line repeats the signed URL
    captured = capsys.readouterr()  # for stderr; the stdout it takes is in captured.out, not printed.text
    assert_nowhere([SERVER_SECRET, *signatures], printed.text, captured.out, captured.err, caplog.text, api, direct)


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
