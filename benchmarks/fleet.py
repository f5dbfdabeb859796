"""The fleet under ZEGO's 20 calls/s: environments as processes, one budget, SQS as Lambda's poller feeds it.

    python -m benchmarks.fleet [--only raid,spread,mixed,two] [--repeat N]   (about 90 s for all four)

One moto server (the secret, the dead-letter queue, the kickout queue that deferred messages go back to, the
state table holding the budget) and one ZIM stand-in enforcing 20 calls in any sliding second (in a process of its
own, benchmarks.zim_process, so that this one's work does not delay its clock), shared by every environment of a
workload. Each environment is a process running the real handler (`benchmarks.fleet_env`) with
the template's defaults, fed over stdin/stdout. This process plays SQS and Lambda's poller:

- the template's queue concurrency (QueueMaximumConcurrency) environments poll the moto server's queue (made like
  the template's KickoutQueue, held to AWS's limits), each through kickout_dev.event_source's Poller, Lambda's
  event source mapping: it gathers up to the batch size, 10 per receive, and invokes once the batch is full, its
  batching window has passed since its first message, or the batch nears Lambda's 6 MB payload; it deletes what
  the answer does not report failed;
- a message the function reports in batchItemFailures is "handed back": made visible again after HANDBACK_DELAY
  (SQS waits out the 370 s visibility timeout or the function's backoff; here a short delay keeps runs short),
  to come back with one more receive; one that fails its maxReceiveCount-th receive is moved by SQS to the DLQ
  ("lost");
- a message the function re-sends to KICKOUT_QUEUE_URL (what it cannot reach before its deadline) is the same
  queue's: received again once its DelaySeconds have passed ("deferred").

Rates count from the stand-in's first accepted ZEGO call to its last (start-up is not pacing) as intervals:
(calls - 1) / span, and users after the first call / span. Every workload is bounded by a deadline; what it
started (children, the stand-in) is stopped by handle at its end, also on failure; the moto server at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import boto3

from benchmarks.cpu_share import LAMBDA_SHARE_256_MB, CpuShare, cpu_share
from benchmarks.fleet_env import CLOCK_OFFSET
from benchmarks.report import ROOT, BenchError, Report, Row, log, print_table
from benchmarks.zim_process import ZimProcess
from kickout_dev.event_source import Batching, Poller
from kickout_dev.events import api_event
from kickout_dev.processes import MotoServer, terminate
from kickout_dev.queues import drained, queue_is_empty
from kickout_dev.sandbox import (
    REGION,
    SECRET_NAME,
    SERVER_SECRET,
    create_state_table,
    function_environment,
    make_like_template_queue,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

RATE_REFUSED = 660300005
HANDBACK_DELAY = 1.0
"""Seconds before a message reported failed is visible again (SQS: the visibility timeout, 370 s)."""
RECEIVE_SECONDS = 0.004
"""What one receive of 10 counts against the batching window: SQS answers in about 20 ms, and Lambda polls with
5 pollers at once (kickout_dev.event_source.Batching.receive_seconds)."""
POLL_IDLE = 0.05
"""Seconds an idle poller waits before it receives again (Lambda's long-polls)."""
ZEGO_LATENCY = 0.05
"""The stand-in answers each call in 50 ms, about what ZEGO's API takes from an AWS region nearby."""
TICK = 0.005
WIRED = frozenset(
    (
        "ZEGO_APP_ID",
        "ZEGO_SECRET_ID",
        "ZEGO_API_ENDPOINT",
        "KICKOUT_DLQ_URL",
        "KICKOUT_QUEUE_URL",
        "KICKOUT_STATE_TABLE",
    )
)
"""The function's variables that say where things are: the stand-in's and the moto server's, never the template's."""
START_TIMEOUT = 60.0


# --- the template's defaults ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Defaults:
    batch_size: int
    batching_window: float
    queue_concurrency: int
    api_rate: float
    timeout: float
    max_receive_count: int
    zego_limit: float
    variables: dict[str, str]
    """The function's environment variables the template sets to a literal or a parameter's default."""


def template_defaults() -> Defaults:
    """What template.yaml deploys by default: parameters' defaults, or the literal where there is no parameter."""
    from cfnlint.decode import cfn_yaml

    template = cfn_yaml.load(str(ROOT / "template.yaml"))
    parameters, resources = template["Parameters"], template["Resources"]

    def value(raw: Any) -> Any:
        if isinstance(raw, dict) and set(raw) == {"Ref"}:
            return parameters.get(raw["Ref"], {}).get("Default")
        return raw

    function = {**template["Globals"]["Function"], **resources["KickoutFunction"]["Properties"]}
    # The queue's event source: a mapping of its own, or an SQS event of the function.
    mappings = [
        resource["Properties"]
        for resource in resources.values()
        if resource["Type"] == "AWS::Lambda::EventSourceMapping"
    ]
    events = [event["Properties"] for event in function.get("Events", {}).values() if event["Type"] == "SQS"]
    (source,) = mappings + events
    redrive = resources["KickoutQueue"]["Properties"]["RedrivePolicy"]
    variables = {**template["Globals"]["Function"]["Environment"]["Variables"], **function["Environment"]["Variables"]}
    return Defaults(
        batch_size=int(value(source.get("BatchSize", 10))),
        batching_window=float(value(source.get("MaximumBatchingWindowInSeconds", 0))),
        queue_concurrency=int(value(source["ScalingConfig"]["MaximumConcurrency"])),
        api_rate=float(parameters["ApiThrottlingRateLimit"]["Default"]),
        timeout=float(value(function["Timeout"])),
        max_receive_count=int(value(redrive["maxReceiveCount"])),
        zego_limit=float(parameters["ZegoRateLimitPerSecond"]["Default"]),
        variables={
            name: str(value(raw)) for name, raw in variables.items() if isinstance(value(raw), (str, int, float))
        },
    )


# --- one environment: a child process running the handler -------------------------------------------------------


@dataclass
class Invocation:
    environment: str
    size: int
    began: float
    ended: float
    metrics: dict[str, list[float]]
    response: Any


class Environment:
    """One execution environment: `benchmarks.fleet_env` in a process of its own, one invocation at a time."""

    def __init__(self, name: str, env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.log_path = logs / f"{name}.log"
        with self.log_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.fleet_env"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self.invocations: list[Invocation] = []

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise BenchError(f"{self.name} exited: {self.log_path.read_text()[-1500:]}")
        return line

    def wait_ready(self) -> None:
        if self._line().strip() != "ready":
            raise BenchError(f"{self.name} did not start: {self.log_path.read_text()[-1500:]}")

    def invoke(self, event: dict[str, Any], timeout: float, size: int) -> Invocation:
        stdin: IO[str] | None = self.process.stdin
        assert stdin is not None
        stdin.write(json.dumps({"event": event, "timeout": timeout}) + "\n")
        stdin.flush()
        while not (line := self._line()).startswith("BENCH_REPLY "):
            pass
        reply = json.loads(line.removeprefix("BENCH_REPLY "))
        invocation = Invocation(self.name, size, reply["began"], reply["ended"], reply["metrics"], reply["response"])
        self.invocations.append(invocation)
        return invocation

    def close(self) -> None:
        terminate(self.process, timeout=10)


# --- SQS as Lambda's poller sees it -----------------------------------------------------------------------------


@dataclass
class Tally:
    """What the pollers saw, across the environments."""

    handed_back: int = 0
    deferred: set[str] = field(default_factory=set)
    """Ids of the messages the function re-sent (they carry KickoutDeferrals)."""
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class QueueEnvironment:
    """One queue environment: Lambda's poller (kickout_dev.event_source) feeding one child process."""

    environment: Environment
    sqs: SQSClient
    queue_url: str
    defaults: Defaults
    tally: Tally
    poller: Poller = field(init=False)
    failure: BaseException | None = None

    def __post_init__(self) -> None:
        batching = Batching(
            self.defaults.batch_size,
            self.defaults.batching_window,
            wait_out_window=True,
            receive_seconds=RECEIVE_SECONDS,
        )
        self.poller = Poller(self.sqs, self.queue_url, self._invoke, batching)

    def _invoke(self, event: dict[str, Any]) -> Any:
        return self.environment.invoke(event, self.defaults.timeout, len(event["Records"])).response

    def run(self, stopping: threading.Event) -> None:
        try:
            while not stopping.is_set():
                delivery = self.poller.poll()
                if delivery is None:
                    stopping.wait(POLL_IDLE)
                    continue
                copies = {r["messageId"] for r in delivery.records if "KickoutDeferrals" in r["messageAttributes"]}
                failed = [record for record in delivery.records if record["messageId"] in delivery.failed]
                with self.tally.lock:
                    self.tally.deferred |= copies
                    self.tally.handed_back += len(failed)
                hand_back(self.sqs, self.queue_url, failed)
        except BaseException as error:  # reported by the workload's loop
            self.failure = error


def hand_back(sqs: SQSClient, url: str, records: Sequence[dict[str, Any]]) -> None:
    """Make failed messages visible again after HANDBACK_DELAY rather than their visibility timeout or backoff."""
    for start in range(0, len(records), 10):
        sqs.change_message_visibility_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(n), "ReceiptHandle": record["receiptHandle"], "VisibilityTimeout": int(HANDBACK_DELAY)}
                for n, record in enumerate(records[start : start + 10])
            ],
        )


