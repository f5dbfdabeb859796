"""The dev tools as a person meets them (kickout_dev/, benchmarks/): an unknown or abbreviated option is refused with
the tool's usage line, never taken for the option it resembles (`make local ARGS=--serv` is not `--serve`); counts
are said in words ("1 parked message", "0 parked messages")."""

from __future__ import annotations

import argparse
import ast
import importlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytest

from kickout_dev.command import summary
from kickout_dev.plural import counted
from kickout_dev.sandbox import APP_ID, SERVER_SECRET
from kickout_dev.zim_server import ZimStandIn

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*(ROOT / "kickout_dev").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")])


def argument_parsers(path: Path) -> list[ast.Call]:
    """Every `ArgumentParser(...)` (or `argparse.ArgumentParser(...)`) call in a source file."""
    return [
        node
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and "ArgumentParser" in (getattr(node.func, "attr", None), getattr(node.func, "id", None))
    ]


def refuses_abbreviations(call: ast.Call) -> bool:
    return any(
        keyword.arg == "allow_abbrev" and isinstance(keyword.value, ast.Constant) and keyword.value.value is False
        for keyword in call.keywords
    )


def test_every_argument_parser_of_the_dev_tools_and_benchmarks_refuses_abbreviations() -> None:
    # GIVEN every ArgumentParser built in kickout_dev/ and benchmarks/
    built = {f"{path.relative_to(ROOT)}:{call.lineno}": call for path in SOURCES for call in argument_parsers(path)}
    assert len(built) >= 8
    # THEN each is told allow_abbrev=False (argparse's default takes any unambiguous prefix for the option)
    assert [where for where, call in built.items() if not refuses_abbreviations(call)] == []


class Accepted(Exception):
    """The tool's parser took the command line: the test fails here, before the tool does anything."""


_parse_args = argparse.ArgumentParser.parse_args


def _parse_then_stop(parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
    raise Accepted(_parse_args(parser, *args, **kwargs))


@pytest.mark.parametrize(
    ("module", "option"),
    [
        ("kickout_dev.local_lambda", "--serv"),
        ("kickout_dev.sam_docker", "--serv"),
        ("kickout_dev.demo", "--serve"),
        ("kickout_dev.openapi", "--chec"),
        ("kickout_dev.standin_image", "--rebuild"),
        ("benchmarks.run", "--cold"),
        ("benchmarks.fleet", "--rep"),
        ("benchmarks.outage", "--no"),
    ],
)
def test_a_dev_tool_refuses_an_abbreviated_or_unknown_option_with_its_usage_line(
    module: str, option: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a tool's command line with an option it does not have, or the start of one it has
    monkeypatch.setattr(sys, "argv", [module, option])
    # (a command line the tool accepts stops right there: the tool itself, a server or the bench, never runs)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", _parse_then_stop)
    # WHEN the tool starts
    with pytest.raises(SystemExit) as exited:
        importlib.import_module(module).main()
    # THEN it stops before doing anything, as argparse does for a usage error: its usage line and the option named
    assert exited.value.code == 2
    said = capsys.readouterr().err
    assert said.startswith("usage: ")
    assert said.rstrip().endswith(f"error: unrecognized arguments: {option}")


@pytest.mark.parametrize(
    ("count", "said"), [(0, "0 parked messages"), (1, "1 parked message"), (2, "2 parked messages")]
)
def test_a_count_takes_its_noun_in_the_plural_unless_it_is_one(count: int, said: str) -> None:
    assert counted(count, "parked message") == said


@pytest.mark.parametrize(
    ("parked", "line"),
    [
        (0, "The dead-letter queue holds 0 parked messages:"),
        (1, "The dead-letter queue holds 1 parked message:"),
        (2, "The dead-letter queue holds 2 parked messages:"),
    ],
)
def test_the_demos_summary_counts_parked_messages_and_signed_requests_in_words(
    parked: int, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a ZIM stand-in that accepted nothing, and `parked` messages in the dead-letter queue
    message = {
        "Body": "{}",
        "MessageAttributes": {
            "KickoutFailure": {"StringValue": "invalid_payload"},
            "KickoutDetail": {"StringValue": "room_id: missing"},
        },
    }
    # WHEN the demo sums up
    summary(ZimStandIn(APP_ID, SERVER_SECRET), [message] * parked, parked_expected=parked)
    # THEN the counts are said as words are: no "(s)"
    printed = capsys.readouterr().out
    assert line in printed.splitlines()
    assert "accepted 0 signed requests and refused 0:" in printed
    assert "(s)" not in printed


UNSHARE = shutil.which("unshare")


def _can_unshare_the_network() -> bool:
    if UNSHARE is None:
        return False
    try:
        return subprocess.run([UNSHARE, "-n", "true"], capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


PROBE = """
import socket
from kickout_dev.processes import loopback_unreachable
print("loopback:", loopback_unreachable() or "up")
try:
    socket.create_connection(("192.0.2.1", 443), timeout=5).close()  # TEST-NET-1: a host off this machine
    print("network: reached")
except OSError as error:
    print("network:", error.strerror)
"""


def _probe(*wrapper: str) -> list[str]:
    done = subprocess.run(
        [*wrapper, sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )
    return done.stdout.splitlines()


@pytest.mark.skipif(not _can_unshare_the_network(), reason="no network namespace here (unshare -n refused)")
def test_scripts_offline_leaves_loopback_alone_reachable_where_a_bare_unshare_leaves_nothing() -> None:
    # GIVEN a probe that reaches for loopback and for a host off this machine
    # WHEN it runs under scripts/offline, and under a bare `unshare -n`
    offline = _probe(str(ROOT / "scripts" / "offline"))
    bare = _probe(str(UNSHARE), "-n")
    # THEN offline, loopback answers and nothing else does
    assert offline == ["loopback: up", "network: Network is unreachable"]
    # AND in the bare namespace, the tools say why nothing on 127.0.0.1 answers, in one line
    assert "loopback is down, as in a bare `unshare -n`" in bare[0]
