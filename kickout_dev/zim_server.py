"""A local stand-in for ZEGO's ZIM server API (KickoutRoomUser only), on 127.0.0.1.

It checks each request the way ZEGO does — signature v2.0, timestamp skew, nonce shape, parameter
rules — with its own code (it shares nothing with `handler`, so a mistake there cannot hide here), keeps
rooms and their members, can enforce a requests-per-second limit, and can be told to misbehave: HTTP
errors, any ZEGO code, slow answers, answers that trickle in a byte at a time, reset connections, bodies
that are not JSON or not ZEGO's envelope (any bytes), bodies and heads far larger than an answer, a
rotated secret.

Given a `callback_url`, it calls back as ZIM does: a signed `room_exit` (exit_type Kickout) after each kick it
answered 0, in the background and retried after 2, 4, 8, 16 and 32 s while the answer is not 2xx (`retry_delays`);
and `reenter` replays a kicked user entering the room again (a signed `room_enter`, answered before it returns).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar
from urllib.parse import unquote_plus, urlsplit

from kickout_dev.loopback import LoopbackServer

ALLOWED_ID = re.compile(r"[A-Za-z0-9!#$%&()+\-:;<=.>?@\[\]^_{}|~, ]{1,32}")
NONCE = re.compile(r"[0-9a-f]{16}")
MAX_SKEW_SECONDS = 600
SINGLE_VALUED = (
    "Action",
    "AppId",
    "SignatureNonce",
    "Timestamp",
    "SignatureVersion",
    "Signature",
    "RoomId",
    "CustomReason",
    "FromUserId",
)


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, applied to the next request that reaches the server."""

    kind: str
    value: Any = None

    @staticmethod
    def code(code: int, message: str = "scripted") -> Fault:
        return Fault("code", (code, message))

    @staticmethod
    def http(status: int) -> Fault:
        return Fault("http", status)

    @staticmethod
    def slow(seconds: float) -> Fault:
        return Fault("slow", seconds)

    @staticmethod
    def reset() -> Fault:
        return Fault("reset")

    @staticmethod
    def not_json() -> Fault:
        return Fault("not_json")

    @staticmethod
    def trickle(seconds_per_byte: float = 0.05, *, head: bool = False) -> Fault:
        """Kick as usual, then send the answer's body one byte at a time (with `head`, its status line and headers
        too): each read finds a byte, so only a deadline on the whole reply ends the wait."""
        return Fault("trickle", (seconds_per_byte, head))

    @staticmethod
    def body(raw: bytes, status: int = 200) -> Fault:
        """Answer with exactly these bytes as the body (JSON's media type, Content-Length): any unreadable reply."""
        return Fault("body", (raw, status))

    @staticmethod
    def oversize(size: int, *, chunked: bool = False) -> Fault:
        """A 200 whose body of `size` bytes starts like ZEGO's envelope, sent with its Content-Length or chunked
        (no length said up front); it stops once the client hangs up."""
        return Fault("oversize", (size, chunked))

    @staticmethod
    def huge_head(size: int) -> Fault:
        """A 200 with `size` bytes of headers before a good envelope."""
        return Fault("huge_head", size)


@dataclass(frozen=True)
class Kickout:
    """A request the server accepted as well-formed and correctly signed."""

    room_id: str
    user_ids: tuple[str, ...]
    reason: str | None
    operator_id: str | None
    nonce: str
    timestamp: int
    code: int
    at: float


