"""Timestamps: one format in the database, friendly forms on input."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from .errors import InvalidInputError

__all__ = ["format_ts", "now", "parse_duration", "parse_time", "parse_ts"]

_DURATION = re.compile(r"^\s*(\d+)\s*(s|sec|m|min|h|d|w|y)\s*$", re.IGNORECASE)
_UNITS = {
    "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400,
}


def now() -> datetime:
    """The current time, UTC, aware."""
    return datetime.now(timezone.utc)


def format_ts(value: datetime) -> str:
    """The database form: ISO 8601 UTC with microseconds and a Z, so strings sort as times."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(value: str) -> datetime:
    """Read a timestamp written by :func:`format_ts` (or any ISO 8601 form)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def parse_duration(value: str) -> timedelta:
    """'90s', '15m', '12h', '7d', '2w', '1y' → timedelta."""
    match = _DURATION.match(value)
    if not match:
        raise InvalidInputError(
            f"invalid duration {value!r}: use a number and a unit s, m, h, d, w or y (e.g. 7d)"
        )
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_time(value: str | datetime | date | None, *, field: str = "time") -> datetime | None:
    """A point in time from a datetime, a date, ISO 8601 text, 'today', 'yesterday',
    or a duration meaning "that long ago" ('7d', '12h'). Naive times are taken as UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if not isinstance(value, str):
        raise InvalidInputError(f"{field} must be a date, datetime or string, not {type(value).__name__}")
    text = value.strip()
    lowered = text.lower()
    midnight = now().replace(hour=0, minute=0, second=0, microsecond=0)
    if lowered == "now":
        return now()
    if lowered == "today":
        return midnight
    if lowered == "yesterday":
        return midnight - timedelta(days=1)
    if _DURATION.match(text):
        return now() - parse_duration(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(
            f"invalid {field} {value!r}: use ISO 8601 (2024-05-01 or 2024-05-01T12:00:00Z), "
            "'today', 'yesterday' or a duration ago such as 7d"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
