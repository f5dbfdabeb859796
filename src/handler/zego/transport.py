"""HTTPS GET over one connection pool shared by every invocation of this execution environment.

Knows nothing of ZEGO's rules; never puts the URL (which carries a signature) into an error message.

A reply is bounded as a whole, in time and in size. urllib3's timeouts bound each socket operation, not the
exchange: a server (or a proxy) sending its reply a byte at a time would hold a call for as long as it likes, and
`Timeout(total=...)` only shortens the first read, not the ones after it. So `send`'s timeout is a deadline for the
whole exchange: the connection and the TLS handshake are given what is left of it, and so is every read of the
status line, the headers and the body. A body over `MAX_BODY_BYTES`, or a reply over `MAX_HEAD_BYTES` more than that
in all, is a failure, read no further; its connection is closed, never handed back to the pool with the rest of the
reply in it.
"""

from __future__ import annotations

import http.client
import io
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final

import urllib3
from aws_lambda_powertools.metrics import MetricUnit
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from handler.aws.observability import MetricName, emit, tracer
from handler.core.ports import HttpReply, Send, TransportFailure

CONNECT_TIMEOUT: Final = 3.0
POOL_SIZE: Final = 10
"""One connection per message of an SQS batch (BatchSize 10) so concurrent calls never wait for a socket."""
MAX_BODY_BYTES: Final = 4096
"""The largest reply body read (ZEGO's envelope is about 100 bytes): a larger one is a failure, not an answer."""
MAX_HEAD_BYTES: Final = 16384
"""What a reply may hold beyond its body: the status line and headers (http.client alone would take 100 headers of
64 KiB each)."""


