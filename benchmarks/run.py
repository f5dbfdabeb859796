"""`make bench`: every figure is a ratio against a baseline measured side by side in the same run, on loopback.

    python -m benchmarks.run [--artifact DIR] [--cold-repeats N] [--start-only]

1. warm kickout through the real handler / a bare signed urllib3 GET to the same stand-in plus one conditional
   UpdateItem on the same store (the budget's round trip), medians
2. one SQS batch of 10 kickouts to 10 rooms, ZEGO answering in 100 ms / 10 x 100 ms (concurrency)
3. ZEGO calls for 10 messages kicking 10 users from one room (coalescing)
4. the fleet under one budget (benchmarks.fleet, `python -m benchmarks.fleet` alone): raid, spread, mixed, and two
   environments draining 180 kickouts, against one stand-in enforcing ZEGO's 20 calls/s in any second; then the
   same with each environment held to a 256 MB function's CPU share (benchmarks.cpu_share, `--cpu-share`)
5. cold start from the built artifact (fresh python3.13, first kickout) / the least code doing the same; the
   same without .pyc files, with Powertools in a layer directory, and with boto3 taken from the runtime's own
   directory instead of the zip; zip sizes; import times
6. peak RSS of the function's process after 2000 warm invocations
7. ZEGO down 90 minutes on a simulated clock (benchmarks/outage.py): messages moved to the DLQ, ZEGO calls during
   the outage / the same replay without the circuit, time to drain after recovery
8. a slow store (benchmarks.slow_store): an API request and a queue batch with every DynamoDB call 10-500 ms late:
   invocation times, the share of users kicked, refusals
9. clocks apart (benchmarks.skew): two queue environments whose clocks differ by 0-100 ms, refusals for rate
10. the API path (benchmarks.api_path): 1, 50 and 500 users alone and during a queue backlog, ZEGO at 100 ms a
   call: latency p50/p99 and store round trips per call, the calls side by side / one at a time
11. Idempotency-Key (benchmarks.replay): a POST of 50 users with a new key, and the same key again (its replay),
   against one without a key, ZEGO answering in 100 ms
12. a re-entry wave (benchmarks.reentry): 2,000 kept-out users' room_enter callbacks (answer p50/p99), then their
   re-kicks drained by 1 environment and by QueueMaximumConcurrency (2) on the fleet: users/s against ZEGO's 1,000

What it starts (a moto server, the stand-in, child interpreters) it stops by handle; it leaves nothing behind
but the table it prints. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import boto3

from benchmarks.api_path import measure_api_path
from benchmarks.cpu_share import LAMBDA_SHARE_256_MB
from benchmarks.fleet import measure_fleet
from benchmarks.reentry import measure_reentry
from benchmarks.replay import measure_replay
from benchmarks.report import ROOT, BenchError, Report, Row, log, print_table, quiet
from benchmarks.skew import measure_skew
from benchmarks.slow_store import measure_slow_store
from kickout_dev.build import BuildFailed, build_for, host_arch
from kickout_dev.emulator import xray_marker_removed
from kickout_dev.events import load_event, sqs_record
from kickout_dev.plural import counted
from kickout_dev.processes import MotoServer
from kickout_dev.sandbox import (
    APP_ID,
    REGION,
    SECRET_NAME,
    SERVER_SECRET,
    LambdaContext,
    create_state_table,
    function_environment,
    sandbox,
)
from kickout_dev.zim_server import ZimStandIn

HERE = Path(__file__).resolve().parent
EPOCH_1980 = 315532800  # 1980-01-01T00:00:00Z: the date Lambda gives every file of the zip
RATE_REFUSED = 660300005
# What the official Powertools layer brings (it is built with the [all] extras): Powertools and its tracer's.
LAYER_PACKAGES = ("aws_lambda_powertools", "aws_xray_sdk", "wrapt")
RUNTIME_SDK = ("boto3", "botocore", "s3transfer")
TRACE_HEADER = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


# --- infrastructure ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def xray_daemon_sink() -> Iterator[str]:
    """A UDP socket where X-Ray's daemon would listen: what the tracer emits lands here, unread."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sink.getsockname()[1]}"