def drain(sqs: SQSClient, url: str) -> tuple[int, int]:
    """Empty a queue: (messages the function parked, messages SQS moved there itself), for the dead-letter queue."""
    messages = drained(sqs, url)
    parked = sum(1 for message in messages if "KickoutFailure" in message.get("MessageAttributes", {}))
    return parked, len(messages) - parked


# --- the shared AWS side ----------------------------------------------------------------------------------------


def session() -> boto3.Session:
    """Fake credentials for the moto server."""
    fake = "testing"
    return boto3.Session(aws_access_key_id=fake, aws_secret_access_key=fake, region_name=REGION)


@dataclass(frozen=True)
class Backend:
    moto_url: str
    secret_arn: str
    dlq_url: str
    queue_url: str

    def sqs(self) -> SQSClient:
        return session().client("sqs", endpoint_url=self.moto_url)

    @classmethod
    def create(cls, moto_url: str) -> Backend:
        secret_arn = (
            session()
            .client("secretsmanager", endpoint_url=moto_url)
            .create_secret(Name=SECRET_NAME, SecretString=json.dumps({"ServerSecret": SERVER_SECRET}))["ARN"]
        )
        sqs = session().client("sqs", endpoint_url=moto_url)
        dlq_url = sqs.create_queue(QueueName="kickout-dlq")["QueueUrl"]
        queue_url = sqs.create_queue(QueueName="kickout-queue")["QueueUrl"]
        make_like_template_queue(sqs, queue_url, dlq_url)
        create_state_table(session().client("dynamodb", endpoint_url=moto_url))
        return cls(moto_url, secret_arn, dlq_url, queue_url)

    def function_env(self, zim: ZimProcess, defaults: Defaults) -> dict[str, str]:
        env = function_environment(
            endpoint=zim.url,
            secret_arn=self.secret_arn,
            dlq_url=self.dlq_url,
            queue_url=self.queue_url,
            rate_limit_per_second=defaults.zego_limit,
        )
        # The template's own values (the log level, the fallback pace, ...) for all but where things are.
        env.update({name: text for name, text in defaults.variables.items() if name not in WIRED})
        env.update(
            PATH=os.environ.get("PATH", "/usr/bin:/bin"),
            LANG="C.UTF-8",
            PYTHONPATH=os.pathsep.join((str(ROOT / "src"), str(ROOT))),
            PYTHONDONTWRITEBYTECODE="1",
            AWS_ENDPOINT_URL=self.moto_url,
            AWS_LAMBDA_FUNCTION_NAME="kickout-KickoutFunction",
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256",
        )
        if not env["ZEGO_API_ENDPOINT"].startswith("http://127.0.0.1:"):
            raise BenchError("the environments must call the stand-in on loopback")
        return env


