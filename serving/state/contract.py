"""The state stores' contract: what the service keeps between requests, and what every store shares.

The service's state — contact history, feedback events, explorer statistics, decision log — sits behind
one interface, :class:`StateStore`. :class:`serving.state.sqlite.SQLiteState` (the default; a file under
``NBM_HOME``) is shared by every worker process of the service on one machine;
:class:`serving.state.redis.RedisState` (``state_url = "redis://…"``) keeps the same state, with the same
semantics, in Redis, for services on several machines. :func:`serving.state.open_state` opens either from
its URL. Both stores pass one contract test, ``tests/serving/test_state.py``.

* **Contact history** — the sends reported by ``/feedback``, and the items ``/recommend`` answered
  (planned), so that the next decision counts them before the campaign engine reports them. A planned item
  stops counting an hour (:data:`PLANNED_GRACE_NS`) after its send time unless a ``send`` confirms it.
* **Caps under concurrency** — a decision reads the user's contact history and its version
  (:attr:`Contacts.version`); :meth:`StateStore.reserve` writes the answer's items only if that version is
  unchanged, atomically across processes (and machines). If another worker wrote for the same user
  meanwhile, the caller decides again on the fresh history.
* **Feedback** — events keyed by ``event_id`` (a second delivery is counted as a duplicate, not applied
  twice); durable before the answer returns.
* **Channels lost** — per (user, channel), the earliest ``unsubscribe`` or ``bounce`` (:data:`LOSS_TYPES`)
  reported by ``/feedback``; from then on the channel is not eligible for that user (:class:`Contacts`
  ``.lost``), as one in the data directory's events is not.
* **Explorer statistics** — per (message, channel), impressions and successes (the model's target
  outcome), for Thompson sampling.
* **Live users** — facts about users (``consent``, ``timezone``, ``signup_at``, ``attributes``) posted to
  ``/users`` or carried by a request's ``context``, merged field by field (:func:`merge_facts`); and a
  numbered log of changes (each accepted feedback event, each upsert) from which every worker's live
  refresher learns which users to featurise again (:meth:`StateStore.changes_since`).
* **Live catalog** — messages added, changed or ended by ``/messages`` (the messages table's fields, merged
  field by field: :func:`merge_message`), with a catalog version every upsert raises.
* **Decision log** — every answer, empty ones included, in the columns of the data contract's
  ``decisions`` table (plus the items), so ``nbm`` reads it back (:meth:`StateStore.decision_log`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
import orjson
import pandas as pd

from decision.answer import Answer

HOUR_NS = 3_600 * 10**9
PLANNED_GRACE_NS = HOUR_NS
"""A planned item counts until this long after its send time unless a ``send`` event confirms it."""

LOSS_TYPES = ("unsubscribe", "bounce")
"""Feedback after which a channel is no longer the user's (the data contract's rule for consent)."""


def items_json(items: list[dict]) -> str:
    """An answer's items as the decision log stores them: compact JSON (orjson: ~10× json.dumps, which
    was ~2 % of a 500-decision batch)."""
    return orjson.dumps(items).decode()


@dataclass(frozen=True)
class Contacts:
    """One user's sends known to the service (times int64 ns, sorted), the version they were read at, and
    the channels the user has unsubscribed from or bounced on by feedback (channel → earliest time, ns)."""

    times: np.ndarray
    channels: np.ndarray
    messages: np.ndarray
    version: int
    lost: dict[str, int] = field(default_factory=dict)


class StateStore(Protocol):
    """What the service needs of its state (both stores pass one contract test, ``tests/serving/test_state.py``)."""

    def contacts(self, user_id: str, now: int, lookback_ns: int) -> Contacts: ...
    def contacts_many(self, users: Sequence[str], now: Sequence[int], lookback_ns: int) -> list[Contacts]: ...
    def reserve(self, user_id: str, version: int, decision: Answer) -> bool: ...
    def reserve_many(self, reservations: Sequence[tuple[str, int, Answer]]) -> list[bool]: ...
    def log_decisions(self, decisions: Sequence[Answer]) -> None: ...
    def feedback(self, events: list[dict], target: str = "convert") -> tuple[int, int]: ...
    def explorer_statistics(self) -> dict[tuple[str, str], tuple[int, int]]: ...
    def decision_log(self) -> pd.DataFrame: ...
    def feedback_events(self) -> pd.DataFrame: ...
    def upsert_users(self, rows: Sequence[dict]) -> int: ...
    def user_facts(self, users: Sequence[str]) -> dict[str, dict]: ...
    def users_table(self) -> dict[str, dict]: ...
    def user_events(self, users: Sequence[str]) -> pd.DataFrame: ...
    def changes_since(self, after: int) -> tuple[int, list[str]]: ...
    def upsert_messages(self, rows: Sequence[dict]) -> int: ...
    def messages_table(self) -> tuple[int, dict[str, dict]]: ...
    def catalog_version(self) -> int: ...


MESSAGE_FACTS = ("topic", "tags", "channels", "lifecycle_stages", "value", "start_at", "end_at")
"""A catalog entry's fields (the messages table's columns): each replaced whole when an upsert gives it."""


def merge_message(old: dict, row: dict) -> dict:
    """``old`` (a message's stored fields) with ``row``'s given (not ``None``) fields replacing them."""
    out = {k: v for k, v in old.items() if k in MESSAGE_FACTS}
    out.update({k: row[k] for k in MESSAGE_FACTS if row.get(k) is not None})
    return out


FACTS = ("consent", "timezone", "signup_at")
"""A user's facts besides ``attributes``: each replaced whole when an upsert gives it."""


def merge_facts(old: dict, row: dict) -> dict:
    """``old`` facts with ``row``'s merged in: ``consent`` (a list of channels), ``timezone`` and ``signup_at``
    (int ns) replace the stored value when given (not ``None``); ``attributes`` are merged name by name (a
    ``None`` value stores the attribute as missing); ``links`` (identifiers of the same person) are added to the
    stored ones (sorted, each once)."""
    out = {k: v for k, v in old.items() if k in (*FACTS, "attributes", "links")}
    for key in FACTS:
        if row.get(key) is not None:
            out[key] = list(row[key]) if key == "consent" else row[key]
    if row.get("attributes"):
        out["attributes"] = {**out.get("attributes", {}), **row["attributes"]}
    if row.get("links"):
        out["links"] = sorted(set(out.get("links", ())) | set(row["links"]))
    return out