def lambda_python() -> str:
    """The runtime's interpreter (python3.13), found as the Makefile finds it; not the venv's."""
    found = subprocess.run([str(ROOT / "scripts" / "find-python")], capture_output=True, text=True, check=True)
    python = found.stdout.strip()
    version = subprocess.run(
        [python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, check=True
    )
    if version.stdout.strip() != "(3, 13)":
        log(f"warning: {python} is not Python 3.13, the Lambda runtime's version")
    real = subprocess.run(
        [python, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True, check=True
    )
    return real.stdout.strip() or python


def context_attributes() -> dict[str, Any]:
    """What the child scripts give the handler as its Lambda context (BENCH_CONTEXT): kickout_dev.sandbox's
    LambdaContext, which they cannot import (they see the artifact alone), as plain attributes."""
    context = LambdaContext()
    return {
        attribute.name: getattr(context, attribute.name)
        for attribute in fields(context)
        if attribute.name not in ("timeout_seconds", "clock", "started")
    }


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def result_of(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith("BENCH_RESULT "):
            report: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            return report
    raise BenchError(f"no BENCH_RESULT in the child's output: {stdout[-500:]!r}")


# --- the artifact and its layouts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """A copy of the artifact as Lambda would see it: the function's directory, a layer's if any, and the
    runtime's own packages (/var/runtime, last on the path) if the SDK is taken from there."""

    name: str
    task: Path
    layer: Path | None = None
    runtime: Path | None = None

    @property
    def python_path(self) -> str:
        return os.pathsep.join(str(path) for path in (self.task, self.layer, self.runtime) if path is not None)

    @property
    def sdk_home(self) -> Path:
        """Where boto3 is imported from."""
        return self.runtime or self.task


def build_artifact(work: Path) -> Path:
    build_dir, arch = work / "build", host_arch()
    log(f"make build BUILD_DIR={build_dir} LAMBDA_ARCH={arch}")
    try:
        return build_for(arch, build_dir)
    except BuildFailed as error:
        raise BenchError(f"make build failed: {error}") from None


def _entries(root: Path, names: Sequence[str]) -> list[Path]:
    """Top-level packages of the artifact by name, with their dist-info."""
    return [path for path in root.iterdir() if any(re.match(rf"{name}([-.]|$)", path.name) for name in names)]


def _move_out(task: Path, names: Sequence[str], into: Path, *, keep_bytecode: bool) -> Path:
    """Move these packages of the artifact to where the runtime would find them instead (a layer, /var/runtime)."""
    into.mkdir(parents=True)
    for entry in _entries(task, names):
        shutil.move(entry, into / entry.name)
    if not keep_bytecode:
        _drop_bytecode(into)
    return into


def _drop_bytecode(root: Path) -> None:
    for cache in list(root.rglob("__pycache__")):
        shutil.rmtree(cache)


def _freeze(root: Path) -> None:
    """Every file dated 1980 and read-only, as Lambda unpacks the zip."""
    for directory, subdirectories, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(directory, name)
            os.utime(path, (EPOCH_1980, EPOCH_1980))
            os.chmod(path, 0o444)
        for name in subdirectories:
            os.utime(os.path.join(directory, name), (EPOCH_1980, EPOCH_1980))
            os.chmod(os.path.join(directory, name), 0o555)
    os.utime(root, (EPOCH_1980, EPOCH_1980))
    os.chmod(root, 0o555)


def _thaw(root: Path) -> None:
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)


def lay_out(artifact: Path, work: Path) -> dict[str, Layout]:
    layouts = {}
    for name, bytecode_in_task, bytecode_in_layer, layered in (
        ("bundled", True, True, False),
        ("bundled, no .pyc", False, False, False),
        ("layer", True, True, True),
        ("layer without .pyc", True, False, True),
        ("runtime's boto3", True, True, False),
        ("runtime's boto3 without .pyc", True, False, False),
    ):
        base = work / "layouts" / re.sub(r"\W+", "-", name)
        task = base / "task"
        shutil.copytree(artifact, task, symlinks=True)
        layer = runtime = None
        if name.startswith("runtime's boto3"):
            # boto3, botocore and s3transfer where the python3.13 runtime has its own: /var/runtime, after the zip's
            runtime = _move_out(task, RUNTIME_SDK, base / "var" / "runtime", keep_bytecode=bytecode_in_layer)
        if layered:
            layer = _move_out(task, LAYER_PACKAGES, base / "opt" / "python", keep_bytecode=bytecode_in_layer)
        if not bytecode_in_task:
            _drop_bytecode(task)
        _freeze(base)
        layouts[name] = Layout(name, task, layer, runtime)
    return layouts


def zipped_mb(root: Path, work: Path, leave_out: Sequence[str] = ()) -> float:
    skipped = {path.name for path in _entries(root, leave_out)}
    target = work / "size.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if relative.parts[0] not in skipped and path.is_file():
                archive.write(path, relative)
    size = target.stat().st_size / 1e6
    target.unlink()
    return size


def unzipped_mb(root: Path) -> float:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file()) / 1e6


# --- children that run the artifact -----------------------------------------------------------------------------


@dataclass
class Backend:
    """What the artifact's children talk to: the stand-in, Secrets Manager (moto server), X-Ray's daemon port."""

    zim: ZimStandIn
    moto_url: str
    secret_arn: str
    dlq_url: str
    xray_daemon: str
    python: str

    def environment(self, layout: Layout, *, xray: bool) -> dict[str, str]:
        """The variables template.yaml and the Lambda runtime set; X-Ray on as `Tracing: Active` has it, or off
        (POWERTOOLS_TRACE_DISABLED, still in Lambda: outside it the X-Ray SDK builds a sampling client at import)."""
        env = function_environment(
            endpoint=self.zim.url,
            secret_arn=self.secret_arn,
            dlq_url=self.dlq_url,
            queue_url=self.dlq_url,
            # ZEGO's limit raised out of the way: each warm call is timed alone, with its one budget round trip.
            rate_limit_per_second=1000,
        )
        env.update(
            PATH=os.environ.get("PATH", "/usr/bin:/bin"),
            LANG="C.UTF-8",
            TZ=":UTC",
            PYTHONPATH=layout.python_path,
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONNOUSERSITE="1",
            AWS_ENDPOINT_URL=self.moto_url,
            LAMBDA_TASK_ROOT=str(layout.task),
            AWS_EXECUTION_ENV="AWS_Lambda_python3.13",
            AWS_LAMBDA_FUNCTION_NAME="kickout-KickoutFunction",
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256",
            AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
            BENCH_EVENT=json.dumps(load_event("direct")),
            BENCH_CONTEXT=json.dumps(context_attributes()),
        )
        if xray:
            del env["POWERTOOLS_TRACE_DISABLED"]
            env.update(
                _X_AMZN_TRACE_ID=TRACE_HEADER,
                AWS_XRAY_DAEMON_ADDRESS=self.xray_daemon,
                AWS_XRAY_CONTEXT_MISSING="LOG_ERROR",
            )
        return env

    def run(
        self,
        script: str,
        layout: Layout,
        *,
        xray: bool,
        python_options: Sequence[str] = (),
        extra_env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> dict[str, Any]:
        env = self.environment(layout, xray=xray) | (extra_env or {})
        source = (HERE / script).read_text()
        spawned = time.time()
        completed = subprocess.run(
            [self.python, "-s", "-P", *python_options, "-c", source],
            cwd=layout.task,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if completed.returncode != 0:
            raise BenchError(f"{script} in {layout.name} failed: {completed.stderr[-2000:]}")
        report = result_of(completed.stdout)
        report["spawned"] = spawned
        report["stderr"] = completed.stderr
        return report


# --- 1 and 6: warm kickouts, peak RSS ----------------------------------------------------------------------------


def measure_warm(backend: Backend, layout: Layout, report: Report, floor_rss_kb: float | None) -> None:
    config = {
        "event": load_event("direct"),
        "server_secret": SERVER_SECRET,
        "warmup": 200,
        "rounds": 20,
        "block": 50,
        "invocations": 2000,
        "profile": 0,
    }
    target = 1.3
    for xray in (False, True):
        label = "X-Ray on, as deployed" if xray else "X-Ray off"
        log(f"warm kickouts ({label})")
        result = backend.run("warm_function.py", layout, xray=xray, extra_env={"BENCH_CONFIG": json.dumps(config)})
        ratio = result["handler_ns"] / result["floor_ns"]
        report.add(
            Row(
                f"1. warm kickout, direct invoke ({label})",
                f"{result['handler_ns'] / 1000:.0f} µs",
                f"{result['floor_ns'] / 1000:.0f} µs bare signed GET + one conditional write",
                ratio,
                f"≤ {target}",
                ratio <= target,
            )
        )
        if ratio > target:
            profiled = backend.run(
                "warm_function.py",
                layout,
                xray=xray,
                extra_env={"BENCH_CONFIG": json.dumps(config | {"rounds": 1, "invocations": 0, "profile": 1000})},
            )
            for side in ("handler", "floor"):
                where = profiled["profiles"][side]["packages"]
                total = sum(us for _, us in where)
                top = ", ".join(f"{name} {us:.0f}" for name, us in where[:10])
                report.note(
                    f"profile, warm {side} ({label}), own µs per call under cProfile, {total:.0f} in all: {top}"
                )
            functions = profiled["profiles"]["handler"]["own"]
            report.note(
                f"profile, warm handler ({label}), functions with most own µs per call: "
                + ", ".join(f"{name} {us:.0f}" for name, us in functions[:8])
            )
        rss_mb = result["maxrss_kb"] / 1024
        report.note(
            f"RSS ({label}) grew {result['rss_growth_kb'] / 1024:.1f} MB from invocation {config['warmup']} to "
            f"{result['invocations']}"
        )
        report.add(
            Row(
                f"6. peak RSS after {result['invocations']} warm invocations ({label})",
                f"{rss_mb:.1f} MB",
                f"{floor_rss_kb / 1024:.1f} MB cold floor process" if floor_rss_kb else "-",
                rss_mb * 1024 / floor_rss_kb if floor_rss_kb else None,
                "≤ 64 MB",
                rss_mb <= 64,
            )
        )


# --- 5: cold start ----------------------------------------------------------------------------------------------


@dataclass
class ColdSeries:
    totals: list[float] = field(default_factory=list)
    imports: list[float] = field(default_factory=list)
    first_calls: list[float] = field(default_factory=list)
    rss_kb: list[float] = field(default_factory=list)

    def add(self, result: dict[str, Any]) -> None:
        self.totals.append(result["done"] - result["spawned"])
        self.imports.append(result["imported"] - result["spawned"])
        self.first_calls.append(result["done"] - result["imported"])
        self.rss_kb.append(result["maxrss_kb"])

    def describe(self) -> str:
        return (
            f"{ms(median(self.totals))} (import {ms(median(self.imports))}"
            f" + first kickout {ms(median(self.first_calls))})"
        )


def parse_importtime(stderr: str) -> list[tuple[str, int, int]]:
    """(module, self µs, cumulative µs) for each line `-X importtime` printed."""
    entries = []
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if match:
            entries.append((match.group(4), int(match.group(1)), int(match.group(2))))
    return entries


def by_distribution(entries: list[tuple[str, int, int]]) -> list[tuple[str, float]]:
    totals: defaultdict[str, float] = defaultdict(float)
    for module, own, _ in entries:
        top = module.split(".")[0]
        totals[top if top in _THIRD_PARTY or top == "handler" else "stdlib and others"] += own / 1000
    return sorted(totals.items(), key=lambda item: -item[1])


_THIRD_PARTY = {
    "aws_lambda_powertools",
    "aws_xray_sdk",
    "boto3",
    "botocore",
    "pydantic",
    "pydantic_core",
    "urllib3",
    "wrapt",
    "jmespath",
    "dateutil",
    "s3transfer",
    "typing_extensions",
    "annotated_types",
    "typing_inspection",
    "six",
}


def measure_cold(backend: Backend, layouts: dict[str, Layout], repeats: int, report: Report) -> float:
    """Returns the floor's peak RSS (KB): the baseline for the warm process's."""
    bundled = layouts["bundled"]
    runs: list[tuple[str, str, Layout, bool]] = [
        ("function", "cold_function.py", bundled, True),
        ("floor", "cold_floor.py", bundled, False),
        ("function, X-Ray off", "cold_function.py", bundled, False),
        ("function, no .pyc", "cold_function.py", layouts["bundled, no .pyc"], True),
        ("function, layer", "cold_function.py", layouts["layer"], True),
        ("function, layer without .pyc", "cold_function.py", layouts["layer without .pyc"], True),
        ("function, runtime's boto3", "cold_function.py", layouts["runtime's boto3"], True),
        ("function, runtime's boto3 without .pyc", "cold_function.py", layouts["runtime's boto3 without .pyc"], True),
    ]
    series = {name: ColdSeries() for name, *_ in runs}
    log(f"cold starts: {len(runs)} variants x {repeats} (+1 untimed each), round robin")
    for repeat in range(repeats + 1):
        for name, script, layout, xray in runs:
            result = backend.run(script, layout, xray=xray)
            if repeat == 0:
                origin = result["origins"]["boto3"] or ""
                if not origin.startswith(f"{layout.sdk_home}{os.sep}"):
                    raise BenchError(f"{name} imported boto3 from {origin}, not from {layout.sdk_home}")
                continue
            series[name].add(result)
    function, floor = series["function"], series["floor"]
    ratio = median(function.totals) / median(floor.totals)
    report.add(
        Row(
            "5. cold start to first kickout (artifact, X-Ray on as deployed)",
            function.describe(),
            f"{floor.describe()} boto3+urllib3+md5",
            ratio,
            "≤ 1.2",
            ratio <= 1.2,
        )
    )
    off = series["function, X-Ray off"]
    ratio_off = median(off.totals) / median(floor.totals)
    report.add(
        Row("5. cold start, X-Ray off", off.describe(), ms(median(floor.totals)), ratio_off, "≤ 1.2", ratio_off <= 1.2)
    )
    for name, baseline_name, why in (
        ("function, no .pyc", "function", "what shipping .pyc saves"),
        ("function, layer", "function", "Powertools+X-Ray SDK from /opt/python, with .pyc"),
        ("function, layer without .pyc", "function", "the same, layer without .pyc"),
        ("function, runtime's boto3", "function", "boto3+botocore+s3transfer not zipped: the runtime's, with .pyc"),
        ("function, runtime's boto3 without .pyc", "function", "the same, the runtime's copy without .pyc"),
    ):
        variant, baseline = series[name], series[baseline_name]
        report.add(
            Row(
                f"5. cold start, {name} ({why})",
                variant.describe(),
                f"{ms(median(baseline.totals))} bundled",
                median(variant.totals) / median(baseline.totals),
                "info",
                None,
            )
        )
    report.note(
        "cold start spread (min-max of totals, ms): "
        + "; ".join(f"{name} {min(s.totals) * 1000:.0f}-{max(s.totals) * 1000:.0f}" for name, s in series.items())
    )
    return median(floor.rss_kb)


def measure_imports(backend: Backend, layouts: dict[str, Layout], report: Report) -> None:
    bundled = layouts["bundled"]
    function = parse_importtime(
        backend.run("cold_function.py", bundled, xray=True, python_options=["-X", "importtime"])["stderr"]
    )
    floor = parse_importtime(
        backend.run("cold_floor.py", bundled, xray=False, python_options=["-X", "importtime"])["stderr"]
    )
    total_function = sum(own for _, own, _ in function) / 1000
    total_floor = sum(own for _, own, _ in floor) / 1000
    report.note(
        f"-X importtime, first kickout (X-Ray on): {total_function:.0f} ms of imports, by package: "
        + ", ".join(f"{name} {ms_:.0f}" for name, ms_ in by_distribution(function)[:9])
    )
    report.note(
        f"-X importtime, floor: {total_floor:.0f} ms of imports, by package: "
        + ", ".join(f"{name} {ms_:.0f}" for name, ms_ in by_distribution(floor)[:6])
    )
    cumulative = {module: total / 1000 for module, _, total in function}
    watched = [
        "handler.app",
        "handler.entry.api",
        "aws_lambda_powertools.event_handler",
        "handler.entry.queue",
        "aws_lambda_powertools.utilities.batch",
        "handler.entry.direct",
        "handler.entry.service",
        "aws_xray_sdk.core",
        "boto3",
        "pydantic",
    ]
    report.note(
        "-X importtime cumulative, in import order (a module's time includes what it imported first): "
        + ", ".join(f"{name} {cumulative[name]:.0f} ms" for name in watched if name in cumulative)
    )
    # What a direct invoke or an SQS batch would not import if app.py imported its adapters on first use.
    for path, modules in (
        ("direct invoke", "import handler.aws.observability, handler.entry.direct"),
        ("SQS batch", "import handler.aws.observability, handler.entry.queue"),
    ):
        eager = _imported_modules(backend, bundled, "import handler.app")
        lazy = _imported_modules(backend, bundled, modules)
        kickout = {module for module, _, _ in function} - eager  # what the first kickout itself imports
        spared = {module: own for module, own, _ in function if module in eager - lazy - kickout}
        report.note(
            f"-X importtime: `import handler.app` loads {len(spared)} modules a {path} never uses (neither "
            f"`{modules}` nor its first kickout loads them): {sum(spared.values()) / 1000:.0f} ms of import (largest: "
            + ", ".join(f"{name} {own / 1000:.1f}" for name, own in sorted(spared.items(), key=lambda i: -i[1])[:5])
            + ")"
        )


def _imported_modules(backend: Backend, layout: Layout, statement: str) -> set[str]:
    env = backend.environment(layout, xray=True)
    completed = subprocess.run(
        [backend.python, "-s", "-P", "-X", "importtime", "-c", statement],
        cwd=layout.task,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {module for module, _, _ in parse_importtime(completed.stderr)}


def measure_sizes(artifact: Path, work: Path, report: Report) -> None:
    full = zipped_mb(artifact, work)
    no_sdk = zipped_mb(artifact, work, RUNTIME_SDK)
    no_sdk_no_layer = zipped_mb(artifact, work, (*RUNTIME_SDK, *LAYER_PACKAGES))
    no_layer = zipped_mb(artifact, work, LAYER_PACKAGES)
    report.note(
        f"artifact zip: {full:.1f} MB ({unzipped_mb(artifact):.0f} MB unzipped); without boto3/botocore/s3transfer "
        f"(the runtime's own) {no_sdk:.1f} MB; without Powertools+X-Ray SDK+wrapt (the layer's) {no_layer:.1f} MB; "
        f"without both {no_sdk_no_layer:.1f} MB"
    )


# --- 2 and 3: one batch, in process -----------------------------------------------------------------------------


def _batch(bodies: Sequence[dict[str, Any]], tag: str) -> dict[str, Any]:
    return {"Records": [sqs_record(json.dumps(body), message_id=f"{tag}-{n}") for n, body in enumerate(bodies)]}


def measure_batch(report: Report) -> None:
    latency, repeats = 0.1, 5

    def ten_rooms(tag: str) -> dict[str, Any]:
        return _batch([{"room_id": f"{tag}-room-{n}", "user_ids": [f"user-{n}"]} for n in range(10)], tag)

    def timed_batches(lambda_handler: Callable[..., Any], count: int, tag: str) -> list[float]:
        lambda_handler(ten_rooms(f"{tag}-warmup"), LambdaContext())  # connections opened, models built
        durations = []
        for repeat in range(count):
            started = time.perf_counter()
            response = lambda_handler(ten_rooms(f"{tag}-{repeat}"), LambdaContext())
            durations.append(time.perf_counter() - started)
            if response["batchItemFailures"]:
                raise BenchError(f"batch reported failures: {response}")
        return durations

    log("one SQS batch, 10 rooms, ZEGO answering in 100 ms")
    with sandbox() as box, quiet():
        from handler.app import lambda_handler

        box.zim.latency = latency
        unpaced = timed_batches(lambda_handler, repeats, "unpaced")
    baseline = 10 * latency
    ratio = median(unpaced) / baseline
    report.add(
        Row(
            "2. SQS batch of 10 kickouts, 10 rooms, ZEGO 100 ms (pace 1000/s)",
            ms(median(unpaced)),
            f"{ms(baseline)} = 10 x 100 ms one after the other",
            ratio,
            "≤ 0.15",
            ratio <= 0.15,
        )
    )
    with sandbox(rate_limit_per_second=20) as box, quiet():
        box.zim.latency = latency
        paced = timed_batches(lambda_handler, 2, "paced")
    report.add(
        Row(
            "2. the same under ZEGO's 20/s (the fleet budget, 19.2/s)",
            ms(median(paced)),
            ms(baseline),
            median(paced) / baseline,
            "info: ≥ 9/19.2 s by design",
            None,
        )
    )

    log("one SQS batch, 10 messages for one room")
    with sandbox() as box, quiet():
        users = [f"spammer_{n:02}" for n in range(10)]
        event = _batch(
            [{"room_id": "lobby-7", "user_ids": [user], "reason": "spam", "operator_id": "mod-bot"} for user in users],
            "same-room",
        )
        response = lambda_handler(event, LambdaContext())
        calls = len(box.zim.kickouts)
        if response["batchItemFailures"] or sorted(box.zim.kicked_user_ids) != users:
            raise BenchError(f"same-room batch did not kick everyone: {response}, {box.zim.kicked_user_ids}")
    report.add(
        Row("3. ZEGO calls, 10 messages, 1 room", counted(calls, "call"), "10 messages", calls / 10, "1", calls == 1)
    )


# --- 7: a ZEGO outage, simulated clock ---------------------------------------------------------------------------


def measure_outage(report: Report) -> None:
    log("ZEGO down 90 minutes on a simulated clock, with the circuit and without (two child processes)")
    env = os.environ | {"PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT)))}
    runs = [
        result_of(
            subprocess.run(command, check=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600).stdout
        )
        for command in (
            [sys.executable, "-m", "benchmarks.outage"],
            [sys.executable, "-m", "benchmarks.outage", "--no-circuit"],
        )
    ]
    with_circuit, without = runs
    minutes = with_circuit["outage_minutes"]
    scene = f"{with_circuit['messages']} kickouts, {with_circuit['environments']} environments"
    report.add(
        Row(
            f"7. ZEGO down {minutes:.0f} min, {scene}: moved to the DLQ",
            str(with_circuit["moved_by_sqs"]),
            f"{with_circuit['max_receive_count']} receives allowed, at most {with_circuit['most_receives']} used",
            None,
            "0",
            with_circuit["moved_by_sqs"] == 0,
        ),
        Row(
            "7. the same: ZEGO calls during the outage (most for one message)",
            f"{with_circuit['calls_during_outage']} ({with_circuit['calls_during_outage'] / minutes:.1f}/min;"
            f" {with_circuit['most_calls_for_one_message']})",
            f"{without['calls_during_outage']} ({without['most_calls_for_one_message']}) without the circuit",
            with_circuit["calls_during_outage"] / without["calls_during_outage"],
            "≤ 5/min, ≤ 30",
            with_circuit["calls_during_outage"] / minutes <= 5 and with_circuit["most_calls_for_one_message"] <= 30,
        ),
        Row(
            "7. the same: from ZEGO's recovery to the last kickout",
            f"{with_circuit['drain_seconds']:.0f} s",
            "620 s: the longest backoff after the first probe",
            with_circuit["drain_seconds"] / 620,
            "≤ 640 s",
            with_circuit["drain_seconds"] <= 640,
        ),
    )


# --- the table --------------------------------------------------------------------------------------------------


@xray_marker_removed()  # the artifact's children run with LAMBDA_TASK_ROOT set
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--artifact", type=Path, help="a built KickoutFunction directory (default: make build)")
    parser.add_argument("--cold-repeats", type=int, default=7, help="cold starts per variant (default 7)")
    parser.add_argument(
        "--start-only", action="store_true", help="rows 1, 5 and 6 only: warm kickout, cold start, RSS (minutes less)"
    )
    args = parser.parse_args(argv)
    report = Report()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="kickout-bench-"))
    try:
        artifact = args.artifact.resolve() if args.artifact else build_artifact(work)
        layouts = lay_out(artifact, work)
        measure_sizes(artifact, work, report)
        with (
            MotoServer(work) as moto,
            ZimStandIn(APP_ID, SERVER_SECRET, latency=0.0) as zim,
            xray_daemon_sink() as xray_daemon,
        ):
            moto_url = moto.url
            clients = {"region_name": REGION, "endpoint_url": moto_url}
            keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
            secret_arn = boto3.client("secretsmanager", **clients, **keys).create_secret(  # type: ignore[call-overload]
                Name=SECRET_NAME, SecretString=json.dumps({"ServerSecret": SERVER_SECRET})
            )["ARN"]
            dlq_url = boto3.client("sqs", **clients, **keys).create_queue(QueueName="kickout-dlq")["QueueUrl"]  # type: ignore[call-overload]
            create_state_table(boto3.client("dynamodb", **clients, **keys))  # type: ignore[call-overload]
            backend = Backend(zim, moto_url, secret_arn, dlq_url, xray_daemon, lambda_python())
            floor_rss_kb = measure_cold(backend, layouts, args.cold_repeats, report)
            measure_imports(backend, layouts, report)
            measure_warm(backend, layouts["bundled"], report, floor_rss_kb)
        if args.start_only:
            print_table(report)
            return 0
        measure_batch(report)
        measure_fleet(report)
        measure_fleet(report, share=LAMBDA_SHARE_256_MB)

        measure_outage(report)
        measure_slow_store(report)
        measure_skew(report)
        measure_api_path(report)
        measure_replay(report)
        measure_reentry(report)
    finally:
        _thaw(work)
        shutil.rmtree(work, ignore_errors=True)
    print_table(report)
    print(f"\n({time.monotonic() - started:.0f} s; python -m benchmarks.run, `make bench`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
