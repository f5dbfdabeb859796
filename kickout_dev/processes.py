"""Processes the dev tools start on this machine: a free loopback port, the moto server, stopping by PID.

Shared by `local_lambda` (make local, make demo), `sam_docker` (make sam-local), `benchmarks/run.py` and
`benchmarks/fleet.py` (make bench). Everything listens on loopback (or a Docker network's gateway the caller made)
and is stopped by the handle or PID of what was started here, never by name.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from kickout_dev.sandbox import REGION

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_secretsmanager.client import SecretsManagerClient
    from mypy_boto3_sqs.client import SQSClient

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0
"""How long the moto server may take to say where it listens (a busy shared machine: seconds)."""
STOP_TIMEOUT = 5.0
"""How long a process may take to go after SIGTERM before it gets SIGKILL."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on `host` now (another process may take it before the caller binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def listening(port: int, host: str = LOOPBACK) -> bool:
    """Whether something accepts TCP connections on `host`:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def loopback_unreachable(host: str = LOOPBACK) -> str | None:
    """Why nothing listening on `host` can be reached, or None when it can. In a network namespace of a bare
    `unshare -n` loopback is down, and every stand-in started here would be "Network is unreachable"."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind((host, 0))
        server.listen(1)
        try:
            socket.create_connection(server.getsockname(), timeout=2.0).close()
        except OSError as error:
            return (
                f"nothing on {host} can be reached ({error.strerror or error}): loopback is down, as in a bare "
                "`unshare -n`; bring it up (`ip link set lo up`) or run through scripts/offline"
            )
    return None


def terminate(process: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM a process started here, if it still runs; SIGKILL it if it has not gone after `timeout`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def stop_group(process: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL, the process group of a process started here with `start_new_session=True`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def children(pid: int) -> list[int]:
    """The PIDs of a process's children (Linux /proc; none where it cannot be read)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found.extend(int(child) for child in (task / "children").read_text().split())
    return found


def stop_pid(pid: int, *, expect: str, timeout: float = STOP_TIMEOUT) -> None:
    """Stop a process this run started (through another), if it is still there and its command line still holds
    `expect` (a PID may have been reused): SIGTERM, then SIGKILL after `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            if expect not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                return
            os.kill(pid, sig)
        except (OSError, ProcessLookupError):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)


class MotoServer:
    """Secrets Manager, SQS and DynamoDB for the function (AWS_ENDPOINT_URL): `python -m kickout_dev.moto_server`.

    A process of its own: moto keeps its state per process, so a server thread here would share it with every
    other moto in this process (a test's mock_aws resets it). Port 0: the server picks one and says which.
    """

    def __init__(self, workdir: Path, *, host: str = LOOPBACK, port: int = 0) -> None:
        self.log_path = workdir / "moto.log"
        self.host = host
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> MotoServer:
        deadline = time.monotonic() + START_TIMEOUT
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 (this interpreter, arguments built here)
                [sys.executable, "-m", "kickout_dev.moto_server", "-H", self.host, "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            while time.monotonic() < deadline and self._process.poll() is None:
                said = self.log_path.read_text(errors="replace")
                found = re.search(rf"Running on http://{re.escape(self.host)}:(\d+)", said)
                if found:
                    self.port = int(found.group(1))
                    return self
                time.sleep(0.05)
            raise RuntimeError(f"the moto server did not start:\n{self.log_path.read_text(errors='replace')[-2000:]}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            terminate(process)

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def sqs(self) -> SQSClient:
        return boto3.client("sqs", **self._client_arguments())

    def dynamodb(self) -> DynamoDBClient:
        return boto3.client("dynamodb", **self._client_arguments())

    def secretsmanager(self) -> SecretsManagerClient:
        return boto3.client("secretsmanager", **self._client_arguments())

    def _client_arguments(self) -> dict[str, Any]:
        return {
            "region_name": REGION,
            "endpoint_url": self.url,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
