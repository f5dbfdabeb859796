"""The fleet's timeline of ZEGO call slots, kept in one DynamoDB item, booked a block at a time (budget.py's store).

One booking is one conditional UpdateItem; the condition failing is an answer (the budget is busy, or idle), a
failure to ask is StoreUnavailable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

STATE_TTL_SECONDS: Final = 86_400
"""The budget's item expires a day after its last booking (DynamoDB TTL): an AppId no longer used leaves nothing."""


class StoreUnavailable(Exception):
    """The budget's store could not be asked (not a refusal: the condition failing is an answer)."""


@dataclass(frozen=True, slots=True)
class Booked:
    first: float
    """The first booked slot (Unix time); the others follow at the interval."""
    round_trips: int = 1
    """Store calls it took (more than one when another environment changed the item in between)."""
    started_run: bool = False
    """The budget was idle: these slots start a new run."""


@dataclass(frozen=True, slots=True)
class Busy:
    next_free: float
    """The first slot nobody holds, later than the caller would book."""
    round_trips: int = 1


class SlotBook(Protocol):
    """Where the fleet's timeline of slots lives."""

    def book(
        self, count: int, interval: float, *, now: float, latest: float, lead: float, idle: bool = False
    ) -> Booked | Busy:
        """Book `count` slots from the next free one if it is no later than `latest`; raises StoreUnavailable.

        `idle`: the caller expects the budget to be idle (its next free slot past), so it starts a new run first
        and so spends one round trip, not two, on a call that finds the fleet quiet.
        """
        ...


def _micros(seconds: float) -> str:
    return str(round(seconds * 1_000_000))


def _seconds(attribute: Any) -> float:
    return int(attribute["N"]) / 1_000_000


@dataclass(frozen=True, slots=True)
class DynamoSlotBook:
    """The timeline as one DynamoDB item: `next_slot` in Unix microseconds, `expiration` for the table's TTL."""

    client: Callable[[], DynamoDBClient]
    table: str
    key: str

    def book(
        self, count: int, interval: float, *, now: float, latest: float, lead: float, idle: bool = False
    ) -> Booked | Busy:
        span = _micros(count * interval)
        expiration = {"N": str(int(now) + STATE_TTL_SECONDS)}
        for round_trips in range(1, 5):
            if idle:
                # Idle (the next free slot is past) or never used: a new run of slots starts a little ahead of now.
                start = now + lead
                answer = self._update(
                    "SET next_slot = :next, expiration = :expiration",
                    "attribute_not_exists(next_slot) OR next_slot < :now",
                    {":next": {"N": _micros(start + count * interval)}, ":now": {"N": _micros(now)}},
                    expiration,
                )
                if answer.held:
                    return Booked(first=start, round_trips=round_trips, started_run=True)
            else:
                # The usual case while the budget is busy: take the next `count` slots behind everyone else's.
                answer = self._update(
                    "SET next_slot = next_slot + :span, expiration = :expiration",
                    "next_slot BETWEEN :now AND :latest",
                    {":span": {"N": span}, ":now": {"N": _micros(now)}, ":latest": {"N": _micros(latest)}},
                    expiration,
                )
                if answer.held:
                    return Booked(first=answer.next_slot - count * interval, round_trips=round_trips)
            if answer.next_slot > latest:
                return Busy(next_free=answer.next_slot, round_trips=round_trips)
            # The condition failed on a value that says the other case holds (another environment just started a
            # run, or the run just lapsed): try that one.
            idle = answer.next_slot < now
        raise StoreUnavailable("the budget's item changed under every booking")

    def _update(self, expression: str, condition: str, values: dict[str, Any], expiration: Any) -> _Answer:
        try:
            answer = self.client().update_item(
                TableName=self.table,
                Key={"id": {"S": self.key}},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeValues={**values, ":expiration": expiration},
                ReturnValues="UPDATED_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code != "ConditionalCheckFailedException":
                raise StoreUnavailable(f"DynamoDB answered {code}") from None
            old: dict[str, Any] = dict(error.response.get("Item") or {})  # type: ignore[call-overload]
            return _Answer(held=False, next_slot=_seconds(old["next_slot"]) if "next_slot" in old else float("-inf"))
        except BotoCoreError as error:
            raise StoreUnavailable(f"DynamoDB could not be reached ({type(error).__name__})") from None
        return _Answer(held=True, next_slot=_seconds(answer["Attributes"]["next_slot"]))


@dataclass(frozen=True, slots=True)
class _Answer:
    held: bool
    """The condition held and the update was made."""
    next_slot: float
    """After the update; or the value that failed the condition (-inf: the item has none)."""
