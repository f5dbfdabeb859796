"""Who ordered each kick: the audit line of every entry point names the sender, as far as the event says it."""

from __future__ import annotations

import json

from kickout_dev.events import api_event, load_event, sqs_event
from kickout_dev.sandbox import SERVER_SECRET, Sandbox
from tests.conftest import Invoke, Printed

KICKOUT = {"room_id": "lobby-7", "user_ids": ["spammer_01"], "operator_id": "mod-anna"}


def lines(printed: Printed, message: str) -> list[dict[str, object]]:
    return [log for log in printed.logs if log["message"] == message]


def test_an_api_kickout_names_the_iam_principal_that_signed_it_and_the_operator(
    invoke: Invoke, box: Sandbox, printed: Printed
) -> None:
    # GIVEN a kickout signed by an IAM role, as API Gateway's request context tells
    event = api_event(json.dumps(KICKOUT))
    identity = event["requestContext"]["identity"]
    # WHEN it is done
    assert invoke(event)["statusCode"] == 200
    # THEN its audit line names that principal, where the call came from, and the operator
    (done,) = lines(printed, "kickout done")
    assert done["principal_arn"] == identity["userArn"]
    assert done["principal_caller"] == identity["caller"]
    assert done["principal_account"] == identity["accountId"]
    assert done["source_ip"] == identity["sourceIp"]
    assert done["operator_id"] == "mod-anna"
    # AND never the access key, the secret or a signature
    assert identity["accessKey"] not in printed.text
    assert SERVER_SECRET not in printed.text
    assert "Signature" not in printed.text


def test_a_refused_api_request_names_its_sender_too(invoke: Invoke, box: Sandbox, printed: Printed) -> None:
    event = api_event(json.dumps([KICKOUT]))
    assert invoke(event)["statusCode"] == 422
    (failed,) = lines(printed, "kickout failed")
    assert failed["principal_arn"] == event["requestContext"]["identity"]["userArn"]
    assert failed["outcome"] == "Invalid"


def test_an_api_event_without_an_identity_is_still_audited(invoke: Invoke, box: Sandbox, printed: Printed) -> None:
    # GIVEN an event whose request context has no identity (a test console, a hand-made event)
    event = api_event(json.dumps(KICKOUT))
    del event["requestContext"]["identity"]
    # THEN the kickout is done and audited without principal fields
    assert invoke(event)["statusCode"] == 200
    (done,) = lines(printed, "kickout done")
    assert "principal_arn" not in done
    assert done["operator_id"] == "mod-anna"


def test_a_queue_message_names_its_sqs_sender_and_the_operator(invoke: Invoke, box: Sandbox, printed: Printed) -> None:
    # GIVEN a message SQS recorded as sent by a role
    event = sqs_event(json.dumps(KICKOUT), json.dumps({**KICKOUT, "operator_id": None, "user_ids": ["x" * 80]}))
    sender = load_event("sqs")["Records"][0]["attributes"]["SenderId"]
    # WHEN the batch is handled (one done, one invalid and parked)
    assert invoke(event) == {"batchItemFailures": []}
    # THEN both audit lines name the sender; the operator where the message named one
    (done,) = lines(printed, "kickout done")
    (failed,) = lines(printed, "kickout failed")
    assert done["sender_id"] == sender
    assert done["operator_id"] == "mod-anna"
    assert failed["sender_id"] == sender
    assert "operator_id" not in failed


def test_a_direct_invoke_names_the_operator(invoke: Invoke, box: Sandbox, printed: Printed) -> None:
    invoke(dict(KICKOUT))
    (done,) = lines(printed, "kickout done")
    assert done["operator_id"] == "mod-anna"
    assert "principal_arn" not in done
