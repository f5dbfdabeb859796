"""SnapStart: the runtime's hooks around a simulated snapshot. The snapshot is a fork of this process (its memory
copied, as a restore copies the snapshot's), each child a restored clone that runs the after-restore hooks
registered with snapshot-restore-py and makes a kickout through the real Lambda handler, against the stand-in
(which refuses a nonce it has seen) and moto."""

from __future__ import annotations

import json
import os
import random
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import snapshot_restore_py  # type: ignore[import-untyped]

from handler import app, wiring
from handler.zego import transport
from kickout_dev.sandbox import Sandbox, sandbox

KICKOUT = {"room_id": "lobby-7", "user_ids": ["spammer_01"]}


@pytest.fixture
def box() -> Iterator[Sandbox]:
    """The sandbox, with Lambda's own function (wiring.lambdas_function, from the environment) made afresh."""
    with sandbox(instant_backoff=True) as running:
        wiring.lambdas_function.cache_clear()
        yield running
    wiring.lambdas_function.cache_clear()


def run_hooks(hooks: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]) -> None:
    """As Lambda's runtime runs what was registered: each function with its arguments, in order."""
    for function, args, kwargs in hooks:
        function(*args, **kwargs)


def restored_clone(access_key: str, *, run_after_restore: bool) -> dict[str, Any]:
    """Fork, as a restore copies the snapshot; in the child: new credentials in the environment (Lambda gives each
    restored environment its own), the after-restore hooks, one kickout; what it saw, from the child."""
    read, write = os.pipe()
    snapshot_random = random.getstate()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork of a process with threads: the stand-in's
        pid = os.fork()
    if pid == 0:  # the clone
        os.close(read)
        outcome: dict[str, Any] = {}
        try:
            # CPython reseeds `random` in a forked child (os.register_at_fork); a restore runs no such thing: every
            # clone wakes with the snapshot's state.
            random.setstate(snapshot_random)
            os.environ["AWS_ACCESS_KEY_ID"] = access_key
            if run_after_restore:
                run_hooks(snapshot_restore_py.get_after_restore())
            outcome["random"] = random.random()
            function = wiring.lambdas_function()
            outcome["result"] = app.lambda_handler(KICKOUT, _context())
            outcome["access_key"] = function.dynamodb()._request_signer._credentials.access_key  # type: ignore[attr-defined]
        except BaseException as error:  # reported to the parent, which fails the test with it
            outcome["error"] = repr(error)
        with os.fdopen(write, "w") as pipe:
            pipe.write(json.dumps(outcome))
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    seen: dict[str, Any] = json.loads(text)
    assert "error" not in seen, seen["error"]
    return seen


def _context() -> Any:
    from kickout_dev.sandbox import LambdaContext

    return LambdaContext()


def test_the_hooks_are_registered_with_the_runtime() -> None:
    # GIVEN the handler imported (as Lambda's runtime imports it, before the snapshot)
    # THEN its hooks are in snapshot-restore-py's registries, which the runtime runs around the snapshot
    assert (wiring.before_snapshot, (), {}) in snapshot_restore_py.get_before_snapshot()
    assert (wiring.after_restore, (), {}) in snapshot_restore_py.get_after_restore()


def test_before_the_snapshot_the_clients_are_made_and_no_connection_is_kept(box: Sandbox) -> None:
    # GIVEN an environment that has kicked once (a connection to ZEGO kept in the pool; the process's pool is this
    # test's alone from here)
    transport.close_connections()
    assert app.lambda_handler(KICKOUT, _context())["kicked_user_ids"] == ["spammer_01"]
    assert transport.open_pools() == 1
    # WHEN the before-snapshot hooks run
    run_hooks(snapshot_restore_py.get_before_snapshot())
    # THEN the pool holds no connection into the snapshot, and the adapters and clients are ready in it
    assert transport.open_pools() == 0
    function = wiring.lambdas_function()
    assert {"_settings", "_dynamodb", "_secrets_provider", "_sqs"} <= set(vars(function))


def test_two_restored_clones_sign_with_different_nonces_and_share_nothing(box: Sandbox) -> None:
    # GIVEN the snapshot of an initialised environment: its hooks run, its random state set
    run_hooks(snapshot_restore_py.get_before_snapshot())
    random.seed(20)
    # WHEN two clones are restored from it, each with its own credentials, and each kicks
    first = restored_clone("AKIAFIRSTCLONE000001", run_after_restore=True)
    second = restored_clone("AKIASECONDCLONE00002", run_after_restore=True)
    # THEN ZEGO (the stand-in, which refuses a nonce it has seen) accepted both, each with a nonce of its own
    assert first["result"]["kicked_user_ids"] == second["result"]["kicked_user_ids"] == ["spammer_01"]
    nonces = [kickout.nonce for kickout in box.zim.kickouts]
    assert len(nonces) == 2
    assert nonces[0] != nonces[1]
    # AND each clone's AWS clients were made with its own credentials, not the snapshot's
    assert (first["access_key"], second["access_key"]) == ("AKIAFIRSTCLONE000001", "AKIASECONDCLONE00002")
    # AND their random sequences differ (the retry jitter, the queue's backoff)
    assert first["random"] != second["random"]


def test_without_the_after_restore_hooks_clones_would_share_the_snapshots_state(box: Sandbox) -> None:
    # GIVEN the same snapshot, its clients made before it with the snapshot's credentials
    run_hooks(snapshot_restore_py.get_before_snapshot())
    random.seed(20)
    # WHEN two clones skip the after-restore hooks
    first = restored_clone("AKIAFIRSTCLONE000001", run_after_restore=False)
    second = restored_clone("AKIASECONDCLONE00002", run_after_restore=False)
    # THEN both draw the same "random" numbers and sign their AWS calls with the snapshot's key: what the hooks undo
    assert first["random"] == second["random"]
    assert first["access_key"] == second["access_key"]
    assert first["access_key"] not in ("AKIAFIRSTCLONE000001", "AKIASECONDCLONE00002")
