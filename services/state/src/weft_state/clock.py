"""Time in one place: UTC ``datetime`` values and the RFC 3339 text events carry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["from_epoch", "later", "rfc3339", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def later(ms: int | float, *, start: datetime | None = None) -> datetime:
    return (start or utcnow()) + timedelta(milliseconds=ms)


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def rfc3339(value: datetime) -> str:
    """``2026-01-02T03:04:05.678Z``: UTC with milliseconds (SPEC section 6)."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:"
        f"{value.minute:02d}:{value.second:02d}.{value.microsecond // 1000:03d}Z"
    )
