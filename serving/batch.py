"""``nbm recommend``: the decision of every user (or the listed ones) as of one time, without a server.

The same candidates, contact policy and ``decide`` as the service (vectorised over users:
:mod:`features.replay`, :func:`nbm.policy.decide.decide_slate`), with the contact history taken from the
events of the data directory (and, for Thompson sampling, the explorer's statistics from its sends and
their attributed outcomes). One JSON line per decision, in the shape of the ``/recommend`` answer plus
``now``. Decision ids are derived from (user, now, model version), so running the same campaign twice
writes the same ids.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from features.pipeline import FeatureStore
from features.pairs import expand_pairs, pair_contact
from features.replay import arm_decide, send_histories
from nbm.attribution import attribute
from nbm.policy.contact import REASON_NAMES
from nbm.config import AttributionConfig, NbmConfig
from nbm.dataset import Dataset
from nbm.errors import UnusableInputError
from nbm.policy.assign import assign
from nbm.policy.explore import EXPLORERS, make_explorer

CHUNK = 20_000
NAMESPACE = uuid.UUID("6f1c1d1e-8a7b-4e0c-9a55-6e626d2d6e62")


@lru_cache(maxsize=65536)
def iso_utc(ns: int) -> str:
    """An instant (int64 ns) as ISO-8601 UTC with ``Z``, as the service answers (cached: send times are
    the slots, which every decision of an hour shares)."""
    return pd.Timestamp(int(ns), tz="UTC").isoformat().replace("+00:00", "Z")


def slate_items(md, start: int = 0, stop: int | None = None) -> list[dict]:
    """The ``items`` of the model's slate rows ``start:stop`` (all by default: slice them per decision), in
    the answer's shape. Each column is gathered once for all of them (numpy scalars per item cost ~2 % of
    a 500-decision batch); scores and propensities are Python ``round`` to 6 places. An item whose propensity
    is an estimate (Thompson sampling) also carries ``propensity_error``, the estimate's standard error.
    """
    slate, rows = md.slate, md.scored.rows
    r = np.asarray(slate.row[start:stop], dtype=np.int64)
    if not len(r):
        return []
    messages, channels = _texts(np.asarray(rows.message_id[r])), _texts(np.asarray(rows.channel[r]))
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


@dataclass(frozen=True)
class BatchSummary:
    decisions: int
    with_items: int
    items: int
    reasons: dict[str, int]


def read_user_list(path: Path) -> np.ndarray:
    """User ids from a file: one per line, or a CSV/Parquet with a ``user_id`` column."""
    path = Path(path)
    if not path.is_file():
        raise UnusableInputError(f"`--users`: {str(path)!r} does not exist")
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pd.read_csv(path, dtype=str)
    else:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        return np.asarray(lines, dtype=object)
    if "user_id" not in frame.columns:
        raise UnusableInputError(f"`--users`: {str(path)!r} has no `user_id` column")
    return frame["user_id"].dropna().astype(str).to_numpy(dtype=object)


def history_arms(events: pd.DataFrame, attribution: AttributionConfig, target: str, now: int
                 ) -> dict[tuple[str, str], tuple[int, int]]:
    """Thompson sampling's statistics from a data directory's events as of ``now`` (int64 ns), as the service
    keeps them from ``/feedback``: per (message, channel), its sends before ``now`` (impressions) and how
    many of them have an outcome of the model's ``target`` before ``now`` attributed to them (successes,
    by decision id or window, ``nbm.attribution``); (successes, impressions − successes)."""
    past = events[events["timestamp"].to_numpy(dtype="int64") < now]
    if not len(past):
        return {}
    position = attribute(past, attribution).to_numpy()
    kind = past["event_type"].to_numpy(dtype=object)
    success = np.zeros(len(past), dtype=bool)
    success[position[(kind == target) & (position >= 0)]] = True
    sends = kind == "send"
    frame = pd.DataFrame({"message": past["message_id"].to_numpy(dtype=object)[sends],
                          "channel": past["channel"].to_numpy(dtype=object)[sends], "success": success[sends]})
    counts = frame.groupby(["message", "channel"], sort=False)["success"].agg(["size", "sum"])
    return {(str(m), str(c)): (int(won), int(n - won)) for (m, c), n, won in
            zip(counts.index, counts["size"], counts["sum"])}


def recommend_all(dataset: Dataset, config: NbmConfig, artifact, model_version: str, now: pd.Timestamp,
                  out: Path, users: np.ndarray | None = None, k: int = 1, explorer: str = "greedy",
                  threshold: float = 0.0, seed: int = 0, progress=None) -> BatchSummary:
    """Decide for every user of ``dataset`` (or ``users``, resolved through links) as of ``now``; write JSONL."""
    if explorer not in EXPLORERS:
        raise UnusableInputError(f"unknown explorer {explorer!r}; expected one of {sorted(EXPLORERS)}")
    chooser = make_explorer(explorer, config.explorer)
    ids = dataset.users["user_id"].to_numpy(dtype=object) if users is None else \
        dataset.identity.apply(pd.Series(users, dtype=object)).to_numpy(dtype=object)
    asked = ids if users is None else np.asarray(users, dtype=object)
    t = pd.Timestamp(now).value
    store = FeatureStore.build(dataset, config)
    lookback = max(7.0, config.contact_policy.message_cooldown_days) + 1.0
    rng = np.random.default_rng(seed)
    statistics = history_arms(dataset.events, config.attribution, artifact.target, t) if explorer == "thompson" else None
    reasons: dict[str, int] = {}
    with_items = items = 0
    stamp = iso_utc(t)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    experiment = config.experiment
    with out.open("w") as fh:
        for a in range(0, len(ids), CHUNK):
            entries: list[dict | None] = [None] * len(ids[a:a + CHUNK])
            arms = assign(ids[a:a + CHUNK], experiment)
            for arm in pd.unique(arms):
                members = np.flatnonzero(arms == arm)
                chunk = ids[a:a + CHUNK][members]
                if arm == "holdout":
                    decided = [([], [], "holdout")] * len(chunk)
                else:
                    nows = np.full(len(chunk), t, dtype=np.int64)
                    pairs = expand_pairs(store, chunk, nows)
                    hist = send_histories(store, chunk, nows, lookback)
                    contact = pair_contact(store, pairs, hist)
                    md = arm_decide(store, artifact, pairs, hist, arm, chooser, rng, threshold, contact=contact, k=k,
                                    arms=statistics if arm == "model" else None)
                    suppressed = suppressed_by_decision(pairs, contact)
                    starts = np.searchsorted(md.slate.decision, np.arange(len(chunk) + 1))
                    every = slate_items(md)
                    decided = [(every[starts[i]:starts[i + 1]], suppressed.get(i, []),
                                str(md.batch.reason[i])) for i in range(len(chunk))]
                for i, user, (chosen, blocked, reason) in zip(members, chunk, decided):
                    entry = {
                        "decision_id": str(uuid.uuid5(NAMESPACE, f"{user}|{t}|{model_version}")),
                        "user_id": str(asked[a + i]),
                        "model_version": model_version,
                        "items": chosen,
                        "suppressed": blocked,
                        "now": stamp,
                    }
                    if experiment.name:
                        entry.update(arm=str(arm), experiment=experiment.name)
                    if not chosen:
                        entry["reason"] = reason
                    entries[i] = entry
            for entry in entries:
                if not entry["items"]:
                    reasons[entry["reason"]] = reasons.get(entry["reason"], 0) + 1
                else:
                    with_items += 1
                    items += len(entry["items"])
                fh.write(json.dumps(entry) + "\n")
            if progress is not None:
                progress(min(a + CHUNK, len(ids)), len(ids))
    return BatchSummary(len(ids), with_items, items, reasons)


def suppressed_by_decision(pairs, contact) -> dict[int, list[dict[str, str]]]:
    """Per decision, the (message, channel) pairs with no allowed slot and their first slot's reason.

    ``pairs`` (:class:`features.pairs.Pairs`) are sorted by decision; ``contact`` is their
    :class:`features.pairs.PairContact`.
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
             zip(_texts(pairs.messages[pairs.message_code[rows]]), _texts(pairs.channels[pairs.channel_code[rows]]),
                 REASON_NAMES[reason[first]].tolist())]
    entries = [table[i] for i in inverse.tolist()]
    return {g: entries[a:b] for g, a, b in zip(group[bounds[:-1]].tolist(), bounds[:-1].tolist(), bounds[1:].tolist())}


def _texts(values) -> list[str]:
    """Values as Python strings (an object array of them is taken as it is)."""
    values = np.asarray(values, dtype=object)
    out = values.tolist()
    if out and type(out[0]) is not str:           # (the candidates' arrays hold Python strings)
        codes, uniques = pd.factorize(values)
        names = [str(u) for u in uniques]
        return [names[c] for c in codes.tolist()]
    return out