# --- a workload -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    name: str
    bodies: list[dict[str, Any]]
    deadline: float
    api_requests: int = 0
    api_users: int = 500


def raid() -> Workload:
    bodies = [
        {"room_id": f"raid-room-{n % 2}", "user_ids": [f"raider-{n}"], "reason": "spam", "operator_id": "mod-bot"}
        for n in range(2000)
    ]
    return Workload("raid", bodies, deadline=150)


def spread(count: int = 400, name: str = "spread", deadline: float = 120) -> Workload:
    bodies = [{"room_id": f"room-{n}", "user_ids": [f"user-{n}"]} for n in range(count)]
    return Workload(name, bodies, deadline=deadline)


def mixed() -> Workload:
    return Workload("mixed", spread().bodies, deadline=150, api_requests=8)


def two() -> Workload:
    return spread(180, "two", deadline=90)


WORKLOADS: dict[str, Callable[[], Workload]] = {"raid": raid, "spread": spread, "mixed": mixed, "two": two}


@dataclass
class ApiCall:
    arrived: float
    status: int = 0
    began: float = 0.0
    ended: float = 0.0


@dataclass
class Outcome:
    workload: Workload
    defaults: Defaults
    elapsed: float
    finished: bool
    calls: int
    users: int
    span: float
    users_after_first: int
    refused_rate: int
    refused_other: int
    lost: int
    handed_back: int
    deferred: int
    parked: int
    expected_users: int
    kicked_expected: int
    invocations: list[Invocation]
    api_calls: list[ApiCall]
    failures: dict[str, float]
    label: str = ""
    """How the environments ran when not at full speed (" at 0.145 CPU"), for the rows' names."""

    @property
    def call_rate(self) -> float:
        return (self.calls - 1) / self.span if self.span > 0 else 0.0

    @property
    def user_rate(self) -> float:
        return self.users_after_first / self.span if self.span > 0 else 0.0

    def metric(self, name: str) -> list[float]:
        return [value for invocation in self.invocations for value in invocation.metrics.get(name, [])]

    @property
    def store_calls_per_call(self) -> float:
        zego = sum(self.metric("ZegoCalls"))
        return sum(self.metric("BudgetStoreCalls")) / zego if zego else float("nan")


