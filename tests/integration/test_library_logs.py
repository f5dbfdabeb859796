"""What the libraries under the function log must not carry the request's signature or the secret."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator

import pytest

from handler.aws.clients import secrets_provider
from handler.aws.secret import ServerSecret
from handler.core.errors import SecretUnavailable
from handler.zego import transport
from kickout_dev.sandbox import REGION, Sandbox

SIGNED_URL_TAIL = "?Action=KickoutRoomUser&Signature=deadbeefdeadbeefdeadbeefdeadbeef&SignatureNonce=0123456789abcdef"


@pytest.fixture
def server_with_broken_headers() -> Iterator[str]:
    """A server on loopback answering twice, each time with a header line urllib3 cannot parse."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_twice() -> None:
        for _ in range(2):
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n: broken\r\n\r\n{"Code": 0}')

    thread = threading.Thread(target=answer_twice, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    thread.join(timeout=5)
    listener.close()


def test_a_reply_with_broken_headers_does_not_log_the_signed_url(
    server_with_broken_headers: str, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN Lambda's root logger at WARNING, as the runtime sets it, and the function imported (it sets the
    # libraries' levels)
    caplog.set_level(logging.WARNING)
    import handler.aws.observability  # noqa: F401

    urllib3_logger = logging.getLogger("urllib3")
    function_level = urllib3_logger.level

    # WHEN urllib3 logs at its own default level, a reply whose header line does not parse is warned about
    urllib3_logger.setLevel(logging.NOTSET)
    try:
        transport.send(server_with_broken_headers + SIGNED_URL_TAIL, 3.0)
    finally:
        urllib3_logger.setLevel(function_level)
    # THEN that warning quotes the signed URL: what the function's setting must keep out
    assert "deadbeef" in caplog.text
    caplog.clear()

    # WHEN the same reply comes under the function's setting
    transport.send(server_with_broken_headers + SIGNED_URL_TAIL, 3.0)

    # THEN nothing of the URL is logged
    assert function_level == logging.ERROR
    assert "deadbeef" not in caplog.text


def test_a_binary_secret_is_read_as_text(box: Sandbox) -> None:
    import boto3

    client = boto3.client("secretsmanager", region_name=REGION)
    arn = client.create_secret(Name="binary", SecretBinary=json.dumps({"ServerSecret": "from-binary"}).encode())["ARN"]
    assert ServerSecret(arn, secrets_provider()).read() == "from-binary"


def test_a_binary_secret_that_is_not_text_is_unavailable_not_a_crash(box: Sandbox) -> None:
    import boto3

    client = boto3.client("secretsmanager", region_name=REGION)
    arn = client.create_secret(Name="binary-junk", SecretBinary=b"\xff\xfe\x00")["ARN"]
    with pytest.raises(SecretUnavailable, match="not UTF-8"):
        ServerSecret(arn, secrets_provider()).read()
