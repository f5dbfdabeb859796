"""Warm kickouts through the real handler, against the floor (a bare signed urllib3 GET), then peak RSS.

Run by `benchmarks.run` as `python3.13 -c <this file>` in a copy of the artifact, with the environment the
template sets (secret in a moto server, ZEGO in the stand-in). Configuration comes as JSON in BENCH_CONFIG, the
Lambda context's attributes in BENCH_CONTEXT.
Handler and floor run in alternating blocks on one kept connection each, so drift hits both alike; each call is
timed on its own and the medians compared. The function's output (logs, EMF) goes to /dev/null. Prints one
`BENCH_RESULT {...}` line.
"""

from __future__ import annotations

import cProfile
import hashlib
import json
import os
import pstats
import resource
import secrets
import statistics
import sys
import sysconfig
import time
from collections import defaultdict
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import urllib3


def floor_call(endpoint: str, app_id: int, server_secret: str, event: dict[str, Any]) -> Callable[[], None]:
    """One conditional UpdateItem on the budget's table (the round trip the budget needs per call), then sign with
    md5 and GET, on a kept connection; the query has the same parameters as the handler's."""
    import boto3

    dynamodb = boto3.client("dynamodb")
    table = os.environ["KICKOUT_STATE_TABLE"]
    pool = urllib3.PoolManager(maxsize=1)
    tail = [
        ("RoomId", event["room_id"]),
        *(("UserId[]", user) for user in dict.fromkeys(event["user_ids"])),
        ("CustomReason", event["reason"]),
        ("FromUserId", event["operator_id"]),
    ]
    encoded_tail = "&".join(f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in tail)

    def call() -> None:
        now = round(time.time() * 1_000_000)
        dynamodb.update_item(
            TableName=table,
            Key={"id": {"S": "floor"}},
            UpdateExpression="SET next_slot = :next",
            ConditionExpression="attribute_not_exists(next_slot) OR next_slot < :now",
            ExpressionAttributeValues={":next": {"N": str(now + 1)}, ":now": {"N": str(now + 1)}},
            ReturnValues="UPDATED_NEW",
        )
        nonce, timestamp = secrets.token_hex(8), int(time.time())
        signature = hashlib.md5(f"{app_id}{nonce}{server_secret}{timestamp}".encode(), usedforsecurity=False)
        query = (
            f"Action=KickoutRoomUser&AppId={app_id}&SignatureNonce={nonce}&Timestamp={timestamp}"
            f"&SignatureVersion=2.0&Signature={signature.hexdigest()}&{encoded_tail}"
        )
        pool.request("GET", f"{endpoint}?{query}").data  # noqa: B018 (read the body, as the handler does)

    return call


def timed(call: Callable[[], object], times: int) -> list[int]:
    samples = []
    for _ in range(times):
        started = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - started)
    return samples


def by_package(profile: cProfile.Profile, calls: int) -> dict[str, list[tuple[str, float]]]:
    """Own time (µs per call) summed by where the code lives (a package of the artifact, the stdlib, C builtins),
    and the functions with the most own and cumulative time."""
    stdlib = sysconfig.get_paths()["stdlib"]
    task = os.getcwd()
    totals: defaultdict[str, float] = defaultdict(float)
    functions: list[tuple[str, float, float]] = []
    # (file, line, name) -> (calls, primitive calls, own time, cumulative time, callers)
    stats: Any = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    for (filename, line, name), (_, _, own, cumulative, _) in stats.items():
        short = os.path.relpath(filename, task) if filename.startswith(task) else os.path.basename(filename)
        functions.append((f"{short}:{line}({name})", own / calls * 1e6, cumulative / calls * 1e6))
        if filename.startswith(task):
            parts = os.path.relpath(filename, task).split(os.sep)
            where = ".".join(parts[:2]) if parts[0] == "aws_lambda_powertools" else parts[0]
        elif filename.startswith(stdlib):
            where = "stdlib " + os.path.relpath(filename, stdlib).split(os.sep)[0].removesuffix(".py")
        elif "socket" in name or "select" in name or "poll" in name:
            where = "socket I/O (C)"
        else:
            where = "other C builtins"
        totals[where] += own
    return {
        "packages": sorted(((where, seconds / calls * 1e6) for where, seconds in totals.items()), key=lambda i: -i[1]),
        "own": [(name, own) for name, own, _ in sorted(functions, key=lambda f: -f[1])[:15]],
        "cumulative": [(name, total) for name, _, total in sorted(functions, key=lambda f: -f[2])[:40]],
    }


def current_rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def main() -> None:
    config = json.loads(os.environ["BENCH_CONFIG"])
    result_out = os.fdopen(os.dup(1), "w")
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (before the import: the Logger binds to it)

    from handler.app import lambda_handler

    event = config["event"]
    context = SimpleNamespace(**json.loads(os.environ["BENCH_CONTEXT"]), get_remaining_time_in_millis=lambda: 20_000)

    def handler_call() -> None:
        lambda_handler(event, context)

    floor = floor_call(os.environ["ZEGO_API_ENDPOINT"], int(os.environ["ZEGO_APP_ID"]), config["server_secret"], event)

    timed(handler_call, config["warmup"])
    timed(floor, config["warmup"])
    rss_after_warmup_kb = current_rss_kb()
    handler_samples: list[int] = []
    floor_samples: list[int] = []
    for _ in range(config["rounds"]):
        handler_samples += timed(handler_call, config["block"])
        floor_samples += timed(floor, config["block"])
    invocations = config["warmup"] + len(handler_samples)
    if config["invocations"] > invocations:
        timed(handler_call, config["invocations"] - invocations)
        invocations = config["invocations"]
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_at_end_kb = current_rss_kb()

    profiles = {}
    if config["profile"]:
        for label, call in (("handler", handler_call), ("floor", floor)):
            profile = cProfile.Profile()
            profile.runcall(timed, call, config["profile"])
            profiles[label] = by_package(profile, config["profile"])

    report = {
        "handler_ns": statistics.median(handler_samples),
        "floor_ns": statistics.median(floor_samples),
        "handler_p90_ns": statistics.quantiles(handler_samples, n=10)[-1],
        "floor_p90_ns": statistics.quantiles(floor_samples, n=10)[-1],
        "samples": len(handler_samples),
        "invocations": invocations,
        "maxrss_kb": maxrss_kb,
        "rss_growth_kb": rss_at_end_kb - rss_after_warmup_kb,
        "profiles": profiles,
    }
    result_out.write(f"\nBENCH_RESULT {json.dumps(report)}\n")
    result_out.flush()
    os._exit(0)


if __name__ == "__main__":  # `python -c`, as benchmarks.run starts it
    main()
