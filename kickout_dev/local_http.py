r"""A local front for the function, in place of the API Gateway REST API: HTTP on 127.0.0.1, each request
turned into the proxy event API Gateway sends (the shape of events/api.json) and the function's answer
turned back into HTTP.

    python -m kickout_dev.local_lambda --serve      # in front of the built function, under the emulator
    with LocalApi(invoke) as api: ...               # in front of any callable taking the event (a test)

Then, as JSON (the API answers 415 to curl's default, a form body):

    curl -X POST http://127.0.0.1:3000/kickouts -H 'Content-Type: application/json' \
        -d '{"room_id": "lobby-7", "user_ids": ["spammer_01"]}'

Unlike API Gateway it checks no SigV4 signature (the stack's AWS_IAM): anyone on this machine may call it,
which is why it listens on 127.0.0.1 only. Every path and method goes to the function (as API Gateway would
not), so its own 404 and 405 answers can be seen too; `/v1/kickouts`, the deployed stage's path, works as well.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from kickout_dev.events import api_event
from kickout_dev.loopback import LoopbackServer

Invoke = Callable[[dict[str, Any]], Any]
"""Takes the proxy event, returns what the function returned (or Lambda's error document)."""

STAGE = "v1"
MAX_BODY_BYTES = 10 * 1024 * 1024
"""API Gateway's payload limit."""
INTERNAL_ERROR = 502, [("Content-Type", "application/json")], b'{"message": "Internal server error"}'
"""What API Gateway answers when the function raised, timed out or returned no proxy response."""


def proxy_event(
    method: str, target: str, headers: list[tuple[str, str]], body: bytes, *, source_ip: str = "127.0.0.1"
) -> dict[str, Any]:
    """The REST API proxy event for one HTTP request (target: the request line's path and query)."""
    parts = urlsplit(target)
    path = parts.path.removeprefix(f"/{STAGE}") or "/"
    try:
        text: str | None = body.decode() if body else None
        encoded = False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    event = api_event(text, method=method, path=path)
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in headers:
        single[name] = value
        multi.setdefault(name, []).append(value)
    query = parse_qsl(parts.query, keep_blank_values=True)
    multi_query: dict[str, list[str]] = {}
    for name, value in query:
        multi_query.setdefault(name, []).append(value)
    event.update(
        headers=single or None,
        multiValueHeaders=multi or None,
        queryStringParameters={name: values[-1] for name, values in multi_query.items()} or None,
        multiValueQueryStringParameters=multi_query or None,
        isBase64Encoded=encoded,
    )
    now = time.time()
    context = event["requestContext"]
    context.update(requestTimeEpoch=int(now * 1000), requestTime=formatdate(now, usegmt=True))
    context["identity"].update(sourceIp=source_ip, userAgent=single.get("User-Agent"))
    return event


def http_answer(response: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body for what the function returned, as API Gateway makes them."""
    if not isinstance(response, dict) or "errorType" in response or not isinstance(response.get("statusCode"), int):
        return INTERNAL_ERROR
    headers: list[tuple[str, str]] = []
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers.extend((name, str(value)) for value in values)
    given = {name.lower() for name, _ in headers}
    headers.extend(
        (name, str(value)) for name, value in (response.get("headers") or {}).items() if name.lower() not in given
    )
    body = response.get("body") or ""
    payload = base64.b64decode(body) if response.get("isBase64Encoded") else str(body).encode()
    return int(response["statusCode"]), headers, payload


class LocalApi(LoopbackServer):
    """The front, on 127.0.0.1:<port> (0: any free port), each request served in its own thread; the function
    answers at `{url}/kickouts`."""

    methods = ("POST", "GET", "PUT", "PATCH", "DELETE", "OPTIONS")
    thread_name = "local-api"

    def __init__(self, invoke: Invoke, *, port: int = 0) -> None:
        self.invoke = invoke
        self._port = port

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            request.close_connection = True
            self._answer(request, (413, [("Content-Type", "application/json")], b'{"message": "Request Too Long"}'))
            return
        body = request.rfile.read(length) if length > 0 else b""
        event = proxy_event(
            request.command, request.path, list(request.headers.items()), body, source_ip=request.client_address[0]
        )
        try:
            response = self.invoke(event)
        except Exception as error:
            print(f"local_http: the invocation failed: {type(error).__name__}: {error}", flush=True)
            self._answer(request, INTERNAL_ERROR)
            return
        self._answer(request, http_answer(response))

    @staticmethod
    def _answer(request: BaseHTTPRequestHandler, answer: tuple[int, list[tuple[str, str]], bytes]) -> None:
        status, headers, body = answer
        request.send_response(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                request.send_header(name, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)
