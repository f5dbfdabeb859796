"""A re-entry wave: users kept out of two rooms all enter again at once; ZIM calls back for each.

    python -m benchmarks.reentry [--users N]   (about 60 s; row 12 of `make bench`)

First, in this process on loopback (kickout_dev.sandbox: moto held to AWS's limits, the ZIM stand-in, the real
handlers): N users (default 2,000, half in each room) are kicked with an hour's keep-out; then each one's signed
`room_enter` goes through the callbacks' handler, one after the other (answer latency, p50 and p99, against one
bare GetItem on the same moto). What the callbacks queued is taken off their queue as it is.

Then those kickouts are drained as Lambda drains them, on benchmarks.fleet: one moto server holding the fleet
budget in DynamoDB, the ZIM stand-in enforcing ZEGO's 20 calls in any second in a process of its own
(benchmarks.zim_process), each execution environment a process running the kickout handler (benchmarks.fleet_env)
fed by Lambda's poller (kickout_dev.event_source) with the template's batches. Twice in the same run: with 1
environment, and with the template's QueueMaximumConcurrency (2). Re-kicks per second count as benchmarks.fleet
counts them, from the first accepted ZEGO call to the last, against ZEGO's 1,000 users/s (20 calls of 50).

Not a test: it prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3

from benchmarks.fleet import Backend, Outcome, Workload, run_workload, template_defaults
from benchmarks.report import Report, Row, log, quiet
from kickout_dev.events import signed_callback
from kickout_dev.plural import counted
from kickout_dev.processes import MotoServer
from kickout_dev.queues import drained
from kickout_dev.sandbox import APP_ID, REGION, SERVER_SECRET, STATE_TABLE, sandbox

ROOMS = ("raid-room-1", "raid-room-2")
USERS_PER_KICKOUT = 500
ZEGO_USERS_PER_SECOND = 20 * 50
DRAIN_DEADLINE = 150.0
"""Seconds each drain may take at most (2,000 users at ZEGO's 1,000/s take about 2)."""
QUIET_FUNCTION = {
    "POWERTOOLS_SERVICE_NAME": "kickout",
    "POWERTOOLS_METRICS_NAMESPACE": "Kickout",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "ERROR",
}
"""What Powertools reads when the handler is imported, when this module runs alone: quiet logs, no tracer."""


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def callback_event(room_id: str, user_id: str, nonce: int) -> dict[str, Any]:
    return signed_callback(
        {
            "appid": str(APP_ID),
            "event": "room_enter",
            "room_id": room_id,
            "operator_account": user_id,
            "nonce": str(nonce),
        },
        SERVER_SECRET,
        str(int(time.time())),
    )


@dataclass(frozen=True)
class Callbacks:
    """The callbacks' side of the wave: their answers, and what they queued."""

    users: int
    outcomes: dict[str, int]
    latencies: list[float]
    bare_get_item: list[float]
    queued: list[dict[str, Any]]
    """The kickouts' bodies, as the callbacks sent them."""


@dataclass(frozen=True)
class Drain:
    environments: int
    outcome: Outcome

    @property
    def ratio(self) -> float:
        return self.outcome.user_rate / ZEGO_USERS_PER_SECOND


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--users", type=int, default=2000, help="kept-out users who enter again (half per room)")
    parser.add_argument("--repeat", type=int, default=1, help="drains of the same wave, each on 1 and 2 environments")
    args = parser.parse_args(argv)
    users_total = args.users
    for name, value in QUIET_FUNCTION.items():
        os.environ.setdefault(name, value)
    with contextlib.redirect_stdout(io.StringIO()):  # the function's EMF metrics
        cost = keep_out_cost()
        entered = callbacks_wave(users_total)
    drains = drain_waves(entered.queued, args.repeat)
    print("\n".join([cost, *lines(entered, drains)]))
    return 0


def measure_reentry(report: Report) -> None:
    """Row 12 into `make bench`'s table."""
    log("re-entry wave: 2,000 room_enter callbacks (in process), then their re-kicks on 1 and 2 environments")
    missing = {name: value for name, value in QUIET_FUNCTION.items() if name not in os.environ}
    os.environ.update(missing)  # for quiet()'s import of the handler, if it is the first
    try:
        with quiet():
            entered = callbacks_wave(2000)
    finally:
        for name in missing:
            os.environ.pop(name, None)
    drains = drain_waves(entered.queued)
    report.add(*rows(entered, drains))
    report.note("re-entry wave: " + "; ".join(line.strip() for line in lines(entered, drains)[1:]))


def keep_out_cost(repeats: int = 60) -> str:
    """What a keep-out adds to a kickout a caller waits for: warm direct kickouts of one user without a window and
    with one, interleaved, on a budget that never waits (1,000 calls/s); medians."""
    with sandbox(rate_limit_per_second=1000.0) as box:
        timings: dict[int, list[float]] = {0: [], 3600: []}
        for index in range(repeats + 2):
            for window, taken in timings.items():
                payload = {"room_id": "lobby-7", "user_ids": [f"w{window}-{index}"], "keep_out_seconds": window}
                began = time.perf_counter()
                box.handler(payload, box.context())
                if index >= 2:  # the first of each warms the clients
                    taken.append(time.perf_counter() - began)
    without, with_window = (statistics.median(taken) for taken in timings.values())
    return (
        f"kickout a caller waits for (direct invoke, warm, median of {repeats}): without a window "
        f"{without * 1000:.1f} ms, with a keep-out {with_window * 1000:.1f} ms = {with_window / without:.2f}x "
        "(the keep-out's UpdateItem after ZEGO's answer)"
    )


def callbacks_wave(users_total: int) -> Callbacks:
    """The keep-outs set, every kept-out user's room_enter answered; the kickouts they queued, taken off the queue."""
    with sandbox(rate_limit_per_second=20.0, max_requests_per_second=20) as box:
        # Imported here, where Powertools finds the function's variables (its metrics' namespace), if not before.
        from handler.app import callbacks_handler_for
        from handler.fleet.keep_outs import item_key

        # A user id per room (r1-u00000, r2-u00000): the drain counts users kicked again by id.
        users = {
            room: [f"r{number}-u{index:05d}" for index in range(users_total // len(ROOMS))]
            for number, room in enumerate(ROOMS, start=1)
        }
        for room, members in users.items():
            for start in range(0, len(members), USERS_PER_KICKOUT):
                payload = {
                    "room_id": room,
                    "user_ids": members[start : start + USERS_PER_KICKOUT],
                    "operator_id": "mod-anna",
                    "keep_out_seconds": 3600,
                }
                box.handler(payload, box.context(timeout_seconds=60))

        # The least a callback must do, on the same moto: one GetItem.
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        bare = []
        first_room = users[ROOMS[0]]
        for index in range(200):
            began = time.perf_counter()
            key = item_key(APP_ID, ROOMS[0], first_room[index % len(first_room)])
            dynamodb.get_item(TableName=STATE_TABLE, Key={"id": {"S": key}})
            bare.append(time.perf_counter() - began)

        handle = callbacks_handler_for(lambda: box.function)
        latencies = []
        outcomes: dict[str, int] = {}
        nonce = 100_000
        for index in range(max(len(members) for members in users.values())):
            for room, members in users.items():
                if index >= len(members):
                    continue
                nonce += 1
                event = callback_event(room, members[index], nonce)
                began = time.perf_counter()
                response = handle(event, box.context(timeout_seconds=6))
                latencies.append(time.perf_counter() - began)
                outcome = json.loads(response["body"]).get("outcome", str(response["statusCode"]))
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        # Their KickoutCause attribute is not carried over: no part of the function reads it.
        queued = [json.loads(message["Body"]) for message in drained(boto3.client("sqs"), box.queue_url)]
    return Callbacks(users_total, outcomes, latencies, bare, queued)


def drain_waves(bodies: list[dict[str, Any]], repeat: int = 1) -> list[Drain]:
    """The queued kickouts drained by 1 environment, then by the template's QueueMaximumConcurrency (`repeat` times
    each, in turn), on one moto server (the fleet budget in its table), a ZIM stand-in of their own each
    (benchmarks.fleet)."""
    defaults = template_defaults()
    counts = sorted({1, defaults.queue_concurrency})
    results = []
    with tempfile.TemporaryDirectory(prefix="kickout-reentry-") as logs, MotoServer(Path(logs)) as moto:
        backend = Backend.create(moto.url)
        for environments in counts * repeat:
            workload = Workload(f"reentry-{environments}", bodies, deadline=DRAIN_DEADLINE)
            outcome = run_workload(workload, backend, replace(defaults, queue_concurrency=environments), Path(logs))
            results.append(Drain(environments, outcome))
    return results


def _invocation_figures(outcome: Outcome) -> str:
    """Where a drain's time goes: its invocations' sizes and lengths, the gaps an environment spends gathering the
    next batch between two of them, the rate inside an invocation, and the budget's waits."""
    queue = sorted(outcome.invocations, key=lambda invocation: (invocation.environment, invocation.began))
    sizes = [invocation.size for invocation in queue]
    gaps = [
        later.began - earlier.ended
        for earlier, later in itertools.pairwise(queue)
        if earlier.environment == later.environment
    ]
    inside = [
        (sum(invocation.metrics.get("UsersPerCall", [])), invocation.ended - invocation.began) for invocation in queue
    ]
    inside_rate = sum(users for users, _ in inside) / sum(span for _, span in inside) if inside else float("nan")
    waits = outcome.metric("BudgetWait")
    per_call = outcome.metric("UsersPerCall")
    start = min((invocation.began for invocation in queue), default=0.0)
    spans = ", ".join(
        f"{invocation.environment.rsplit('-', 1)[-1]}: +{invocation.began - start:.2f}-{invocation.ended - start:.2f}"
        for invocation in sorted(queue, key=lambda invocation: invocation.began)
    )
    return (
        f"{len(queue)} invocations of {sizes} messages (environment: from-to s after the first began: {spans}), "
        f"{', '.join(f'{invocation.ended - invocation.began:.2f}' for invocation in queue)} s each; gaps between "
        f"an environment's invocations {', '.join(f'{gap:.2f}' for gap in gaps) or 'none'} s; inside invocations "
        f"{inside_rate:.0f} users/s; BudgetWait p50 {percentile(waits, 0.5) if waits else float('nan'):.0f} ms, "
        f"p99 {percentile(waits, 0.99) if waits else float('nan'):.0f} ms; users per call "
        f"{min(per_call, default=0):.0f}-{max(per_call, default=0):.0f}"
    )


def lines(entered: Callbacks, drains: Sequence[Drain]) -> list[str]:
    figures = [
        f"re-entry wave: {entered.users} kept-out users entering again in {len(ROOMS)} rooms",
        f"  callback outcomes: {entered.outcomes}; {len(entered.queued)} kickouts queued, "
        f"{len({body.get('reason') for body in entered.queued})} distinct reasons (each names its keep-out's end to "
        "the minute; only kickouts with the same reason share a ZEGO call)",
        f"  callback answer: p50 {percentile(entered.latencies, 0.5) * 1000:.1f} ms, p99 "
        f"{percentile(entered.latencies, 0.99) * 1000:.1f} ms (goal p99 < 50 ms); one bare GetItem on the same moto: "
        f"p50 {percentile(entered.bare_get_item, 0.5) * 1000:.2f} ms",
    ]
    for drain in drains:
        o = drain.outcome
        figures += [
            f"  re-kicks, {counted(drain.environments, 'environment')}: {o.users} users in {o.calls} ZEGO calls over "
            f"{o.span:.2f} s = {o.user_rate:.0f} users/s, {drain.ratio:.2f} of ZEGO's {ZEGO_USERS_PER_SECOND} "
            f"(goal >= 0.9); {'done' if o.finished else 'NOT DONE'} in {o.elapsed:.1f} s",
            f"    lost: {entered.users - o.kicked_expected} not kicked again, {o.lost} moved to the DLQ by SQS, "
            f"{o.parked} parked, {o.handed_back} handed back, {o.deferred} deferred, {o.refused_rate} refused by "
            f"ZEGO's rate check ({o.refused_other} otherwise)",
            f"    {_invocation_figures(o)}",
        ]
    return figures


def rows(entered: Callbacks, drains: Sequence[Drain]) -> list[Row]:
    p99 = percentile(entered.latencies, 0.99)
    bare = percentile(entered.bare_get_item, 0.5)
    found = [
        Row(
            f"12. re-entry wave: callback answer p50/p99 ({entered.users} room_enter, 2 rooms)",
            f"{percentile(entered.latencies, 0.5) * 1000:.1f} / {p99 * 1000:.1f} ms",
            f"{bare * 1000:.2f} ms one bare GetItem",
            p99 / bare,
            "p99 < 50 ms",
            p99 < 0.05,
        )
    ]
    for drain in drains:
        o = drain.outcome
        whole = o.kicked_expected == entered.users and o.lost == 0 and o.parked == 0 and o.refused_rate == 0
        found += [
            Row(
                f"12. re-entry wave: re-kicks/s, {counted(drain.environments, 'environment')}",
                f"{o.user_rate:.0f}/s over {o.span:.2f} s, {o.users / max(1, o.calls):.1f} users/call",
                f"{ZEGO_USERS_PER_SECOND}/s = 20 calls x 50",
                drain.ratio,
                "≥ 0.90" if drain.environments > 1 else "info: 1 environment",
                drain.ratio >= 0.9 if drain.environments > 1 else None,
            ),
            Row(
                f"12. the same: kicked again; lost, parked, refused ({counted(drain.environments, 'environment')})",
                f"{o.kicked_expected} of {entered.users}; {o.lost} lost, {o.parked} parked, {o.refused_rate} refused",
                f"{len(entered.queued)} queued",
                None,
                "all; 0, 0, 0",
                whole,
            ),
        ]
    return found


if __name__ == "__main__":
    sys.exit(main())
