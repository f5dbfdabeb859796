"""The fleet's timeline of ZEGO call slots, kept in one DynamoDB item, booked a block at a time (budget.py's store).

One booking is one conditional UpdateItem; the condition failing is an answer (the budget is busy, or idle), a
failure to ask is StoreUnavailable. Each round trip takes its moment afresh from the caller's clock, and asks for no
slot sooner than the round trip it is expected to take: a slot booked must still lie ahead when the answer arrives.

The item is shared state that anything with access to the table can damage (a hand edit, a clock that jumped). It
is read defensively: a `next_slot` that is no number, or lies further ahead than any environment could have booked,
is overwritten by a new run of slots, with a write conditional on the bad value (so that two environments repairing
at once do not undo each other's booking), and the booking says it repaired the timeline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final, Protocol

from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

STATE_TTL_SECONDS: Final = 86_400
"""The budget's item expires a day after its last booking (DynamoDB TTL): an AppId no longer used leaves nothing."""
ROUND_TRIPS: Final = 4
"""The most tries of one booking, each one UpdateItem (and one more to repair the timeline): the item changed under
it, or it found the timeline idle when it expected it busy, or the other way round."""


class StoreUnavailable(Exception):
    """The budget's store could not be asked (not a refusal: the condition failing is an answer)."""


@dataclass(frozen=True, slots=True)
class Ask:
    """What a booking asks of the timeline, relative to the moment each of its round trips is sent."""

    clock: Callable[[], float]
    lead: float
    """No slot sooner than this after the request leaves: the round trip it is expected to take, and a little."""
    reach: float
    """The next free slot may lie this far after the earliest moment, no further (else Busy)."""
    latest: float
    """Nor later than this moment (the caller's deadline)."""
    impossible: float
    """A next free slot further ahead of now than this cannot have been booked by anyone: the timeline is repaired."""
    restart: float
    """A repaired timeline's new run starts this long after the earliest moment: after anything still held."""
    idle: bool = False
    """The caller expects the budget to be idle (its next free slot past), so it starts a new run first and so spends
    one round trip, not two, on a call that finds the fleet quiet."""


@dataclass(frozen=True, slots=True)
class Booked:
    first: float
    """The first booked slot (Unix time); the others follow at the interval."""
    round_trips: int = 1
    """Store calls it took (more than one when another environment changed the item in between)."""
    started_run: bool = False
    """The budget was idle: these slots start a new run."""
    repaired: str | None = None
    """What was wrong with the timeline this booking overwrote (None: nothing)."""
    round_trip: float = 0.0
    """Seconds its last request took, on the wire (0: not measured)."""


@dataclass(frozen=True, slots=True)
class Busy:
    next_free: float
    """The first slot nobody holds, later than the caller would book."""
    round_trips: int = 1
    round_trip: float = 0.0


class SlotBook(Protocol):
    """Where the fleet's timeline of slots lives."""

    def book(self, count: int, interval: float, ask: Ask) -> Booked | Busy:
        """Book `count` slots from the next free one, as `ask` allows; raises StoreUnavailable."""
        ...

    def push_back(self, seconds: float, ask: Ask) -> None:
        """Move the next free slot `seconds` later if the budget is busy (a call left late); raises StoreUnavailable."""
        ...


def _micros(seconds: float) -> str:
    return str(round(seconds * 1_000_000))


class _Unreadable(ValueError):
    """A `next_slot` that is no time: what it is instead."""


def read_slot(attribute: Any) -> float:
    """A stored `next_slot` (DynamoDB's JSON: {"N": "<microseconds>"}) as Unix seconds; raises _Unreadable.

    Any finite number is read as the time it says, a fraction of a microsecond included (only this function writes
    the item, always whole microseconds, but a fraction means no harm); anything else is no time at all.
    """
    if not isinstance(attribute, dict) or set(attribute) != {"N"} or not isinstance(attribute["N"], str):
        kind = next(iter(attribute), "?") if isinstance(attribute, dict) and attribute else type(attribute).__name__
        raise _Unreadable(f"not a number (DynamoDB type {kind})")
    try:
        micros = Decimal(attribute["N"])
    except InvalidOperation:
        raise _Unreadable("not a number") from None
    if not micros.is_finite():
        raise _Unreadable("not a finite number")
    seconds = float(micros) / 1_000_000
    if not math.isfinite(seconds):
        raise _Unreadable("beyond any time")
    return seconds


