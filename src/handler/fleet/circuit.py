"""ZEGO's health, shared by the fleet: Powertools' circuit breaker, one circuit per AppId in KickoutStateTable.

After `FAILURES_TO_OPEN` attempts in a row that found ZEGO not serving (no answer, HTTP errors, busy, failing or
rate-limit codes), an environment opens the circuit for everyone: no environment calls ZEGO until
`RECOVERY_SECONDS` have passed; then one attempt in the whole fleet (Powertools elects it with a conditional
write) probes ZEGO. A success closes the circuit; a failure opens it again for another `RECOVERY_SECONDS`. So
while ZEGO is down the fleet calls it about 60 / RECOVERY_SECONDS times a minute, whatever the backlog.

When the table cannot be read or written, each environment keeps the circuit on its own (the last state it knew,
its own trips and probes) and counts `ZegoCircuitStoreErrors`: the fleet then probes once per RECOVERY_SECONDS
per environment, not once in all. Powertools alone would fail open (treat the circuit as closed) and every
attempt would go to ZEGO.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Final, TypeVar

from aws_lambda_powertools.utilities.circuit_breaker import (
    CircuitBreakerConfig,
    CircuitBreakerOpenError,
    CircuitState,
    CircuitTransition,
    circuit_breaker,
)
from aws_lambda_powertools.utilities.circuit_breaker.persistence import (
    CircuitBreakerDynamoDBPersistence,
    CircuitStateRecord,
)
from aws_lambda_powertools.utilities.circuit_breaker.persistence.base import CircuitBreakerExistingLockError

from handler.aws import clients
from handler.aws.observability import MetricName, emit, logger
from handler.core.deadline import Deadline, ThreadDeadlines
from handler.core.errors import ZegoCircuitOpen
from handler.core.ports import ZegoUnwell

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

FAILURES_TO_OPEN: Final = 5
"""Attempts in a row, in one environment, that found ZEGO not serving: a request's 4 attempts never trip it alone."""
RECOVERY_SECONDS: Final = 20
"""How long the circuit stays open before the fleet's next probe: 3 probes a minute while ZEGO is down."""
STATE_CACHE_SECONDS: Final = 5
"""How long an environment trusts the state it read: one GetItem per 5 s per environment on the healthy path."""

Outcome = TypeVar("Outcome")


def circuit_name(app_id: int) -> str:
    """The circuit's item id in KickoutStateTable (the budget's is `budget#<AppId>`)."""
    return f"zego#{app_id}"


class ZegoCircuit:
    """The Health port of the core, on Powertools' circuit breaker."""

    def __init__(self, name: str, store: FleetCircuitStore, *, failures_to_open: int = FAILURES_TO_OPEN) -> None:
        self.name = name
        self.store = store
        self.config = CircuitBreakerConfig(
            failure_threshold=failures_to_open,
            recovery_timeout=RECOVERY_SECONDS,
            success_threshold=1,
            handled_exceptions=ZegoUnwell,
            local_cache_max_age=STATE_CACHE_SECONDS,
        )

    def guard(self, attempt: Callable[[], Outcome], deadline: Deadline) -> Outcome:
        protected = circuit_breaker(
            name=self.name, persistence_store=self.store, on_transition=_announce, config=self.config
        )(attempt)
        try:
            with self.store.deadlines.bounded_by(deadline):
                result: Outcome = protected()
        except CircuitBreakerOpenError as error:
            opened_at = error.circuit.opened_at if error.circuit and error.circuit.opened_at else _now()
            retry_after = max(1, opened_at + RECOVERY_SECONDS - _now())
            raise ZegoCircuitOpen(
                f"ZEGO kept failing: the fleet waits for its next probe of ZEGO in about {retry_after} s",
                retry_after=retry_after,
            ) from None
        return result


