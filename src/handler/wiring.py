"""The function, wired in one place: settings -> AWS clients -> secret -> budget -> circuit -> ZEGO client -> kickouts.

The only module that knows which implementation stands behind each port. Lambda's handler (app.py) builds one
`Function` per execution environment from its environment variables, on the first invocation; tests and tools
build theirs with their own `Parts` (an environment, a retry policy, a backoff that does not sleep) through the
same code. Each part is made on first use and kept: no network call and no secret read happens at import.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, TypeVar

from aws_lambda_powertools.metrics import MetricUnit

from handler.aws import clients
from handler.aws.observability import MetricName, emit, in_current_trace, logger
from handler.aws.secret import ServerSecret
from handler.aws.settings import ConfigurationError, Settings, settings_from
from handler.core.deadline import Deadline
from handler.core.ports import AlwaysCall, Health, HttpReply, KeptAnswers, RateGate, Send
from handler.entry.kickouts import Kickouts
from handler.fleet import circuit
from handler.fleet.budget import MARGIN, FleetBudget, Lane, departing
from handler.fleet.callback_claims import DynamoCallbackClaims
from handler.fleet.keep_outs import DynamoKeepOuts
from handler.fleet.pacing import Pacer
from handler.fleet.slot_book import DynamoSlotBook
from handler.zego import transport
from handler.zego.client import RetryPolicy, ZimClient

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_sqs.client import SQSClient

    from handler.entry.callbacks import Callbacks

Part = TypeVar("Part")


@dataclass(frozen=True)
class Parts:
    """What a `Function` is made of that differs between Lambda and a test; Lambda's own by default."""

    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    send: Send = transport.send
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    retry_sleep: Callable[[float], None] = time.sleep
    """How a ZEGO call waits out its backoff between attempts (kickout_dev.clock skips it to replay faults fast)."""
    failures_to_open: int = circuit.FAILURES_TO_OPEN
    """ZEGO failures in a row that open its circuit for the fleet."""
    wall_clock: Callable[[], float] = time.time
    """Unix seconds, where keep-out windows start."""
    keep_out_dynamodb: Callable[[], DynamoDBClient] = clients.keep_out_dynamodb
    """The keep-outs' DynamoDB client (a test hands one that cannot reach its table)."""