def close_all(environments: Sequence[Environment]) -> None:
    for environment in environments:
        environment.close()


@contextmanager
def started(
    names: Sequence[str],
    env: dict[str, str],
    logs: Path,
    confine: Callable[[int], None] | None = None,
    more_env: Mapping[str, Mapping[str, str]] | None = None,
) -> Iterator[list[Environment]]:
    """The environments' processes, all started at once, ready to take an invocation; stopped on the way out.

    `confine(pid)`: called for each process as it starts (benchmarks.cpu_share holds it to a share of a CPU).
    `more_env`: variables for some environments only, by name (benchmarks.skew sets their clocks apart)."""
    environments: list[Environment] = []
    try:
        for name in names:
            environments.append(Environment(name, {**env, **(more_env or {}).get(name, {})}, logs))
            if confine is not None:
                confine(environments[-1].process.pid)
        for environment in environments:
            environment.wait_ready()
        yield environments
    finally:
        for environment in environments:
            environment.close()


def run_workload(
    workload: Workload,
    backend: Backend,
    defaults: Defaults,
    logs: Path,
    *,
    share: CpuShare | None = None,
    clock_offsets: Sequence[float] = (),
) -> Outcome:
    """One workload; with `share`, each environment's process held to that share of a CPU; `clock_offsets`: the
    queue environments' clocks set that many seconds ahead of this machine's, in turn (benchmarks.fleet_env)."""
    log(
        f"fleet {workload.name}: {len(workload.bodies)} messages"
        + (f" + {workload.api_requests} API requests of {workload.api_users} users" if workload.api_requests else "")
        + f", {defaults.queue_concurrency} queue environments, batch {defaults.batch_size}, window "
        f"{defaults.batching_window} s (deadline {workload.deadline:.0f} s)"
    )
    sqs_client = backend.sqs()
    drain(sqs_client, backend.queue_url)
    drain(sqs_client, backend.dlq_url)
    tally = Tally()
    stopping = threading.Event()
    with ExitStack() as stack:
        zim = stack.enter_context(ZimProcess(latency=ZEGO_LATENCY, max_requests_per_second=int(defaults.zego_limit)))
        env = backend.function_env(zim, defaults)
        names = [f"{workload.name}-queue-{n}" for n in range(defaults.queue_concurrency)]
        if workload.api_requests:
            names.append(f"{workload.name}-api")
        environments = stack.enter_context(
            started(
                names,
                env,
                logs,
                confine=share.confine if share is not None and share.held else None,
                more_env={
                    name: {CLOCK_OFFSET: str(offset)} for name, offset in zip(names, clock_offsets, strict=False)
                },
            )
        )
        # Bounded whatever happens: at the deadline the children are stopped, and every read of them ends.
        watchdog = threading.Timer(workload.deadline + 30, partial(close_all, environments))
        watchdog.daemon = True
        watchdog.start()
        stack.callback(watchdog.cancel)
        api_environment = environments[-1] if workload.api_requests else None
        pollers = [
            QueueEnvironment(environment, backend.sqs(), backend.queue_url, defaults, tally)
            for environment in environments[: defaults.queue_concurrency]
        ]
        threads = [threading.Thread(target=poller.run, args=(stopping,), daemon=True) for poller in pollers]
        api_calls: list[ApiCall] = []
        if api_environment is not None:
            warm = api_environment.invoke(api_event("{}"), defaults.timeout, 0)  # 422: imports, no ZEGO call
            if warm.response.get("statusCode") != 422:
                raise BenchError(f"the API environment's warm-up answered {warm.response}")
            api_environment.invocations.clear()
            threads.append(
                threading.Thread(
                    target=partial(
                        drive_api,
                        environment=api_environment,
                        workload=workload,
                        defaults=defaults,
                        zim=zim,
                        calls=api_calls,
                        stopping=stopping,
                    ),
                    daemon=True,
                )
            )
        for start in range(0, len(workload.bodies), 10):
            bodies = workload.bodies[start : start + 10]
            entries = [{"Id": str(n), "MessageBody": json.dumps(body)} for n, body in enumerate(bodies)]
            sqs_client.send_message_batch(QueueUrl=backend.queue_url, Entries=entries)  # type: ignore[arg-type]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        stack.callback(stopping.set)
        finished = feed(
            pollers=pollers,
            sqs_client=sqs_client,
            queue_url=backend.queue_url,
            workload=workload,
            began=began,
            api_calls=api_calls,
        )
        elapsed = time.monotonic() - began
        stopping.set()
        for thread in threads:
            thread.join(timeout=30)
        for poller in pollers:
            if poller.failure is not None:
                raise BenchError(f"{poller.environment.name} failed: {poller.failure}")
        invocations = [invocation for environment in environments for invocation in environment.invocations]
        kickouts = [kickout for kickout in zim.kickouts if kickout.code == 0]
        refusals = list(zim.refusals)
    parked, lost = drain(sqs_client, backend.dlq_url)
    expected = {user for body in workload.bodies for user in body["user_ids"]} | {
        f"api-{n}-user-{u}" for n in range(workload.api_requests) for u in range(workload.api_users)
    }
    kicked = {user for kickout in kickouts for user in kickout.user_ids}
    span = kickouts[-1].at - kickouts[0].at if len(kickouts) > 1 else 0.0
    failures: dict[str, float] = {}
    for invocation in invocations:
        for name, values in invocation.metrics.items():
            if name.startswith("Failed") or name in ("BudgetStoreErrors", "BudgetSlotsDropped"):
                failures[name] = failures.get(name, 0) + sum(values)
    return Outcome(
        workload=workload,
        defaults=defaults,
        elapsed=elapsed,
        finished=finished,
        calls=len(kickouts),
        users=sum(len(kickout.user_ids) for kickout in kickouts),
        span=span,
        users_after_first=sum(len(kickout.user_ids) for kickout in kickouts[1:]),
        refused_rate=sum(1 for code, _ in refusals if code == RATE_REFUSED),
        refused_other=sum(1 for code, _ in refusals if code != RATE_REFUSED),
        lost=lost,
        handed_back=tally.handed_back,
        deferred=len(tally.deferred),
        parked=parked,
        expected_users=len(expected),
        kicked_expected=len(kicked & expected),
        invocations=invocations,
        api_calls=api_calls,
        failures=failures,
        label=f" at {share.fraction:.3f} CPU" if share is not None and share.held else "",
    )


