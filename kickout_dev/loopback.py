"""An HTTP server on 127.0.0.1 for the local stand-ins (the ZIM server's, API Gateway's): started and stopped by
handle, each request served in its own daemon thread, nothing logged to stderr."""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self


class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the second waits for a delayed ACK (~40 ms).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LoopbackServer:
    """Serves `methods` on 127.0.0.1:`_port` (0: any free port) with `_serve`; a method not listed gets 501."""

    methods: ClassVar[tuple[str, ...]] = ("GET",)
    thread_name: ClassVar[str] = "loopback"
    poll_interval: ClassVar[float] = 0.05
    """stop() waits up to this long for the serving loop to notice; tests start and stop a server each."""
    _port: int = 0
    _host: str = "127.0.0.1"
    _tls: ssl.SSLContext | None = None
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def listen_on(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> Self:
        """Listen on `host`:`port` (with TLS when given) instead of 127.0.0.1:any: `make sam-local`'s stand-ins
        listen on the gateway of the Docker network it created, for its containers only."""
        self._host, self._port, self._tls = host, port, tls
        return self

    def start(self) -> Self:
        serve = self._serve

        def dispatch(request: BaseHTTPRequestHandler) -> None:
            serve(request)

        class Handler(_QuietHandler):
            pass

        for method in self.methods:
            setattr(Handler, f"do_{method}", dispatch)
        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        if self._tls is not None:
            # The handshake happens in the request's thread, on its first read, not in the accepting loop.
            self._server.socket = self._tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": self.poll_interval},
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """http://127.0.0.1:<the port listened on>, without a trailing slash (https and the host listened on
        after listen_on)."""
        assert self._server is not None, f"start() the {type(self).__name__} first"
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{self._host}:{self._server.server_address[1]}"