class Function:
    """One execution environment's function: every part made once, on first use, and shared by its invocations."""

    def __init__(self, parts: Parts | None = None) -> None:
        self.parts = parts or Parts()
        self._making = threading.RLock()

    def _once(self, name: str, make: Callable[[], Part]) -> Part:
        """`make()`, kept under `name`: the batch's worker threads may ask together, and must share one."""
        with self._making:
            if name not in self.__dict__:
                self.__dict__[name] = make()
            made: Part = self.__dict__[name]
            return made

    def settings(self) -> Settings:
        """The configuration, validated; raises ConfigurationError (and is read again next time) while it is wrong."""
        return self._once("_settings", lambda: settings_from(self.parts.environ))

    def sqs(self) -> SQSClient:
        # Made on first use: most invocations never park a message, and a client costs cold-start time.
        return self._once("_sqs", clients.sqs)

    def dynamodb(self) -> DynamoDBClient:
        return self._once("_dynamodb", clients.dynamodb)

    def keep_outs(self) -> DynamoKeepOuts:
        """The keep-out windows, in the state table, on a client of their own."""

        def make() -> DynamoKeepOuts:
            config = self.settings()
            client = self._once("_keep_out_dynamodb", self.parts.keep_out_dynamodb)
            return DynamoKeepOuts(client=lambda: client, table=config.state_table, app_id=config.app_id)

        return self._once("_keep_outs", make)

    def callback_claims(self) -> DynamoCallbackClaims:
        """Which of ZIM's callbacks were handled, in the state table, on the keep-outs' client."""

        def make() -> DynamoCallbackClaims:
            config = self.settings()
            client = self._once("_keep_out_dynamodb", self.parts.keep_out_dynamodb)
            return DynamoCallbackClaims(client=lambda: client, table=config.state_table, app_id=config.app_id)

        return self._once("_callback_claims", make)

    @property
    def callbacks(self) -> Callbacks:
        """What ZIM's callback entry point is handed (made only in the callbacks' function)."""
        from handler.entry.callbacks import Callbacks  # noqa: PLC0415 (the kickout function never loads it)

        return self._once(
            "_callbacks",
            lambda: Callbacks(
                settings=self.settings,
                read_secret=lambda deadline: self.server_secret().read_callback_secret(deadline),
                keep_outs=self.keep_outs,
                claims=self.callback_claims,
                sqs=self.sqs,
                wall_clock=self.parts.wall_clock,
            ),
        )

    def secrets_provider(self) -> SecretsProvider:
        return self._once("_secrets_provider", clients.secrets_provider)

    def server_secret(self) -> ServerSecret:
        return self._once("_server_secret", lambda: ServerSecret(self.settings().secret_id, self.secrets_provider()))

    def health(self) -> Health:
        """ZEGO's circuit, shared by the fleet in the state table."""

        def make() -> Health:
            config = self.settings()
            if config.state_table is None:
                return AlwaysCall()
            store = circuit.FleetCircuitStore(config.state_table, self.dynamodb())
            return circuit.ZegoCircuit(
                circuit.circuit_name(config.app_id), store, failures_to_open=self.parts.failures_to_open
            )

        return self._once("_health", make)

    def answers(self) -> KeptAnswers:
        """The API's answers kept by Idempotency-Key, in the state table as `idempotency#<AppId>#<hash>`."""

        def make() -> KeptAnswers:
            # Imported here: only a keyed API request needs Powertools' idempotency (and its JMESPath).
            from handler.fleet.idempotency import AnswerStore, DynamoKeptAnswers  # noqa: PLC0415

            config = self.settings()
            return DynamoKeptAnswers(
                AnswerStore(config.state_table, self.dynamodb()),
                prefix=f"idempotency#{config.app_id}",
                keep_seconds=config.idempotency_key_seconds,
            )

        return self._once("_answers", make)

    def budget(self, lane: Lane) -> RateGate:
        """This environment's gate to ZEGO's fleet-wide rate budget, one per lane; both share the local pace."""

        def make() -> RateGate:
            config = self.settings()
            return FleetBudget(
                book=DynamoSlotBook(client=self.dynamodb, table=config.state_table, key=f"budget#{config.app_id}"),
                limit=config.zego_rate_limit,
                lane=lane,
                fallback=self._once("_local_pace", lambda: Pacer(share=fallback_rate_per_second(config))),
                observe=self._observe_budget,
                spawn=_spawn_traced,
            )

        return self._once(f"_budget_{lane}", make)

    def zim_client(self, lane: Lane, deadline: Deadline) -> ZimClient:
        """The ZEGO client for one request of `lane`, within `deadline`."""
        config = self.settings()
        secret = self.server_secret()
        return ZimClient(
            endpoint=config.endpoint,
            app_id=config.app_id,
            read_secret=secret.read,
            send=self._traced_send,
            deadline=deadline,
            pacer=self.budget(lane),
            policy=self.parts.retry_policy,
            sleep=self.parts.retry_sleep,
            health=self.health(),
        )

    @property
    def _traced_send(self) -> Send:
        return self._once("_send", lambda: transport.traced(_leaving_for_zego(self.parts.send)))

    @property
    def kickouts(self) -> Kickouts:
        """What the entry points are handed."""
        return self._once(
            "_kickouts",
            lambda: Kickouts(
                zim_client=self.zim_client,
                settings=self.settings,
                sqs=self.sqs,
                keep_outs=self.keep_outs,
                wall_clock=self.parts.wall_clock,
                answers=self.answers,
            ),
        )

    def renew(self) -> None:
        """Forget every part made but the settings: each is made again, from nothing shared with a snapshot's other
        clones (clients and their credentials, the secret, the budget's and the circuit's local views)."""
        with self._making:
            for name in [name for name in self.__dict__ if name.startswith("_") and name not in _KEPT_ON_RENEW]:
                del self.__dict__[name]

    def _observe_budget(self, event: str, value: float, /, **detail: str) -> None:
        match event:
            case "slot_wait":
                emit(MetricName.BUDGET_WAIT, value * 1000, MetricUnit.Milliseconds)
            case "store_calls":
                emit(MetricName.BUDGET_STORE_CALLS, value)
            case "stale_slot":
                emit(MetricName.BUDGET_SLOTS_DROPPED, value)
            case "store_slow":
                emit(MetricName.BUDGET_STORE_SLOW, value)
            case "store_error" | "store_too_slow":
                emit(MetricName.BUDGET_STORE_ERRORS, value)
                logger.warning(
                    "rate budget store unavailable: pacing this environment alone"
                    if event == "store_error"
                    else "rate budget store too slow: pacing this environment alone",
                    extra={"fallback_rate_per_second": fallback_rate_per_second(self.settings()), **detail},
                )
            case "repaired":
                emit(MetricName.BUDGET_REPAIRS, value)
                logger.warning("rate budget timeline repaired: its next slot was impossible", extra=detail)


