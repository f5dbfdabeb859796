"""The Docker engine for `make sam-local`: reach it (or start dockerd, as root, and stop it again by PID), run
the docker CLI, and a network made for one run, removed with every container on it.

Traffic stays on that network: it is created `--internal` (no route out), and its gateway is this machine's
address on it, where the run's stand-ins listen for its containers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ENGINE_START_TIMEOUT = 60.0
ENGINE_STOP_TIMEOUT = 30.0
COMMAND_TIMEOUT = 120.0


class Unavailable(Exception):
    """No Docker engine can be had here; the message says why."""


class DockerFailed(Exception):
    """A docker command failed; the message carries what it said."""


def docker(*args: str, timeout: float = COMMAND_TIMEOUT, stdin: bytes | None = None) -> str:
    """Run `docker args...`; its standard output, stripped, or DockerFailed."""
    cli = shutil.which("docker")
    if cli is None:
        raise Unavailable("the docker command is not installed (Debian: apt-get install docker.io)")
    try:
        completed = subprocess.run(  # noqa: S603
            [cli, *args], input=stdin, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise DockerFailed(f"docker {' '.join(args[:3])} took longer than {timeout:.0f} s") from None
    if completed.returncode != 0:
        said = (completed.stderr or completed.stdout).decode(errors="replace").strip()
        raise DockerFailed(f"docker {' '.join(args[:3])} exited with {completed.returncode}: {said[-1500:]}")
    return completed.stdout.decode(errors="replace").strip()


def engine_version() -> str | None:
    """The engine's version, or None when no engine answers."""
    try:
        return docker("version", "--format", "{{.Server.Version}}", timeout=20.0) or None
    except (DockerFailed, Unavailable):
        return None


@contextlib.contextmanager
def engine(workdir: Path) -> Iterator[str]:
    """A Docker engine for the block: the running one, or dockerd started here (root only) and stopped after."""
    if shutil.which("docker") is None:
        raise Unavailable("the docker command is not installed (Debian: apt-get install docker.io)")
    version = engine_version()
    if version is not None:
        yield version
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        raise Unavailable(
            "no Docker engine answers and none can be started here (dockerd missing, or not root): "
            "start Docker, or as root apt-get install docker.io"
        )
    log_path = workdir / "dockerd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603
            [dockerd], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        print(f"  - started dockerd (PID {process.pid}); it is stopped at the end", flush=True)
        deadline = time.monotonic() + ENGINE_START_TIMEOUT
        while (version := engine_version()) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-1500:]
                raise Unavailable(f"dockerd did not start:\n{tail}")
            time.sleep(0.5)
        yield version
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM dockerd (it stops its containerd), wait, SIGKILL its process group if it hangs."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(ENGINE_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(ENGINE_STOP_TIMEOUT)


@dataclass(frozen=True)
class Network:
    name: str
    gateway: str
    """This machine's address on the network: where the stand-ins listen."""


@contextlib.contextmanager
def network(name: str) -> Iterator[Network]:
    """An internal bridge network for one run; on the way out, every container on it and then it are removed."""
    docker("network", "create", "--internal", "--label", "kickout.sam-local=run", name)
    try:
        gateway = docker("network", "inspect", "--format", "{{(index .IPAM.Config 0).Gateway}}", name)
        if not gateway:
            raise DockerFailed(f"network {name} has no gateway address")
        yield Network(name=name, gateway=gateway)
    finally:
        remove_network(name)


def remove_network(name: str) -> None:
    with contextlib.suppress(DockerFailed):
        left = docker("ps", "--all", "--quiet", "--filter", f"network={name}").split()
        if left:
            docker("rm", "--force", *left)
    with contextlib.suppress(DockerFailed):
        docker("network", "rm", name)
