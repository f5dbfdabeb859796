"""The built function run as Lambda runs it, on this machine, without Docker: `sam local invoke` done with
processes.

    python -m kickout_dev.local_lambda                    # the demo's cases: every file of events/, and more
    python -m kickout_dev.local_lambda events/api.json    # some event files
    python -m kickout_dev.local_lambda --serve            # keep it up behind POST http://127.0.0.1:3000/kickouts

1. `make build` (sam build, makefile build method, wheels for this machine's architecture) into .aws-sam/local.
2. A moto server for Secrets Manager and SQS and the ZIM stand-in, both on 127.0.0.1, in this process; the
   secret and the dead-letter queue are created there.
3. The Lambda Runtime Interface Emulator that ships with the SAM CLI (the one `sam local invoke` puts in its
   container), running `python3.13 -S -m awslambdaric handler.app.lambda_handler` with the artifact as task
   root. The runtime sees the artifact and awslambdaric (with its two dependencies) and nothing else: not the
   repository's src/, not the .venv, not the interpreter's site-packages. A module or dependency the build
   left out fails here as it would in Lambda.

Everything started here is stopped by PID when it ends, also on Ctrl-C or an error. Exit status 69
(EX_UNAVAILABLE) says this machine cannot do it (not Linux, no python3.13, no SAM CLI): `make demo` then falls
back to the in-process demo.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kickout_dev.events import api_event, load_event, sqs_event
from kickout_dev.plural import counted
from kickout_dev.processes import (
    MotoServer,
    children,
    free_port,
    loopback_unreachable,
    stop_group,
    stop_pid,
    terminate,
)
from kickout_dev.sandbox import APP_ID, SECRET_NAME, SERVER_SECRET, create_state_table, function_environment
from kickout_dev.zim_server import ZimStandIn

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
DEFAULT_BUILD_DIR = ROOT / ".aws-sam" / "local"
FUNCTION = "KickoutFunction"
FUNCTION_NAME = "kickout-KickoutFunction"
HANDLER = "handler.app.lambda_handler"
CALLBACKS_HANDLER = "handler.app.callbacks_lambda_handler"
"""KickoutCallbackFunction's: ZIM's callbacks, the same artifact under a second emulator."""
EX_UNAVAILABLE = 69
"""sysexits' EX_UNAVAILABLE: this machine lacks what the emulated run needs."""
EX_USAGE = 2
"""A mistake on the command line, as argparse exits for its own."""

INSTALL_TIMEOUT = 900.0
BUILD_TIMEOUT = 600.0
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
LOG_TIMEOUT = 5.0
"""How long the emulator may take to write an invocation's REPORT line after answering."""
START_ATTEMPTS = 3
"""Ports are picked free, then handed to the emulator: another process may take one meanwhile."""
DEFAULT_SERVE_PORT = 3000
"""`sam local start-api`'s port."""


class Unavailable(Exception):
    """This machine cannot run the built function under the emulator; the message says what is missing."""


class UsageError(Exception):
    """A mistake on the command line (an event file missing or not JSON): said in one line, no traceback."""


class BuildFailed(Exception):
    """`make build` failed or produced no function; the message carries the end of its output."""


# --- tools -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tools:
    make: str
    python: str
    """python3.13, the Lambda runtime's version: sam build's pip and compileall, and the runtime itself."""
    rie: Path
    arch: str
    """x86_64 or arm64: this machine's, so that the build's native wheels (pydantic-core) load here."""


def host_arch() -> str:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return "x86_64"
    if machine in ("aarch64", "arm64"):
        return "arm64"
    raise Unavailable(f"Lambda has no architecture for this machine ({platform.machine()})")


