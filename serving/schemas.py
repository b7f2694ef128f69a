"""Request schemas of the service contract (DESIGN.md, "Service contract"), validated by pydantic.

A malformed body, a wrong type, ``k`` out of range, NaN or an unknown field is a 400 whose ``detail``
names the field (``loc``); names the service does not know (a channel) are checked by the engine and are
400s too. ``/feedback`` validates each event on its own: a bad event is rejected with its index and the
reason, the good ones are stored.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_BATCH = 10_000
MAX_EVENTS = 10_000
EARLIEST, LATEST = pd.Timestamp("1678-01-01T00:00:00Z"), pd.Timestamp("2262-01-01T00:00:00Z")
"""The times the service decides at or stores: pandas keeps times as 64-bit nanoseconds since 1970 (1677-09-22
to 2262-04-11), and a decision reaches days before and after its time (the contact look-back, the send slots)."""


def _in_range(value: datetime | None) -> datetime | None:
    """``value`` if it lies in [EARLIEST, LATEST) — otherwise a 400 naming the field, not an overflow later."""
    if value is None:
        return value
    aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    if not EARLIEST.to_pydatetime() <= aware < LATEST.to_pydatetime():
        raise ValueError(f"{value.isoformat()} is outside the supported range {EARLIEST.date()} to {LATEST.date()}")
    return value


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    user_id: str = Field(min_length=1, max_length=512, description="any identifier of the person")
    k: int = Field(1, ge=1, le=10, description="items wanted (distinct message × channel)")
    channels: list[str] | None = Field(None, max_length=32, description="only these channels")
    candidates: list[str] | None = Field(None, max_length=5000, description="only these messages")
    now: datetime | None = Field(None, description="decision time (ISO-8601; naive is UTC); default: the server's clock")
    explore: bool = Field(True, description="let the explorer explore (false: greedy)")
    arm: str | None = Field(None, max_length=128, description="experiment arm, recorded in the decision log")

    @field_validator("user_id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    _now_in_range = field_validator("now")(_in_range)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[RecommendRequest] = Field(min_length=1, max_length=MAX_BATCH)


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[Any] = Field(min_length=1, max_length=MAX_EVENTS)


class FeedbackEvent(BaseModel):
    """One row of the events table; validated one by one so that a bad row does not stop the others."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    event_id: str = Field(min_length=1, max_length=256)
    timestamp: datetime
    user_id: str = Field(min_length=1, max_length=512)
    event_type: str
    message_id: str | None = None
    channel: str | None = None
    decision_id: str | None = None
    propensity: float | None = Field(None, gt=0, le=1)
    value: float | None = Field(None, ge=0)

    _timestamp_in_range = field_validator("timestamp")(_in_range)


def event_errors(raw: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The validated event as a dict (timestamps aware), or ``None`` and the reason naming the field."""
    try:
        event = FeedbackEvent.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "event"
        return None, f"`{field}`: {first['msg']} (got {first.get('input')!r})"
    out = event.model_dump()
    stamp = out["timestamp"]
    if stamp.tzinfo is None:
        out["timestamp"] = stamp.replace(tzinfo=timezone.utc)
    return out, ""
