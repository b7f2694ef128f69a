"""``nbm simulate --messy``: the defects real logs arrive with, injected at stated rates.

Each injected defect is one that the loader must catch with a known reason code (see
``docs/data-contract.md``), and each corrupted row carries exactly one defect, so the validation report's
counts must equal the manifest returned here:

* **duplicates** — copies of valid events appended at the end (same ``event_id``: a no-op to ingest);
* **late rows** — valid events moved to the end of the file, out of timestamp order;
* **malformed events** — one of: unknown event type, unparseable or future timestamp, missing user,
  a send without its message, unknown channel, propensity outside (0, 1], negative revenue, a message
  that is not in the catalog;
* **malformed users** — an unknown time zone, consent to an unknown channel, or a second row with the
  same ``user_id``.

The three event sets are disjoint, so the counts do not interact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nbm.simulate.config import MessyRates

EVENT_DEFECTS = (
    "unknown_event_type", "unparseable_timestamp", "future_timestamp", "missing_user",
    "send_without_message", "unknown_channel", "bad_propensity", "negative_value", "unknown_message",
)
USER_DEFECTS = ("bad_timezone", "unknown_channel", "duplicate_key")
REASON = {"missing_user": "missing_value", "send_without_message": "missing_value"}
"""Reason code the loader reports for a defect, where it differs from the defect's name."""
FUTURE = "2099-01-01T00:00:00Z"


@dataclass
class Manifest:
    """What was injected: problem rows by (table, reason), duplicates and late rows."""

    problems: dict[tuple[str, str], int] = field(default_factory=dict)
    duplicates: int = 0
    late_rows: int = 0

    def add(self, table: str, reason: str, count: int) -> None:
        if count:
            self.problems[(table, reason)] = self.problems.get((table, reason), 0) + count

    def to_dict(self) -> dict[str, object]:
        return {
            "problems": [{"table": t, "reason": r, "rows": n} for (t, r), n in sorted(self.problems.items())],
            "duplicates": {"events": self.duplicates},
            "late_rows": self.late_rows,
        }


def inject(tables: dict[str, pd.DataFrame], rates: MessyRates, rng: np.random.Generator) -> tuple[dict[str, pd.DataFrame], Manifest]:
    """Return messy copies of ``tables`` (the clean tables of a simulated world) and what was injected."""
    manifest = Manifest()
    events = tables["events"].copy()
    stamps = events["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    events["timestamp"] = np.char.add(np.datetime_as_string(stamps, unit="us"), "Z").astype(object)
    events = events.astype({c: object for c in ("user_id", "event_type", "message_id", "channel")})
    n = len(events)
    latest = events["timestamp"].iloc[-1] if n else None
    order = rng.permutation(n)
    n_bad, n_late, n_dup = (int(round(r * n)) for r in (rates.malformed_events, rates.late_events, rates.duplicate_events))
    bad, rest = order[:n_bad], order[n_bad:]
    # Late rows must be strictly older than the newest event, or they would not be out of order.
    rest = rest[events["timestamp"].to_numpy()[rest] < latest] if n else rest
    late, dup = rest[:n_late], rest[n_late:n_late + n_dup]

    _corrupt_events(events, bad, rng, manifest)
    main = events.drop(index=events.index[late])
    moved = events.iloc[late]
    copies = events.iloc[dup]
    manifest.late_rows, manifest.duplicates = len(late), len(dup)
    out = dict(tables)
    out["events"] = pd.concat([main, moved, copies], ignore_index=True)
    out["users"] = _corrupt_users(tables["users"], rates.malformed_users, rng, manifest)
    return out, manifest


def _corrupt_events(events: pd.DataFrame, rows: np.ndarray, rng: np.random.Generator, manifest: Manifest) -> None:
    """Give each of ``rows`` (positions) exactly one defect, in place."""
    kind = events["event_type"].to_numpy()
    defect = np.asarray(EVENT_DEFECTS, dtype=object)[rng.integers(0, len(EVENT_DEFECTS), len(rows))]
    # Defects that need a particular event type fall back to one that any row can carry.
    needs = {"send_without_message": "send", "bad_propensity": "send", "negative_value": "convert",
             "unknown_channel": "send", "unknown_message": "send"}
    for name, wanted in needs.items():
        wrong = (defect == name) & (kind[rows] != wanted)
        defect[wrong] = "unknown_event_type"
    column = {
        "unknown_event_type": ("event_type", "purchase"), "unparseable_timestamp": ("timestamp", "yesterday 5pm"),
        "future_timestamp": ("timestamp", FUTURE), "missing_user": ("user_id", None),
        "send_without_message": ("message_id", None), "unknown_channel": ("channel", "fax"),
        "bad_propensity": ("propensity", 1.7), "unknown_message": ("message_id", "m-retired"),
    }
    for name in EVENT_DEFECTS:
        at = rows[defect == name]
        if name == "negative_value":
            events.iloc[at, events.columns.get_loc("value")] = -events["value"].to_numpy()[at] - 1.0
        else:
            col, value = column[name]
            events.iloc[at, events.columns.get_loc(col)] = value
        manifest.add("events", REASON.get(name, name), len(at))


def _corrupt_users(users: pd.DataFrame, rate: float, rng: np.random.Generator, manifest: Manifest) -> pd.DataFrame:
    users = users.copy()
    users["timezone"] = users["timezone"].astype(object)
    n = len(users)
    rows = rng.permutation(n)[: int(round(rate * n))]
    defect = np.asarray(USER_DEFECTS, dtype=object)[rng.integers(0, len(USER_DEFECTS), len(rows))]
    tz = rows[defect == "bad_timezone"]
    users.iloc[tz, users.columns.get_loc("timezone")] = "Mars/Olympus_Mons"
    manifest.add("users", "bad_timezone", len(tz))
    ch = rows[defect == "unknown_channel"]
    consent = users["consent"].to_numpy(dtype=object).copy()
    consent[ch] = [list(c) + ["carrier_pigeon"] for c in consent[ch]]
    users["consent"] = consent
    manifest.add("users", "unknown_channel", len(ch))
    dup = users.iloc[rows[defect == "duplicate_key"]].copy()
    manifest.add("users", "duplicate_key", len(dup))
    return pd.concat([users, dup], ignore_index=True)
