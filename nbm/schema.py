"""The data contract in code: one declaration per table (DESIGN.md, "Data contract").

These declarations are the single source for the loader's column checks, the dtypes of the clean
frames, and ``docs/data-contract.md``. Row-level rules that involve several columns (a send needs a
message and a channel) live in :mod:`nbm.validate`, next to the code that enforces them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ColumnKind = Literal["string", "timestamp", "float", "string_list"]

EVENT_TYPES = ("send", "open", "click", "convert", "unsubscribe", "bounce", "visit")
MESSAGE_EVENT_TYPES = ("send", "open", "click", "bounce")
"""Event types that must name a ``message_id``."""
CHANNEL_EVENT_TYPES = ("send", "open", "click", "bounce", "unsubscribe")
"""Event types that must name a ``channel``."""
OUTCOME_EVENT_TYPES = ("open", "click", "convert")
"""Outcomes attributed to a send (by ``decision_id``, else by window)."""


@dataclass(frozen=True)
class Column:
    """One column of a table of the data contract."""

    name: str
    kind: ColumnKind
    required: bool
    description: str
    default: object = None


@dataclass(frozen=True)
class Table:
    """One table of the data contract.

    ``key`` is the column that identifies a row (unique after loading); ``extra_columns`` says what
    happens to columns the contract does not declare: ``"attributes"`` keeps them as user attributes,
    ``"ignore"`` drops them with a note in the report.
    """

    name: str
    columns: tuple[Column, ...]
    required: bool
    description: str
    key: str | None = None
    extra_columns: Literal["attributes", "ignore"] = "ignore"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"table `{self.name}` has no column `{name}`")


EVENTS = Table(
    name="events",
    description="The interaction log, one row per event.",
    key="event_id",
    required=True,
    columns=(
        Column("event_id", "string", True, "Unique; ingesting the same id twice is a no-op."),
        Column("timestamp", "timestamp", True, "When it happened (ISO-8601; naive is UTC)."),
        Column("user_id", "string", True, "Any identifier of the person; resolved through `links`."),
        Column("event_type", "string", True, "One of " + ", ".join(f"`{t}`" for t in EVENT_TYPES) + "."),
        Column("message_id", "string", False, "Which message; required for send/open/click/bounce."),
        Column("channel", "string", False, "A configured channel; required for send/open/click/bounce/unsubscribe."),
        Column("decision_id", "string", False, "The decision that caused a send; its outcomes may carry it."),
        Column("propensity", "float", False, "On a send: probability the logging policy chose it, in (0, 1]."),
        Column("value", "float", False, "Revenue of a `convert`; not negative."),
    ),
)

MESSAGES = Table(
    name="messages",
    description="The catalog of messages.",
    key="message_id",
    required=True,
    columns=(
        Column("message_id", "string", True, "Identifier of the message."),
        Column("topic", "string", True, "What it is about."),
        Column("tags", "string_list", False, "Finer labels (`;`-separated in CSV).", default=()),
        Column("channels", "string_list", True, "Channels it may be sent on (configured channels only)."),
        Column(
            "lifecycle_stages", "string_list", False,
            "Stages it targets (`new`, `active`, `at_risk`, `dormant`); empty means all.", default=(),
        ),
        Column("value", "float", False, "Business value of a conversion from this message; not negative.", 1.0),
        Column("start_at", "timestamp", False, "Earliest time it may be sent."),
        Column("end_at", "timestamp", False, "Latest time it may be sent; not before `start_at`."),
    ),
)

USERS = Table(
    name="users",
    description="One row per person. Extra columns are user attributes and become features.",
    key="user_id",
    required=True,
    extra_columns="attributes",
    columns=(
        Column("user_id", "string", True, "Canonical identifier."),
        Column("signup_at", "timestamp", False, "When the person signed up."),
        Column("timezone", "string", False, "IANA time-zone name, for quiet hours and send times.", "UTC"),
        Column("consent", "string_list", False, "Channels the person accepted; nothing is sent elsewhere.", ()),
    ),
)

LINKS = Table(
    name="links",
    description="Pairs of identifiers known to be the same person.",
    required=False,
    columns=(
        Column("identifier_a", "string", True, "An identifier (email hash, device id, cookie, openid, user_id)."),
        Column("identifier_b", "string", True, "Another identifier of the same person."),
    ),
)

DECISIONS = Table(
    name="decisions",
    description=(
        "The decision log (optional): one row per decision the logging policy took, including those that "
        "sent nothing. A send names its decision in `events.decision_id`. With it, off-policy evaluation "
        "covers the choice to send nothing; without it, only decisions that sent something are evaluated."
    ),
    key="decision_id",
    required=False,
    columns=(
        Column("decision_id", "string", True, "Identifier of the decision; sends caused by it carry it."),
        Column("timestamp", "timestamp", True, "When the decision was taken."),
        Column("user_id", "string", True, "Any identifier of the person; resolved through `links`."),
        Column("propensity", "float", False,
               "Probability with which the logging policy took this decision (its send, or sending nothing), in (0, 1]."),
        Column("policy", "string", False, "Name of the policy that decided (e.g. `rules+eps0.1`, a model version)."),
        Column("arm", "string", False, "Experiment arm of the user when the decision was taken."),
        Column("experiment", "string", False, "Name of the experiment the arm belongs to (`nbm ab --experiment`)."),
        Column("model_version", "string", False, "Version of the model that scored the decision (`nbm export-log`)."),
        Column("explorer", "string", False, "How the policy chose among its candidates (e.g. `epsilon_greedy`)."),
        Column("items", "string", False, "The answer's items as JSON (message, channel, send time, score, propensity each)."),
        Column("trigger", "string", False, "A triggered decision's trigger as JSON (`event_type`, `message_id`, "
               "`topic`, and `messages`: the candidates it allowed)."),
    ),
)

TABLES: dict[str, Table] = {t.name: t for t in (EVENTS, MESSAGES, USERS, LINKS, DECISIONS)}
"""The tables of the data contract, in load order."""
