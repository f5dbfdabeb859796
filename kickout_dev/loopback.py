"""An HTTP server on 127.0.0.1 for the local stand-ins (the ZIM server's, API Gateway's): started and stopped by
handle, each request served in its own daemon thread, nothing logged to stderr."""

from __future__ import annotations

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
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        serve = self._serve

        def dispatch(request: BaseHTTPRequestHandler) -> None:
            serve(request)

        class Handler(_QuietHandler):
            pass

        for method in self.methods:
            setattr(Handler, f"do_{method}", dispatch)
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
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
        """http://127.0.0.1:<the port listened on>, without a trailing slash."""
        assert self._server is not None, f"start() the {type(self).__name__} first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"
