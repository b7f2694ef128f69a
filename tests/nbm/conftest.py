"""A small hand-made data directory in memory, valid row by row, for the data layer's tests."""

from __future__ import annotations

import pandas as pd
import pytest

from nbm.config import load_config


def valid_tables() -> dict[str, pd.DataFrame]:
    """Raw tables as a CSV reader would give them: every cell a string, empty = missing."""
    events = pd.DataFrame(
        [
            ["e1", "2026-10-01T09:00:00Z", "u1", "send", "m1", "email", "d1", "0.5", ""],
            ["e2", "2026-10-01T10:00:00Z", "u1", "open", "m1", "email", "d1", "", ""],
            ["e3", "2026-10-01T10:05:00Z", "u1", "click", "m1", "email", "", "", ""],
            ["e4", "2026-10-02T08:00:00Z", "dev-9", "convert", "", "", "", "", "42.5"],
            ["e5", "2026-10-02T12:00:00Z", "u2", "visit", "", "", "", "", ""],
            ["e6", "2026-10-03T12:00:00Z", "u2", "send", "m2", "sms", "d2", "1", ""],
        ],
        columns=["event_id", "timestamp", "user_id", "event_type", "message_id", "channel", "decision_id",
                 "propensity", "value"],
    )
    messages = pd.DataFrame(
        [
            ["m1", "fashion", "fashion:new-in;promo", "email;push", "", "30", "2026-09-01T00:00:00Z", ""],
            ["m2", "books", "", "sms", "at_risk;dormant", "", "", "2026-12-01T00:00:00Z"],
        ],
        columns=["message_id", "topic", "tags", "channels", "lifecycle_stages", "value", "start_at", "end_at"],
    )
    users = pd.DataFrame(
        [
            ["u1", "2025-01-01T00:00:00Z", "Europe/Berlin", "email;push", "DE", "120"],
            ["u2", "", "", "sms", "US", "7.5"],
        ],
        columns=["user_id", "signup_at", "timezone", "consent", "country", "loyalty_points"],
    )
    links = pd.DataFrame([["u1", "dev-9"]], columns=["identifier_a", "identifier_b"])
    return {"events": events, "messages": messages, "users": users, "links": links}


@pytest.fixture
def tables() -> dict[str, pd.DataFrame]:
    return valid_tables()


@pytest.fixture
def config():
    return load_config(environ={})


NOW = pd.Timestamp("2026-11-01T00:00:00Z")