def find_tools(*, install_sam: bool = True) -> Tools:
    """What the emulated run needs; installs the SAM CLI (`make sam`) when allowed and missing."""
    if sys.platform != "linux":
        raise Unavailable("the Runtime Interface Emulator that ships with the SAM CLI runs on Linux only")
    arch = host_arch()
    make = shutil.which("make")
    if make is None:
        raise Unavailable("make not found")
    python = _output([str(ROOT / "scripts" / "find-python")], timeout=60.0)
    if not python or _output([python, "-c", "import sys; print(sys.version_info[:2] == (3, 13))"]) != "True":
        raise Unavailable("python3.13 (the Lambda runtime's version) not found; install it, e.g. `pyenv install 3.13`")
    if sys.version_info[:2] != (3, 13):
        raise Unavailable(
            f"this environment runs Python {platform.python_version()}, but awslambdaric's native part must match "
            "the runtime's 3.13: recreate it (make clean install)"
        )
    if importlib.util.find_spec("awslambdaric") is None:
        raise Unavailable("awslambdaric is not installed in this environment (make install)")
    sam_python = ROOT / ".venv-sam" / "bin" / "python"
    if install_sam:
        if not sam_python.exists():
            print("installing the SAM CLI into .venv-sam (first run only, about a minute)", flush=True)
        try:
            _run_to_end([make, "-C", str(ROOT), "--no-print-directory", "sam"], timeout=INSTALL_TIMEOUT)
        except BuildFailed as error:
            raise Unavailable(f"the SAM CLI could not be installed: {error}") from None
    if not (ROOT / ".venv-sam" / "bin" / "sam").exists():
        raise Unavailable("the SAM CLI is not installed (make sam)")
    rapid = _output(
        [
            str(sam_python),
            "-c",
            "import pathlib, samcli; print(pathlib.Path(samcli.__file__).parent / 'local' / 'rapid')",
        ]
    )
    rie = Path(rapid) / f"aws-lambda-rie-{arch}"
    if not rapid or not os.access(rie, os.X_OK):
        raise Unavailable(f"the SAM CLI in .venv-sam has no Runtime Interface Emulator for {arch}")
    return Tools(make=make, python=python, rie=rie, arch=arch)


def _output(args: list[str], timeout: float = 30.0) -> str:
    try:
        completed = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return completed.stdout.strip() if completed.returncode == 0 else ""


