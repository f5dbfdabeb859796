"""The kickout request and its result, as callers send and receive them, and how an invalid one is described.

Pure: pydantic models and the rules of a valid request; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from handler.zego import zim

MAX_USERS_PER_REQUEST: Final = 500
"""Ten ZEGO calls at most: at the fleet's share of ZEGO's 20 requests/s that still fits one invocation."""
MAX_REASON_CHARACTERS: Final = 1024
MAX_KEEP_OUT_SECONDS: Final = 7 * 86_400
"""A keep-out lasts at most a week: longer is a ban, which belongs to the app's own account system."""

# ZEGO's allowed set for RoomId and UserId: ASCII letters, digits, `!#$%&()+-:;<=.>?@[]^_{}|~,` and space.
ZEGO_ID_PATTERN: Final = r"^[A-Za-z0-9!#$%&()+\-:;<=.>?@\[\]^_{}|~, ]+$"

ZegoId = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=ZEGO_ID_PATTERN)]


def _drop_duplicates(user_ids: list[str]) -> list[str]:
    return list(dict.fromkeys(user_ids))


class KickoutRequest(BaseModel):
    """One moderation decision: remove these users from this room."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    room_id: ZegoId
    user_ids: Annotated[
        list[ZegoId],
        Field(min_length=1, max_length=MAX_USERS_PER_REQUEST),
        AfterValidator(_drop_duplicates),
    ]
    reason: Annotated[str, Field(max_length=MAX_REASON_CHARACTERS)] | None = None
    operator_id: ZegoId | None = None
    keep_out_seconds: Annotated[
        int,
        Field(
            ge=0,
            le=MAX_KEEP_OUT_SECONDS,
            description="Seconds after the decision during which a user who enters the room again is kicked again "
            "(0, the default: none). A later kickout that ends later extends it; one that ends sooner does not "
            "shorten it.",
        ),
    ] = 0


ID_RULE: Final = "1 to 32 characters: ASCII letters, digits, space and !#$%&()+-:;<=.>?@[]^_{}|~,"


MAX_PROBLEM_LINES: Final = 20
"""The most lines a list of problems holds: a body of 100,000 unknown keys must not get an answer of 100,000 problems
(Lambda caps responses at 6 MB). Past it, the last line says how many more there are."""


def field_problems(issues: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Field and problem for each validation issue; never the input values (they may be huge or hostile)."""
    issues = list(issues)
    problems = []
    if len(issues) > MAX_PROBLEM_LINES:
        hidden = len(issues) - (MAX_PROBLEM_LINES - 1)
        issues = issues[: MAX_PROBLEM_LINES - 1]
        problems_after = [{"field": "…", "problem": f"and {hidden} more problems"}]
    else:
        problems_after = []
    for issue in issues:
        # An unknown field's name is the caller's text: shown, so a typo is found, but never more than 40 characters.
        field_name = ".".join(str(part)[:40] for part in issue["loc"] if part != "body") or "body"
        problem = f"must be {ID_RULE}" if issue["type"] == "string_pattern_mismatch" else str(issue["msg"])
        problems.append({"field": field_name, "problem": problem})
    return problems + problems_after


def describe_invalid(error: ValidationError) -> str:
    return "; ".join(f"{problem['field']}: {problem['problem']}" for problem in field_problems(error.errors()))


class CallReport(BaseModel):
    """What ZEGO answered to one call of at most 50 users."""

    user_ids: list[str]
    code: int
    message: str
    request_id: str
    outcome: zim.CodeClass


class KickoutResult(BaseModel):
    """The answer to a kickout: the API's 200 body and a direct invoke's return value."""

    room_id: str
    kicked_user_ids: list[str]
    absent_user_ids: list[str] = Field(description="Users ZEGO reports as not in the room (or the room is gone).")
    request_ids: list[str] = Field(description="ZEGO's RequestId of each call, for support tickets.")
    reason_truncated: bool = Field(description="True when the reason was cut to ZEGO's 32 UTF-8 bytes.")
    calls: list[CallReport]

    @classmethod
    def from_calls(cls, room_id: str, calls: list[CallReport], *, reason_truncated: bool) -> KickoutResult:
        return cls(
            room_id=room_id,
            kicked_user_ids=[user for call in calls if call.outcome is zim.CodeClass.DONE for user in call.user_ids],
            absent_user_ids=[
                user for call in calls if call.outcome is zim.CodeClass.NOTHING_TO_DO for user in call.user_ids
            ],
            request_ids=[call.request_id for call in calls],
            reason_truncated=reason_truncated,
            calls=calls,
        )

    def for_users(self, user_ids: Sequence[str]) -> KickoutResult:
        """The part of a merged kickout that concerns `user_ids` (one message of a coalesced batch)."""
        wanted = set(user_ids)
        calls = [
            call.model_copy(update={"user_ids": [user for user in call.user_ids if user in wanted]})
            for call in self.calls
            if wanted.intersection(call.user_ids)
        ]
        return KickoutResult.from_calls(self.room_id, calls, reason_truncated=self.reason_truncated)


class KeepOutView(BaseModel):
    """One user kept out of a room."""

    user_id: str
    until: int = Field(description="When the keep-out ends, Unix seconds.")
    reason: str | None = Field(description="The reason of the kickout that set it.")
    operator_id: str | None = Field(description="The operator of the kickout that set it (kept as FromUserId).")


class KeepOutPage(BaseModel):
    """A page of a room's keep-outs that still last, in user order."""

    room_id: str
    keep_outs: list[KeepOutView]
    next_token: str | None = Field(description="Pass as next_token for the next page; null on the last page.")


class KeepOutLifted(BaseModel):
    room_id: str
    user_id: str
    lifted: bool


class KeepOutKey(BaseModel):
    """Whose keep-out of which room (the path of DELETE /keep-outs/{room_id}/{user_id})."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    room_id: ZegoId
    user_id: ZegoId
