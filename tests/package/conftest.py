"""The built artifact under the Lambda Runtime Interface Emulator: built once per session, one emulator (with its
moto server and ZIM stand-in) per module, the same builder and stack as `python -m kickout_dev.local_lambda`.

Skipped, with the reason, only where the tools cannot exist (not Linux, no python3.13, the SAM CLI not
installable); with CI set in the environment that is a failure instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from kickout_dev.local_lambda import Stack, Tools, Unavailable, build, find_tools, running


@pytest.fixture(scope="session")
def tools() -> Tools:
    try:
        return find_tools()
    except Unavailable as error:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the package tests, but: {error}")
        pytest.skip(f"cannot run the built artifact on this machine: {error}")


@pytest.fixture(scope="session")
def artifact(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`make build` into a directory of this session's own (other runs may build .aws-sam/local meanwhile),
    removed afterwards (about 60 MB)."""
    build_dir = tmp_path_factory.mktemp("sam-build")
    yield build(tools, build_dir)
    shutil.rmtree(build_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def bytecode_before(artifact: Path) -> dict[Path, float]:
    """Every .pyc of the artifact with its mtime, before the emulator ran anything."""
    return {path: path.stat().st_mtime for path in artifact.rglob("*.pyc")}


@pytest.fixture(scope="module")
def running_stack(tools: Tools, artifact: Path, bytecode_before: dict[Path, float]) -> Iterator[Stack]:
    with running(tools, artifact) as stack:
        yield stack


@pytest.fixture
def stack(running_stack: Stack) -> Stack:
    """The module's stack with a clean record: nothing received by the stand-in, nothing in the DLQ."""
    with running_stack.zim._lock:
        running_stack.zim.kickouts.clear()
        running_stack.zim.refusals.clear()
    running_stack.parked()
    return running_stack