def feed(
    *,
    pollers: list[QueueEnvironment],
    sqs_client: SQSClient,
    queue_url: str,
    workload: Workload,
    began: float,
    api_calls: list[ApiCall],
) -> bool:
    """Wait for the pollers to empty the queue (in flight and delayed included) and the API's requests to be
    answered, or for the deadline."""
    while time.monotonic() - began < workload.deadline:
        for poller in pollers:
            if poller.failure is not None:
                raise BenchError(f"{poller.environment.name} failed: {poller.failure}")
        api_done = len(api_calls) == workload.api_requests and all(call.ended for call in api_calls)
        if api_done and queue_is_empty(sqs_client, queue_url):
            return True
        time.sleep(POLL_IDLE)
    return False


def drive_api(
    *,
    environment: Environment,
    workload: Workload,
    defaults: Defaults,
    zim: ZimProcess,
    calls: list[ApiCall],
    stopping: threading.Event,
) -> None:
    """The API's requests at the stage's throttle, once the queue is busy; one environment takes them in turn."""
    while not zim.kickouts and not stopping.wait(TICK):
        pass
    if stopping.wait(1.0):
        return
    first = time.monotonic()
    pending: deque[tuple[int, ApiCall]] = deque()
    for n in range(workload.api_requests):
        calls.append(ApiCall(arrived=first + n / defaults.api_rate))
        pending.append((n, calls[-1]))
    while pending and not stopping.is_set():
        n, call = pending.popleft()
        if (wait := call.arrived - time.monotonic()) > 0:
            time.sleep(wait)
        body = {
            "room_id": f"api-room-{n}",
            "user_ids": [f"api-{n}-user-{u}" for u in range(workload.api_users)],
            "reason": "raid",
            "operator_id": "mod-bot",
        }
        call.began = time.monotonic()
        invocation = environment.invoke(api_event(json.dumps(body)), defaults.timeout, 1)
        call.ended = time.monotonic()
        call.status = int(invocation.response.get("statusCode", 0))


