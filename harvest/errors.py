"""Errors shown to users: one line each."""

from __future__ import annotations


def first_line(error: BaseException | str, limit: int = 300) -> str:
    """The first line of an error's message (at most ``limit`` characters), or its type when it has none."""
    text = str(error).strip()
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return text.splitlines()[0][:limit]