@dataclass(frozen=True, slots=True)
class DynamoSlotBook:
    """The timeline as one DynamoDB item: `next_slot` in Unix microseconds, `expiration` for the table's TTL."""

    client: Callable[[], DynamoDBClient]
    table: str
    key: str

    def book(self, count: int, interval: float, ask: Ask) -> Booked | Busy:
        span = count * interval
        idle = ask.idle
        for round_trips in range(1, ROUND_TRIPS + 1):
            now = ask.clock()
            earliest = now + ask.lead
            latest = min(ask.latest, earliest + ask.reach)
            if idle:
                # Idle (the next free slot is past, or too near to be of use) or never used: a new run of slots
                # starts at the earliest moment, after every slot anybody holds.
                answer = self._update(
                    "SET next_slot = :next, expiration = :expiration",
                    "attribute_not_exists(next_slot) OR (attribute_type(next_slot, :number) AND next_slot < :earliest)",
                    {":next": _number(earliest + span), ":earliest": _number(earliest), ":number": {"S": "N"}},
                    ask.clock,
                )
                if answer.held:
                    return Booked(
                        first=earliest, round_trips=round_trips, started_run=True, round_trip=answer.round_trip
                    )
            else:
                # The usual case while the budget is busy: take the next `count` slots behind everyone else's.
                answer = self._update(
                    "SET next_slot = next_slot + :span, expiration = :expiration",
                    "attribute_type(next_slot, :number) AND next_slot BETWEEN :earliest AND :latest",
                    {
                        ":span": _number(span),
                        ":earliest": _number(earliest),
                        ":latest": _number(latest),
                        ":number": {"S": "N"},
                    },
                    ask.clock,
                )
                if answer.held:
                    return Booked(
                        first=_read_held(answer.seen) - span, round_trips=round_trips, round_trip=answer.round_trip
                    )
            if answer.seen is None:
                idle = True  # no next_slot at all: a new run
                continue
            try:
                next_free = read_slot(answer.seen)
                if next_free > now + ask.impossible:
                    raise _Unreadable(f"{next_free - now:.0f} s ahead of now, beyond any booking")
            except _Unreadable as wrong:
                start = earliest + ask.restart
                repaired = self._update(
                    "SET next_slot = :next, expiration = :expiration",
                    "next_slot = :seen",
                    {":next": _number(start + span), ":seen": answer.seen},
                    ask.clock,
                )
                if repaired.held:
                    return Booked(
                        first=start,
                        round_trips=round_trips + 1,
                        started_run=True,
                        repaired=str(wrong),
                        round_trip=repaired.round_trip,
                    )
                idle = False  # someone changed it first: read what they left on the next round trip
                continue
            if next_free > latest:
                return Busy(next_free=next_free, round_trips=round_trips, round_trip=answer.round_trip)
            # The condition failed on a value that says the other case holds (another environment just started a
            # run, or the run just lapsed): try that one.
            idle = next_free < earliest
        raise StoreUnavailable("the budget's item changed under every booking")

    def push_back(self, seconds: float, ask: Ask) -> None:
        now = ask.clock()
        earliest = now + ask.lead
        # Only a busy timeline is moved, and never beyond where any booking may reach: an idle one starts its next
        # run after now anyway, and a delay must not become an impossible future.
        self._update(
            "SET next_slot = next_slot + :delay, expiration = :expiration",
            "attribute_type(next_slot, :number) AND next_slot BETWEEN :earliest AND :latest",
            {
                ":delay": _number(seconds),
                ":earliest": _number(earliest),
                ":latest": _number(min(ask.latest, earliest + ask.reach)),
                ":number": {"S": "N"},
            },
            ask.clock,
        )

    def _update(self, expression: str, condition: str, values: dict[str, Any], clock: Callable[[], float]) -> _Answer:
        sent = now = clock()
        try:
            client = self.client()
            sent = clock()  # a client made on first use is no part of the round trip
            answer = client.update_item(
                TableName=self.table,
                Key={"id": {"S": self.key}},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeValues={**values, ":expiration": {"N": str(int(now) + STATE_TTL_SECONDS)}},
                ReturnValues="UPDATED_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code != "ConditionalCheckFailedException":
                raise StoreUnavailable(f"DynamoDB answered {code}") from None
            old: dict[str, Any] = dict(error.response.get("Item") or {})  # type: ignore[call-overload]
            return _Answer(held=False, seen=old.get("next_slot"), round_trip=clock() - sent)
        except BotoCoreError as error:
            raise StoreUnavailable(f"DynamoDB could not be reached ({type(error).__name__})") from None
        except Exception as error:
            # Whatever else goes wrong in asking (a stand-in's bug, a parser's), the budget falls back: a kickout
            # never fails because the budget's store did.
            raise StoreUnavailable(f"asking DynamoDB failed ({type(error).__name__})") from None
        return _Answer(held=True, seen=dict(answer.get("Attributes") or {}).get("next_slot"), round_trip=clock() - sent)


def _number(seconds: float) -> dict[str, str]:
    return {"N": _micros(seconds)}


def _read_held(attribute: Any) -> float:
    """The next free slot DynamoDB answers after an update it made (a number it added to: no repair to make)."""
    try:
        return read_slot(attribute)
    except _Unreadable as wrong:
        raise StoreUnavailable(f"DynamoDB answered a next_slot that is {wrong}") from None


@dataclass(frozen=True, slots=True)
class _Answer:
    held: bool
    """The condition held and the update was made."""
    seen: Any
    """`next_slot` after the update; or the value that failed the condition (None: the item has none)."""
    round_trip: float = 0.0
    """Seconds the request took."""