def _announce(transition: CircuitTransition) -> None:
    """A log line and a metric per state change: ZegoCircuitOpen, ZegoCircuitHalfOpen (a probe), ZegoCircuitClosed."""
    to_state = CircuitState(transition.to_state)
    logger.warning(
        f"ZEGO circuit {to_state.value}",
        extra={
            "circuit": transition.circuit_name,
            "from_state": CircuitState(transition.from_state).value,
            "to_state": to_state.value,
            "opened_at": transition.opened_at,
        },
    )
    match to_state:
        case CircuitState.OPEN:
            emit(MetricName.ZEGO_CIRCUIT_OPEN, 1)
        case CircuitState.HALF_OPEN:
            emit(MetricName.ZEGO_CIRCUIT_HALF_OPEN, 1)
        case CircuitState.CLOSED:
            emit(MetricName.ZEGO_CIRCUIT_CLOSED, 1)


class FleetCircuitStore(CircuitBreakerDynamoDBPersistence):
    """Powertools' DynamoDB store, keeping this environment's own copy of each circuit for when DynamoDB fails.

    Every record read or written is remembered. A read that fails answers the remembered record (instead of
    Powertools' 'closed'); a write that fails is applied to it, and a probe election is held locally. Each failure
    is counted (`ZegoCircuitStoreErrors`) and logged; none reaches the kickout. A call the attempt's deadline
    leaves no time for (a DynamoDB call's worst case, `clients.DYNAMODB`) is not made: the copy stands in.
    """

    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        super().__init__(table_name=table_name, boto3_client=client)
        self._known: dict[str, CircuitStateRecord] = {}
        self._known_lock = threading.Lock()
        self.deadlines = ThreadDeadlines()
        """The deadline of the attempt each thread guards (the calls of a batch run on threads)."""

    def _has_time(self) -> bool:
        return self.deadlines.allow(clients.DYNAMODB.worst_seconds)

    def _get_record(self, name: str) -> CircuitStateRecord | None:
        if not self._has_time():
            with self._known_lock:
                return self._known.get(name)
        try:
            record = super()._get_record(name)
        except Exception as error:
            _store_failed("read", error)
            with self._known_lock:
                return self._known.get(name)
        self._remember(name, record)
        return record

    def _put_record(
        self, record: CircuitStateRecord, condition: str | None = None, expected_opened_at: int | None = None
    ) -> None:
        if not self._has_time():
            if condition == "half_open" and not self._wins_local_election(record.name, expected_opened_at):
                raise CircuitBreakerExistingLockError
            self._remember(record.name, record)
            return
        try:
            super()._put_record(record, condition=condition, expected_opened_at=expected_opened_at)
        except CircuitBreakerExistingLockError:
            raise
        except Exception as error:
            _store_failed("write", error)
            if condition == "half_open" and not self._wins_local_election(record.name, expected_opened_at):
                raise CircuitBreakerExistingLockError from None
        self._remember(record.name, record)

    def _update_record(self, record: CircuitStateRecord) -> None:
        if not self._has_time():
            self._remember(record.name, record)
            return
        try:
            super()._update_record(record)
        except Exception as error:
            _store_failed("write", error)
        self._remember(record.name, record)

    def _remember(self, name: str, record: CircuitStateRecord | None) -> None:
        with self._known_lock:
            if record is None:
                self._known.pop(name, None)
            else:
                self._known[name] = replace(record)

    def _wins_local_election(self, name: str, expected_opened_at: int | None) -> bool:
        """The store's probe election (one prober per recovery window), held on this environment's copy."""
        with self._known_lock:
            known = self._known.get(name)
            if known is None or known.state is CircuitState.CLOSED:
                return True
            if known.state is CircuitState.OPEN:
                return known.half_open_owner is None and known.opened_at == expected_opened_at
            return (known.probe_lease_expiry or 0) <= _now()


def _store_failed(operation: str, error: Exception) -> None:
    # The error's class only: botocore's text names the table and the request, which is all the line needs anyway.
    logger.warning(
        "ZEGO circuit store failed: this environment keeps the circuit on its own",
        extra={"operation": operation, "error": type(error).__name__},
    )
    emit(MetricName.ZEGO_CIRCUIT_STORE_ERRORS, 1)


def _now() -> int:
    """Unix seconds, from the clock Powertools' breaker reads."""
    return int(dt.datetime.now().timestamp())
