"""The Lambda Runtime Interface Emulator that ships with the SAM CLI (the one `sam local invoke` puts in its
container), running `python3.13 -S -m awslambdaric handler.app.lambda_handler` with the artifact as task root and
the environment Lambda's python3.13 runtime sets. The runtime sees the artifact and awslambdaric (with its two
dependencies) and nothing else: not the repository's src/, not the .venv, not the interpreter's site-packages.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kickout_dev.build import FunctionConfig, Tools
from kickout_dev.processes import (
    children,
    free_port,
    stop_pid,
    terminate,
)

FUNCTION_NAME = "kickout-KickoutFunction"
HANDLER = "handler.app.lambda_handler"
CALLBACKS_HANDLER = "handler.app.callbacks_lambda_handler"
"""KickoutCallbackFunction's: ZIM's callbacks, the same artifact under a second emulator."""
START_TIMEOUT = 15.0
LOG_TIMEOUT = 5.0
"""How long the emulator may take to write an invocation's REPORT line after answering."""
START_ATTEMPTS = 3
"""Ports are picked free, then handed to the emulator: another process may take one meanwhile."""


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
