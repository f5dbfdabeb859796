"""The main job on this machine: the real handler, each file of `events/`, the ZIM stand-in on loopback,
Secrets Manager and SQS in memory. No AWS account, no Docker, no network.

    .venv/bin/python -m kickout_dev.demo      (from the repository's root; src/ is put on the path here)

`make demo` runs this where the built function cannot run under the emulator (`python -m
kickout_dev.local_lambda`): the same cases, checked and printed by the same code, with the handler called here.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import boto3

from kickout_dev.command import demo_cases, run_cases, run_loop, summary
from kickout_dev.emulator import Invocation, split_output
from kickout_dev.events import EVENTS_DIR
from kickout_dev.local_http import LocalApi
from kickout_dev.processes import loopback_unreachable
from kickout_dev.sandbox import REGION, LambdaContext, sandbox

SRC = Path(__file__).resolve().parent.parent / "src"
"""The function's package `handler` (CodeUri): on the path as `make demo`'s PYTHONPATH puts it, also without it."""


def invoke(event: Any) -> Invocation:
    """Call the handler as Lambda would: what it returned (or Lambda's error document for what it raised) and
    what it printed, as the emulator's invocations have them."""
    from handler.app import lambda_handler  # after the sandbox has set the environment
    from handler.aws.observability import logger

    printed = io.StringIO()
    logger.registered_handler.setStream(printed)  # type: ignore[attr-defined]
    context = LambdaContext()
    began = time.monotonic()
    with contextlib.redirect_stdout(printed):
        try:
            response: Any = lambda_handler(event, context)
        except Exception as error:
            response = {"errorType": type(error).__name__, "errorMessage": str(error)}
    seconds = time.monotonic() - began
    logs, other = split_output(printed.getvalue().splitlines())
    return Invocation(response=response, logs=logs, other=other, request_id=context.aws_request_id, seconds=seconds)


def call_back(seen: list[Invocation], event: Any) -> Any:
    """ZIM's callbacks, to their handler as to their own function (handler.app.callbacks_lambda_handler)."""
    from handler.app import callbacks_lambda_handler
    from handler.aws.observability import logger

    printed = io.StringIO()
    logger.registered_handler.setStream(printed)  # type: ignore[attr-defined]
    began = time.monotonic()
    with contextlib.redirect_stdout(printed):
        response = callbacks_lambda_handler(event, LambdaContext(function_name="kickout-KickoutCallbackFunction"))
    logs, other = split_output(printed.getvalue().splitlines())
    seen.append(Invocation(response=response, logs=logs, other=other, request_id="", seconds=time.monotonic() - began))
    return response


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m kickout_dev.demo",
        description="The handler in this process on the demo's events, against local stand-ins.",
        allow_abbrev=False,
    ).parse_args(argv)
    if reason := loopback_unreachable():
        print(f"demo: {reason}", file=sys.stderr)
        return 1
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    seen: list[Invocation] = []
    with sandbox() as box, LocalApi(partial(call_back, seen)) as front:
        box.zim.callback_url = f"{front.url}/zego/callbacks"
        print("kickout demo: the real Lambda handler on the files of events/, against")
        print(f"  - a ZIM server stand-in on {box.zim.url} that checks signatures and parameters as ZEGO does,")
        print(f"    and calls back as ZIM does, to the callbacks' handler behind {box.zim.callback_url},")
        print("  - Secrets Manager and SQS in memory (moto), with the ServerSecret stored as JSON.")
        ok = run_cases(invoke, demo_cases())
        sqs = boto3.client("sqs", region_name=REGION)
        ok = run_loop(invoke, box.zim, seen, sqs, box.queue_url) and ok
        ok = summary(box.zim, box.parked(), parked_expected=1) and ok
    print(f"\nevents directory: {EVENTS_DIR}")
    print("demo finished: every event handled as expected" if ok else "demo: UNEXPECTED RESULT")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
