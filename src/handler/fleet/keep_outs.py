"""Keep-out windows: `(AppId, room, user) -> until`, one DynamoDB item each in KickoutStateTable.

ZIM has no room ban: a kicked user may enter again at once. A kickout with `keep_out_seconds` records until when
the user is to be kept out; ZIM's `room_enter` callback of that user, while it lasts, kicks them again. The item
is only ever extended: one conditional UpdateItem writes it when there is none or the one there ends sooner, so a
shorter window never shortens a longer one, and the same kickout written twice (an SQS redelivery) changes nothing
the second time. `expiration` (the table's TTL attribute) is the end of the window: DynamoDB reaps it some time
after, so readers compare `until` with their clock and never trust the item's presence alone.

`answered_at_ms` is when ZEGO last answered a kick of the user with a window (the latest, whatever the window: a
later, shorter kick leaves `until` alone but is the one ZIM's next `room_exit` confirms), for the confirmation's
latency (entry/callbacks.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError

from handler.aws.clients import KEEP_OUTS
from handler.core.deadline import Deadline

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

KIND: Final = "keepout"
BY_ROOM: Final = "KeepOutsByRoom"
"""The table's index of keep-outs by room (`room_key` = `<AppId>#<room>`, sorted by `user_id`): only keep-outs have
a `room_key`, so it holds nothing else."""
MAX_PAGE: Final = 100
MAX_BATCH_READ: Final = 100
"""BatchGetItem's limit of keys per call."""


class KeepOutsUnavailable(Exception):
    """The keep-outs' store could not be asked in time, or failed; the message says which, never a value."""


@dataclass(frozen=True, slots=True)
class KeepOut:
    """One user kept out of one room until a moment (Unix seconds, whole)."""

    room_id: str
    user_id: str
    until: int
    reason: str | None = None
    operator_id: str | None = None
    answered_at_ms: int | None = None
    """When ZEGO answered the kickout that set it (Unix milliseconds, the function's clock); None when not known."""


@dataclass(frozen=True, slots=True)
class Answers:
    """When ZEGO last answered a kick of each user (Unix ms), for those whose keep-out item says; `unread` users
    whose items could not be read in time (their answer unknown, not absent)."""

    answered_at_ms: dict[str, int]
    unread: frozenset[str] = frozenset()


class Written(StrEnum):
    EXTENDED = "extended"
    """Written: there was none, or it ended sooner."""
    ALREADY_LATER = "already_later"
    """Left as it was: it ends as late or later (the same kickout again, or a longer one before)."""


def keep_out_until(decided_at: float, seconds: int) -> int:
    """The end of a window of `seconds` from the moment the kickout was decided, in whole seconds (rounded up, so
    that the same decision always gives the same end)."""
    return math.ceil(decided_at) + seconds


def item_key(app_id: int, room_id: str, user_id: str) -> str:
    """`keepout#<AppId>#<room>#<user>`, the ids percent-encoded: ZEGO's ids may hold `#`, their own separator."""
    return f"{KIND}#{app_id}#{quote(room_id, safe='')}#{quote(user_id, safe='')}"


