"""The sample events of `events/`, events of the same shapes around any payload, what the function's answers hold."""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from functools import cache
from pathlib import Path
from typing import Any

EVENTS_DIR = Path(__file__).resolve().parent.parent / "events"


def load_event(name: str) -> Any:
    """`events/<name>.json`, the same file `sam local invoke -e` takes; a fresh copy every call."""
    return copy.deepcopy(_read(name))


@cache
def _read(name: str) -> Any:
    return json.loads((EVENTS_DIR / f"{name}.json").read_text())


def api_event(body: str | None, *, method: str = "POST", path: str = "/kickouts") -> dict[str, Any]:
    """An API Gateway REST proxy event like events/api.json with another body, method or path."""
    event: dict[str, Any] = load_event("api")
    event.update(body=body, httpMethod=method, path=path, resource=path)
    event["requestContext"].update(httpMethod=method, resourcePath=path, path=f"/v1{path}", requestId=str(uuid.uuid4()))
    return event


def sqs_record(body: str, *, receive_count: int = 1, message_id: str | None = None) -> dict[str, Any]:
    record: dict[str, Any] = load_event("sqs")["Records"][0]
    record.update(body=body, messageId=message_id or str(uuid.uuid4()))
    record["attributes"]["ApproximateReceiveCount"] = str(receive_count)
    return record


def sqs_event(*bodies: str) -> dict[str, Any]:
    return {"Records": [sqs_record(body) for body in bodies]}


def failed_ids(response: dict[str, Any]) -> set[str]:
    """The message ids an SQS batch's partial batch response reports failed."""
    return {failure["itemIdentifier"] for failure in response["batchItemFailures"]}


def body_of(response: dict[str, Any]) -> dict[str, Any]:
    """An API Gateway proxy response's JSON body."""
    body: dict[str, Any] = json.loads(response["body"])
    return body


def zim_signature(secret: str, timestamp: str, nonce: str) -> str:
    """A callback's signature as ZIM makes it: SHA-1 of the secret, timestamp and nonce, sorted and joined."""
    joined = "".join(sorted([secret, timestamp, nonce]))
    return hashlib.sha1(joined.encode(), usedforsecurity=False).hexdigest()


def signed_callback(fields: dict[str, Any], secret: str, at: int | str) -> dict[str, Any]:
    """ZIM calling POST /zego/callbacks with `fields` (among them `nonce`), signed with `secret` at `at` (ZIM's
    timestamp: Unix seconds or milliseconds), as API Gateway hands it over (no IAM identity on that route)."""
    body = {**fields, "timestamp": at, "signature": zim_signature(secret, str(at), str(fields["nonce"]))}
    event = api_event(json.dumps(body), path="/zego/callbacks")
    event["requestContext"]["identity"] = {"sourceIp": "203.0.113.7"}
    return event


def resigned(event: dict[str, Any], secret: str, at: int) -> dict[str, Any]:
    """A ZIM callback event of `events/` (callback_*.json, signed with the sandbox's ServerSecret at a fixed time)
    signed again at `at` (Unix seconds). The function refuses a timestamp more than 5 minutes from its clock, so a
    sample is sent re-signed."""
    body = json.loads(event["body"])
    body.update(timestamp=at, signature=zim_signature(secret, str(at), str(body["nonce"])))
    return {**event, "body": json.dumps(body)}