@dataclass(slots=True)
class _Exchange:
    """One request's bounds: when its reply must be in, and how many bytes of it may still be read."""

    deadline: float
    bytes_left: int
    timed_out: bool = False
    too_large: bool = False

    def time_left(self) -> float:
        """Seconds left, always more than 0; raises TimeoutError once the deadline has passed."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.timed_out = True
            raise TimeoutError("the reply's time is up")
        return left


_current: ContextVar[_Exchange | None] = ContextVar("kickout_transport_exchange", default=None)
"""The exchange the calling thread is in (urllib3 runs a request on its caller's thread, start to end)."""


class _ReplyTooLarge(OSError):
    """Raised inside a read: urllib3 turns it into a ProtocolError, `send` says what it was."""


class _BoundedReader(io.RawIOBase):
    """The socket's bytes for one reply, each read given only what is left of the exchange's time and bytes."""

    def __init__(self, sock: socket.socket, exchange: _Exchange) -> None:
        super().__init__()
        self._sock = sock
        # A file of the socket holds it open until this reader closes, as http.client's own file does: a reply
        # that ends the connection (Connection: close) is still read to its end.
        self._raw = sock.makefile("rb", buffering=0)
        self._exchange = exchange

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        exchange = self._exchange
        if exchange.bytes_left <= 0:
            exchange.too_large = True
            raise _ReplyTooLarge("reply over its size limit")
        view = memoryview(buffer).cast("B")[: exchange.bytes_left]
        before = self._sock.gettimeout()
        self._sock.settimeout(exchange.time_left())
        try:
            count = self._raw.readinto(view)
        except TimeoutError:
            exchange.timed_out = True
            raise
        finally:
            self._sock.settimeout(before)  # a kept-alive connection sends its next request with its usual timeout
        exchange.bytes_left -= count or 0
        return count

    def close(self) -> None:
        self._raw.close()
        super().close()


class _BoundedResponse(http.client.HTTPResponse):
    """http.client's response, read through a _BoundedReader when a `send` is under way on this thread."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        exchange = _current.get()
        if exchange is not None:
            self.fp.close()
            self.fp = io.BufferedReader(_BoundedReader(sock, exchange))


class _Bounded(HTTPConnection):
    """A connection that connects, and shakes hands, within what is left of the exchange's time."""

    response_class = _BoundedResponse

    def _new_conn(self) -> socket.socket:
        exchange = _current.get()
        if exchange is not None and isinstance(self.timeout, float | int):
            self.timeout = min(self.timeout, exchange.time_left())
        sock = super()._new_conn()
        if exchange is not None:
            sock.settimeout(exchange.time_left())  # the TLS handshake (CPython bounds it as a whole) and the request
        return sock


class _BoundedHttps(_Bounded, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Bounded


class _HttpsPool(HTTPSConnectionPool):
    ConnectionCls = _BoundedHttps


_pool = urllib3.PoolManager(num_pools=4, maxsize=POOL_SIZE, cert_reqs="CERT_REQUIRED", retries=False)
_pool.pool_classes_by_scheme = {"http": _Pool, "https": _HttpsPool}


def close_connections() -> None:
    """Close every kept connection: a snapshot's clones must not share one socket (nor its TLS session)."""
    _pool.clear()


def open_pools() -> int:
    """Hosts the pool keeps connections to (0 once closed)."""
    return len(_pool.pools)


@contextmanager
def _exchange(timeout: float, max_body_bytes: int) -> Iterator[_Exchange]:
    exchange = _Exchange(deadline=time.monotonic() + timeout, bytes_left=MAX_HEAD_BYTES + max_body_bytes)
    token = _current.set(exchange)
    try:
        yield exchange
    finally:
        _current.reset(token)


def send(url: str, timeout: float, *, max_body_bytes: int = MAX_BODY_BYTES) -> HttpReply:
    """GET `url`, all of it (connect, request, the whole reply) within `timeout` seconds; no retries, no redirects.

    Raises TransportFailure: no reply in time (`timed_out`), a broken connection, or a reply too large.
    """
    if timeout <= 0:
        raise TransportFailure("no time left to ask ZEGO", timed_out=True)
    with _exchange(timeout, max_body_bytes) as exchange:
        try:
            response = _pool.request(
                "GET",
                url,
                timeout=urllib3.Timeout(connect=min(CONNECT_TIMEOUT, timeout), read=timeout),
                retries=False,
                redirect=False,
                preload_content=False,
            )
            try:
                body = _body(response, max_body_bytes)
            except BaseException:
                # The rest of the reply is still on the connection: it must not serve another request.
                response.close()
                response.release_conn()
                raise
        except urllib3.exceptions.TimeoutError as error:
            raise TransportFailure(f"ZEGO did not answer in time ({type(error).__name__})", timed_out=True) from None
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as error:
            if exchange.timed_out:
                raise TransportFailure(f"ZEGO did not answer in time within {timeout:g} s", timed_out=True) from None
            if exchange.too_large or isinstance(error, _ReplyTooLarge):
                raise TransportFailure(
                    f"ZEGO's reply is larger than allowed ({max_body_bytes} bytes of body, {MAX_HEAD_BYTES} of head)",
                    timed_out=False,
                ) from None
            raise TransportFailure(f"connection to ZEGO failed ({type(error).__name__})", timed_out=False) from None
    response.release_conn()
    return HttpReply(status=response.status, body=body)


def _body(response: urllib3.BaseHTTPResponse, max_body_bytes: int) -> bytes:
    """The whole body, or _ReplyTooLarge as soon as it is known to be over `max_body_bytes`."""
    declared = response.length_remaining  # Content-Length as urllib3 read it; None when absent or unreadable
    if declared is not None and declared > max_body_bytes:
        raise _ReplyTooLarge("reply body declared over its size limit")
    body = response.read(amt=max_body_bytes + 1)
    if len(body) > max_body_bytes:
        raise _ReplyTooLarge("reply body over its size limit")
    return body


def traced(send: Send) -> Send:
    """`send`, each call a `## ZEGO KickoutRoomUser` subsegment and counted (`ZegoCalls`, `ZegoLatency`)."""

    def send_traced(url: str, timeout: float) -> HttpReply:
        started = time.perf_counter()
        # The subsegment names the call but records neither the URL (it carries the signature) nor the body.
        with tracer.provider.in_subsegment("## ZEGO KickoutRoomUser"):
            try:
                return send(url, timeout)
            finally:
                emit(MetricName.ZEGO_LATENCY, (time.perf_counter() - started) * 1000, MetricUnit.Milliseconds)
                emit(MetricName.ZEGO_CALLS, 1)

    return send_traced
