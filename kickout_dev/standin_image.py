"""A stand-in for Lambda's Python 3.13 base image, built here from distribution packages, for `sam local invoke
--invoke-image` where AWS's image cannot be pulled (no container registry is reachable here).

    python -m kickout_dev.standin_image      # build it, unless an image of the same recipe is there already

What it holds, as AWS's image lays it out:
- a Debian trixie root filesystem (mmdebstrap, `essential` variant) with Debian's python3.13 and the libraries it
  links, /var/lang/bin/python3.13 pointing at it;
- /var/runtime: awslambdaric (the runtime interface client) and boto3, pinned as this repository pins them;
- /var/runtime/bootstrap, which runs `python3.13 -m awslambdaric $_HANDLER` in /var/task, and
  /lambda-entrypoint.sh, which runs it under the Runtime Interface Emulator when no Runtime API is given;
- /usr/local/bin/aws-lambda-rie: the emulator binary that ships in the SAM CLI.

SAM CLI adds its own copy of the emulator on top (`FROM <image>`, `ADD aws-lambda-rie /var/rapid/`, RUN mv and
chmod, so the image needs a shell, mv and chmod) and starts `/var/rapid/aws-lambda-rie`, which runs
/var/runtime/bootstrap. Named as this project's (never under AWS's name); labelled with the hash of its recipe, so
a changed recipe builds anew and an unchanged one is reused.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from kickout_dev.docker_engine import DockerFailed, Unavailable, docker

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "kickout/lambda-python3.13-standin:local"
RECIPE_LABEL = "kickout.standin.recipe"
SUITE = "trixie"
PACKAGES = ("python3.13", "libstdc++6")
"""Debian's python3.13 (with the libraries it links), and the C++ runtime awslambdaric's native part links."""
MIRROR = os.environ.get("KICKOUT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_ARCH = {"x86_64": "amd64", "arm64": "arm64"}
PIP_PLATFORM = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
BUILD_TIMEOUT = 900.0
TRUST_STORE = "usr/lib/ssl/cert.pem"
"""OpenSSL's default CA file in Debian (ssl.get_default_verify_paths()): what the function's urllib3 trusts."""

BOOTSTRAP = """#!/bin/sh
# kickout's stand-in for the python3.13 runtime's bootstrap: the runtime interface client runs the handler.
export AWS_EXECUTION_ENV=AWS_Lambda_python3.13
export PYTHONPATH=/var/runtime
cd "${LAMBDA_TASK_ROOT:-/var/task}" || exit 1
exec /var/lang/bin/python3.13 -m awslambdaric "${_HANDLER:-$AWS_LAMBDA_FUNCTION_HANDLER}"
"""

ENTRYPOINT = """#!/bin/sh
# As in AWS's base images: the handler is the one argument; without a Runtime API, run under the emulator.
if [ $# -ne 1 ]; then
  echo "entrypoint requires the handler name to be the first argument" 1>&2
  exit 142
fi
export _HANDLER="$1"
if [ -z "${AWS_LAMBDA_RUNTIME_API}" ]; then
  exec /usr/local/bin/aws-lambda-rie /var/runtime/bootstrap
else
  exec /var/runtime/bootstrap
fi
"""

IMAGE_CONFIG = (
    "ENV LANG=C.UTF-8",
    "ENV TZ=:/etc/localtime",
    "ENV PATH=/var/lang/bin:/usr/local/bin:/usr/bin:/bin",
    "ENV LAMBDA_TASK_ROOT=/var/task",
    "ENV LAMBDA_RUNTIME_DIR=/var/runtime",
    "WORKDIR /var/task",
    'ENTRYPOINT ["/lambda-entrypoint.sh"]',
)


def runtime_requirements() -> list[str]:
    """awslambdaric as the dev environment pins it, boto3 as the function pins it."""
    dev = (ROOT / "requirements-dev.txt").read_text()
    function = (ROOT / "src" / "requirements.txt").read_text()
    ric = re.search(r"^awslambdaric==([\w.]+)", dev, re.MULTILINE)
    boto3 = re.search(r"^boto3==([\w.]+)", function, re.MULTILINE)
    if ric is None or boto3 is None:
        raise RuntimeError("awslambdaric (requirements-dev.txt) or boto3 (src/requirements.txt) is not pinned")
    return [f"awslambdaric=={ric.group(1)}", f"boto3=={boto3.group(1)}"]


def emulator_binary(arch: str) -> Path:
    """The Runtime Interface Emulator that ships in the SAM CLI of .venv-sam."""
    found = subprocess.run(  # noqa: S603
        [str(ROOT / ".venv-sam" / "bin" / "python"), "-c", "import samcli, sys; print(samcli.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout.strip()
    rie = Path(found).parent / "local" / "rapid" / f"aws-lambda-rie-{arch}"
    if not found or not rie.is_file():
        raise Unavailable(f"the SAM CLI in .venv-sam has no Runtime Interface Emulator for {arch} (make sam)")
    return rie


def recipe(arch: str, rie: Path) -> str:
    """A hash of everything the image is made of: a change to any part builds it anew."""
    digest = hashlib.sha256()
    for part in (SUITE, *PACKAGES, arch, BOOTSTRAP, ENTRYPOINT, *IMAGE_CONFIG, *runtime_requirements()):
        digest.update(part.encode() + b"\0")
    digest.update(hashlib.sha256(rie.read_bytes()).digest())
    return digest.hexdigest()[:24]


def current_recipe(image: str = IMAGE) -> str | None:
    try:
        return docker("image", "inspect", "--format", f'{{{{index .Config.Labels "{RECIPE_LABEL}"}}}}', image)
    except DockerFailed:
        return None


def ensure(arch: str, *, log: Path | None = None) -> tuple[str, float]:
    """The stand-in image for `arch`, built unless one of the same recipe is there; (image, seconds spent)."""
    rie = emulator_binary(arch)
    wanted = recipe(arch, rie)
    if current_recipe() == wanted:
        return IMAGE, 0.0
    began = time.monotonic()
    previous = _image_id(IMAGE)
    with tempfile.TemporaryDirectory(prefix="kickout-standin-") as scratch:
        build(arch, rie, wanted, Path(scratch), log)
    if previous and previous != _image_id(IMAGE):
        with contextlib.suppress(DockerFailed):  # the older recipe's image, untagged by the new one
            docker("rmi", previous)
    return IMAGE, time.monotonic() - began


def _image_id(image: str) -> str | None:
    try:
        return docker("image", "inspect", "--format", "{{.Id}}", image)
    except DockerFailed:
        return None


def build(arch: str, rie: Path, recipe_hash: str, workdir: Path, log: Path | None = None) -> None:
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise Unavailable("mmdebstrap is not installed (Debian: apt-get install mmdebstrap)")
    stage = workdir / "stage"
    _stage(stage, arch, rie)
    rootfs = workdir / "rootfs.tar"
    log_path = log or workdir / "mmdebstrap.log"
    with log_path.open("wb") as output:
        completed = subprocess.run(  # noqa: S603
            [
                mmdebstrap,
                "--variant=essential",
                f"--architectures={DEBIAN_ARCH[arch]}",
                f"--include={','.join(PACKAGES)}",
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                f"--customize-hook=sync-in {stage} /",
                SUITE,
                str(rootfs),
                MIRROR,
            ],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    if completed.returncode != 0:
        said = log_path.read_text(errors="replace")
        if re.search(r"Failed to fetch|Could not resolve|Temporary failure|Unable to connect|Connection failed", said):
            raise Unavailable(f"the Debian mirror {MIRROR} cannot be reached:\n{said[-1200:]}")
        raise DockerFailed(f"mmdebstrap exited with {completed.returncode}:\n{said[-2000:]}")
    changes = [argument for change in IMAGE_CONFIG for argument in ("--change", change)]
    changes += ["--change", f"LABEL {RECIPE_LABEL}={recipe_hash}"]
    docker("import", *changes, str(rootfs), IMAGE, timeout=BUILD_TIMEOUT)


def _stage(stage: Path, arch: str, rie: Path) -> None:
    """What goes on top of Debian: /var/runtime (with the bootstrap), the entrypoint, the emulator."""
    runtime = stage / "var" / "runtime"
    installed = subprocess.run(  # noqa: S603
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(runtime),
            "--platform",
            PIP_PLATFORM[arch],
            "--implementation",
            "cp",
            "--python-version",
            "3.13",
            "--only-binary=:all:",
            *runtime_requirements(),
        ],
        check=False,
        timeout=BUILD_TIMEOUT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if installed.returncode != 0:
        raise DockerFailed(f"pip could not install the runtime's packages:\n{installed.stderr[-2000:]}")
    (runtime / "bootstrap").write_text(BOOTSTRAP)
    (stage / "lambda-entrypoint.sh").write_text(ENTRYPOINT)
    (stage / "usr" / "local" / "bin").mkdir(parents=True)
    shutil.copyfile(rie, stage / "usr" / "local" / "bin" / "aws-lambda-rie")
    (stage / "var" / "lang" / "bin").mkdir(parents=True)
    (stage / "var" / "lang" / "bin" / "python3.13").symlink_to("/usr/bin/python3.13")
    (stage / "var" / "lang" / "bin" / "python3").symlink_to("python3.13")
    (stage / "var" / "task").mkdir()
    for executable in (runtime / "bootstrap", stage / "lambda-entrypoint.sh", stage / "usr/local/bin/aws-lambda-rie"):
        executable.chmod(0o755)


@contextlib.contextmanager
def trusting(base: str, ca_pem: bytes, name: str) -> Iterator[str]:
    """`base` with `ca_pem` as the only certificate authority it trusts, as image `name`, for one run.

    On the way out it is removed, with the image SAM CLI builds from it (`<repository>:rapid-<arch>`).
    """
    container = docker("create", base)
    try:
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            entry = tarfile.TarInfo(TRUST_STORE)
            entry.size, entry.mode, entry.mtime = len(ca_pem), 0o644, int(time.time())
            tar.addfile(entry, io.BytesIO(ca_pem))
        docker("cp", "-", f"{container}:/", stdin=archive.getvalue())
        docker("commit", container, name)
    finally:
        docker("rm", "--force", container)
    try:
        yield name
    finally:
        repository = name.rsplit(":", 1)[0]
        for _ in range(2):  # SAM's image first: its parent cannot go while it is there
            for tag in docker("images", "--format", "{{.Repository}}:{{.Tag}}", repository).split():
                with contextlib.suppress(DockerFailed):
                    docker("rmi", tag)
        # SAM CLI's lock files for building that image, named after it (samcli.local.common.file_lock)
        for lock in Path(tempfile.gettempdir()).glob(f"{repository.replace('/', '_')}_*.building*"):
            lock.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    from kickout_dev.build import host_arch

    argparse.ArgumentParser(
        prog="python -m kickout_dev.standin_image",
        description="Build the stand-in for Lambda's python3.13 base image, unless one of the same recipe is there.",
        allow_abbrev=False,
    ).parse_args(argv)
    arch = host_arch()
    try:
        image, seconds = ensure(arch)
    except Unavailable as error:
        print(f"standin_image: cannot build it here: {error}", file=sys.stderr)
        return 69
    print(f"{image} ({arch}): " + (f"built in {seconds:.0f} s" if seconds else "already there, same recipe"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
