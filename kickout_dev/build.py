"""What running the built function on this machine needs, and the build: `make build` for this machine's
architecture (sam build, wheels from .wheelhouse) into .aws-sam/local, and what template.yaml says of the function.

Used by `local_lambda` (make local, make demo), `sam_docker` (make sam-local) and the package tests.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kickout_dev.processes import stop_group

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
DEFAULT_BUILD_DIR = ROOT / ".aws-sam" / "local"
FUNCTION = "KickoutFunction"
INSTALL_TIMEOUT = 900.0
BUILD_TIMEOUT = 600.0


class Unavailable(Exception):
    """This machine cannot run the built function under the emulator; the message says what is missing."""


class BuildFailed(Exception):
    """`make build` failed or produced no function; the message carries the end of its output."""


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


def build(tools: Tools, build_dir: Path = DEFAULT_BUILD_DIR) -> Path:
    """`make build` for this machine's architecture; the function's artifact directory."""
    return build_for(tools.arch, build_dir, make=tools.make)


def build_for(arch: str, build_dir: Path, *, make: str = "make") -> Path:
    """`make build` for `arch` into `build_dir` (also make bench's, which needs no emulator); the artifact directory."""
    _run_to_end(
        [make, "-C", str(ROOT), "--no-print-directory", "build", f"BUILD_DIR={build_dir}", f"LAMBDA_ARCH={arch}"],
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
