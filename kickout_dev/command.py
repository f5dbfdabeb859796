"""What the dev tools' commands share (local_lambda, sam_docker): the demo's cases and how an invocation is told,
event files read as cases, exit statuses, and a body run so that Ctrl-C and SIGTERM stop everything it started.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kickout_dev.emulator import Invocation
from kickout_dev.events import api_event, load_event, sqs_event
from kickout_dev.plural import counted
from kickout_dev.zim_server import ZimStandIn

EX_UNAVAILABLE = 69
"""sysexits' EX_UNAVAILABLE: this machine lacks what the emulated run needs."""
EX_USAGE = 2
"""A mistake on the command line, as argparse exits for its own."""


class UsageError(Exception):
    """A mistake on the command line (an event file missing or not JSON): said in one line, no traceback."""


@dataclass(frozen=True)
class Case:
    title: str
    event: Any
    expect: Callable[[Invocation], bool] | None = None


def demo_cases() -> list[Case]:
    """The demo's cases, here and in-process (kickout_dev.demo), with what each must give."""
    invalid = json.dumps(load_event("invalid"))
    return [
        Case("events/api.json: API Gateway POST /kickouts", load_event("api"), lambda i: _status(i) == 200),
        Case(
            "events/sqs.json: an SQS batch of 3 messages",
            load_event("sqs"),
            lambda i: isinstance(i.response, dict) and i.response.get("batchItemFailures") == [],
        ),
        Case(
            "events/direct.json: a direct invoke (Step Functions, sam local invoke)",
            load_event("direct"),
            lambda i: isinstance(i.response, dict) and "room_id" in i.response,
        ),
        Case(
            "events/invalid.json as a direct invoke",
            load_event("invalid"),
            lambda i: i.error_type == "InvalidKickoutRequest",
        ),
        Case("events/invalid.json as an API body", api_event(invalid), lambda i: _status(i) == 422),
        Case(
            "events/invalid.json as an SQS message",
            sqs_event(invalid),
            lambda i: isinstance(i.response, dict) and i.response.get("batchItemFailures") == [],
        ),
    ]


