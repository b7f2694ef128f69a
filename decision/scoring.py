"""Two-stage scoring: the model's decisions over many decisions' candidates at once.

Scoring every (message × channel × slot) of every decision costs ~300 rows a decision; :func:`model_decide`
scores in two stages instead: every (message, channel) pair that the contact policy allows at one
reference slot (the allowed slot nearest the middle of the day's slots), then every allowed slot of each
decision's ``top_pairs`` best pairs, and decides among those. A pick outside the top pairs (an
explorer's, or a later item's of a slate once the earlier ones rule the top pairs out) has its other
allowed slots scored after the choice, so every item is sent at its pair's best allowed slot by the model
(``tests/serving/test_send_time.py`` checks every item's score, and its send time where one slot is
clearly best, against full enumeration). The greedy first pick is always a top pair when its value is
positive (pairs tied with the ``top_pairs``-th best value are all kept), scored at every allowed slot, so
``ModelDecisions.batch`` (what off-policy evaluation reads) has the greedy item's own send time;
``ModelDecisions.slate`` holds every item's own send time and score. The decision itself is
:func:`nbm.policy.decide.decide_slate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from decision.contact import PairContact, as_pairs
from decision.pairs import CandidateRows, Pairs
from features.compute import Candidates
from features.pipeline import FeatureStore
from nbm.arrays import Spread, append, run_starts
from nbm.artifact import ScoringArtifact
from nbm.policy.contact import ContactDecision, SendHistories
from nbm.policy.decide import BatchDecision, ScoredCandidates, Slate, decide_slate
from nbm.policy.explore import Explorer, ThompsonStatistics

RESLOT_MAX_ROWS = 1_000_000
"""Up to this many stage-1 rows, their feature columns are kept and reused for stage 2."""


def score(store: FeatureStore, artifact: ScoringArtifact, rows: Candidates, chunk: int = 500_000,
          patch=None, cost: bool = False):
    """Calibrated probabilities of ``rows``, featurised and scored in bounded chunks; with ``cost``, also each
    row's expected send cost (:func:`send_cost`; ``None`` when there is none).

    ``patch(columns, rows)``, when given, may update the feature columns in place before scoring (the
    service patches contact recency from sends the snapshot does not have).
    """
    out = np.empty(len(rows), dtype=np.float64)
    costs = np.zeros(len(rows)) if cost else None
    has_cost = False
    for a in range(0, len(rows), chunk):
        b = min(a + chunk, len(rows))
        part = Candidates(*(None if getattr(rows, f) is None else getattr(rows, f)[a:b]
                            for f in ("user_id", "message_id", "channel", "as_of", "send_at", "message_code",
                                      "channel_code", "user_code")))
        columns = store.featurise_columns(part, spread=True)
        if patch is not None:
            patch(columns, part)
        out[a:b] = score_columns(store, artifact, columns, part)
        if cost:
            c = send_cost(store, artifact, columns, part)
            if c is not None:
                costs[a:b], has_cost = c, True
    return (out, costs if has_cost else None) if cost else out


def model_columns(store: FeatureStore, artifact: ScoringArtifact, columns: dict) -> dict:
    """``columns`` with ``message_topic`` in the model's codes: a store's topic codes are its catalog's (sorted, or
    appended by the live catalog), the model's those of the catalog it was trained on (``artifact.topics``);
    mapped by name, a topic the model never saw is missing (NaN, as an unknown category of an attribute).
    ``columns`` itself when the codes agree (or the model predates ``topics``)."""
    mapping = _topic_mapping(store.globals.vocabulary, artifact)
    if mapping is None or "message_topic" not in columns:
        return columns
    raw = columns["message_topic"]
    remap = lambda codes: np.where(codes >= 0, mapping[np.maximum(codes, 0)], codes)    # noqa: E731 (−1: no message)
    if isinstance(raw, Spread):
        return {**columns, "message_topic": Spread(remap(np.asarray(raw.values, dtype=np.int64)), raw.index)}
    return {**columns, "message_topic": remap(np.asarray(raw, dtype=np.int64))}


def _topic_mapping(vocabulary, artifact: ScoringArtifact) -> np.ndarray | None:
    """The model's code of each of the vocabulary's topic codes (``None``: the same codes), per (vocabulary, model)."""
    topics = getattr(artifact, "topics", None)       # (stand-in models of tests have none)
    if topics is None:
        return None
    cache = artifact.__dict__.setdefault("_topic_mappings", {})
    hit = cache.get(id(vocabulary))
    if hit is not None and hit[0] is vocabulary:
        return hit[1]
    codes = pd.Index(topics).get_indexer(np.asarray(vocabulary.topics, dtype=object))
    mapping = None if np.array_equal(codes, np.arange(len(codes))) else np.where(codes >= 0, codes, np.nan)
    if len(cache) > 64:
        cache.clear()
    cache[id(vocabulary)] = (vocabulary, mapping)
    return mapping


def score_columns(store: FeatureStore, artifact: ScoringArtifact, columns: dict, rows: Candidates) -> np.ndarray:
    """``artifact.score`` of the featurised ``columns`` of ``rows``; a funnel model also reads each row's message
    (and its topic, for messages its table does not know)."""
    columns = model_columns(store, artifact, columns)
    if artifact.followup is None:
        return artifact.score(columns)
    message = rows.message_id
    names = _topic_names(store)
    code = message.index if isinstance(message, Spread) else rows.message_code
    if code is None:
        return artifact.score(columns, message)
    topic = Spread(names, code) if isinstance(message, Spread) else names[code]
    return artifact.score(columns, message, topic)


def send_cost(store: FeatureStore, artifact: ScoringArtifact, columns: dict, rows: Candidates) -> np.ndarray | None:
    """Expected cost of each row's send: ``[arbitration] unsubscribe_cost`` (per channel from the model when
    ``auto``) × the model's P(unsubscribe) (``artifact.risk``); ``None`` when there is no cost (a cost of 0,
    or a model without a risk part)."""
    setting = store.config.arbitration.unsubscribe_cost
    if artifact.risk is None or setting == 0:
        return None
    risk = artifact.risk.probability(artifact, model_columns(store, artifact, columns), rows.channel)
    unit = artifact.risk.costs(rows.channel) if setting == "auto" else float(setting)
    return unit * risk


def _scored(store: FeatureStore, artifact: ScoringArtifact, columns: dict, rows: Candidates):
    """(P(target), expected cost or None) of featurised rows."""
    return score_columns(store, artifact, columns, rows), send_cost(store, artifact, columns, rows)


def _topic_names(store: FeatureStore) -> np.ndarray:
    """Topic name of each message of the store's vocabulary (built once per store)."""
    cached = store.__dict__.get("_topic_names")
    if cached is None:
        voc = store.globals.vocabulary
        cached = np.asarray(voc.topics, dtype=object)[np.maximum(voc.message_topic, 0)]
        store.__dict__["_topic_names"] = cached
    return cached


