"""The simulated world's event log: columns of integers while it grows, an ``events`` table when read.

Rows are appended in chunks of numpy arrays (one chunk per kind of event per day). Every row gets a
sequence number when appended, so its ``event_id`` does not depend on when the log is read.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nbm.schema import EVENT_TYPES

if TYPE_CHECKING:
    from nbm.simulate.world import World

EventType = IntEnum("EventType", {name.upper(): i for i, name in enumerate(EVENT_TYPES)})
"""Integer codes of ``nbm.schema.EVENT_TYPES`` (``EventType.SEND`` …)."""

ALIAS_CANONICAL, ALIAS_DEVICE, ALIAS_COOKIE = 0, 1, 2
_FIELDS = ("timestamp", "user", "alias", "event_type", "message", "channel", "decision", "propensity", "value")


class EventLog:
    """Append-only log of a world's events."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._chunks: list[dict[str, np.ndarray]] = []
        self._next = 0
        self._decisions: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        self.policy_name = ""

    def decide(self, now: int, users: np.ndarray, decision_ids: np.ndarray, propensity: np.ndarray) -> None:
        """Record one day's decisions (one per live user, sends or not) with their propensities."""
        self._decisions.append((int(now), np.asarray(users, np.int64), np.asarray(decision_ids, np.int64),
                                np.asarray(propensity, np.float64)))

    def decisions_frame(self, until: int | None = None) -> pd.DataFrame:
        """The ``decisions`` table of the data contract (decisions before ``until`` only)."""
        chunks = [c for c in self._decisions if until is None or c[0] < until]
        now = np.concatenate([np.full(len(c[1]), c[0], dtype=np.int64) for c in chunks]) if chunks else np.zeros(0, np.int64)
        users, ids, propensity = (np.concatenate([c[i] for c in chunks]) if chunks else np.zeros(0)
                                  for i in (1, 2, 3))
        return pd.DataFrame({
            "decision_id": pd.array(_prefixed("d", ids, self._width()), dtype="str"),
            "timestamp": pd.to_datetime(now, utc=True),
            "user_id": pd.array(self.world.population.user_ids[users.astype(np.int64)], dtype="str"),
            "propensity": propensity.astype(np.float64),
            "policy": pd.array(np.full(len(ids), self.policy_name, dtype=object), dtype="str"),
        })

    def _width(self) -> int:
        most = max([self._next] + [int(c[2].max()) + 1 for c in self._decisions if len(c[2])])
        return max(9, len(str(max(most, 1))))

    def __len__(self) -> int:
        return self._next

    def append(
        self,
        timestamp: np.ndarray,
        user: np.ndarray,
        event_type: EventType,
        *,
        alias: np.ndarray | None = None,
        message: np.ndarray | None = None,
        channel: np.ndarray | None = None,
        decision: np.ndarray | None = None,
        propensity: np.ndarray | None = None,
        value: np.ndarray | None = None,
    ) -> None:
        """Append ``len(timestamp)`` events of one type. Missing optional columns are empty (-1 or NaN)."""
        n = len(timestamp)
        if n == 0:
            return

        def col(a: np.ndarray | None, fill: float, dtype: type) -> np.ndarray:
            return np.full(n, fill, dtype=dtype) if a is None else np.asarray(a, dtype=dtype)

        self._chunks.append({
            "seq": self._next + np.arange(n, dtype=np.int64),
            # Millisecond resolution, as logs have: it survives ISO-8601 text exactly.
            "timestamp": np.asarray(timestamp, dtype=np.int64) // 10**6 * 10**6,
            "user": np.asarray(user, dtype=np.int64),
            "alias": col(alias, ALIAS_CANONICAL, np.int8), "event_type": np.full(n, int(event_type), dtype=np.int8),
            "message": col(message, -1, np.int32), "channel": col(channel, -1, np.int8),
            "decision": col(decision, -1, np.int64), "propensity": col(propensity, np.nan, np.float64),
            "value": col(value, np.nan, np.float64),
        })
        self._next += n

    def columns(self, until: int | None = None, since: int | None = None) -> dict[str, np.ndarray]:
        """The raw integer columns, sorted by (timestamp, sequence), rows in ``[since, until)`` (ns) only."""
        if not self._chunks:
            return {f: np.zeros(0) for f in ("seq", *_FIELDS)}
        data = {f: np.concatenate([c[f] for c in self._chunks]) for f in self._chunks[0]}
        stamp = data["timestamp"]
        keep = np.ones(len(stamp), dtype=bool) if until is None else stamp < until
        if since is not None:
            keep &= stamp >= since
        data = {f: a[keep] for f, a in data.items()}
        order = np.lexsort((data["seq"], data["timestamp"]))
        return {f: a[order] for f, a in data.items()}

    def to_frame(self, until: int | None = None, since: int | None = None) -> pd.DataFrame:
        """The ``events`` table of the data contract (rows in ``[since, until)`` only, sorted by time)."""
        data = self.columns(until, since)
        pop, cat, config = self.world.population, self.world.catalog, self.world.config
        width = self._width()
        identities = np.stack([pop.user_ids, pop.device_ids, pop.cookie_ids])
        user = identities[data["alias"].astype(np.int64), data["user"].astype(np.int64)]
        return pd.DataFrame({
            "event_id": pd.array(_prefixed("e", data["seq"], width), dtype="str"),
            "timestamp": pd.to_datetime(data["timestamp"].astype(np.int64), utc=True),
            "user_id": pd.array(user, dtype="str"),
            "event_type": pd.array(np.asarray(EVENT_TYPES, dtype=object)[data["event_type"].astype(np.int64)], dtype="str"),
            "message_id": _codes(data["message"], cat.table["message_id"].to_numpy(dtype=object)),
            "channel": _codes(data["channel"], np.asarray(config.channels, dtype=object)),
            "decision_id": _optional_ids("d", data["decision"], width),
            "propensity": data["propensity"].astype(np.float64),
            "value": data["value"].astype(np.float64),
        })


def _prefixed(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    text = pd.Series(numbers.astype(np.int64)).astype(str).str.zfill(width)
    return (prefix + text).to_numpy(dtype=object)


def _optional_ids(prefix: str, numbers: np.ndarray, width: int) -> pd.api.extensions.ExtensionArray:
    has = numbers >= 0
    out = np.full(len(numbers), None, dtype=object)
    out[has] = _prefixed(prefix, numbers[has], width)
    return pd.array(out, dtype="str")


def _codes(codes: np.ndarray, names: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """Names of integer codes; -1 is missing."""
    codes = codes.astype(np.int64)
    if not len(names):
        return pd.array(np.full(len(codes), None, dtype=object), dtype="str")
    return pd.Categorical.from_codes(codes, categories=names).astype("str")