@dataclass(frozen=True, slots=True)
class DynamoKeepOuts:
    client: Callable[[], DynamoDBClient]
    table: str
    app_id: int

    def extend(self, keep_out: KeepOut, deadline: Deadline) -> Written:
        """Record `keep_out` unless one that ends as late is there; raises KeepOutsUnavailable."""
        names = {"#until": "until"}
        values: dict[str, Any] = {
            ":until": {"N": str(keep_out.until)},
            ":room": {"S": keep_out.room_id},
            ":user": {"S": keep_out.user_id},
            ":app": {"N": str(self.app_id)},
            ":room_key": {"S": self._room_key(keep_out.room_id)},
        }
        assignments = [
            "#until = :until",
            "expiration = :until",
            "room_id = :room",
            "user_id = :user",
            "app_id = :app",
            "room_key = :room_key",
        ]
        removals = []
        for attribute, value in (("reason", keep_out.reason), ("operator_id", keep_out.operator_id)):
            if value is None:
                removals.append(attribute)  # the reason of an earlier, shorter kickout is not this one's
            else:
                assignments.append(f"{attribute} = :{attribute}")
                values[f":{attribute}"] = {"S": value}
        if keep_out.answered_at_ms is not None:
            assignments.append("answered_at_ms = :answered")
            values[":answered"] = {"N": str(keep_out.answered_at_ms)}
        expression = "SET " + ", ".join(assignments) + (" REMOVE " + ", ".join(removals) if removals else "")
        client = self._client_within(deadline)
        try:
            client.update_item(
                TableName=self.table,
                Key={"id": {"S": item_key(self.app_id, keep_out.room_id, keep_out.user_id)}},
                UpdateExpression=expression,
                ConditionExpression="attribute_not_exists(#until) OR #until < :until",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code == "ConditionalCheckFailedException":
                if keep_out.answered_at_ms is not None:
                    self._answered(keep_out, keep_out.answered_at_ms, deadline)
                return Written.ALREADY_LATER
            raise KeepOutsUnavailable(f"DynamoDB answered {code}") from None
        except BotoCoreError as error:
            raise KeepOutsUnavailable(f"DynamoDB could not be reached ({type(error).__name__})") from None
        return Written.EXTENDED

    def _answered(self, keep_out: KeepOut, answered_at_ms: int, deadline: Deadline) -> None:
        """Move a longer keep-out's answer time on to this later kick's: a second write, only for a kick whose window
        changed nothing (a redelivery, a shorter window); left as it is when a later answer is there already."""
        client = self._client_within(deadline)
        try:
            client.update_item(
                TableName=self.table,
                Key={"id": {"S": item_key(self.app_id, keep_out.room_id, keep_out.user_id)}},
                UpdateExpression="SET answered_at_ms = :answered",
                ConditionExpression="attribute_exists(#until) AND "
                "(attribute_not_exists(answered_at_ms) OR answered_at_ms < :answered)",
                ExpressionAttributeNames={"#until": "until"},
                ExpressionAttributeValues={":answered": {"N": str(answered_at_ms)}},
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code != "ConditionalCheckFailedException":
                raise KeepOutsUnavailable(f"the answer's time not recorded: DynamoDB answered {code}") from None
        except BotoCoreError as error:
            raise KeepOutsUnavailable(
                f"the answer's time not recorded: DynamoDB could not be reached ({type(error).__name__})"
            ) from None

    def answers(self, room_id: str, user_ids: Sequence[str], deadline: Deadline) -> Answers:
        """When ZEGO last answered a kick of each of `user_ids` in `room_id` that had a window (whether or not the
        window lasts: the kick is what is confirmed); strongly consistent, one BatchGetItem per 100 users, each only
        while the deadline allows it. Users not read (no time left, or DynamoDB's unprocessed keys) are counted in
        `unread`. Raises KeepOutsUnavailable when no call could be made or one failed."""
        found: dict[str, int] = {}
        unread: set[str] = set()
        keys = {item_key(self.app_id, room_id, user): user for user in dict.fromkeys(user_ids)}
        pages = [list(keys)[start : start + MAX_BATCH_READ] for start in range(0, len(keys), MAX_BATCH_READ)]
        for number, page in enumerate(pages):
            if number and not deadline.allows(KEEP_OUTS.worst_seconds):
                unread.update(keys[key] for rest in pages[number:] for key in rest)
                break
            client = self._client_within(deadline)
            try:
                answer = client.batch_get_item(
                    RequestItems={
                        self.table: {
                            "Keys": [{"id": {"S": key}} for key in page],
                            "ConsistentRead": True,
                            "ProjectionExpression": "id, answered_at_ms",
                        }
                    }
                )
            except (ClientError, BotoCoreError) as error:
                raise KeepOutsUnavailable(f"DynamoDB failed ({type(error).__name__})") from None
            for item in answer.get("Responses", {}).get(self.table, []):
                user = keys.get(_string(item.get("id")) or "")
                answered = _whole(item.get("answered_at_ms"))
                if user is not None and answered is not None:
                    found[user] = answered
            unprocessed = answer.get("UnprocessedKeys", {}).get(self.table)
            for key in unprocessed["Keys"] if unprocessed else []:
                unread.add(keys.get(_string(key.get("id")) or "", ""))
        return Answers(answered_at_ms=found, unread=frozenset(unread - {""}))

    def find(self, room_id: str, user_id: str, now: float, deadline: Deadline) -> KeepOut | None:
        """The keep-out of `user_id` in `room_id` that lasts beyond `now` (Unix seconds), if any; a strongly consistent
        read, so that a re-entry a moment after the kick finds it. Raises KeepOutsUnavailable."""
        client = self._client_within(deadline)
        try:
            answer = client.get_item(
                TableName=self.table,
                Key={"id": {"S": item_key(self.app_id, room_id, user_id)}},
                ConsistentRead=True,
            )
        except (ClientError, BotoCoreError) as error:
            raise KeepOutsUnavailable(f"DynamoDB failed ({type(error).__name__})") from None
        return _keep_out(dict(answer.get("Item") or {}), now)

    def in_room(
        self, room_id: str, now: float, deadline: Deadline, *, limit: int = MAX_PAGE, after: str | None = None
    ) -> tuple[list[KeepOut], str | None]:
        """The room's keep-outs that last beyond `now`, in user order, from the first user after `after`: at most
        `limit` read, and the last user read when there may be more (else None). Raises KeepOutsUnavailable."""
        condition = "room_key = :room_key" + (" AND user_id > :after" if after is not None else "")
        values: dict[str, Any] = {":room_key": {"S": self._room_key(room_id)}}
        if after is not None:
            values[":after"] = {"S": after}
        client = self._client_within(deadline)
        try:
            answer = client.query(
                TableName=self.table,
                IndexName=BY_ROOM,
                KeyConditionExpression=condition,
                ExpressionAttributeValues=values,
                Limit=min(limit, MAX_PAGE),
            )
        except (ClientError, BotoCoreError) as error:
            raise KeepOutsUnavailable(f"DynamoDB failed ({type(error).__name__})") from None
        found = [_keep_out(dict(item), now) for item in answer.get("Items", [])]
        last = dict(answer.get("LastEvaluatedKey") or {}).get("user_id")
        return [keep_out for keep_out in found if keep_out is not None], _string(last)

    def lift(self, room_id: str, user_id: str, now: float, deadline: Deadline) -> KeepOut | None:
        """Delete the user's keep-out of the room; the one lifted, or None when none lasted beyond `now`."""
        client = self._client_within(deadline)
        try:
            answer = client.delete_item(
                TableName=self.table,
                Key={"id": {"S": item_key(self.app_id, room_id, user_id)}},
                ReturnValues="ALL_OLD",
            )
        except (ClientError, BotoCoreError) as error:
            raise KeepOutsUnavailable(f"DynamoDB failed ({type(error).__name__})") from None
        return _keep_out(dict(answer.get("Attributes") or {}), now)

    def _room_key(self, room_id: str) -> str:
        return f"{self.app_id}#{room_id}"

    def _client_within(self, deadline: Deadline) -> DynamoDBClient:
        return client_within(self.client, deadline)


def client_within(client: Callable[[], DynamoDBClient], deadline: Deadline) -> DynamoDBClient:
    """The state table's client for a call that `deadline` leaves time for; raises KeepOutsUnavailable when it does
    not, or when there is no client."""
    if not deadline.allows(KEEP_OUTS.worst_seconds):
        raise KeepOutsUnavailable(
            f"out of time: {deadline.remaining():.2f} s left, a store call may take {KEEP_OUTS.worst_seconds:g} s"
        )
    try:
        return client()
    except Exception as error:
        raise KeepOutsUnavailable(f"no DynamoDB client ({type(error).__name__})") from None


def _keep_out(item: dict[str, Any], now: float) -> KeepOut | None:
    """The keep-out an item holds, if it lasts beyond `now` (one whose window ended waits for TTL to reap it)."""
    until = _whole(item.get("until"))
    room_id, user_id = _string(item.get("room_id")), _string(item.get("user_id"))
    if until is None or until <= now or room_id is None or user_id is None:
        return None
    return KeepOut(
        room_id=room_id,
        user_id=user_id,
        until=until,
        reason=_string(item.get("reason")),
        operator_id=_string(item.get("operator_id")),
        answered_at_ms=_whole(item.get("answered_at_ms")),
    )


def _whole(attribute: Any) -> int | None:
    if isinstance(attribute, dict) and isinstance(attribute.get("N"), str) and attribute["N"].isdigit():
        return int(attribute["N"])
    return None


def _string(attribute: Any) -> str | None:
    if isinstance(attribute, dict) and isinstance(attribute.get("S"), str):
        value: str = attribute["S"]
        return value
    return None
