"""The built function under `sam local invoke` / `sam local start-api` in a real Docker engine (kickout_dev.sam_docker),
beside the same artifact under `make local`'s emulator, for comparison.

Skipped, with the reason, where no Docker engine can be had: none answers, or .ci/run could not install or start one
(it says why in KICKOUT_DOCKER_UNAVAILABLE), or the Debian mirror the base-image stand-in is built from cannot be
reached. In CI, a missing engine that .ci/run did not explain fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from kickout_dev import standin_image
from kickout_dev.build import Tools, build, find_tools
from kickout_dev.build import Unavailable as ToolsUnavailable
from kickout_dev.docker_engine import Unavailable, engine_version
from kickout_dev.local_lambda import Stack, running
from kickout_dev.sam_docker import DockerStack, docker_stack


def _cannot(reason: str) -> None:
    if os.environ.get("CI") and not os.environ.get("KICKOUT_DOCKER_UNAVAILABLE"):
        pytest.fail(f"CI must run the Docker tests (.ci/run installs and starts the engine), but: {reason}")
    pytest.skip(f"no Docker here: {reason}")


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The running engine's version. The tests start none: .ci/run starts dockerd for CI, `make sam-local` for
    a person; a test session that did would stop it under another one on a shared machine."""
    if reason := os.environ.get("KICKOUT_DOCKER_UNAVAILABLE"):
        pytest.skip(f"no Docker here: {reason}")
    version = engine_version()
    if version is None:
        _cannot("no Docker engine answers (start one, e.g. dockerd as root; .ci/run does)")
    assert version is not None
    return version


@pytest.fixture(scope="session")
def docker_tools(docker_engine: str) -> Tools:
    try:
        return find_tools()
    except ToolsUnavailable as error:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Docker tests, but: {error}")
        pytest.skip(f"cannot build the function here: {error}")


@pytest.fixture(scope="session")
def base_image(docker_tools: Tools) -> str:
    """The base-image stand-in, built from Debian packages unless an image of the same recipe is there."""
    try:
        image, _ = standin_image.ensure(docker_tools.arch)
    except Unavailable as error:  # the Debian mirror said no, or mmdebstrap is missing: a skip, even in CI
        pytest.skip(f"cannot build the base-image stand-in here: {error}")
    return image


@pytest.fixture(scope="session")
def docker_artifact(docker_tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`make build` for this machine's architecture, in a directory of this session's own, removed after."""
    build_dir = tmp_path_factory.mktemp("sam-build-docker")
    yield build(docker_tools, build_dir)
    shutil.rmtree(build_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def in_docker(
    docker_tools: Tools, docker_artifact: Path, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DockerStack]:
    with docker_stack(docker_tools, docker_artifact.parent / "template.yaml", tmp_path_factory.mktemp("run")) as stack:
        yield stack


@pytest.fixture(scope="module")
def under_make_local(docker_tools: Tools, docker_artifact: Path) -> Iterator[Stack]:
    """The same artifact as `make local` runs it (the Runtime Interface Emulator, no Docker)."""
    with running(docker_tools, docker_artifact) as stack:
        yield stack