def file_cases(paths: list[str]) -> list[Case]:
    """The events in these files, or UsageError naming the first that is missing or not JSON."""
    cases = []
    for name in paths:
        path = Path(name)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise UsageError(f"{name}: no such event file (the samples are in events/)") from None
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"{name}: cannot read it as an event file ({type(error).__name__})") from None
        try:
            cases.append(Case(str(path), json.loads(text)))
        except json.JSONDecodeError as error:
            raise UsageError(f"{name}: not JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    return cases


def port_number(text: str) -> int:
    """argparse's type for --port: 0 (any free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is outside 0-65535")
    return port


def _status(invocation: Invocation) -> int | None:
    response = invocation.response
    return response.get("statusCode") if isinstance(response, dict) else None


def describe(invocation: Invocation) -> list[str]:
    """The response and the function's output, one short line each (the in-process demo's too)."""
    response = invocation.response
    if isinstance(response, dict) and isinstance(response.get("body"), str):
        lines = [f"response: HTTP {response['statusCode']} {response['body']}"]
    elif invocation.error_type is not None:
        lines = [f"response: error {invocation.error_type}: {response.get('errorMessage', '')}"]
    else:
        lines = [f"response: {json.dumps(response, ensure_ascii=False)}"]
    for line in invocation.logs:
        if "_aws" in line:
            names = [metric["Name"] for block in line["_aws"]["CloudWatchMetrics"] for metric in block["Metrics"]]
            lines.append("metrics: " + ", ".join(f"{name}={_total(line.get(name, 0))}" for name in names))
        else:
            keys = (
                "room_id",
                "outcome",
                "kicked_user_ids",
                "confirmed_user_ids",
                "user_id",
                "keep_out_until",
                "zego_request_ids",
                "reason",
                "detail",
                "error",
            )
            fields = " ".join(f"{key}={json.dumps(line[key], ensure_ascii=False)}" for key in keys if key in line)
            lines.append(f"log {line.get('level', '?')}: {line.get('message', '')} {fields}".rstrip())
    # The runtime's own "[ERROR] ..." line repeats the error response; anything else is worth seeing.
    lines.extend(f"runtime: {line[:300]}" for line in invocation.other if not line.startswith("[ERROR]"))
    return lines


def _total(values: list[float] | float) -> str:
    total = sum(values) if isinstance(values, list) else values
    return f"{total:.1f}" if total % 1 else str(int(total))


def run_cases(invoke: Callable[[Any], Invocation], cases: list[Case]) -> bool:
    """Invoke each case, print what it gave (described); whether every one gave what it must."""
    ok = True
    for number, case in enumerate(cases):
        invocation = invoke(case.event)
        cold = ", cold start" if number == 0 else ""
        print(f"\n▶ {case.title} ({invocation.seconds * 1000:.0f} ms{cold})")
        for line in describe(invocation):
            print(f"  {line}")
        if (invocation.error_type or "").startswith(("Runtime.", "Sandbox.")):
            print(f"  ✗ the runtime could not run the function ({invocation.error_type})")
            ok = False
        elif case.expect is not None and not case.expect(invocation):
            print("  ✗ not what this event must give")
            ok = False
    return ok


LOOP_ROOM = "lobby-9"
LOOP_USER = "raider_1"


def run_loop(
    invoke: Callable[[Any], Invocation],
    zim: ZimStandIn,
    callbacks_seen: list[Invocation],
    sqs: Any,
    queue_url: str,
) -> bool:
    """Kick with a keep-out -> ZIM's room_exit confirms it -> the user enters again -> ZIM's room_enter queues a
    kickout -> Lambda's poller hands it over -> kicked again -> confirmed. Printed step by step; whether it held."""
    from kickout_dev.event_source import Poller

    def step(title: str, invocation: Invocation | None = None) -> None:
        print(f"\n▶ {title}" + (f" ({invocation.seconds * 1000:.0f} ms)" if invocation else ""))
        for seen in [invocation] if invocation else []:
            for line in describe(seen):
                print(f"  {line}")

    def callbacks_answered() -> list[Invocation]:
        zim.wait_for_callbacks()
        answered = list(callbacks_seen)
        callbacks_seen.clear()
        for seen in answered:
            print(f"  ZIM callback ({seen.seconds * 1000:.0f} ms):")
            for line in describe(seen):
                print(f"    {line}")
        return answered

    def outcome(seen: list[Invocation]) -> list[str]:
        return [json.loads(i.response["body"]).get("outcome", "?") for i in seen if isinstance(i.response, dict)]

    zim.wait_for_callbacks()
    earlier = outcome(callbacks_seen)
    callbacks_seen.clear()
    print(f"\nZIM's room_exit callbacks for the kicks above: {earlier.count('confirmed')} of {len(earlier)} confirmed")
    zim.rooms = {LOOP_ROOM: {LOOP_USER, "bystander"}}
    kick = invoke({"room_id": LOOP_ROOM, "user_ids": [LOOP_USER], "operator_id": "mod-bot", "keep_out_seconds": 600})
    step(f"the loop: a direct kickout of {LOOP_USER} from {LOOP_ROOM} with a 10-minute keep-out", kick)
    first = outcome(callbacks_answered())
    step(f"{LOOP_USER} enters {LOOP_ROOM} again: the stand-in sends ZIM's signed room_enter")
    status = zim.reenter(LOOP_ROOM, LOOP_USER)
    reentry = outcome(callbacks_answered())
    handed: list[Invocation] = []

    def hand_over(event: dict[str, Any]) -> Any:
        handed.append(invoke(event))
        return handed[-1].response

    delivery = Poller(sqs=sqs, queue_url=queue_url, invoke=hand_over).poll()
    step("Lambda's poller hands the queued kickout to the function", handed[0] if handed else None)
    second = outcome(callbacks_answered())
    ok = (
        all(seen == "confirmed" for seen in earlier)
        and first == ["confirmed"]
        and (status, reentry) == (200, ["kickout_queued"])
        and delivery is not None
        and not delivery.failed
        and second == ["confirmed"]
        and zim.rooms.get(LOOP_ROOM) == {"bystander"}
    )
    print(
        f"\n{LOOP_USER}: kicked, confirmed {first.count('confirmed')}, entered again, kicked again through the queue, "
        f"confirmed {second.count('confirmed')}; {LOOP_ROOM} now holds {sorted(zim.rooms.get(LOOP_ROOM, set()))}"
    )
    return ok


def summary(zim: ZimStandIn, parked: list[dict[str, Any]], *, parked_expected: int | None) -> bool:
    """Print what ZEGO's stand-in accepted and refused and what was parked; whether that is as expected."""
    print(
        f"\nThe ZIM stand-in accepted {counted(len(zim.kickouts), 'signed request')} and refused {len(zim.refusals)}:"
    )
    for kickout in zim.kickouts:
        by = f", by {kickout.operator_id}" if kickout.operator_id else ""
        print(f"  {kickout.room_id!r}: kicked {', '.join(kickout.user_ids)} (reason {kickout.reason!r}{by})")
    for code, why in zim.refusals:
        print(f"  refused ({code}): {why}")
    print(f"The dead-letter queue holds {counted(len(parked), 'parked message')}:")
    for message in parked:
        attributes = message["MessageAttributes"]
        print(f"  {attributes['KickoutFailure']['StringValue']}: {attributes['KickoutDetail']['StringValue']}")
        print(f"    body kept as sent: {message['Body']}")
    return not zim.refusals and (parked_expected is None or len(parked) == parked_expected)


def run_tool(
    name: str,
    body: Callable[[argparse.Namespace], int],
    args: argparse.Namespace,
    *,
    stopped: str,
    unavailable: tuple[type[Exception], str] | None = None,
) -> int:
    """Run a dev tool's body (this one's, sam_docker's): SIGTERM unwinds like Ctrl-C, so that everything started
    is stopped; a user's mistake, and a machine that cannot do it, are one line each, never a traceback."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        return body(args)
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted; {stopped}", file=sys.stderr)
        return 130
    except UsageError as error:
        print(f"{name}: {error}", file=sys.stderr)
        return EX_USAGE
    except Exception as error:
        if unavailable is None or not isinstance(error, unavailable[0]):
            raise
        print(f"{name}: {unavailable[1]}: {error}", file=sys.stderr)
        return EX_UNAVAILABLE
