"""HTTPS GET over one connection pool shared by every invocation of this execution environment.

Knows nothing of ZEGO's rules; never puts the URL (which carries a signature) into an error message.
"""

from __future__ import annotations

import time
from typing import Final

import urllib3
from aws_lambda_powertools.metrics import MetricUnit

from handler.aws.observability import MetricName, emit, tracer
from handler.core.ports import HttpReply, Send, TransportFailure

CONNECT_TIMEOUT: Final = 3.0
POOL_SIZE: Final = 10
"""One connection per message of an SQS batch (BatchSize 10) so concurrent calls never wait for a socket."""

_pool = urllib3.PoolManager(num_pools=4, maxsize=POOL_SIZE, cert_reqs="CERT_REQUIRED", retries=False)


def send(url: str, timeout: float) -> HttpReply:
    """GET `url`, waiting at most `timeout` seconds for each of connect and read; no retries, no redirects."""
    try:
        response = _pool.request(
            "GET",
            url,
            timeout=urllib3.Timeout(connect=min(CONNECT_TIMEOUT, timeout), read=timeout),
            retries=False,
            redirect=False,
        )
    except urllib3.exceptions.TimeoutError as error:
        raise TransportFailure(f"ZEGO did not answer in time ({type(error).__name__})", timed_out=True) from None
    except urllib3.exceptions.HTTPError as error:
        raise TransportFailure(f"connection to ZEGO failed ({type(error).__name__})", timed_out=False) from None
    return HttpReply(status=response.status, body=response.data)


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