# --- the figures ------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def rows_of(outcome: Outcome) -> list[Row]:
    w, d = outcome.workload, outcome.defaults
    name = f"4. fleet {w.name}{outcome.label}"
    lost_ok = outcome.lost == 0 and outcome.kicked_expected == outcome.expected_users
    counts = (
        f"{outcome.lost} lost, {outcome.handed_back} handed back, {outcome.deferred} deferred, {outcome.parked} parked"
    )
    base = [
        Row(
            f"{name}: refused for rate",
            f"{outcome.refused_rate} of {outcome.calls + outcome.refused_rate} calls",
            "stand-in at 20 in any second",
            None,
            "0",
            outcome.refused_rate == 0,
        ),
    ]
    store = Row(
        f"{name}: store calls per ZEGO call",
        f"{outcome.store_calls_per_call:.2f}",
        f"{sum(outcome.metric('ZegoCalls')):.0f} ZEGO calls",
        outcome.store_calls_per_call,
        "≤ 1",
        outcome.store_calls_per_call <= 1,
    )
    if w.name == "raid":
        ratio = outcome.user_rate / (d.zego_limit * 50)
        base.insert(
            0,
            Row(
                f"{name}: users kicked/s (2,000 messages, 2 rooms)",
                f"{outcome.user_rate:.0f}/s, {outcome.users / max(1, outcome.calls):.1f} users/call, "
                f"{outcome.span:.1f} s",
                f"{d.zego_limit * 50:.0f}/s = {d.zego_limit:.0f} calls x 50",
                ratio,
                "≥ 0.90",
                ratio >= 0.90,
            ),
        )
    elif w.name in ("spread", "two"):
        ratio = outcome.call_rate / d.zego_limit
        target = 0.95 if w.name == "spread" else 19 / d.zego_limit
        base.insert(
            0,
            Row(
                f"{name}: calls/s ({len(w.bodies)} messages, {len(w.bodies)} rooms)",
                f"{outcome.call_rate:.2f}/s over {outcome.span:.1f} s",
                f"{d.zego_limit:.0f}/s ZEGO's limit",
                ratio,
                f"≥ {target:.2f}" if w.name == "spread" else f"≥ 19/s ({target:.2f})",
                ratio >= target,
            ),
        )
    if w.api_requests:
        ok = sum(1 for call in outcome.api_calls if call.status == 200)
        latencies = [call.ended - call.arrived for call in outcome.api_calls if call.ended]
        base.append(
            Row(
                f"{name}: API requests answered 200 ({w.api_users} users each, {d.api_rate:.0f}/s)",
                f"{ok} of {w.api_requests}; from arrival "
                + ", ".join(f"{latency:.2f}" for latency in latencies)
                + " s",
                f"{outcome.calls} calls in all",
                ok / w.api_requests,
                "all",
                ok == w.api_requests,
            )
        )
    base.append(
        Row(
            f"{name}: users kicked; lost, handed back, deferred",
            f"{outcome.kicked_expected} of {outcome.expected_users}; {counts}",
            f"{len(w.bodies)} messages",
            None,
            "all; 0 lost, 0 handed back" if w.name != "two" else "all; 0 lost",
            lost_ok and (outcome.handed_back == 0 or w.name == "two"),
        )
    )
    base.append(store)
    return base


