"""The built artifact under the Lambda Runtime Interface Emulator: built once per session, one emulator (with its
moto server and ZIM stand-in) per module, the same builder and stack as `python -m kickout_dev.local_lambda`.

Skipped, with the reason, only where the tools cannot exist (not Linux, no python3.13, the SAM CLI not
installable); with CI set in the environment that is a failure instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kickout_dev.build import ROOT, Tools, Unavailable, build, find_tools
from kickout_dev.local_lambda import Stack, running


@pytest.fixture(scope="session")
def tools() -> Tools:
    try:
        return find_tools()
    except Unavailable as error:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the package tests, but: {error}")
        pytest.skip(f"cannot run the built artifact on this machine: {error}")


@dataclass(frozen=True)
class Built:
    artifact: Path
    beside: list[str]
    """What the build left beside its build directory."""
    left_in_repository: set[str]
    """Paths that appeared in the checkout during the build."""


# Written by the tools that run meanwhile (pytest, hypothesis, linters) or kept by git and the virtualenvs; .tmp is
# make's TMPDIR, where pytest's tmp_path (and this session's build directory) is.
NOT_BUILD_OUTPUT = {
    ".git",
    ".venv",
    "__pycache__",
    ".pytest_cache",
    ".hypothesis",
    ".mypy_cache",
    ".ruff_cache",
    ".tmp",
}
UNREACHABLE_INDEX = {
    "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
    "PIP_EXTRA_INDEX_URL": "http://127.0.0.1:9/simple",
    "PIP_RETRIES": "0",
}
"""pip's package indexes, for the session's build: a closed port on loopback (9, discard). A build that asked an
index for anything would fail."""


def repository_paths() -> set[str]:
    """Every file and folder of the checkout, but those of git, the virtualenvs and the tools' caches."""
    paths: set[str] = set()
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if name not in NOT_BUILD_OUTPUT and not name.startswith(".venv-")]
        relative = Path(folder).relative_to(ROOT)
        paths.update((relative / name).as_posix() for name in [*subfolders, *files])
    return paths


@pytest.fixture(scope="session")
def built(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """`make build` into a directory of this session's own (other runs may build .aws-sam/local meanwhile),
    removed afterwards (about 60 MB), with every package index unreachable: the wheelhouse (`make wheels`, first,
    which downloads only what is missing) is all it may install from."""
    subprocess.run(
        [tools.make, "-C", str(ROOT), "--no-print-directory", "wheels"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=600,
        check=True,
    )
    root = tmp_path_factory.mktemp("sam")
    before = repository_paths()
    with pytest.MonkeyPatch.context() as environment:
        for name, value in UNREACHABLE_INDEX.items():
            environment.setenv(name, value)
        artifact = build(tools, root / "build")
    beside = sorted(path.name for path in root.iterdir() if path.name != "build")
    yield Built(artifact, beside, repository_paths() - before)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def artifact(built: Built) -> Path:
    return built.artifact


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
    running_stack.zim.clear_record()
    running_stack.parked()
    return running_stack
