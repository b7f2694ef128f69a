"""Parsing of option values shared by several commands."""

from __future__ import annotations

import pandas as pd

from nbm.errors import UsageError


def parse_time(value: str | None, option: str) -> pd.Timestamp | None:
    """An ISO-8601 option value as a UTC timestamp (naive means UTC); ``None`` when not given."""
    if not value:
        return None
    try:
        stamp = pd.Timestamp(value)
    except ValueError as exc:
        raise UsageError(f"`{option}`: not an ISO-8601 time: {value!r}") from exc
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