def _run_to_end(args: list[str], *, timeout: float) -> str:
    """Run a command in its own process group; its output, or BuildFailed with the end of it.

    Its own group, so that a timeout or Ctrl-C here stops make and what it started (sam, pip), by the group
    id, which is the PID of the process started here.
    """
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(  # noqa: S603
            args, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BuildFailed(f"{' '.join(args[-3:])} took longer than {timeout:.0f} s") from None
        finally:
            if process.poll() is None:
                stop_group(process)
        output.seek(0)
        text = output.read().decode(errors="replace")
    if process.returncode != 0:
        tail = "\n".join(text.splitlines()[-25:])
        raise BuildFailed(f"`{' '.join(args)}` exited with {process.returncode}:\n{tail}")
    return text


# --- build -----------------------------------------------------------------------------------------------------


def build(tools: Tools, build_dir: Path = DEFAULT_BUILD_DIR) -> Path:
    """`make build` for this machine's architecture; the function's artifact directory."""
    _run_to_end(
        [
            tools.make,
            "-C",
            str(ROOT),
            "--no-print-directory",
            "build",
            f"BUILD_DIR={build_dir}",
            f"LAMBDA_ARCH={tools.arch}",
        ],
        timeout=BUILD_TIMEOUT,
    )
    artifact = build_dir / FUNCTION
    if not (artifact / "handler" / "app.py").is_file():
        raise BuildFailed(f"the build has no {artifact / 'handler' / 'app.py'}")
    return artifact


@dataclass(frozen=True)
class FunctionConfig:
    """What template.yaml says about the function that the emulator needs to know."""

    timeout: int
    memory: int
    rate_limit_per_second: float
    log_level: str


def function_config() -> FunctionConfig:
    from cfnlint.decode import cfn_yaml

    template = cfn_yaml.load(str(TEMPLATE))
    function = {**template["Globals"]["Function"], **template["Resources"][FUNCTION]["Properties"]}
    parameters = template["Parameters"]
    return FunctionConfig(
        timeout=int(function["Timeout"]),
        memory=int(function["MemorySize"]),
        rate_limit_per_second=float(parameters["ZegoRateLimitPerSecond"]["Default"]),
        log_level=str(parameters["LogLevel"]["Default"]),
    )


# --- the AWS side: a moto server -------------------------------------------------------------------------------


# --- the function: the Runtime Interface Emulator --------------------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    response: Any
    """What the function returned, or the runtime's error document (errorType, errorMessage, ...)."""
    logs: list[dict[str, Any]]
    """The JSON lines the function printed: Powertools log records and EMF metric blobs."""
    other: list[str]
    """Anything else the runtime printed (a traceback, a library's warning)."""
    request_id: str
    seconds: float
    """Wall time of the call, as the caller sees it; the first one includes the cold start."""

    @property
    def error_type(self) -> str | None:
        if isinstance(self.response, dict) and isinstance(self.response.get("errorType"), str):
            return str(self.response["errorType"])
        return None


def split_output(lines: Iterable[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """What the function printed, as Invocation keeps it: its JSON lines apart from any other (blank ones dropped)."""
    logs: list[dict[str, Any]] = []
    other: list[str] = []
    for line in lines:
        if line.startswith("{"):
            try:
                logs.append(json.loads(line))
                continue
            except json.JSONDecodeError:
                pass
        if line.strip():
            other.append(line)
    return logs, other


def runtime_client_path(into: Path) -> Path:
    """A directory holding awslambdaric and what it needs (symlinks into this environment), nothing else."""
    into.mkdir(parents=True, exist_ok=True)
    pending, seen = ["awslambdaric"], set()
    while pending:
        name = pending.pop()
        distribution = importlib.metadata.distribution(name)
        if distribution.name in seen:
            continue
        seen.add(distribution.name)
        tops = {Path(file).parts[0] for file in distribution.files or []}
        for top in sorted(tops - {"..", "__pycache__"}):
            link = into / top
            if not link.exists():
                link.symlink_to(Path(str(distribution.locate_file(top))))
        for requirement in distribution.requires or []:
            name_only = re.match(r"[A-Za-z0-9._-]+", requirement)
            if name_only and "extra ==" not in requirement:
                pending.append(name_only.group())
    return into


class Emulator:
    """aws-lambda-rie running the artifact with awslambdaric; one invocation at a time, as one Lambda
    execution environment takes them."""

    def __init__(
        self,
        tools: Tools,
        artifact: Path,
        environ: dict[str, str],
        workdir: Path,
        timeout: int,
        *,
        handler: str = HANDLER,
    ) -> None:
        self.tools = tools
        self.artifact = artifact
        self.handler = handler
        self.environ = {**environ, "_HANDLER": handler}
        self.workdir = workdir
        self.timeout = timeout
        self.port = 0
        self.started_in = 0.0
        self.log_path = workdir / f"emulator-{handler.rsplit('.', 1)[-1]}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/2015-03-31/functions/function/invocations"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> Emulator:
        began = time.monotonic()
        try:
            for attempt in range(1, START_ATTEMPTS + 1):
                self._log = self.log_path.open("ab")
                offset = self.log_path.stat().st_size
                self.port = free_port()
                self._process = self._spawn()
                if self._wait_listening(began + START_TIMEOUT):
                    self.started_in = time.monotonic() - began
                    return self
                self.stop()
                said = self._read_from(offset)
                if "address already in use" not in said or attempt == START_ATTEMPTS:
                    raise RuntimeError(f"the Runtime Interface Emulator did not start:\n{said[-2000:]}")
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # noqa: S603
            [
                str(self.tools.rie),
                "--runtime-interface-emulator-address",
                f"127.0.0.1:{self.port}",
                "--runtime-api-address",
                f"127.0.0.1:{free_port()}",
                "--log-level",
                "error",
                self.tools.python,
                "-S",  # no site-packages: the artifact and the runtime client are all the runtime sees
                "-m",
                "awslambdaric",
                self.handler,
            ],
            cwd=self.artifact,
            env=self.environ,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def _wait_listening(self, deadline: float) -> bool:
        assert self._process is not None
        while time.monotonic() < deadline and self._process.poll() is None:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.settimeout(0.5)
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """SIGTERM the emulator (it stops the runtime), wait, SIGKILL if needed; then any runtime it left."""
        process, self._process = self._process, None
        if process is not None:
            runtimes = children(process.pid)
            terminate(process)
            for pid in runtimes:
                stop_pid(pid, expect="awslambdaric")
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def invoke(self, event: Any) -> Invocation:
        with self._lock:
            offset = self.log_path.stat().st_size
            request = urllib.request.Request(  # noqa: S310 (loopback http, built here)
                self.url, data=json.dumps(event).encode(), method="POST", headers={"Content-Type": "application/json"}
            )
            began = time.monotonic()
            try:
                with urllib.request.urlopen(request, timeout=self.timeout + 10) as reply:  # noqa: S310
                    response = _document(reply.read())
            except urllib.error.HTTPError as error:
                # The emulator's answer when the runtime failed to start (an import error) or died: 502 and,
                # usually, Lambda's error document.
                response = _document(error.read())
                if not isinstance(response, dict) or "errorType" not in response:
                    response = {"errorType": f"Emulator.HTTP{error.code}", "errorMessage": str(response)}
            seconds = time.monotonic() - began
            return self._invocation(response, offset, seconds)

    def _invocation(self, response: Any, offset: int, seconds: float) -> Invocation:
        text = self._read_from(offset)
        deadline = time.monotonic() + LOG_TIMEOUT
        while not _finished(text) and time.monotonic() < deadline:
            time.sleep(0.01)
            text = self._read_from(offset)
        printed: list[str] = []
        request_id = ""
        # "\n" only: the runtime writes a traceback as one line with "\r" between its lines.
        for line in text.split("\n"):
            if line.startswith("START RequestId: "):
                request_id = line.split()[2]
            elif not line.startswith(("END RequestId: ", "REPORT RequestId: ")):
                printed.append(line)
        logs, other = split_output(printed)
        return Invocation(response=response, logs=logs, other=other, request_id=request_id, seconds=seconds)

    def _read_from(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")


def _finished(output: str) -> bool:
    """Whether the emulator has written all of an invocation's output: its REPORT line, or its failure."""
    return "\nREPORT RequestId:" in "\n" + output or "(rapid) Invoke DONE failed" in output


def _document(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return body.decode(errors="replace")


# --- all of it -------------------------------------------------------------------------------------------------


@dataclass
class Stack:
    """The built function under the emulator, with its ZIM stand-in and its AWS (a moto server)."""

    zim: ZimStandIn
    moto: MotoServer
    emulator: Emulator
    secret_arn: str
    dlq_url: str
    environ: dict[str, str] = field(repr=False)
    callbacks: Emulator | None = None
    """ZIM's callbacks' function, behind `front` (POST /zego/callbacks), which the stand-in calls back."""
    queue_url: str = ""
    callbacks_seen: list[Invocation] = field(default_factory=list)

    def invoke(self, event: Any) -> Invocation:
        return self.emulator.invoke(event)

    def parked(self) -> list[dict[str, Any]]:
        return parked(self.moto, self.dlq_url)


def parked(moto: MotoServer, dlq_url: str) -> list[dict[str, Any]]:
    """Every message in the dead-letter queue (received, then deleted so a second call does not see it)."""
    sqs = moto.sqs()
    messages: list[dict[str, Any]] = []
    for _ in range(100):
        batch = sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=30
        ).get("Messages", [])
        if not batch:
            break
        messages.extend(dict(message) for message in batch)
        for message in batch:
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
    return messages


def lambda_environment(
    *, artifact: Path, runtime_path: Path, config: FunctionConfig, aws_endpoint: str, workdir: Path
) -> dict[str, str]:
    """What Lambda's python3.13 runtime sets, for this artifact, around the template's variables.

    Nothing of this process's environment is passed on (PYTHONPATH=src:. from the Makefile, AWS_PROFILE, ...);
    AWS goes to the moto server, AWS config files and the instance metadata service are out of reach.
    """
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "LAMBDA_TASK_ROOT": str(artifact),
        "LAMBDA_RUNTIME_DIR": str(runtime_path),
        "PYTHONPATH": f"{artifact}:{runtime_path}",
        "_HANDLER": HANDLER,
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(config.timeout),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{FUNCTION_NAME}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "local/[$LATEST]emulator",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_ENDPOINT_URL": aws_endpoint,
        "AWS_CONFIG_FILE": str(workdir / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "HOME": str(workdir),
    }


XRAY_MARKER = Path("/tmp/.aws-xray/initialized")  # noqa: S108 (the X-Ray SDK's path, not one made here)
"""What the X-Ray SDK writes when it is imported where LAMBDA_TASK_ROOT is set (aws_xray_sdk/core/lambda_launcher.py),
to tell Lambda it loaded. The path is written into the SDK, no variable moves it, and in Lambda that /tmp is the
function's own; here it is the machine's."""


@contextlib.contextmanager
def xray_marker_removed() -> Iterator[None]:
    """Remove the X-Ray SDK's marker (and its folder) on the way out, unless the folder was there before."""
    there_before = XRAY_MARKER.parent.exists()
    try:
        yield
    finally:
        if not there_before:
            with contextlib.suppress(OSError):
                XRAY_MARKER.unlink(missing_ok=True)
                XRAY_MARKER.parent.rmdir()


@contextlib.contextmanager
def running(
    tools: Tools, artifact: Path, *, rooms: dict[str, set[str]] | None = None, callbacks: bool = False
) -> Iterator[Stack]:
    """Start the moto server, the ZIM stand-in and the emulator (with `callbacks`, a second one for ZIM's callbacks
    behind a loopback front the stand-in calls back); stop all of them on the way out."""
    config = function_config()
    with (
        tempfile.TemporaryDirectory(prefix="kickout-local-") as scratch,
        xray_marker_removed(),
        contextlib.ExitStack() as started,
    ):
        workdir = Path(scratch)
        moto = started.enter_context(MotoServer(workdir))
        zim = started.enter_context(ZimStandIn(APP_ID, SERVER_SECRET, rooms=rooms))
        secret_arn = moto.secretsmanager().create_secret(
            Name=SECRET_NAME, SecretString=json.dumps({"ServerSecret": SERVER_SECRET})
        )["ARN"]
        dlq_url = moto.sqs().create_queue(QueueName="kickout-dlq")["QueueUrl"]
        queue_url = moto.sqs().create_queue(QueueName="kickout-queue")["QueueUrl"]
        create_state_table(moto.dynamodb())
        environ = function_environment(
            endpoint=zim.url,
            secret_arn=secret_arn,
            dlq_url=dlq_url,
            queue_url=queue_url,
            rate_limit_per_second=config.rate_limit_per_second,
        )
        environ["POWERTOOLS_LOG_LEVEL"] = config.log_level
        environ |= lambda_environment(
            artifact=artifact,
            runtime_path=runtime_client_path(workdir / "runtime"),
            config=config,
            aws_endpoint=moto.url,
            workdir=workdir,
        )
        emulator = started.enter_context(Emulator(tools, artifact, environ, workdir, config.timeout))
        stack = Stack(
            zim=zim,
            moto=moto,
            emulator=emulator,
            secret_arn=secret_arn,
            dlq_url=dlq_url,
            environ=environ,
            queue_url=queue_url,
        )
        if callbacks:
            from kickout_dev.local_http import LocalApi

            stack.callbacks = started.enter_context(
                Emulator(tools, artifact, environ, workdir, config.timeout, handler=CALLBACKS_HANDLER)
            )

            def call_back(event: dict[str, Any]) -> Any:
                assert stack.callbacks is not None
                invocation = stack.callbacks.invoke(event)
                stack.callbacks_seen.append(invocation)
                return invocation.response

            front = started.enter_context(LocalApi(call_back))
            zim.callback_url = f"{front.url}/zego/callbacks"
        yield stack


# --- the command -----------------------------------------------------------------------------------------------


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


def serve(stack: Stack, port: int) -> int:
    from kickout_dev.local_http import LocalApi

    def invoke(event: dict[str, Any]) -> Any:
        callbacks = stack.callbacks if event["path"] == "/zego/callbacks" else None
        invocation = callbacks.invoke(event) if callbacks is not None else stack.invoke(event)
        print(f"\n▶ {event['httpMethod']} {event['path']} ({invocation.seconds * 1000:.0f} ms)", flush=True)
        for line in describe(invocation):
            print(f"  {line}", flush=True)
        return invocation.response

    try:
        api = LocalApi(invoke, port=port).start()
    except OSError as error:
        print(f"local_lambda: cannot listen on 127.0.0.1:{port} ({error}); try --port 0", file=sys.stderr)
        return 1
    try:
        print(f"\nPOST {api.url}/kickouts reaches the built function (Ctrl-C stops everything), and")
        print(f"POST {api.url}/zego/callbacks its callbacks' handler (ZIM's signed callbacks). Try:\n")
        print(
            f"  curl -s -X POST {api.url}/kickouts -H 'Content-Type: application/json' "
            """-d '{"room_id":"lobby-7","user_ids":["spammer_01"],"reason":"spam"}'\n""",
            flush=True,
        )
        while stack.emulator.alive():
            time.sleep(0.5)
    finally:
        api.stop()
    print("local_lambda: the Runtime Interface Emulator stopped", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kickout_dev.local_lambda",
        description="Build the function and run it under the Lambda Runtime Interface Emulator, without Docker.",
        allow_abbrev=False,
    )
    parser.add_argument("events", nargs="*", help="event files to invoke (default: the demo's cases from events/)")
    parser.add_argument("--serve", action="store_true", help="then keep it up behind POST /kickouts on 127.0.0.1")
    parser.add_argument(
        "--port", type=port_number, default=DEFAULT_SERVE_PORT, help="port for --serve (0: any free one)"
    )
    parser.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR)
    return run_tool("local_lambda", _main, parser.parse_args(argv), stopped="everything it started is stopped")


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


def _main(args: argparse.Namespace) -> int:
    if reason := loopback_unreachable():
        print(f"local_lambda: {reason}", file=sys.stderr)
        return 1
    try:
        tools = find_tools()
    except Unavailable as error:
        print(f"local_lambda: cannot run the built function here: {error}", file=sys.stderr)
        return EX_UNAVAILABLE
    cases = file_cases(args.events) if args.events else ([] if args.serve else demo_cases())
    print("kickout, built and run as Lambda runs it (no Docker):")
    began = time.monotonic()
    try:
        artifact = build(tools, args.build_dir.resolve())
    except BuildFailed as error:
        print(f"local_lambda: the build failed: {error}", file=sys.stderr)
        return 1
    print(f"  - make build (sam build, {tools.arch} wheels from .wheelhouse) in {time.monotonic() - began:.1f} s")
    print(f"    -> {artifact.relative_to(ROOT) if artifact.is_relative_to(ROOT) else artifact}")
    with running(tools, artifact, callbacks=not args.events) as stack:
        print(
            f"  - Lambda Runtime Interface Emulator from the SAM CLI on 127.0.0.1:{stack.emulator.port} "
            f"(up in {stack.emulator.started_in:.2f} s), running {Path(tools.python).name} -S -m awslambdaric {HANDLER}"
        )
        print("    on the artifact alone (not src/, not the .venv)")
        print(f"  - a ZIM server stand-in on {stack.zim.url} that checks signatures and parameters as ZEGO does")
        print(f"  - Secrets Manager and SQS in a moto server on {stack.moto.url}")
        if stack.callbacks is not None:
            print(
                f"  - ZIM's callbacks: {CALLBACKS_HANDLER} under a second emulator on 127.0.0.1:"
                f"{stack.callbacks.port}, behind {stack.zim.callback_url}"
            )
        ok = run_cases(stack.invoke, cases)
        if cases and stack.callbacks is not None:
            ok = run_loop(stack.invoke, stack.zim, stack.callbacks_seen, stack.moto.sqs(), stack.queue_url) and ok
        if cases:
            ok = summary(stack.zim, stack.parked(), parked_expected=None if args.events else 1) and ok
            print("\nevery event handled as expected" if ok else "\nlocal_lambda: UNEXPECTED RESULT")
        if args.serve:
            return serve(stack, args.port)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
