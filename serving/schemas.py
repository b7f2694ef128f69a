"""Request schemas of the service contract (DESIGN.md, "Service contract"), validated by pydantic.

A malformed body, a wrong type, ``k`` out of range, NaN or an unknown field is a 400 whose ``detail``
names the field (``loc``); names the service does not know (a channel) are checked by the engine and are
400s too. ``/feedback`` validates each event on its own: a bad event is rejected with its index and the
reason, the good ones are stored.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from serving.guard import clip

MAX_BATCH = 10_000
MAX_EVENTS = 10_000
EARLIEST, LATEST = pd.Timestamp("1678-01-01T00:00:00Z"), pd.Timestamp("2262-01-01T00:00:00Z")
"""The times the service decides at or stores: pandas keeps times as 64-bit nanoseconds since 1970 (1677-09-22
to 2262-04-11), and a decision reaches days before and after its time (the contact look-back, the send slots)."""


DECIDE_YEARS = (1680, 2259)
"""The years (as written, before any offset) a decision's ``now`` may lie in: more than a year inside the stored
range, so that every instant a decision reaches — its contact look-back, its send slots, quiet hours moved to
the next morning — is one ``/feedback`` accepts back (``now`` in 2261 once gave a ``send_at`` that ``/feedback``
refused); whole years, so that the OpenAPI can say it (a pattern on the year)."""


def _check_range(value: datetime | None, low: pd.Timestamp, high: pd.Timestamp) -> datetime | None:
    if value is None:
        return value
    aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    if not low.to_pydatetime() <= aware < high.to_pydatetime():
        raise ValueError(f"{value.isoformat()} is outside the supported range {low.date()} to {high.date()}")
    return value


def _in_range(value: datetime | None) -> datetime | None:
    """``value`` if it lies in [EARLIEST, LATEST) — otherwise a 400 naming the field, not an overflow later."""
    return _check_range(value, EARLIEST, LATEST)


def _decidable(value: datetime | None) -> datetime | None:
    """A decision time in the years :data:`DECIDE_YEARS`."""
    if value is not None and not DECIDE_YEARS[0] <= value.year <= DECIDE_YEARS[1]:
        raise ValueError(f"{value.isoformat()} is outside the supported years {DECIDE_YEARS[0]}–{DECIDE_YEARS[1]}")
    return value


REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Unicode categories an identifier may not hold: controls (NUL, …), format characters (zero-width,
bidirectional overrides: an id that displays like another is a way to hide in reports), surrogates, line and
paragraph separators."""


ISO_DATE = re.compile(r"\s*\d{4}-\d{2}-\d{2}")


def _iso_text(value):
    """A time comes as ISO-8601 text (the contract): pydantic would read a number — or a string of digits — as
    seconds since 1970."""
    if value is not None and not isinstance(value, datetime) and not (isinstance(value, str) and ISO_DATE.match(value)):
        raise ValueError("must be an ISO-8601 date-time string (YYYY-MM-DDTHH:MM:SSZ)")
    return value


def _printable(value: str | None) -> str | None:
    """Identifiers are printable text (no character of :data:`REFUSED_CATEGORIES`) and not blank; surrounding
    blanks are dropped."""
    if value is None:
        return value
    bad = next((c for c in value if unicodedata.category(c) in REFUSED_CATEGORIES), None)
    if bad is not None:
        raise ValueError(f"must hold printable characters only (found U+{ord(bad):04X})")
    if not value.strip():
        raise ValueError("must not be blank")
    return value.strip()


@lru_cache(maxsize=1)
def identifier_pattern() -> str:
    """:func:`_printable`'s rule as a JSON-schema ``pattern`` (for the OpenAPI): no character of
    :data:`REFUSED_CATEGORIES`, at least one that is not blank."""
    ranges, start, last = [], None, None
    for code in range(sys.maxunicode + 1):
        if unicodedata.category(chr(code)) in REFUSED_CATEGORIES:
            if start is None:
                start = code
            last = code
        elif start is not None:
            ranges.append((start, last))
            start = None
    if start is not None:
        ranges.append((start, last))
    def char(code: int) -> str:        # \uXXXX escapes for the BMP (surrogates cannot be written raw)
        return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)

    refused = "".join(char(a) if a == b else f"{char(a)}-{char(b)}" for a, b in ranges)
    return f"^[^{refused}]*[^{refused}\\s][^{refused}]*$"


