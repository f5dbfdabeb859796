"""The built function run as Lambda runs it, on this machine, without Docker: `sam local invoke` done with
processes.

    python -m kickout_dev.local_lambda                    # the demo's cases: every file of events/, and more
    python -m kickout_dev.local_lambda events/api.json    # some event files
    python -m kickout_dev.local_lambda --serve            # keep it up behind POST http://127.0.0.1:3000/kickouts

1. `make build` (sam build, makefile build method, wheels for this machine's architecture) into .aws-sam/local
   (kickout_dev.build).
2. A moto server for Secrets Manager, SQS and DynamoDB and the ZIM stand-in, both on 127.0.0.1; the secret, the
   queues and the state table are created there.
3. The Lambda Runtime Interface Emulator that ships with the SAM CLI running the artifact alone with awslambdaric
   (kickout_dev.emulator); the demo's cases, and how each is told, are kickout_dev.command's.

Everything started here is stopped by PID when it ends, also on Ctrl-C or an error. Exit status 69
(EX_UNAVAILABLE) says this machine cannot do it (not Linux, no python3.13, no SAM CLI): `make demo` then falls
back to the in-process demo.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kickout_dev.build import (
    DEFAULT_BUILD_DIR,
    ROOT,
    BuildFailed,
    Tools,
    Unavailable,
    build,
    find_tools,
    function_config,
)
from kickout_dev.command import (
    EX_UNAVAILABLE,
    demo_cases,
    describe,
    file_cases,
    port_number,
    run_cases,
    run_loop,
    run_tool,
    summary,
)
from kickout_dev.emulator import (
    CALLBACKS_HANDLER,
    HANDLER,
    Emulator,
    Invocation,
    lambda_environment,
    runtime_client_path,
    xray_marker_removed,
)
from kickout_dev.processes import (
    MotoServer,
    loopback_unreachable,
)
from kickout_dev.queues import drained
from kickout_dev.sandbox import APP_ID, SECRET_NAME, SERVER_SECRET, create_state_table, function_environment
from kickout_dev.zim_server import ZimStandIn

DEFAULT_SERVE_PORT = 3000
"""`sam local start-api`'s port."""


@dataclass
class Stack:
    """The built function under the emulator, with its ZIM stand-in and its AWS (a moto server)."""

    zim: ZimStandIn
    moto: MotoServer
    emulator: Emulator
    secret_arn: str
    dlq_url: str
    environ: dict[str, str] = field(repr=False)
    callbacks: Emulator | None = None
    """ZIM's callbacks' function, behind `front` (POST /zego/callbacks), which the stand-in calls back."""
    queue_url: str = ""
    callbacks_seen: list[Invocation] = field(default_factory=list)

    def invoke(self, event: Any) -> Invocation:
        return self.emulator.invoke(event)

    def parked(self) -> list[dict[str, Any]]:
        """Every message in the dead-letter queue, received and deleted."""
        return drained(self.moto.sqs(), self.dlq_url)


@contextlib.contextmanager
def running(
    tools: Tools, artifact: Path, *, rooms: dict[str, set[str]] | None = None, callbacks: bool = False
) -> Iterator[Stack]:
    """Start the moto server, the ZIM stand-in and the emulator (with `callbacks`, a second one for ZIM's callbacks
    behind a loopback front the stand-in calls back); stop all of them on the way out."""
    config = function_config()
    with (
        tempfile.TemporaryDirectory(prefix="kickout-local-") as scratch,
        xray_marker_removed(),
        contextlib.ExitStack() as started,
    ):
        workdir = Path(scratch)
        moto = started.enter_context(MotoServer(workdir))
        zim = started.enter_context(ZimStandIn(APP_ID, SERVER_SECRET, rooms=rooms))
        secret_arn = moto.secretsmanager().create_secret(
            Name=SECRET_NAME, SecretString=json.dumps({"ServerSecret": SERVER_SECRET})
        )["ARN"]
        dlq_url = moto.sqs().create_queue(QueueName="kickout-dlq")["QueueUrl"]
        queue_url = moto.sqs().create_queue(QueueName="kickout-queue")["QueueUrl"]
        create_state_table(moto.dynamodb())
        environ = function_environment(
            endpoint=zim.url,
            secret_arn=secret_arn,
            dlq_url=dlq_url,
            queue_url=queue_url,
            rate_limit_per_second=config.rate_limit_per_second,
        )
        environ["POWERTOOLS_LOG_LEVEL"] = config.log_level
        environ |= lambda_environment(
            artifact=artifact,
            runtime_path=runtime_client_path(workdir / "runtime"),
            config=config,
            aws_endpoint=moto.url,
            workdir=workdir,
        )
        emulator = started.enter_context(Emulator(tools, artifact, environ, workdir, config.timeout))
        stack = Stack(
            zim=zim,
            moto=moto,
            emulator=emulator,
            secret_arn=secret_arn,
            dlq_url=dlq_url,
            environ=environ,
            queue_url=queue_url,
        )
        if callbacks:
            from kickout_dev.local_http import LocalApi

            stack.callbacks = started.enter_context(
                Emulator(tools, artifact, environ, workdir, config.timeout, handler=CALLBACKS_HANDLER)
            )

            def call_back(event: dict[str, Any]) -> Any:
                assert stack.callbacks is not None
                invocation = stack.callbacks.invoke(event)
                stack.callbacks_seen.append(invocation)
                return invocation.response

            front = started.enter_context(LocalApi(call_back))
            zim.callback_url = f"{front.url}/zego/callbacks"
        yield stack


