"""The main job on this machine: the real handler, each file of `events/`, the ZIM stand-in on loopback,
Secrets Manager and SQS in memory. No AWS account, no Docker, no network.

    python -m kickout_dev.demo
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from typing import Any

from kickout_dev.events import EVENTS_DIR, api_event, load_event, sqs_event
from kickout_dev.sandbox import LambdaContext, Sandbox, sandbox


def invoke(event: Any) -> tuple[Any, list[dict[str, Any]]]:
    """Call the handler as Lambda would; return its response (or the error it raised) and what it printed."""
    from handler.app import lambda_handler  # after the sandbox has set the environment
    from handler.observability import logger

    printed = io.StringIO()
    logger.registered_handler.setStream(printed)  # type: ignore[attr-defined]
    with contextlib.redirect_stdout(printed):
        try:
            response: Any = lambda_handler(event, LambdaContext())
        except Exception as error:
            response = {"errorType": type(error).__name__, "errorMessage": str(error)}
    lines = [json.loads(line) for line in printed.getvalue().splitlines() if line.startswith("{")]
    return response, lines


def show(title: str, event: Any) -> Any:
    print(f"\n▶ {title}")
    response, lines = invoke(event)
    if isinstance(response, dict) and isinstance(response.get("body"), str):
        print(f"  response: HTTP {response['statusCode']} {response['body']}")
    else:
        print(f"  response: {json.dumps(response, ensure_ascii=False)}")
    for line in lines:
        if "_aws" in line:
            names = [metric["Name"] for block in line["_aws"]["CloudWatchMetrics"] for metric in block["Metrics"]]
            print("  metrics:", ", ".join(f"{name}={_total(line[name])}" for name in names))
        else:
            keys = ("room_id", "outcome", "kicked_user_ids", "zego_request_ids", "reason", "detail", "error")
            fields = " ".join(f"{key}={json.dumps(line[key], ensure_ascii=False)}" for key in keys if key in line)
            print(f"  log {line['level']}: {line['message']} {fields}")
    return response


def _total(values: list[float] | float) -> str:
    total = sum(values) if isinstance(values, list) else values
    return f"{total:.1f}" if total % 1 else str(int(total))


def main() -> int:
    with sandbox() as box:
        print("kickout demo: the real Lambda handler on the files of events/, against")
        print(f"  - a ZIM server stand-in on {box.zim.url} that checks signatures and parameters as ZEGO does,")
        print("  - Secrets Manager and SQS in memory (moto), with the ServerSecret stored as JSON.")
        api = show("events/api.json: API Gateway POST /kickouts", load_event("api"))
        queue = show("events/sqs.json: an SQS batch of 3 messages", load_event("sqs"))
        direct = show("events/direct.json: a direct invoke (Step Functions, sam local invoke)", load_event("direct"))
        invalid = json.dumps(load_event("invalid"))
        show("events/invalid.json as a direct invoke", load_event("invalid"))
        show("events/invalid.json as an API body", api_event(invalid))
        show("events/invalid.json as an SQS message", sqs_event(invalid))
        return _summary(box, ok=api["statusCode"] == 200 and not queue["batchItemFailures"] and "room_id" in direct)


def _summary(box: Sandbox, *, ok: bool) -> int:
    print(f"\nThe ZIM stand-in accepted {len(box.zim.kickouts)} signed requests and refused {len(box.zim.refusals)}:")
    for kickout in box.zim.kickouts:
        by = f", by {kickout.operator_id}" if kickout.operator_id else ""
        print(f"  {kickout.room_id!r}: kicked {', '.join(kickout.user_ids)} (reason {kickout.reason!r}{by})")
    parked = box.parked()
    print(f"The dead-letter queue holds {len(parked)} parked message(s):")
    for message in parked:
        attributes = message["MessageAttributes"]
        print(f"  {attributes['KickoutFailure']['StringValue']}: {attributes['KickoutDetail']['StringValue']}")
        print(f"    body kept as sent: {message['Body']}")
    ok = ok and not box.zim.refusals and len(parked) == 1
    print(f"\nevents directory: {EVENTS_DIR}")
    print("demo finished: every event handled as expected" if ok else "demo: UNEXPECTED RESULT")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