def notes_of(outcome: Outcome) -> list[str]:
    w = outcome.workload
    waits = outcome.metric("BudgetWait")
    per_call = outcome.metric("UsersPerCall")
    queue_invocations = sorted(
        (i for i in outcome.invocations if "-queue-" in i.environment), key=lambda i: (i.environment, i.began)
    )
    gaps = [
        later.began - earlier.ended
        for earlier, later in itertools.pairwise(queue_invocations)
        if earlier.environment == later.environment
    ]
    durations = [i.ended - i.began for i in queue_invocations]
    sizes = [i.size for i in queue_invocations]
    text = (
        f"fleet {w.name}{outcome.label}: {'done' if outcome.finished else 'NOT DONE at the deadline'} "
        f"in {outcome.elapsed:.1f} s; "
        f"{outcome.calls} ZEGO calls ({outcome.refused_other} refused other than for rate); "
        f"{len(queue_invocations)} queue invocations of {statistics.mean(sizes) if sizes else 0:.1f} messages, "
        f"{statistics.median(durations) if durations else 0:.2f} s median (max {max(durations, default=0):.2f}); "
        f"gaps between an environment's invocations median {statistics.median(gaps) * 1000 if gaps else 0:.0f} ms "
        f"(max {max(gaps, default=0) * 1000:.0f}); users/call mean "
        f"{statistics.mean(per_call) if per_call else 0:.1f}; BudgetWait p50 {percentile(waits, 0.5):.0f} ms, "
        f"p99 {percentile(waits, 0.99):.0f} ms"
    )
    if outcome.failures:
        text += "; " + ", ".join(f"{name} {value:.0f}" for name, value in sorted(outcome.failures.items()))
    api = [i for i in outcome.invocations if i.environment.endswith("-api")]
    if api:
        api_zego = sum(v for i in api for v in i.metrics.get("ZegoCalls", []))
        api_store = sum(v for i in api for v in i.metrics.get("BudgetStoreCalls", []))
        api_waits = [v for i in api for v in i.metrics.get("BudgetWait", [])]
        text += (
            f"; API environment: {api_store / api_zego if api_zego else float('nan'):.2f} store calls per ZEGO call,"
            f" BudgetWait p50 {percentile(api_waits, 0.5):.0f} ms, max {max(api_waits, default=0):.0f} ms"
        )
    if outcome.api_calls:
        text += "; API handler times " + ", ".join(f"{call.ended - call.began:.2f}" for call in outcome.api_calls)
        text += " s (from arrival: see the table; one API environment takes them in turn)"
    return [text]


