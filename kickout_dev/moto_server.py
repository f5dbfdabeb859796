"""`python -m moto.server` with one difference: DynamoDB's writes are atomic, as DynamoDB's own are.

moto applies a conditional UpdateItem as a read, a check and a write, with nothing to stop two server threads (or
two test threads under mock_aws) from interleaving them: both see the same `next_slot`, both are granted it, and the
rate budget hands one slot to two calls. DynamoDB never does. Serialising moto's item writes with one lock makes
the stand-in keep the promise the function relies on, so a test that finds a slot double-booked has found a bug in
the function, not in moto.

Run as `python -m kickout_dev.moto_server -H 127.0.0.1 -p PORT` (make local, the benchmarks); the sandbox calls
`make_dynamodb_updates_atomic()` for mock_aws in process.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

_lock = threading.RLock()


def make_dynamodb_updates_atomic() -> None:
    """Wrap moto's DynamoDB item writes in one lock (idempotent)."""
    from moto.dynamodb.models import DynamoDBBackend

    for name in ("update_item", "put_item", "delete_item", "transact_write_items"):
        method = getattr(DynamoDBBackend, name)
        if not getattr(method, "_kickout_atomic", False):
            setattr(DynamoDBBackend, name, _serialised(method))


def _serialised(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _lock:
            return method(*args, **kwargs)

    locked._kickout_atomic = True  # type: ignore[attr-defined]
    return locked


def main() -> None:
    from moto.server import main as moto_main

    make_dynamodb_updates_atomic()
    moto_main()


if __name__ == "__main__":
    main()
