"""A count with its noun, as the dev tools print them: "1 parked message", "0 parked messages", "5 calls"."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """`count` and `noun`, in the plural (`plural`, else the noun with an s) unless the count is exactly one."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