def serve(stack: Stack, port: int) -> int:
    from kickout_dev.local_http import LocalApi

    def invoke(event: dict[str, Any]) -> Any:
        callbacks = stack.callbacks if event["path"] == "/zego/callbacks" else None
        invocation = callbacks.invoke(event) if callbacks is not None else stack.invoke(event)
        print(f"\n▶ {event['httpMethod']} {event['path']} ({invocation.seconds * 1000:.0f} ms)", flush=True)
        for line in describe(invocation):
            print(f"  {line}", flush=True)
        return invocation.response

    try:
        api = LocalApi(invoke, port=port).start()
    except OSError as error:
        print(f"local_lambda: cannot listen on 127.0.0.1:{port} ({error}); try --port 0", file=sys.stderr)
        return 1
    try:
        print(f"\nPOST {api.url}/kickouts reaches the built function (Ctrl-C stops everything), and")
        print(f"POST {api.url}/zego/callbacks its callbacks' handler (ZIM's signed callbacks). Try:\n")
        print(
            f"  curl -s -X POST {api.url}/kickouts -H 'Content-Type: application/json' "
            """-d '{"room_id":"lobby-7","user_ids":["spammer_01"],"reason":"spam"}'\n""",
            flush=True,
        )
        while stack.emulator.alive():
            time.sleep(0.5)
    finally:
        api.stop()
    print("local_lambda: the Runtime Interface Emulator stopped", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kickout_dev.local_lambda",
        description="Build the function and run it under the Lambda Runtime Interface Emulator, without Docker.",
        allow_abbrev=False,
    )
    parser.add_argument("events", nargs="*", help="event files to invoke (default: the demo's cases from events/)")
    parser.add_argument("--serve", action="store_true", help="then keep it up behind POST /kickouts on 127.0.0.1")
    parser.add_argument(
        "--port", type=port_number, default=DEFAULT_SERVE_PORT, help="port for --serve (0: any free one)"
    )
    parser.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR)
    return run_tool("local_lambda", _main, parser.parse_args(argv), stopped="everything it started is stopped")


def _main(args: argparse.Namespace) -> int:
    if reason := loopback_unreachable():
        print(f"local_lambda: {reason}", file=sys.stderr)
        return 1
    try:
        tools = find_tools()
    except Unavailable as error:
        print(f"local_lambda: cannot run the built function here: {error}", file=sys.stderr)
        return EX_UNAVAILABLE
    cases = file_cases(args.events) if args.events else ([] if args.serve else demo_cases())
    print("kickout, built and run as Lambda runs it (no Docker):")
    began = time.monotonic()
    try:
        artifact = build(tools, args.build_dir.resolve())
    except BuildFailed as error:
        print(f"local_lambda: the build failed: {error}", file=sys.stderr)
        return 1
    print(f"  - make build (sam build, {tools.arch} wheels from .wheelhouse) in {time.monotonic() - began:.1f} s")
    print(f"    -> {artifact.relative_to(ROOT) if artifact.is_relative_to(ROOT) else artifact}")
    with running(tools, artifact, callbacks=not args.events) as stack:
        print(
            f"  - Lambda Runtime Interface Emulator from the SAM CLI on 127.0.0.1:{stack.emulator.port} "
            f"(up in {stack.emulator.started_in:.2f} s), running {Path(tools.python).name} -S -m awslambdaric {HANDLER}"
        )
        print("    on the artifact alone (not src/, not the .venv)")
        print(f"  - a ZIM server stand-in on {stack.zim.url} that checks signatures and parameters as ZEGO does")
        print(f"  - Secrets Manager and SQS in a moto server on {stack.moto.url}")
        if stack.callbacks is not None:
            print(
                f"  - ZIM's callbacks: {CALLBACKS_HANDLER} under a second emulator on 127.0.0.1:"
                f"{stack.callbacks.port}, behind {stack.zim.callback_url}"
            )
        ok = run_cases(stack.invoke, cases)
        if cases and stack.callbacks is not None:
            ok = run_loop(stack.invoke, stack.zim, stack.callbacks_seen, stack.moto.sqs(), stack.queue_url) and ok
        if cases:
            ok = summary(stack.zim, stack.parked(), parked_expected=None if args.events else 1) and ok
            print("\nevery event handled as expected" if ok else "\nlocal_lambda: UNEXPECTED RESULT")
        if args.serve:
            return serve(stack, args.port)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
