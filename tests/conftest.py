"""Shared fixtures: a sandbox per test (ZIM stand-in on loopback, moto Secrets Manager and SQS), the real
handler, a fresh Lambda context, and the output the function printed (logs and EMF metrics)."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from typing import Any, Protocol

import pytest
from aws_lambda_powertools.metrics.provider.cold_start import reset_cold_start_flag

from kickout_dev.clock import SimulatedClock
from kickout_dev.emf import emf_metrics
from kickout_dev.emulator import xray_marker_removed
from kickout_dev.moto_server import make_moto_like_aws
from kickout_dev.processes import loopback_unreachable
from kickout_dev.sandbox import Sandbox, sandbox

# Powertools reads these when Logger, Tracer and Metrics are built, at the handler's import: before any test.
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "kickout")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Kickout")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
# moto held to AWS's limits for every test, whichever way it starts moto in this process (the sandbox, mock_aws):
# a call AWS would refuse fails here too (kickout_dev/moto_server.py).
make_moto_like_aws()


class _CurrentStdout(io.TextIOBase):
    """Writes to whatever sys.stdout is now: pytest swaps it per test phase, Powertools' Logger keeps one stream."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


class Printed:
    """Everything the function wrote to stdout: Powertools logs and EMF metric blobs, one JSON document a line."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self._seen = ""

    @property
    def text(self) -> str:
        self._seen += self._capsys.readouterr().out
        return self._seen

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.startswith("{")]

    @property
    def logs(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if "_aws" not in line]

    def metric(self, name: str) -> float:
        """The sum of every value emitted for metric `name` (0 when never emitted)."""
        return sum(emf_metrics(self.text).get(name, []))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Every stand-in of the suite listens on 127.0.0.1: with loopback down, one line instead of hundreds of
    "Network is unreachable"."""
    if reason := loopback_unreachable():
        pytest.exit(reason, returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session", autouse=True)
def _xray_marker_removed() -> Iterator[None]:
    """The X-Ray SDK writes /tmp/.aws-xray/initialized wherever LAMBDA_TASK_ROOT is set (the tracing tests, the built
    function under the emulator), at a path no variable moves: removed after the run unless it was there before."""
    with xray_marker_removed():
        yield


@pytest.fixture
def box() -> Iterator[Sandbox]:
    with sandbox(instant_backoff=True) as running:
        yield running


WALL_CLOCK_START = 1_900_000_000.0
"""Where the function's simulated wall clock starts in the tests of keep-outs and callbacks (no assertion meets today's
date)."""


def rewired_wall_clock(box: Sandbox, now: float = WALL_CLOCK_START) -> SimulatedClock:
    """The sandbox's function rewired onto a simulated wall clock (keep-out windows, callback timestamps), at `now`."""
    simulated = SimulatedClock(now=now)
    box.rewire(wall_clock=simulated)
    return simulated


@pytest.fixture
def clock(box: Sandbox) -> SimulatedClock:
    return rewired_wall_clock(box)


@pytest.fixture
def printed(capsys: pytest.CaptureFixture[str]) -> Iterator[Printed]:
    from handler.aws.observability import logger, metrics

    capture = Printed(capsys)
    logger.registered_handler.setStream(_CurrentStdout())  # type: ignore[attr-defined]
    metrics.clear_metrics()
    reset_cold_start_flag()  # type: ignore[no-untyped-call]
    yield capture
    metrics.clear_metrics()


class Invoke(Protocol):
    def __call__(self, event: Any, *, timeout_seconds: float = 20.0) -> Any: ...


@pytest.fixture
def invoke(box: Sandbox, printed: Printed) -> Invoke:
    """Call the real Lambda handler as the runtime would, with a fresh context of 20 s, on the sandbox's function."""

    def call(event: Any, *, timeout_seconds: float = 20.0) -> Any:
        return box.handler(event, box.context(timeout_seconds))

    return call
