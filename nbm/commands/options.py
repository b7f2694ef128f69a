"""Parsing of option values shared by several commands."""

from __future__ import annotations

import sys

import pandas as pd
from rich.console import Console

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


RESULTS_WIDTH = 160
"""Columns of the results a command prints to a file or a pipe."""


def results_console() -> Console:
    """Where a command's results go (one output policy: results on stdout, logs and progress on stderr): the
    terminal's width, or :data:`RESULTS_WIDTH` columns when stdout is a file or a pipe (rich's default of 80
    there cut the tables' intervals and wrapped paths)."""
    return Console(width=None if sys.stdout.isatty() else RESULTS_WIDTH)
