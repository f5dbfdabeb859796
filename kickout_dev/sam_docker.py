"""The built function the usual SAM way, in Docker: `sam local invoke` on each event and `sam local start-api`,
offline, with no AWS account. `make sam-local` runs it.

    python -m kickout_dev.sam_docker                   # the demo's cases (every file of events/, and more)
    python -m kickout_dev.sam_docker events/api.json   # some event files
    python -m kickout_dev.sam_docker --serve           # sam local start-api on 127.0.0.1:3000, for curl

1. A Docker engine: the running one, or dockerd started here (as root) and stopped at the end by its PID.
2. The stand-in for Lambda's Python 3.13 base image (kickout_dev.standin_image), built once from Debian packages.
3. `make build` for this machine's architecture (template parameter FunctionArchitecture, wheels to match).
4. An internal Docker network made for this run. On its gateway (this machine's address on it, reached by the
   function's containers and nothing else) listen a moto server (Secrets Manager, SQS, DynamoDB) as
   kickout-aws:5000 and the ZIM stand-in, over https, as kickout-zim:8443. The names come from `--add-host`; the
   function is pointed at them by `--env-vars kickout_dev/sam_local_env.json`. The ZIM stand-in's certificate is
   signed by an authority made for this run, which a copy of the base image trusts alone (`--invoke-image`).
5. `sam local invoke KickoutFunction -e <event> ...` per case, or `sam local start-api`.

On the way out, even on failure or Ctrl-C: SAM CLI stopped by PID, every container on the network removed, the
network and the run's images removed, dockerd stopped if it was started here. The base-image stand-in is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kickout_dev import standin_image
from kickout_dev.build import FUNCTION, ROOT, BuildFailed, Tools, build, find_tools
from kickout_dev.build import Unavailable as ToolsUnavailable
from kickout_dev.command import EX_UNAVAILABLE, Case, demo_cases, file_cases, port_number, run_cases, run_tool, summary
from kickout_dev.docker_engine import DockerFailed, Network, Unavailable, engine, network
from kickout_dev.emulator import Invocation, split_output
from kickout_dev.events import EVENTS_DIR
from kickout_dev.local_tls import run_authority
from kickout_dev.processes import MotoServer, listening
from kickout_dev.queues import drained
from kickout_dev.sandbox import APP_ID, REGION, SECRET_NAME, SERVER_SECRET, STATE_TABLE, create_state_table
from kickout_dev.zim_server import ZimStandIn

ENV_FILE = ROOT / "kickout_dev" / "sam_local_env.json"
DEFAULT_BUILD_DIR = ROOT / ".aws-sam" / "sam-local"
SAM_CLI_HOME = ROOT / ".venv-sam" / "sam-cli-home"
"""SAM CLI's settings folder (installation id, layer cache): the Makefile's __SAM_CLI_APP_DIR."""
AWS_HOST, AWS_PORT = "kickout-aws", 5000
ZIM_HOST, ZIM_PORT = "kickout-zim", 8443
SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:{SECRET_NAME}-AbCdEf"
"""The template's ZegoSecretArn (required); ZEGO_SECRET_ID is overridden by the env file with the secret's name."""
DLQ_NAME = "kickout-dlq"
QUEUE_NAME = "kickout-queue"
"""Where the function sends again what a batch had no time for (KICKOUT_QUEUE_URL in sam_local_env.json)."""
INVOKE_TIMEOUT = 300.0
"""One `sam local invoke`: SAM CLI starts, builds its image on the first call, runs one container."""
API_START_TIMEOUT = 180.0
STOP_TIMEOUT = 20.0
DEFAULT_SERVE_PORT = 3000


@dataclass(frozen=True)
class DockerStack:
    """The built function as SAM CLI runs it in Docker, with its stand-ins on the run's network."""

    tools: Tools
    template: Path
    network: Network
    image: str
    zim: ZimStandIn
    moto: MotoServer
    dlq_url: str
    workdir: Path

    def sam_options(self) -> list[str]:
        """What every `sam local` command of the run takes, after its own arguments."""
        return [
            "--template",
            str(self.template),
            "--env-vars",
            str(ENV_FILE.relative_to(ROOT)),
            "--parameter-overrides",
            f"ZegoAppId={APP_ID} ZegoSecretArn={SECRET_ARN} FunctionArchitecture={self.tools.arch}",
            "--region",
            REGION,
            "--docker-network",
            self.network.name,
            "--add-host",
            f"{AWS_HOST}:{self.network.gateway}",
            "--add-host",
            f"{ZIM_HOST}:{self.network.gateway}",
            "--invoke-image",
            self.image,
            "--skip-pull-image",
        ]

    def invoke_command(self, event_file: Path) -> list[str]:
        return [str(sam()), "local", "invoke", FUNCTION, "--event", str(event_file), *self.sam_options()]

    def invoke(self, event: Any) -> Invocation:
        """`sam local invoke` on the event (its file in events/ when it is one): a new container, a cold start."""
        began = time.monotonic()
        command = self.invoke_command(self.event_file(event))
        try:
            completed = subprocess.run(  # noqa: S603
                command,
                cwd=ROOT,
                env=sam_environment(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=INVOKE_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            response: Any = {"errorType": "Sam.Timeout", "errorMessage": f"took over {INVOKE_TIMEOUT:.0f} s"}
            return Invocation(response=response, logs=[], other=[], request_id="", seconds=INVOKE_TIMEOUT)
        seconds = time.monotonic() - began
        return parse_invocation(completed.returncode, completed.stdout, completed.stderr, seconds)

    def event_file(self, event: Any) -> Path:
        for path in sorted(EVENTS_DIR.glob("*.json")):
            if json.loads(path.read_text()) == event:
                return path.relative_to(ROOT)
        written = self.workdir / f"event-{time.monotonic_ns()}.json"
        written.write_text(json.dumps(event))
        return written

    def parked(self) -> list[dict[str, Any]]:
        return drained(self.moto.sqs(), self.dlq_url)


def parse_invocation(returncode: int, stdout: str, stderr: str, seconds: float) -> Invocation:
    """What `sam local invoke` printed, as an Invocation: the response on stdout; on stderr, the function's output
    from the container's start (SAM CLI's "SAM_CONTAINER_ID:" line) to the emulator's END line. The emulator's
    START line may come before SAM CLI attached to the container's output, so it does not mark the start."""
    try:
        response: Any = json.loads(stdout) if stdout.strip() else None
    except json.JSONDecodeError:
        response = None
    if response is None:
        response = {"errorType": f"Sam.Exit{returncode}", "errorMessage": (stderr or stdout)[-2000:]}
    printed: list[str] = []
    request_id, inside = "", False
    for line in stderr.split("\n"):
        if line.startswith("SAM_CONTAINER_ID:"):
            inside = True
        elif line.startswith(("END RequestId: ", "REPORT RequestId: ")):
            request_id, inside = line.split()[2], False
        elif inside and not line.startswith("START RequestId: "):
            printed.append(line)
    logs, other = split_output(printed)
    return Invocation(response=response, logs=logs, other=other, request_id=request_id, seconds=seconds)


def sam() -> Path:
    """The SAM CLI of .venv-sam through scripts/sam, which sets what sam_environment() does: the command printed for
    a person to run again runs the same way."""
    return ROOT / "scripts" / "sam"


def sam_environment() -> dict[str, str]:
    """This environment, less what would reach AWS or override the env file: SAM CLI reads the shell for the
    function's variables too. Credentials are moto's fake ones; no telemetry; SAM CLI's settings in .venv-sam, not
    the user's home (as the Makefile has it)."""
    dropped = ("AWS_", "ZEGO_", "KICKOUT_", "POWERTOOLS_")
    environ = {name: value for name, value in os.environ.items() if not name.startswith(dropped)}
    return environ | {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "SAM_CLI_TELEMETRY": "0",
        "__SAM_CLI_APP_DIR": str(SAM_CLI_HOME),
    }


@contextlib.contextmanager
def docker_stack(tools: Tools, template: Path, workdir: Path) -> Iterator[DockerStack]:
    """Network, stand-ins, the run's image; all of it removed on the way out (the engine must be up)."""
    token = f"{os.getpid()}-{time.monotonic_ns() % 100000}"
    base, _ = standin_image.ensure(tools.arch)
    with contextlib.ExitStack() as started:
        net = started.enter_context(network(f"kickout-sam-local-{token}"))
        authority = run_authority(ZIM_HOST, workdir)
        image = started.enter_context(
            standin_image.trusting(base, authority.ca_pem, f"kickout/lambda-python3.13-run-{token}:local")
        )
        moto = started.enter_context(MotoServer(workdir, host=net.gateway, port=AWS_PORT))
        zim = ZimStandIn(APP_ID, SERVER_SECRET).listen_on(net.gateway, ZIM_PORT, authority.server_context)
        started.enter_context(zim)
        moto.secretsmanager().create_secret(Name=SECRET_NAME, SecretString=json.dumps({"ServerSecret": SERVER_SECRET}))
        dlq_url = moto.sqs().create_queue(QueueName=DLQ_NAME)["QueueUrl"]
        moto.sqs().create_queue(QueueName=QUEUE_NAME)
        create_state_table(moto.dynamodb(), STATE_TABLE)
        yield DockerStack(
            tools=tools,
            template=template,
            network=net,
            image=image,
            zim=zim,
            moto=moto,
            dlq_url=dlq_url,
            workdir=workdir,
        )


@contextlib.contextmanager
def start_api(stack: DockerStack, port: int) -> Iterator[str]:
    """`sam local start-api` on 127.0.0.1:`port`, one warm container; its URL. Stopped by PID on the way out."""
    log_path = stack.workdir / "start-api.log"
    command = [
        str(sam()),
        "local",
        "start-api",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--warm-containers",
        "EAGER",
        *stack.sam_options(),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603
            command, cwd=ROOT, env=sam_environment(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + API_START_TIMEOUT
        while not listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise DockerFailed(
                    f"sam local start-api did not start:\n{log_path.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        # SIGINT is SAM CLI's Ctrl-C: it removes its warm container; the network's removal catches any left.
        # (Started in the background of a script, SAM CLI inherits SIGINT ignored: then SIGTERM first.)
        order: tuple[signal.Signals, ...]
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            order = (signal.SIGTERM, signal.SIGKILL)
        else:
            order = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
        for sig in order:
            if process.poll() is not None:
                break
            process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(STOP_TIMEOUT)


def post_kickout(url: str, body: bytes) -> tuple[int, Any]:
    """POST /kickouts as curl would; (status, JSON answer)."""
    request = urllib.request.Request(  # noqa: S310 (loopback, built here)
        f"{url}/kickouts", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=INVOKE_TIMEOUT) as reply:  # noqa: S310
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


# --- the command -----------------------------------------------------------------------------------------------


def serve(stack: DockerStack, port: int) -> int:
    with start_api(stack, port) as url:
        print(f"\nsam local start-api: POST {url}/kickouts reaches the function in Docker (Ctrl-C stops all). Try:\n")
        print(
            f"  curl -s -X POST {url}/kickouts -H 'Content-Type: application/json' "
            """-d '{"room_id":"lobby-7","user_ids":["spammer_01"],"reason":"spam"}'\n""",
            flush=True,
        )
        while True:
            time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kickout_dev.sam_docker",
        description="Build the function and run it with sam local invoke / start-api in Docker, offline.",
        allow_abbrev=False,
    )
    parser.add_argument("events", nargs="*", help="event files to invoke (default: the demo's cases from events/)")
    parser.add_argument("--serve", action="store_true", help="then run sam local start-api on 127.0.0.1, for curl")
    parser.add_argument("--port", type=port_number, default=DEFAULT_SERVE_PORT, help="port for --serve")
    parser.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR)
    return run_tool(
        "sam_docker",
        _main,
        parser.parse_args(argv),
        stopped="everything it started is stopped and removed",
        unavailable=(Unavailable, "cannot run the function in Docker here"),
    )


def _main(args: argparse.Namespace) -> int:
    try:
        tools = find_tools()
    except ToolsUnavailable as error:
        print(f"sam_docker: cannot build the function here: {error}", file=sys.stderr)
        return EX_UNAVAILABLE
    cases: list[Case] = file_cases(args.events) if args.events else ([] if args.serve else demo_cases())
    print("kickout, built and run the usual SAM way, in Docker (offline, no AWS account):")
    with tempfile.TemporaryDirectory(prefix="kickout-sam-local-") as scratch, engine(Path(scratch)) as version:
        print(f"  - Docker engine {version}")
        began = time.monotonic()
        image, seconds = standin_image.ensure(tools.arch)
        built = f"built in {seconds:.0f} s" if seconds else "already built"
        print(f"  - {image}: the Lambda python3.13 base image's stand-in ({built}, {time.monotonic() - began:.0f} s)")
        began = time.monotonic()
        try:
            artifact = build(tools, args.build_dir.resolve())
        except BuildFailed as error:
            print(f"sam_docker: the build failed: {error}", file=sys.stderr)
            return 1
        print(f"  - make build LAMBDA_ARCH={tools.arch} (sam build) in {time.monotonic() - began:.1f} s")
        with docker_stack(tools, artifact.parent / "template.yaml", Path(scratch)) as stack:
            print(f"  - network {stack.network.name} (internal); on its gateway {stack.network.gateway}:")
            print(f"    moto (Secrets Manager, SQS, DynamoDB) as {AWS_HOST}:{AWS_PORT},")
            print(f"    the ZIM stand-in (https) as {ZIM_HOST}:{ZIM_PORT}")
            print(f"  - invoke image {stack.image}: the stand-in, trusting this run's certificate authority")
            ok = True
            if cases:
                print("\nEach case is one of these (one container each, a cold start each):")
                print("  " + shlex.join(stack.invoke_command(Path("events/direct.json"))))
                ok = run_cases(stack.invoke, cases)
                ok = summary(stack.zim, stack.parked(), parked_expected=None if args.events else 1) and ok
                print("\nevery event handled as expected" if ok else "\nsam_docker: UNEXPECTED RESULT")
            if args.serve:
                return serve(stack, args.port)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
