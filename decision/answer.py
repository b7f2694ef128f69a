"""The answer to a decision: its items and suppressed pairs in the service contract's shape, and the typed
record (:class:`Answer`) that the service returns, the state store logs and ``nbm recommend`` writes.

Items and suppressed entries are built for a whole batch at once (each column gathered once: numpy
scalars per item cost ~2 % of a 500-decision batch) and are plain dicts, the JSON the contract names, so
that the service encodes an answer in one call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

from nbm.policy.contact import REASON_NAMES


@dataclass(frozen=True)
class Answer:
    """One decision: the ``/recommend`` answer (:meth:`public`) and what the decision log keeps of it.

    ``items`` and ``suppressed`` are in the contract's JSON shape (``message_id``, ``channel``, ``send_at``,
    ``score``, ``propensity`` and, for an estimated propensity, ``propensity_error``; ``message_id``,
    ``channel``, ``reason``); ``reason`` says why ``items`` is empty (``""`` otherwise); ``now`` is the
    decision's time (int64 ns); ``arm`` the experiment arm (or a request's own label), ``experiment`` the
    experiment's name, ``explorer`` and ``policy`` what chose (logged); ``propensity`` the probability of
    the whole slate (the product of its items', 1 without items); ``planned`` the items as
    ``(send_at ns, channel, message_id)``, the sends the contact history reserves.
    """

    decision_id: str
    user_id: str
    model_version: str
    items: list[dict]
    suppressed: list[dict]
    reason: str
    now: int
    arm: str | None = None
    experiment: str | None = None
    explorer: str = "greedy"
    policy: str = ""
    propensity: float = 1.0
    planned: list[tuple[int, str, str]] = field(default_factory=list)
    trigger: str | None = None
    """A triggered decision's trigger, as JSON (``event_type``, ``message_id``, ``topic``, ``messages``: the
    candidates it allowed), for the decision log."""

    def public(self) -> dict:
        """The ``/recommend`` answer: ``arm`` when there is one, ``reason`` when nothing is sent."""
        out = {"decision_id": self.decision_id, "user_id": self.user_id, "model_version": self.model_version,
               "items": self.items, "suppressed": self.suppressed}
        if self.arm is not None:
            out["arm"] = self.arm
        if not self.items:
            out["reason"] = self.reason
        return out

    def batch_line(self) -> dict:
        """A line of ``nbm recommend``'s output: the answer plus ``now`` (ISO-8601), with ``arm`` and
        ``experiment`` inside an experiment."""
        out = {"decision_id": self.decision_id, "user_id": self.user_id, "model_version": self.model_version,
               "items": self.items, "suppressed": self.suppressed, "now": iso_utc(self.now)}
        if self.experiment:
            out.update(arm=self.arm, experiment=self.experiment)
        if not self.items:
            out["reason"] = self.reason
        return out


@lru_cache(maxsize=65536)
def iso_utc(ns: int) -> str:
    """An instant (int64 ns) as ISO-8601 UTC with ``Z``, as the service answers (cached: send times are
    the slots, which every decision of an hour shares)."""
    return pd.Timestamp(int(ns), tz="UTC").isoformat().replace("+00:00", "Z")


def slate_items(md, start: int = 0, stop: int | None = None) -> list[dict]:
    """The ``items`` of the slate rows ``start:stop`` of ``md`` (a :class:`decision.scoring.ModelDecisions`;
    all rows by default: slice them per decision), in the answer's shape. Scores and propensities are
    Python ``round`` to 6 places. An item whose propensity is an estimate (Thompson sampling) also carries
    ``propensity_error``, the estimate's standard error.
    """
    slate, rows = md.slate, md.scored.rows
    r = np.asarray(slate.row[start:stop], dtype=np.int64)
    if not len(r):
        return []
    messages, channels = texts(np.asarray(rows.message_id[r])), texts(np.asarray(rows.channel[r]))
    sends = [iso_utc(t) for t in np.asarray(slate.send_at[start:stop], dtype=np.int64).tolist()]
    scores = [round(x, 6) for x in np.asarray(slate.score[start:stop], dtype=float).tolist()]   # at its send time
    propensities = [round(x, 6) for x in np.asarray(slate.propensity[start:stop], dtype=float).tolist()]
    items = [{"message_id": m, "channel": c, "send_at": t, "score": sc, "propensity": pr}
             for m, c, t, sc, pr in zip(messages, channels, sends, scores, propensities)]
    error = None if slate.propensity_error is None else np.asarray(slate.propensity_error[start:stop], dtype=float)
    if error is not None and (error > 0).any():       # an estimated propensity (Thompson): its standard error
        for item, e in zip(items, error.tolist()):
            if e > 0:
                item["propensity_error"] = round(e, 6)
    return items


def suppressed_by_decision(pairs, contact) -> dict[int, list[dict[str, str]]]:
    """Per decision, the (message, channel) pairs with no allowed slot and their first slot's reason.

    ``pairs`` (:class:`decision.pairs.Pairs`) are sorted by decision; ``contact`` is their
    :class:`decision.contact.PairContact`.
    """
    blocked = np.flatnonzero(~contact.allowed.any(axis=1)) if len(pairs) else np.zeros(0, np.int64)
    if not len(blocked):
        return {}
    group = pairs.group[blocked]
    reason = contact.code[blocked, pairs.ok[blocked].argmax(axis=1)]
    bounds = np.flatnonzero(np.r_[True, group[1:] != group[:-1], True])
    # One entry per distinct (message, channel, reason), shared by the decisions it blocks: a campaign batch
    # repeats the same few hundred (a dict per blocked pair cost ~5 % of a 500-decision batch). Read-only.
    key = (pairs.message_code[blocked].astype(np.int64) * (len(pairs.channels) + 1) + pairs.channel_code[blocked]) \
        * len(REASON_NAMES) + reason
    distinct, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    rows = blocked[first]
    table = [{"message_id": m, "channel": c, "reason": r} for m, c, r in
             zip(texts(pairs.messages[pairs.message_code[rows]]), texts(pairs.channels[pairs.channel_code[rows]]),
                 REASON_NAMES[reason[first]].tolist())]
    entries = [table[i] for i in inverse.tolist()]
    return {g: entries[a:b] for g, a, b in zip(group[bounds[:-1]].tolist(), bounds[:-1].tolist(), bounds[1:].tolist())}


def texts(values) -> list[str]:
    """Values as Python strings (an object array of them is taken as it is)."""
    values = np.asarray(values, dtype=object)
    out = values.tolist()
    if out and type(out[0]) is not str:           # (the candidates' arrays hold Python strings)
        codes, uniques = pd.factorize(values)
        names = [str(u) for u in uniques]
        return [names[c] for c in codes.tolist()]
    return out
