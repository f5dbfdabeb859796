"""The transport's bounds on a reply, against the ZIM stand-in on 127.0.0.1: the whole exchange within its timeout,
however slowly the reply arrives, and no more than a few KiB of it read, the connection then never reused.

The time bounds are generous (the timeout plus a second): they say "bounded by the timeout", not "fast".
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3

from handler.core.ports import TransportFailure
from handler.zego import transport, zim
from kickout_dev.local_tls import run_authority
from kickout_dev.sandbox import APP_ID, SERVER_SECRET
from kickout_dev.zim_server import Fault, ZimStandIn

TIMEOUT = 1.0
SLACK = 1.0
"""How far past its timeout a call may end (a loaded machine's scheduling), far less than any trickle here takes."""


@pytest.fixture
def zim_server() -> Iterator[ZimStandIn]:
    with ZimStandIn(APP_ID, SERVER_SECRET) as server:
        yield server


@pytest.fixture
def zim_server_over_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ZimStandIn]:
    """The stand-in speaking https as `localhost`, with a certificate the transport verifies (CERT_REQUIRED)."""
    authority = run_authority("localhost", tmp_path)
    (tmp_path / "ca.pem").write_bytes(authority.ca_pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # read by each new connection's TLS context
    with ZimStandIn(APP_ID, SERVER_SECRET).listen_on("127.0.0.1", 0, authority.server_context) as server:
        yield server


def kickout_url(server: ZimStandIn, user: str = "u1", *, host: str = "127.0.0.1") -> str:
    """A signed kickout URL for `server`, by the name `host` (the TLS certificate's is localhost)."""
    return zim.kickout_url(
        server.url.replace("://127.0.0.1:", f"://{host}:"),
        zim.KickoutCall("lobby-7", (user,)),
        app_id=APP_ID,
        server_secret=SERVER_SECRET,
        nonce=f"{time.monotonic_ns() & (2**64 - 1):016x}",
        timestamp=int(time.time()),
    )


def timed_send(url: str, timeout: float = TIMEOUT) -> tuple[TransportFailure | zim.Reply, float]:
    started = time.monotonic()
    try:
        reply = transport.send(url, timeout)
    except TransportFailure as failure:
        return failure, time.monotonic() - started
    assert reply.status == 200
    return zim.parse_reply(reply.body), time.monotonic() - started


def test_urllib3s_own_total_timeout_does_not_bound_a_trickled_reply(zim_server: ZimStandIn) -> None:
    # GIVEN a reply whose body comes a byte every 20 ms (~2 s for ZEGO's envelope)
    zim_server.script(Fault.trickle(0.02))
    # WHEN urllib3 alone reads it with a total timeout of 0.5 s
    started = time.monotonic()
    response = urllib3.PoolManager().request(
        "GET", kickout_url(zim_server), timeout=urllib3.Timeout(total=0.5), retries=False
    )
    elapsed = time.monotonic() - started
    # THEN it waits for the whole body, far past its "total": why the transport keeps its own deadline
    assert zim.parse_reply(response.data).code == 0
    assert elapsed > 2 * 0.5


@pytest.mark.parametrize("head", [False, True], ids=["body", "status line and headers"])
def test_a_trickled_reply_is_a_timeout_within_the_timeout(zim_server: ZimStandIn, head: bool) -> None:
    # GIVEN ZEGO kicks, then sends its answer a byte every 50 ms (~5 s): every read finds a byte in time
    zim_server.script(Fault.trickle(0.05, head=head))
    # WHEN it is sent with a timeout of 1 s
    outcome, elapsed = timed_send(kickout_url(zim_server))
    # THEN the call gives up as timed out, within the timeout (not after the 5 s the reply would take)
    assert isinstance(outcome, TransportFailure)
    assert outcome.timed_out
    assert elapsed <= TIMEOUT + SLACK
    assert [kickout.code for kickout in zim_server.kickouts] == [0]  # ZEGO did kick: retrying is harmless
    # AND the next call on the same pool gets its own answer
    again, _ = timed_send(kickout_url(zim_server, "u2"))
    assert isinstance(again, zim.Reply)
    assert again.code == 0


@pytest.mark.parametrize(
    "fault",
    [
        Fault.oversize(10_000_000),
        Fault.oversize(10_000_000, chunked=True),
        Fault.oversize(transport.MAX_BODY_BYTES + 1, chunked=True),
        Fault.huge_head(100_000),
    ],
    ids=["10 MB with its length", "10 MB chunked", "one byte over, chunked", "100 KB of headers"],
)
def test_a_reply_larger_than_an_answer_is_a_failure_and_its_connection_is_not_reused(
    zim_server: ZimStandIn, fault: Fault
) -> None:
    # GIVEN a warm connection to ZEGO
    assert isinstance(timed_send(kickout_url(zim_server))[0], zim.Reply)
    # WHEN the next reply is larger than ZEGO's envelope can be
    zim_server.script(fault)
    outcome, elapsed = timed_send(kickout_url(zim_server, "u2"))
    # THEN it is a transport failure, not a timeout, and the call did not wait for the rest of it
    assert isinstance(outcome, TransportFailure)
    assert not outcome.timed_out
    assert "larger than allowed" in str(outcome)
    assert elapsed <= TIMEOUT + SLACK
    # AND the connection holding the rest of it is not handed to the next call: that one connects afresh
    again, _ = timed_send(kickout_url(zim_server, "u3"))
    assert isinstance(again, zim.Reply)
    assert again.code == 0
    warm, faulted, fresh = zim_server.client_ports
    assert faulted == warm  # the faulted reply came on the kept-alive connection
    assert fresh != faulted


def test_a_body_of_exactly_the_limit_is_read_whole(zim_server: ZimStandIn) -> None:
    body = b'{"Code": 0, "Padding": "' + b" " * (transport.MAX_BODY_BYTES - 26) + b'"}'
    assert len(body) == transport.MAX_BODY_BYTES
    zim_server.script(Fault.body(body))
    reply = transport.send(kickout_url(zim_server), TIMEOUT)
    assert reply.body == body


def test_the_transport_reads_every_reply_zegos_parser_would_take() -> None:
    # the two limits belong to two layers (one knows no ZEGO); the parser's must fit in the transport's
    assert transport.MAX_BODY_BYTES >= zim.MAX_REPLY_BYTES


def test_no_time_left_for_a_connection_is_a_timeout_that_asks_nothing(zim_server: ZimStandIn) -> None:
    outcome, elapsed = timed_send(kickout_url(zim_server), timeout=0.0)
    assert isinstance(outcome, TransportFailure)
    assert outcome.timed_out
    assert elapsed <= SLACK
    assert zim_server.requests_seen == 0


def test_over_tls_a_reply_is_read_and_a_trickled_or_oversize_one_is_bounded(zim_server_over_tls: ZimStandIn) -> None:
    server = zim_server_over_tls
    # GIVEN ZEGO over https, verified: a plain answer is read
    reply, _ = timed_send(kickout_url(server, host="localhost"))
    assert isinstance(reply, zim.Reply)
    assert reply.code == 0
    # WHEN it trickles THEN the call ends within its timeout, as a timeout
    server.script(Fault.trickle(0.05))
    trickled, elapsed = timed_send(kickout_url(server, "u2", host="localhost"))
    assert isinstance(trickled, TransportFailure)
    assert trickled.timed_out
    assert elapsed <= TIMEOUT + SLACK
    # AND WHEN it is far too large THEN it is a failure, and the next call is answered on a fresh connection
    server.script(Fault.oversize(10_000_000))
    oversize, elapsed = timed_send(kickout_url(server, "u3", host="localhost"))
    assert isinstance(oversize, TransportFailure)
    assert not oversize.timed_out
    assert elapsed <= TIMEOUT + SLACK
    again, _ = timed_send(kickout_url(server, "u4", host="localhost"))
    assert isinstance(again, zim.Reply)
    assert again.code == 0
