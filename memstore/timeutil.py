"""Timestamps: one format in the database, friendly forms on input, one valid range.

Every time memstore stores lies in ``[MIN_TIME, MAX_TIME)`` (years 1000 to 9998, UTC): a
four-digit year, so the database strings sort as times, and a day of margin at both ends,
so showing a stored time in any local time zone (up to ±24 h) can never overflow. Input
outside the range — a date, a duration ago or ahead, an offset that pushes it over — is
refused with a one-line error before anything is written.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from .errors import InvalidInputError, StoreError

__all__ = [
    "MAX_TIME", "MIN_TIME", "add", "check_range", "format_ts", "now", "parse_duration", "parse_time",
    "parse_ts",
]

_DURATION = re.compile(r"^\s*(\d{1,15})\s*(s|sec|m|min|h|d|w|y)\s*$", re.IGNORECASE)
_UNITS = {
    "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400,
}
#: The first instant memstore stores (inclusive) and the first it refuses.
MIN_TIME = datetime(1000, 1, 1, tzinfo=timezone.utc)
MAX_TIME = datetime(9999, 1, 1, tzinfo=timezone.utc)
_RANGE = "between 1000-01-01 and 9998-12-31 (UTC)"
#: A stored timestamp: what format_ts writes (an older memstore wrote years < 1000 unpadded).
_STORED = re.compile(r"^(\d{1,4})(-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?)(Z|[+-]\d\d:\d\d)?$")


def now() -> datetime:
    """The current time, UTC, aware."""
    return datetime.now(timezone.utc)


def check_range(value: datetime, field: str = "time") -> datetime:
    """``value`` as an aware UTC datetime, or InvalidInputError when it is outside the range."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    try:
        utc = value.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not MIN_TIME <= utc < MAX_TIME:
        raise InvalidInputError(f"{field} {value.isoformat()} is out of range: times must be {_RANGE}")
    return utc


def add(base: datetime, delta: timedelta, field: str = "time") -> datetime:
    """``base + delta``, refused (not an OverflowError) when it leaves the range."""
    try:
        result = base + delta
    except OverflowError:
        raise InvalidInputError(f"{field} is out of range: times must be {_RANGE}") from None
    return check_range(result, field)


def format_ts(value: datetime) -> str:
    """The database form: ISO 8601 UTC with microseconds and a Z, so strings sort as times.
    The year is always four digits (``%Y`` is not zero-padded on every platform)."""
    v = check_range(value)
    return (f"{v.year:04d}-{v.month:02d}-{v.day:02d}T"
            f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}Z")


def parse_ts(value: str) -> datetime:
    """Read a timestamp written by :func:`format_ts` (or any ISO 8601 form). A damaged one
    is a StoreError naming it (``memstore verify`` lists such rows), not a ValueError."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, TypeError, AttributeError):
        match = _STORED.match(value) if isinstance(value, str) else None
        if match and int(match.group(1)) >= 1:
            try:
                zone = (match.group(3) or "Z").replace("Z", "+00:00")
                return datetime.fromisoformat(f"{int(match.group(1)):04d}{match.group(2)}{zone}")
            except ValueError:
                pass
        raise StoreError(
            f"the database holds a damaged timestamp {value!r}; run `memstore verify`"
        ) from None


def valid_stored(value: object) -> bool:
    """Whether a database value is a timestamp in the form and range memstore writes."""
    if not isinstance(value, str):
        return False
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return parsed.tzinfo is not None and MIN_TIME <= parsed < MAX_TIME and format_ts(parsed) == value


def parse_duration(value: str) -> timedelta:
    """'90s', '15m', '12h', '7d', '2w', '1y' → timedelta (at most the width of the valid range)."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match:
        raise InvalidInputError(
            f"invalid duration {value!r}: use a number and a unit s, m, h, d, w or y (e.g. 7d)"
        )
    seconds = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds > (MAX_TIME - MIN_TIME).total_seconds():
        raise InvalidInputError(f"duration {value!r} is too long: times must be {_RANGE}")
    return timedelta(seconds=seconds)


def parse_time(value: str | datetime | date | None, *, field: str = "time") -> datetime | None:
    """A point in time from a datetime, a date, ISO 8601 text, 'today', 'yesterday',
    or a duration meaning "that long ago" ('7d', '12h'). Naive times are taken as UTC.
    The result is in UTC and inside the valid range."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return check_range(value, field)
    if isinstance(value, date):
        return check_range(datetime(value.year, value.month, value.day, tzinfo=timezone.utc), field)
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
        return add(now(), -parse_duration(text), field)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(
            f"invalid {field} {value!r}: use ISO 8601 (2024-05-01 or 2024-05-01T12:00:00Z), "
            "'today', 'yesterday' or a duration ago such as 7d"
        ) from None
    return check_range(parsed, field)