_KEPT_ON_RENEW = frozenset({"_making", "_settings"})


def _spawn_traced(work: Callable[[], None]) -> None:
    """A booking on a thread of its own, under the invocation's trace (its DynamoDB call is a subsegment)."""
    threading.Thread(target=in_current_trace(work), name="budget-booking", daemon=True).start()


def _leaving_for_zego(send: Send) -> Send:
    """`send`, first telling the budget the call leaves now: as near the wire as this layer gets, so a call that
    leaves late (a starved CPU, a slow circuit read) gives its lateness back to the fleet."""

    def send_now(url: str, timeout: float) -> HttpReply:
        departing()
        return send(url, timeout)

    return send_now


def fallback_rate_per_second(config: Settings) -> float:
    """This environment's pace alone: the fleet's whole budget shared by the most environments that can run at once,
    so that together they stay under ZEGO's limit however many run (docs/failure-handling.md)."""
    return config.zego_rate_limit * (1 - MARGIN) / config.max_environments


@cache
def lambdas_function() -> Function:
    """The function of this execution environment as Lambda runs it: from its environment, made once."""
    return Function()


# --- SnapStart (template parameter SnapStart): Lambda's Python runtime calls these around its snapshot ---------


def before_snapshot(function: Function | None = None) -> None:
    """Once, when Lambda snapshots the initialised environment: what every first invocation would do is done into the
    snapshot (both adapters imported, the settings read, the AWS clients made: botocore's models loaded), and what
    must be one clone's own is not kept (no connection is left open). No network call: none would survive."""
    function = function or lambdas_function()
    from handler.entry import api, queue  # noqa: F401, PLC0415 (imported into the snapshot; app.py imports them lazily)

    try:
        function.settings()
    except ConfigurationError:
        return  # the first invocation says what is wrong, as without SnapStart
    function.dynamodb()
    function.secrets_provider()
    function.sqs()
    transport.close_connections()


def after_restore(function: Function | None = None) -> None:
    """In each clone restored from the snapshot, before its first invocation: everything that must not be shared
    between clones made fresh. The pool's sockets closed (every clone would write into the same TLS session); boto3's
    session renewed and every part dropped (the credentials cached at the snapshot, the secret, the budget's learned
    round trip and the circuit's cached state, all read on the snapshot's clock); `random` seeded from the OS (the
    retry jitter and the queue's backoff would otherwise run the same sequence in every clone). ZEGO's
    SignatureNonce is `secrets.token_hex`, the OS random source, and unique per clone without any of this."""
    function = function or lambdas_function()
    transport.close_connections()
    clients.renew_session()
    function.renew()
    random.seed()