def measure_fleet(
    report: Report,
    only: Sequence[str] = tuple(WORKLOADS),
    repeat: int = 1,
    *,
    batch_size: int | None = None,
    batching_window: float | None = None,
    dump: Path | None = None,
    share: float | None = None,
) -> None:
    """Every workload (or `only` some), each `repeat` times: rows and notes into `report`.

    `batch_size` and `batching_window` replace the template's defaults, to measure a setting before it is one.
    `share`: each environment's process held to that share of one CPU (benchmarks.cpu_share), as Lambda holds a
    function to its memory's share; where no cgroup can be had the run goes on at full speed with a note saying so.
    """
    defaults = template_defaults()
    if batch_size is not None:
        defaults = replace(defaults, batch_size=batch_size)
    if batching_window is not None:
        defaults = replace(defaults, batching_window=batching_window)
    if defaults != template_defaults():
        report.note(
            f"fleet: NOT the template's defaults: batch {defaults.batch_size}, window {defaults.batching_window}"
        )
    with ExitStack() as stack:
        logs = stack.enter_context(tempfile.TemporaryDirectory(prefix="kickout-fleet-"))
        moto = stack.enter_context(MotoServer(Path(logs)))
        held = stack.enter_context(cpu_share(share)) if share is not None else None
        if held is not None:
            report.note(f"fleet: each environment's process at {held.describe()}")
        backend = Backend.create(moto.url)
        for _ in range(repeat):
            for name in only:
                outcome = run_workload(WORKLOADS[name](), backend, defaults, Path(logs), share=held)
                report.add(*rows_of(outcome))
                if dump is not None:
                    with dump.open("a") as out:
                        for invocation in outcome.invocations:
                            out.write(json.dumps({"workload": name, **asdict(invocation)}) + "\n")
                for note in notes_of(outcome):
                    report.note(note)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads, comma separated (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each workload (default 1)")
    parser.add_argument("--dump", type=Path, help="write every invocation (times, sizes, metrics) here as JSON lines")
    parser.add_argument("--batch-size", type=int, help="instead of the template's batch size (what if)")
    parser.add_argument("--batching-window", type=float, help="instead of the template's window, seconds (what if)")
    parser.add_argument(
        "--cpu-share",
        type=float,
        nargs="?",
        const=LAMBDA_SHARE_256_MB,
        help=f"hold each environment to this share of a CPU (alone: {LAMBDA_SHARE_256_MB:.3f}, a 256 MB function's)",
    )
    args = parser.parse_args(argv)
    only = [name for name in args.only.split(",") if name]
    unknown = set(only) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; choose from {sorted(WORKLOADS)}")
    report = Report()
    began = time.monotonic()
    measure_fleet(
        report,
        only,
        args.repeat,
        batch_size=args.batch_size,
        batching_window=args.batching_window,
        dump=args.dump,
        share=args.cpu_share,
    )
    print_table(report)
    print(f"\n({time.monotonic() - began:.0f} s; python -m benchmarks.fleet)")
    return 0


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        sys.exit(main())