@dataclass(frozen=True)
class ModelDecisions:
    """What :func:`model_decide` decided, on the rows it scored (``scored``, with their probabilities)."""

    scored: CandidateRows
    probability: np.ndarray
    batch: BatchDecision
    slate: Slate


def model_decide(store: FeatureStore, artifact: ScoringArtifact, candidates: Pairs | CandidateRows,
                 histories: SendHistories, explorer: Explorer, rng: np.random.Generator, threshold: float = 0.0,
                 top_pairs: int | None = None, weight: np.ndarray | None = None,
                 contact: PairContact | ContactDecision | None = None, k: int = 1,
                 statistics: dict | None = None, patch=None) -> ModelDecisions:
    """The model's decision policy for every decision of ``candidates`` (two-stage scoring, then ``decide_slate``).

    The decision sees every allowed (message, channel) pair: the ``top_pairs`` best at every allowed slot,
    the others at their reference slot — so an explorer explores over all of them, and the greedy choice is
    the one full enumeration makes whenever the best pair ranks among the top at the reference slot. A
    chosen pair outside the top is sent at its best allowed slot: its other slots are scored after the
    choice (``decide_slate``'s ``reslot``), judged with the decision's earlier items.
    ``candidates`` are :class:`Pairs` (or the rows of ``expand_many``); ``contact`` is the contact policy's
    verdict on them, computed when not given; ``weight`` the business weight of each message (by code in
    the vocabulary), by default the configured ones (``[arbitration]``, as is ``top_pairs``); ``statistics``
    maps (message, channel) to Thompson sampling's (successes, failures); ``patch`` see :func:`score`.
    """
    pairs, contact = as_pairs(store, candidates, histories, contact)
    allowed = contact.allowed
    width = allowed.shape[1]
    weight = store.history.catalog_arrays["weight"] if weight is None else np.asarray(weight, dtype=float)
    weight = weight[pairs.message_code] if (weight != 1.0).any() else None      # per pair; none: all 1
    # Stage 1: each allowed pair at its allowed slot nearest the middle of the decision's slots (the first
    # such slot on a tie).
    live, ref_slot = reference_slots(allowed, pairs.n_slots[pairs.group] // 2)
    ref_rows = pairs.rows(live, ref_slot, spread_ids=True).rows
    base = None
    if len(live) <= RESLOT_MAX_ROWS:   # keep stage 1's columns: stage 2 only recomputes slot features
        base = store.featurise_columns(ref_rows, spread=True)     # shared features stay shared
        if patch is not None:
            patch(base, ref_rows)
        ref_probability, ref_cost = _scored(store, artifact, base, ref_rows)
    else:
        ref_probability, ref_cost = score(store, artifact, ref_rows, patch=patch, cost=True)
    ref_value = ref_probability * pairs.value[live] * (1.0 if weight is None else weight[live])
    if ref_cost is not None:
        ref_value = ref_value - ref_cost
    # The best ``top_pairs`` pairs per decision (at least k + 3, so a slate of k has room).
    top_pairs = max(store.config.arbitration.top_pairs if top_pairs is None else top_pairs, k + 3)
    top = top_per_group(pairs.group[live], ref_value, top_pairs)
    # Stage 2: every allowed slot of those pairs; the other pairs keep their reference slot.
    top_index = np.flatnonzero(top)
    a, top_slot = np.nonzero(allowed[live[top_index]])
    base_index = top_index[a]
    top_rows = pairs.rows(live[base_index], top_slot, spread_ids=True).rows
    if base is not None:
        top_probability, top_cost = _scored(store, artifact, store.reslot_columns(base, base_index, top_rows), top_rows)
    else:
        top_probability, top_cost = score(store, artifact, top_rows, patch=patch, cost=True)
    p = np.concatenate([live[base_index], live[~top]])
    s = np.concatenate([top_slot, ref_slot[~top]])
    probability = np.concatenate([top_probability, ref_probability[~top]])
    order = np.argsort(p * width + s, kind="stable")
    p, s, probability = p[order], s[order], probability[order]
    cost = None if ref_cost is None else np.concatenate([top_cost, ref_cost[~top]])[order]
    scored = pairs.rows(p, s, spread_ids=True)
    candidates = ScoredCandidates(scored.rows.message_id, scored.rows.channel, scored.rows.send_at, probability,
                                  scored.value, None if weight is None else weight[p], pair=p, cost=cost)
    # A pick outside the top pairs (an explorer's, or a later rank's once caps rule the top out) is sent at
    # its best allowed slot too: its other slots are scored after the choice (``decide_slate``'s ``reslot``).
    def reslot(chosen: np.ndarray):
        chosen_pair = p[chosen]
        position = np.searchsorted(live, chosen_pair)         # a chosen pair's row in stage 1 (``live`` is sorted)
        need = np.flatnonzero(~top[position])
        if not len(need):
            return None
        o, slot = np.nonzero(allowed[chosen_pair[need]])
        owner, pair = need[o], chosen_pair[need[o]]
        extra = pairs.rows(pair, slot, spread_ids=True)
        if base is not None:
            extra_probability, extra_cost = _scored(
                store, artifact, store.reslot_columns(base, position[need[o]], extra.rows), extra.rows)
        else:
            extra_probability, extra_cost = score(store, artifact, extra.rows, patch=patch, cost=True)
        return owner, ScoredCandidates(extra.rows.message_id, extra.rows.channel, extra.rows.send_at,
                                       extra_probability, extra.value, None if weight is None else weight[pair],
                                       cost=extra_cost), contact.rows(pair, slot)

    slate = decide_slate(scored.group, pairs.n_groups, candidates, histories, pairs.timezones,
                         store.config.contact_policy, explorer, rng, k=k, threshold=threshold,
                         statistics=None if statistics is None else statistics_rows(store, statistics, scored.rows),
                         contact=contact.rows(p, s, spread_reasons=True), reslot=reslot)
    return ModelDecisions(scored, probability, slate.first, slate)


def reference_slots(allowed: np.ndarray, middle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``allowed`` (rows × slots) with an allowed slot, and each one's allowed slot nearest its
    ``middle`` (the first on a tie). Up to 8 slots a row is read as one byte, looked up in a table of
    (middle, byte) → slot: a decision batch has ~150,000 rows, and a distance matrix with an argmin along
    rows of 6 cost 10 ms where this costs 4."""
    n, width = allowed.shape
    if not n:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if width > 8:
        live = np.flatnonzero(allowed.any(axis=1))
        distance = np.where(allowed[live], np.abs(np.arange(width)[None, :] - middle[live][:, None]), width + 1)
        return live, distance.argmin(axis=1)
    bits = np.packbits(allowed, axis=1, bitorder="little")[:, 0]
    live = np.flatnonzero(bits)
    sets = ((np.arange(2 ** width)[:, None] >> np.arange(width)) & 1).astype(bool)        # byte → its slots
    distance = np.where(sets[None], np.abs(np.arange(width)[None, None, :] - np.arange(width + 1)[:, None, None]),
                        width + 1)
    table = distance.argmin(axis=2)                                                        # (middle, byte) → slot
    return live, table[np.minimum(middle[live], width), bits[live]]


def top_per_group(group: np.ndarray, value: np.ndarray, k: int) -> np.ndarray:
    """Bool per row: among the ``k`` highest ``value`` of its group (``group`` sorted), and every row tied
    with the group's k-th highest when that value is positive — so a greedy choice, which draws between
    tied rows, never falls outside. Rows tied at a value ≤ 0 (worth nothing at any slot) go to the
    earlier row, up to ``k``. One partition per group in a (groups × largest group) table, not a sort of
    every row."""
    n = len(group)
    if not n:
        return np.zeros(0, dtype=bool)
    starts = run_starts(group)
    sizes = np.diff(append(starts, n))
    if sizes.max() <= k:
        return np.ones(n, dtype=bool)
    run = np.repeat(np.arange(len(starts)), sizes)
    position = np.arange(n) - starts[run]
    table = np.full((len(starts), int(sizes.max())), -np.inf)
    table[run, position] = np.where(np.isnan(value), -np.inf, value)
    kth = -np.partition(-table, k - 1, axis=1)[:, k - 1:k]           # each group's k-th highest value
    above = table > kth
    tied = table == kth
    room = np.where(kth > 0, table.shape[1], k - above.sum(axis=1, keepdims=True))   # ties kept: all, or earliest
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= room))
    return chosen[run, position]


def statistics_rows(store: FeatureStore, statistics: dict, rows: Candidates) -> ThompsonStatistics:
    """Thompson sampling's (successes, failures) of each row's (message, channel), by a table of codes;
    ``statistics`` maps (message, channel) to them (the state store's, or :func:`serving.batch_scoring.history_statistics`)."""
    voc = store.globals.vocabulary
    table = np.zeros((2, len(voc.messages) + 1, len(voc.channels) + 1))
    if statistics:
        keys = list(statistics)
        m = voc.messages.get_indexer([key[0] for key in keys])
        c = voc.channels.get_indexer([key[1] for key in keys])
        counts = np.array([statistics[key] for key in keys], dtype=float).reshape(-1, 2)
        known = (m >= 0) & (c >= 0)
        table[:, m[known], c[known]] = counts[known].T
    m, c = rows.message_code, rows.channel_code
    return ThompsonStatistics(table[0][m, c], table[1][m, c])