AttributeValue = str | float | bool | None
MAX_ATTRIBUTES = 256


@lru_cache(maxsize=1)
def time_zones() -> tuple[str, ...]:
    """The IANA time-zone names this system knows (``zoneinfo.available_timezones``), sorted: the OpenAPI's enum."""
    from zoneinfo import available_timezones

    return tuple(sorted(available_timezones()))


def _timezone(value: str | None) -> str | None:
    """An IANA time-zone name the system knows (``Europe/Paris``; ``UTC``)."""
    if value is not None and value not in set(time_zones()):
        raise ValueError(f"unknown IANA time zone {clip(value)}")
    return value


RESERVED_ATTRIBUTES = ("user_id", "signup_at", "timezone", "consent")


def _attributes(value: dict | None) -> dict | None:
    if value is None:
        return value
    for name in value:
        _printable(name)
        if len(name) > 128:
            raise ValueError(f"attribute name {clip(name)} has over 128 characters")
        if name in RESERVED_ATTRIBUTES:
            raise ValueError(f"`{name}` is a field of its own, not an attribute")
    return value


class UserFacts(BaseModel):
    """Facts about a person (the users table's columns): given ones replace what nbm knows, attributes name by name."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    consent: list[str] | None = Field(None, max_length=32, description="the channels the person accepts now "
                                      "(replaces the stored consent; [] withdraws every channel)")
    timezone: str | None = Field(None, max_length=64, description="IANA time zone, e.g. Europe/Paris")
    attributes: dict[str, AttributeValue] | None = Field(None, max_length=MAX_ATTRIBUTES,
                                                         description="user attributes as in the users table "
                                                         "(null: missing)")

    _timezone_known = field_validator("timezone")(_timezone)
    _attribute_names = field_validator("attributes")(_attributes)


class Trigger(BaseModel):
    """The event that prompts a decision (``cart_abandoned``): the answer is chosen among the messages configured
    (``[triggers]``) or tagged (``trigger:EVENT``) for it."""

    model_config = ConfigDict(extra="forbid")

    event_type: str = Field(min_length=1, max_length=128, description="the trigger's name, e.g. cart_abandoned")
    message_id: str | None = Field(None, min_length=1, max_length=256, description="what the event concerned "
                                   "(recorded in the decision log)")
    topic: str | None = Field(None, min_length=1, max_length=256, description="narrows the trigger's messages to "
                              "this topic when some are of it")

    _printable_names = field_validator("event_type", "message_id", "topic")(_printable)


class RequestContext(UserFacts):
    """What the caller knows now about the person (``consent``, ``timezone``, ``attributes``: used for this
    decision and stored, like ``POST /users``), and the ``trigger`` of a triggered decision."""

    trigger: Trigger | None = Field(None, description="the event that prompts this decision")


class UserRow(UserFacts):
    """One user of ``POST /users``: an upsert of the person's facts."""

    user_id: str = Field(min_length=1, max_length=512, description="the person's identifier")
    signup_at: datetime | None = Field(None, description="when the person signed up (ISO-8601)")
    links: list[str] | None = Field(None, max_length=64, description="other identifiers of the same person (an "
                                    "email hash, a device id…): requests and feedback naming them are this person's")

    _id_printable = field_validator("user_id")(_printable)

    @field_validator("links")
    @classmethod
    def _links_printable(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        out = [_printable(v) for v in value]
        if any(len(v) > 512 for v in out):
            raise ValueError("an identifier has over 512 characters")
        return out
    _signup_a_string = field_validator("signup_at", mode="before")(lambda value: _iso_text(value))
    _signup_in_range = field_validator("signup_at")(_in_range)


class MessageRow(BaseModel):
    """One catalog entry of ``POST /messages``: a new message (``topic`` and ``channels`` required), or fields of a
    known one replaced (``end_at`` ends it)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    message_id: str = Field(min_length=1, max_length=256, description="the message's identifier")
    topic: str | None = Field(None, min_length=1, max_length=256, description="what it is about")
    tags: list[str] | None = Field(None, max_length=64, description="finer labels (replaces the stored ones)")
    channels: list[str] | None = Field(None, min_length=1, max_length=32, description="channels it may be sent on")
    lifecycle_stages: list[str] | None = Field(None, max_length=8, description="stages it targets ([]: every stage)")
    value: float | None = Field(None, ge=0, description="business value of a conversion from it")
    start_at: datetime | None = Field(None, description="earliest send time (ISO-8601)")
    end_at: datetime | None = Field(None, description="latest send time (ISO-8601): ends the message")

    _ids_printable = field_validator("message_id", "topic")(_printable)
    _start_a_string = field_validator("start_at", "end_at", mode="before")(lambda value: _iso_text(value))
    _start_in_range = field_validator("start_at", "end_at")(_in_range)

    @field_validator("tags", "lifecycle_stages", "channels")
    @classmethod
    def _printable_items(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [_printable(v) for v in value]


class MessagesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[Any] = Field(min_length=1, max_length=MAX_EVENTS)


def message_errors(raw: Any) -> tuple[dict[str, Any] | None, str]:
    """The validated catalog row (times as int ns), or ``None`` and the reason naming the field."""
    return _row_errors(MessageRow, raw, "message", ("start_at", "end_at"))


class UsersRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[Any] = Field(min_length=1, max_length=MAX_EVENTS)


def user_errors(raw: Any) -> tuple[dict[str, Any] | None, str]:
    """The validated user row (``signup_at`` as int ns), or ``None`` and the reason naming the field."""
    return _row_errors(UserRow, raw, "user", ("signup_at",))


def _row_errors(model: type[BaseModel], raw: Any, what: str, times: tuple[str, ...]) -> tuple[dict[str, Any] | None, str]:
    """A row of a ``/users`` or ``/messages`` body validated by ``model`` (the fields ``times`` as int ns, UTC
    when naive), or ``None`` and the reason naming the field."""
    if not isinstance(raw, dict):
        return None, f"`{what}`: not a JSON object"
    try:
        row = model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or what
        return None, f"`{field}`: {first['msg']} (got {clip(first.get('input'))})"
    out = row.model_dump()
    for name in times:
        stamp = out[name]
        if stamp is not None:
            out[name] = int(pd.Timestamp(stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).value)
    return out, ""


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    user_id: str = Field(min_length=1, max_length=512, description="any identifier of the person (printable "
                         "characters; surrounding blanks are ignored)")
    k: int = Field(1, ge=1, le=10, strict=True, description="items wanted (distinct message × channel)")
    channels: list[str] | None = Field(None, min_length=1, max_length=32,
                                       description="only these channels (leave it out for every channel)")
    candidates: list[str] | None = Field(None, min_length=1, max_length=5000,
                                         description="only these messages (leave it out for every message)")
    now: datetime | None = Field(None, description="decision time (ISO-8601; naive is UTC); default: the server's clock")
    explore: bool = Field(True, strict=True, description="let the explorer explore (false: greedy)")
    arm: str | None = Field(None, min_length=1, max_length=128, description="experiment arm, recorded in the decision log")
    context: RequestContext | None = Field(None, description="facts the caller knows now (consent, timezone, "
                                           "attributes): this decision uses them, and they are stored")

    _ids_printable = field_validator("user_id", "arm")(_printable)
    _now_a_string = field_validator("now", mode="before")(lambda value: _iso_text(value))
    _now_in_range = field_validator("now")(_decidable)


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

    _timestamp_a_string = field_validator("timestamp", mode="before")(lambda value: _iso_text(value))
    _timestamp_in_range = field_validator("timestamp")(_in_range)
    _ids_printable = field_validator("event_id", "user_id", "message_id", "channel", "decision_id")(_printable)


def event_errors(raw: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The validated event as a dict (timestamps aware), or ``None`` and the reason naming the field."""
    try:
        event = FeedbackEvent.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "event"
        return None, f"`{field}`: {first['msg']} (got {clip(first.get('input'))})"
    out = event.model_dump()
    stamp = out["timestamp"]
    if stamp.tzinfo is None:
        out["timestamp"] = stamp.replace(tzinfo=timezone.utc)
    return out, ""


# -- answers (declared in the OpenAPI and as the routes' output_spec; never validated at run time) ----------------

class Item(BaseModel):
    """A message to send: on this channel, at this time."""

    message_id: str
    channel: str
    send_at: datetime = Field(description="when to send it (UTC), out of the user's quiet hours")
    score: float = Field(description="the model's calibrated probability of the target outcome at send_at")
    propensity: float = Field(gt=0, le=1, description="probability with which this item was chosen")
    propensity_error: float | None = Field(None, ge=0, description="standard error of an estimated propensity "
                                                                    "(Thompson sampling); absent otherwise")


class Suppressed(BaseModel):
    """A candidate the contact policy kept from being sent, and why."""

    message_id: str
    channel: str
    reason: str


class RecommendResponse(BaseModel):
    """The decision for one person (DESIGN.md, "Service contract")."""

    decision_id: str = Field(description="report it back with the sends (`decision_id` of the events)")
    user_id: str
    model_version: str
    items: list[Item] = Field(description="what to send; empty: nothing now (see `reason`)")
    suppressed: list[Suppressed]
    arm: str | None = Field(None, description="the experiment arm, when there is one")
    reason: str | None = Field(None, description="why `items` is empty (absent when it is not)")


class Unreserved(BaseModel):
    """A batch's request that could not be decided: the person's contacts kept changing under other writers
    (nothing was decided, logged or planned for it; ask again)."""

    user_id: str
    error: str = Field(description="why nothing was decided")


class BatchResponse(BaseModel):
    """The decisions of a ``/recommend_batch``, one per request, in order."""

    results: list[RecommendResponse | Unreserved] = Field(description="one answer per request, in order")


class Rejected(BaseModel):
    """A row of the request that was refused (the others were stored)."""

    index: int = Field(ge=0, description="position of the event in the request")
    error: str = Field(description="the field and the reason")


class FeedbackResponse(BaseModel):
    """What became of the events: stored, seen before, refused."""

    accepted: int = Field(ge=0, description="events stored now")
    duplicates: int = Field(ge=0, description="events stored before (same event_id): ignored")
    rejected: list[Rejected]


class UsersResponse(BaseModel):
    """What became of the users' rows: stored or refused."""

    accepted: int = Field(ge=0, description="users stored now")
    rejected: list[Rejected] = Field(description="rows refused, with their position and reason")


class MessagesResponse(BaseModel):
    """What became of the catalog's rows: stored or refused."""

    accepted: int = Field(ge=0, description="catalog entries stored now")
    rejected: list[Rejected] = Field(description="rows refused, with their position and reason")


class ErrorResponse(BaseModel):
    """Every error answer — 4xx, the 503 of a decision that could not be reserved, a 500 — in one envelope."""

    error: str = Field(description="a code: invalid_request, unauthorized, forbidden, forbidden_origin, not_found, "
                                   "method_not_allowed, payload_too_large, unsupported_media_type, unavailable, "
                                   "internal_error")
    detail: str = Field(description="what is wrong, naming the field")
    field: str | None = Field(description="the request field or header at fault (e.g. `requests[1].channels`, "
                                          "`Content-Type`), when one is")
    status: int = Field(ge=400, le=599, description="the HTTP status of the answer, repeated")