@dataclass
class ZimStandIn(LoopbackServer):
    thread_name: ClassVar[str] = "zim-stand-in"

    app_id: int
    server_secret: str
    rooms: dict[str, set[str]] | None = None
    """Room -> members. None: every room exists and every user is in it."""
    max_requests_per_second: int | None = None
    latency: float = 0.0
    """Seconds each answer waits before it is sent; the request is counted (its rate, its record) as it arrives."""
    clock: Callable[[], float] = time.time

    kickouts: list[Kickout] = field(default_factory=list)
    """Accepted requests, in order (a fault scripted for a request keeps it out of this list)."""
    refusals: list[tuple[int, str]] = field(default_factory=list)
    """(code, why) for every request refused by the checks: signature, skew, parameters, rate."""
    request_ids: list[str] = field(default_factory=list)
    """Every RequestId put in a reply, in order: accepted, refused and scripted-code answers alike."""
    requests_seen: int = 0
    requests_by_room: Counter[str] = field(default_factory=Counter)
    """Every request that reached the server, faulted or not, by its RoomId."""
    client_ports: list[int] = field(default_factory=list)
    """The client's port for each request, in order: a new port is a new connection, the same one a reused one."""
    max_in_flight: int = 0
    """The most requests the server was handling at one time (shows whether a client sends concurrently)."""
    outage: Fault | None = None
    """While set, every request gets this fault (see go_down), before any scripted one."""
    faults: deque[Fault] = field(default_factory=deque)
    fault_for: Callable[[dict[str, list[str]]], Fault | None] | None = None
    """Decide a fault per request from its parameters (for streams where order is not known)."""
    callback_url: str | None = None
    """Where ZIM's room callbacks go (the function's POST /zego/callbacks); None: no callbacks."""
    callback_secret: str | None = None
    """What the callbacks are signed with; None: the ServerSecret (ZEGO's console points at it)."""
    retry_delays: tuple[float, ...] = (2, 4, 8, 16, 32)
    callbacks_sent: list[tuple[str, dict[str, Any], int]] = field(default_factory=list)
    """(event, body, HTTP status) of every callback attempt, in order (status 0: no answer)."""

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._settled = threading.Condition(self._lock)
        self._pending = 0
        """Kicks answered whose room_exit is not settled yet (counted before the answer is written)."""
        self._nonces: set[str] = set()
        self._in_flight = 0
        self._recent: deque[float] = deque()
        self._request_ids = iter(range(343649807833778782, 1 << 63))

    # --- lifecycle: start, stop, url and the context manager come from LoopbackServer -----------------------

    @property
    def url(self) -> str:
        return f"{super().url}/"

    def script(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def go_down(self, fault: Fault | None = None) -> None:
        """Answer every request with `fault` (HTTP 503 by default) until `come_back`: ZEGO is down."""
        with self._lock:
            self.outage = fault or Fault.http(503)

    def come_back(self) -> None:
        with self._lock:
            self.outage = None

    def rotate_secret(self, new_secret: str) -> None:
        with self._lock:
            self.server_secret = new_secret

    def clear_record(self) -> None:
        """Forget the kickouts accepted and the requests refused so far (a stand-in shared by several tests)."""
        with self._lock:
            self.kickouts.clear()
            self.refusals.clear()

    def reenter(self, room_id: str, user_id: str) -> int:
        """A kicked user enters the room again: a member once more, and ZIM's signed `room_enter` sent (once) to
        the callback URL; the HTTP status it got (0: no answer)."""
        with self._lock:
            if self.rooms is not None:
                self.rooms.setdefault(room_id, set()).add(user_id)
        return self._call_back("room_enter", {"room_id": room_id, "operator_account": user_id})

    def wait_for_callbacks(self, timeout: float = 10.0) -> None:
        """Until every kick answered so far has had its room_exit answered (or given up), at most `timeout` s."""
        with self._settled:
            self._settled.wait_for(lambda: self._pending == 0, timeout)

    def _kicked(self, room_id: str, user_ids: tuple[str, ...], operator_id: str | None) -> None:
        """ZIM's room_exit for users it removed, sent after the answer and retried as ZEGO retries."""
        fields = {
            "room_id": room_id,
            "exit_type": "Kickout",
            "operator_account": operator_id or "",
            "exit_user_ids": list(user_ids),
        }

        def send() -> None:
            try:
                for delay in (0.0, *self.retry_delays):
                    time.sleep(delay)
                    if 200 <= self._call_back("room_exit", fields) < 300:
                        return
            finally:
                with self._settled:
                    self._pending -= 1
                    self._settled.notify_all()

        threading.Thread(target=send, name="zim-callback", daemon=True).start()

    def _call_back(self, event: str, fields: dict[str, Any]) -> int:
        """One signed callback POSTed as ZIM sends it: JSON, `appid` and `nonce` as strings, timestamp seconds."""
        if self.callback_url is None:
            raise ValueError("the stand-in has no callback_url")
        timestamp, nonce = str(int(self.clock())), str(random.randrange(100_000, 1_000_000_000))
        secret = self.callback_secret or self.server_secret
        signature = hashlib.sha1("".join(sorted([secret, timestamp, nonce])).encode(), usedforsecurity=False)
        body = {"appid": str(self.app_id), "event": event, "nonce": nonce, "timestamp": int(timestamp), **fields}
        body["signature"] = signature.hexdigest()
        request = urllib.request.Request(  # noqa: S310 (the callback URL is the tests' own loopback front)
            self.callback_url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
                status = int(answer.status)
        except urllib.error.HTTPError as error:
            status = error.code
        except OSError:
            status = 0
        with self._lock:
            self.callbacks_sent.append((event, body, status))
        return status

    @property
    def kicked_user_ids(self) -> list[str]:
        return [user for kickout in self.kickouts if kickout.code == 0 for user in kickout.user_ids]

    # --- one request -----------------------------------------------------------------------------------------

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests_seen += 1
            self.client_ports.append(request.client_address[1])
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            self._serve_one(request)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _serve_one(self, request: BaseHTTPRequestHandler) -> None:
        query = urlsplit(request.path).query
        try:
            params = parse_query(query)
        except ValueError as error:
            self._answer(request, self._refuse(2, f"unparseable query: {error}"))
            return
        with self._lock:
            self.requests_by_room[params.get("RoomId", [""])[0]] += 1
            fault = self.outage or (self.faults.popleft() if self.faults else None)
        if fault is None and self.fault_for is not None:
            fault = self.fault_for(params)
        if fault is not None:
            if self.latency:
                time.sleep(self.latency)
            if self._misbehave(request, fault, params):
                return
        # Counted as it arrives, as ZEGO's gateway counts it; `latency` delays the answer. (Sleeping first made the
        # rate window see each request when its sleep happened to end, late by whatever else this machine was doing.)
        document = self._kickout(params)
        if self.latency and fault is None:
            time.sleep(self.latency)
        left = document.pop("_left", None)
        try:
            self._answer(request, document)
        finally:
            if left is not None:  # ZIM calls back whether or not its answer reached the caller
                self._kicked(*left)

    def _misbehave(self, request: BaseHTTPRequestHandler, fault: Fault, params: dict[str, list[str]]) -> bool:
        """Apply a fault; False when the request should then be handled normally (a slow but good answer)."""
        match fault.kind:
            case "code":
                code, message = fault.value
                self._answer(request, self._reply(code, message))
            case "http":
                body = b"<html>upstream error</html>"
                request.send_response(fault.value)
                request.send_header("Content-Length", str(len(body)))
                request.end_headers()
                request.wfile.write(body)
            case "not_json":
                body = b"<html>gateway says hello</html>"
                request.send_response(200)
                request.send_header("Content-Type", "text/html")
                request.send_header("Content-Length", str(len(body)))
                request.end_headers()
                request.wfile.write(body)
            case "reset":
                # SO_LINGER 0: close() sends a TCP RST instead of a FIN.
                request.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                request.close_connection = True
                request.connection.close()
            case "slow":
                time.sleep(fault.value)
                return False
            case "trickle":
                seconds_per_byte, head = fault.value
                document = self._kickout(params)
                if document.pop("_left", None) is not None:  # a trickled answer calls nothing back
                    with self._settled:
                        self._pending -= 1
                        self._settled.notify_all()
                self._trickle(request, document, seconds_per_byte, head=head)
            case "body":
                raw, status = fault.value
                self._send(request, status, raw)
            case "oversize":
                self._oversize(request, *fault.value)
            case "huge_head":
                head = b"X-Padding: " + b"p" * 1000 + b"\r\n"
                body = json.dumps(self._reply(0, "success")).encode()
                lines = b"HTTP/1.1 200 OK\r\n" + head * (fault.value // len(head) + 1)
                self._write(request, lines + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            case _:
                raise ValueError(f"unknown fault {fault.kind}")
        return True

    def _kickout(self, params: dict[str, list[str]]) -> dict[str, Any]:
        with self._lock:
            problem = self._check(params)
            if problem is not None:
                return self._refuse(*problem)
            room_id = params["RoomId"][0]
            user_ids = tuple(params["UserId[]"])
            code, present = self._apply(room_id, user_ids)
            self.kickouts.append(
                Kickout(
                    room_id=room_id,
                    user_ids=user_ids,
                    reason=params.get("CustomReason", [None])[0],
                    operator_id=params.get("FromUserId", [None])[0],
                    nonce=params["SignatureNonce"][0],
                    timestamp=int(params["Timestamp"][0]),
                    code=code,
                    at=time.monotonic(),
                )
            )
        document = self._reply(code, "success" if code == 0 else "room or users not found")
        if code == 0 and self.callback_url is not None:
            # Who left, for the room_exit callback sent once the answer is written (not part of the answer).
            document["_left"] = (room_id, present, params.get("FromUserId", [None])[0])
            with self._lock:
                self._pending += 1
        return document

    def _check(self, params: dict[str, list[str]]) -> tuple[int, str] | None:
        return self._check_shape(params) or self._check_signature(params)

    @staticmethod
    def _check_shape(params: dict[str, list[str]]) -> tuple[int, str] | None:
        for key in SINGLE_VALUED:
            if len(params.get(key, [])) > 1:
                return 2, f"{key} given more than once"
        unknown = set(params) - set(SINGLE_VALUED) - {"UserId[]"}
        if unknown:
            return 2, f"unknown parameters {sorted(unknown)}"
        if params.get("Action") != ["KickoutRoomUser"]:
            return 2, "Action must be KickoutRoomUser"
        if params.get("SignatureVersion") != ["2.0"]:
            return 100000002, "SignatureVersion must be 2.0"
        return None

    def _check_signature(self, params: dict[str, list[str]]) -> tuple[int, str] | None:
        if params.get("AppId") != [str(self.app_id)]:
            return 100000001, "unknown AppId"
        nonce = params.get("SignatureNonce", [""])[0]
        if not NONCE.fullmatch(nonce):
            return 100000002, "SignatureNonce must be 16 lowercase hex characters"
        timestamp_text = params.get("Timestamp", [""])[0]
        if not timestamp_text.isdigit():
            return 100000002, "Timestamp must be Unix seconds"
        if abs(self.clock() - int(timestamp_text)) > MAX_SKEW_SECONDS:
            return 100000004, "signature expired"
        expected = hashlib.md5(
            f"{self.app_id}{nonce}{self.server_secret}{timestamp_text}".encode(), usedforsecurity=False
        ).hexdigest()
        if params.get("Signature") != [expected]:
            return 100000005, "signature invalid"
        if nonce in self._nonces:
            return 100000005, "nonce used twice"
        self._nonces.add(nonce)
        if self.max_requests_per_second is not None and self._over_rate():
            return 660300005, "over the AppId-level frequency limit"
        return self._check_business(params)

    @staticmethod
    def _check_business(params: dict[str, list[str]]) -> tuple[int, str] | None:
        room = params.get("RoomId", [""])[0]
        if not ALLOWED_ID.fullmatch(room):
            return 2, "RoomId missing, too long or with a character outside ZEGO's set"
        users = params.get("UserId[]", [])
        if not users:
            return 2, "UserId[] missing"
        if len(users) > 50:
            return 660000011, "more than 50 users"
        if any(len(user.encode()) > 32 for user in users):
            return 660000012, "a UserId is longer than 32 bytes"
        if not all(ALLOWED_ID.fullmatch(user) for user in users):
            return 2, "a UserId has a character outside ZEGO's set"
        if len(params.get("CustomReason", [""])[0].encode()) > 32:
            return 2, "CustomReason longer than 32 bytes"
        operator = params.get("FromUserId")
        if operator is not None and not ALLOWED_ID.fullmatch(operator[0]):
            return 2, "FromUserId with a character outside ZEGO's set"
        return None

    def _over_rate(self) -> bool:
        now = time.monotonic()
        while self._recent and now - self._recent[0] >= 1.0:
            self._recent.popleft()
        if self.max_requests_per_second is not None and len(self._recent) >= self.max_requests_per_second:
            return True
        self._recent.append(now)
        return False

    def _apply(self, room_id: str, user_ids: Iterable[str]) -> tuple[int, tuple[str, ...]]:
        """ZEGO's code for removing `user_ids`, and those it removed."""
        if self.rooms is None:
            return 0, tuple(user_ids)
        members = self.rooms.get(room_id)
        if members is None:
            return 660300001, ()
        present = tuple(user for user in user_ids if user in members)
        if not present:
            return 660300002, ()
        members.difference_update(present)
        return 0, present

    def _refuse(self, code: int, why: str) -> dict[str, Any]:
        with self._lock:
            self.refusals.append((code, why))
        return self._reply(code, why)

    def _reply(self, code: int, message: str) -> dict[str, Any]:
        with self._lock:
            request_id = str(next(self._request_ids))
            self.request_ids.append(request_id)
        return {"Code": code, "Message": message, "RequestId": request_id}

    @staticmethod
    def _answer(request: BaseHTTPRequestHandler, document: dict[str, Any]) -> None:
        ZimStandIn._send(request, 200, json.dumps(document).encode())

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        try:
            request.send_response(status)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
        except OSError:
            pass  # the client gave up (a timeout test): nothing to answer

    @staticmethod
    def _write(request: BaseHTTPRequestHandler, raw: bytes) -> bool:
        """Raw bytes onto the connection; False once the client has hung up."""
        try:
            request.wfile.write(raw)
        except OSError:
            request.close_connection = True
            return False
        return True

    def _trickle(
        self, request: BaseHTTPRequestHandler, document: dict[str, Any], seconds_per_byte: float, *, head: bool
    ) -> None:
        body = json.dumps(document).encode()
        start = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        slow = start + body if head else body
        if not head and not self._write(request, start):
            return
        # Bounded: the answer is ~100 bytes, and a write soon after the client hung up fails.
        for byte in slow:
            time.sleep(seconds_per_byte)
            if not self._write(request, bytes([byte])):
                return

    def _oversize(self, request: BaseHTTPRequestHandler, size: int, chunked: bool) -> None:
        piece = b" " * 65536
        prefix = json.dumps(self._reply(0, "success")).encode()[:-1] + b', "Padding": "'
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size
        if not self._write(request, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + framing + b"\r\n\r\n"):
            return
        sent = 0
        while sent < size:
            part = (prefix if sent == 0 else piece)[: size - sent]
            framed = b"%x\r\n%s\r\n" % (len(part), part) if chunked else part
            if not self._write(request, framed):
                return
            sent += len(part)
        if chunked:
            self._write(request, b"0\r\n\r\n")


def parse_query(query: str) -> dict[str, list[str]]:
    """Decode a query the strict way: every pair must be key=value; `+` is a space, as form decoding has it."""
    params: dict[str, list[str]] = {}
    if not query:
        return params
    for pair in query.split("&"):
        key, separator, value = pair.partition("=")
        if not separator:
            raise ValueError(f"pair without '=': {pair[:40]!r}")
        params.setdefault(unquote_plus(key, errors="strict"), []).append(unquote_plus(value, errors="strict"))
    return params
