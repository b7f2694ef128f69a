"""Many decisions at once, as of their own times: candidates, contact histories, model scores.

Off-policy evaluation replays the decision policy over every logged decision of a test window, and
batch scoring (``nbm recommend``) decides for every user as of one time. Both need, for thousands of
(user, time) decision points, what the service computes for one request: the eligible candidates
(:func:`features.candidates.expand`, vectorised: :mod:`features.pairs`), the user's past sends for the contact policy, and
the calibrated probability of each candidate. The decision itself is :func:`nbm.policy.decide.decide_batch`.

Scoring every (message × channel × slot) of every decision costs ~300 rows a decision; :func:`model_decide`
scores in two stages instead: every (message, channel) pair that the contact policy allows at one
reference slot (the allowed slot nearest the middle of the day's slots), then every allowed slot of each
decision's ``top_pairs`` best pairs, and decides among those. A pick outside the top pairs (an
explorer's, or a later item's of a slate once the earlier ones rule the top pairs out) has its other
allowed slots scored after the choice, so every item is sent at its pair's best allowed slot by the model
(``tests/serving/test_send_time.py`` checks every item's score, and its send time where one slot is
clearly best, against full enumeration). The greedy first pick is always a top pair when its value is
positive (pairs tied with the ``top_pairs``-th best value are all kept), scored at every allowed slot, so
``ModelDecisions.batch`` (what off-policy evaluation reads) has the greedy item's own send time; ``ModelDecisions.slate`` holds every
item's own send time and score.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from features.compute import DAY_NS, HOUR_NS, Candidates
from features.pairs import PairContact, Pairs, expand_pairs, pair_contact, policy_on_rows
from features.pipeline import FeatureStore
from nbm.arrays import append, prepend, run_starts
from nbm.artifact import ScoringArtifact
from nbm.policy.contact import ContactDecision, SendHistories, apply_contact_policy_batch
from nbm.policy.decide import BatchDecision, ScoredCandidates, Slate, decide_slate
from nbm.policy.explore import Arms, Explorer, Greedy, Softmax

RESLOT_MAX_ROWS = 1_000_000
"""Up to this many stage-1 rows, their feature columns are kept and reused for stage 2."""


@dataclass(frozen=True)
class Expanded:
    """The candidates of many decisions: ``group`` (sorted) names each row's decision point."""

    group: np.ndarray
    rows: Candidates
    slot: np.ndarray          # position of the row's slot among its decision's slots
    n_slots: np.ndarray       # per decision: how many slots it has
    value: np.ndarray         # the message's business value per row
    timezones: np.ndarray     # per decision
    n_groups: int
    slot_times: np.ndarray | None = None   # (n_groups, S): each decision's slot instants, −1 past its last

    def __len__(self) -> int:
        return len(self.group)

    def take(self, index: np.ndarray) -> Expanded:
        r = self.rows
        rows = Candidates(r.user_id[index], r.message_id[index], r.channel[index], r.as_of[index], r.send_at[index],
                          None if r.message_code is None else r.message_code[index],
                          None if r.channel_code is None else r.channel_code[index],
                          None if r.user_code is None else r.user_code[index])
        return Expanded(self.group[index], rows, self.slot[index], self.n_slots, self.value[index], self.timezones,
                        self.n_groups, self.slot_times)


def expand_many(store: FeatureStore, user_ids: np.ndarray, now: np.ndarray) -> Expanded:
    """Every eligible candidate row of each decision (``user_ids[i]`` as of ``now[i]``), as ``expand`` finds them."""
    return expand_pairs(store, user_ids, now).expanded()[0]


def send_histories(store: FeatureStore, user_ids: np.ndarray, now: np.ndarray, lookback_days: float) -> SendHistories:
    """Each decision's user's sends in the ``lookback_days`` before its ``now`` (what the contact policy counts)."""
    events = store.dataset.events
    sends = events[events["event_type"] == "send"]
    user_ids = np.asarray(user_ids, dtype=object)
    now = np.asarray(now, dtype=np.int64)
    if not len(sends) or not len(user_ids):
        return SendHistories.empty()
    codes, names = pd.factorize(np.concatenate([sends["user_id"].to_numpy(dtype=object), user_ids]))
    s_user, d_user = codes[: len(sends)], codes[len(sends):]
    times = sends["timestamp"].to_numpy(dtype="int64")
    order = np.lexsort((times, s_user))
    s_user, times = s_user[order], times[order]
    channels = sends["channel"].to_numpy(dtype=object)[order]
    messages = sends["message_id"].to_numpy(dtype=object)[order]
    # Sends of user u before t: a contiguous run of the (user, time)-sorted sends.
    low_t = now - int(lookback_days * DAY_NS)
    first = np.searchsorted(s_user, d_user, side="left")
    last = np.searchsorted(s_user, d_user, side="right")
    lo = bounded_search(times, first, last, low_t)
    hi = bounded_search(times, first, last, now)
    sizes = hi - lo
    group = np.repeat(np.arange(len(user_ids), dtype=np.int64), sizes)
    take = np.repeat(lo - prepend(0, np.cumsum(sizes)[:-1]), sizes) + np.arange(int(sizes.sum()))
    return SendHistories(group, times[take], channels[take], messages[take])


def bounded_search(times: np.ndarray, first: np.ndarray, last: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per query, the position of ``t`` within ``times[first:last]`` (sorted there), as an absolute index.

    A vectorised binary search: ~log2(run length) passes over all queries.
    """
    lo, hi = first.copy(), last.copy()
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) // 2
        go_right = active & (times[np.minimum(mid, len(times) - 1)] < t)
        lo = np.where(go_right, mid + 1, lo)
        hi = np.where(active & ~go_right, mid, hi)


def score(store: FeatureStore, artifact: ScoringArtifact, rows: Candidates, chunk: int = 500_000,
          patch=None) -> np.ndarray:
    """Calibrated probabilities of ``rows``, featurised and scored in bounded chunks.

    ``patch(columns, rows)``, when given, may update the feature columns in place before scoring (the
    service patches contact recency from sends the snapshot does not have).
    """
    out = np.empty(len(rows), dtype=np.float64)
    for a in range(0, len(rows), chunk):
        b = min(a + chunk, len(rows))
        part = Candidates(*(None if getattr(rows, f) is None else getattr(rows, f)[a:b]
                            for f in ("user_id", "message_id", "channel", "as_of", "send_at", "message_code",
                                      "channel_code", "user_code")))
        columns = store.featurise_columns(part, spread=True)
        if patch is not None:
            patch(columns, part)
        out[a:b] = artifact.score(columns)
    return out


@dataclass(frozen=True)
class ModelDecisions:
    """What :func:`model_decide` decided, on the rows it scored (``scored``, with their probabilities)."""

    scored: Expanded
    probability: np.ndarray
    batch: BatchDecision
    slate: Slate


def model_decide(store: FeatureStore, artifact: ScoringArtifact, candidates: Pairs | Expanded,
                 histories: SendHistories, explorer: Explorer, rng: np.random.Generator, threshold: float = 0.0,
                 top_pairs: int | None = None, weight: np.ndarray | None = None,
                 contact: PairContact | ContactDecision | None = None, k: int = 1, arms: dict | None = None,
                 patch=None) -> ModelDecisions:
    """The model's decision policy for every decision of ``candidates`` (two-stage scoring, then ``decide_slate``).

    The decision sees every allowed (message, channel) pair: the ``top_pairs`` best at every allowed slot,
    the others at their reference slot — so an explorer explores over all of them, and the greedy choice is
    the one full enumeration makes whenever the best pair ranks among the top at the reference slot. A
    chosen pair outside the top is sent at its best allowed slot: its other slots are scored after the
    choice (``decide_slate``'s ``reslot``), judged with the decision's earlier items.
    ``candidates`` are :class:`Pairs` (or the rows of ``expand_many``); ``contact`` is the contact policy's
    verdict on them, computed when not given; ``weight`` the business weight of each message (by code in
    the vocabulary), by default the configured ones (``[arbitration]``, as is ``top_pairs``); ``arms`` maps (message, channel) to Thompson
    sampling's (successes, failures); ``patch`` see :func:`score`.
    """
    pairs, contact = _as_pairs(store, candidates, histories, contact)
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
        ref_probability = artifact.score(base)
    else:
        ref_probability = score(store, artifact, ref_rows, patch=patch)
    ref_value = ref_probability * pairs.value[live] * (1.0 if weight is None else weight[live])
    # The best ``top_pairs`` pairs per decision (at least k + 3, so a slate of k has room).
    top_pairs = max(store.config.arbitration.top_pairs if top_pairs is None else top_pairs, k + 3)
    top = top_per_group(pairs.group[live], ref_value, top_pairs)
    # Stage 2: every allowed slot of those pairs; the other pairs keep their reference slot.
    top_index = np.flatnonzero(top)
    a, top_slot = np.nonzero(allowed[live[top_index]])
    base_index = top_index[a]
    top_rows = pairs.rows(live[base_index], top_slot, spread_ids=True).rows
    if base is not None:
        top_probability = artifact.score(store.reslot_columns(base, base_index, top_rows))
    else:
        top_probability = score(store, artifact, top_rows, patch=patch)
    p = np.concatenate([live[base_index], live[~top]])
    s = np.concatenate([top_slot, ref_slot[~top]])
    probability = np.concatenate([top_probability, ref_probability[~top]])
    order = np.argsort(p * width + s, kind="stable")
    p, s, probability = p[order], s[order], probability[order]
    scored = pairs.rows(p, s, spread_ids=True)
    candidates = ScoredCandidates(scored.rows.message_id, scored.rows.channel, scored.rows.send_at, probability,
                                  scored.value, None if weight is None else weight[p], pair=p)
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
            extra_probability = artifact.score(store.reslot_columns(base, position[need[o]], extra.rows))
        else:
            extra_probability = score(store, artifact, extra.rows, patch=patch)
        return owner, ScoredCandidates(extra.rows.message_id, extra.rows.channel, extra.rows.send_at,
                                       extra_probability, extra.value, None if weight is None else weight[pair]), \
            contact.rows(pair, slot)

    slate = decide_slate(scored.group, pairs.n_groups, candidates, histories, pairs.timezones,
                         store.config.contact_policy, explorer, rng, k=k, threshold=threshold,
                         arms=None if arms is None else _arm_rows(store, arms, scored.rows),
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


def _as_pairs(store: FeatureStore, candidates: Pairs | Expanded, histories: SendHistories,
              contact: PairContact | ContactDecision | None) -> tuple[Pairs, PairContact]:
    """``candidates`` as pairs, with the contact policy's verdict on them laid out per (pair, slot)."""
    if isinstance(candidates, Pairs):
        pairs = candidates
        if isinstance(contact, ContactDecision):
            raise TypeError("`contact` of pairs is a PairContact (pair_contact)")
    else:
        pairs, p = Pairs.of_rows(store, candidates)
        if isinstance(contact, ContactDecision):
            contact = PairContact.of_rows(contact, pairs, p, candidates.slot)
    return pairs, (pair_contact(store, pairs, histories) if contact is None else contact)


def _as_rows(store: FeatureStore, candidates: Pairs | Expanded, histories: SendHistories,
             contact: PairContact | ContactDecision | None) -> tuple[Expanded, ContactDecision]:
    """``candidates`` as rows (every eligible candidate), with the contact policy's verdict on each."""
    if isinstance(candidates, Expanded):
        return candidates, contact_verdict(store, candidates, histories) if contact is None else contact
    ex, p, s = candidates.expanded()
    if contact is None:
        contact = pair_contact(store, candidates, histories)
    return ex, contact.rows(p, s)


def _arm_rows(store: FeatureStore, arms: dict, rows: Candidates) -> Arms:
    """Thompson sampling's (successes, failures) of each row's (message, channel), by a table of codes."""
    voc = store.globals.vocabulary
    table = np.zeros((2, len(voc.messages) + 1, len(voc.channels) + 1))
    if arms:
        keys = list(arms)
        m = voc.messages.get_indexer([key[0] for key in keys])
        c = voc.channels.get_indexer([key[1] for key in keys])
        counts = np.array([arms[key] for key in keys], dtype=float).reshape(-1, 2)
        known = (m >= 0) & (c >= 0)
        table[:, m[known], c[known]] = counts[known].T
    return Arms(table[0][rows.message_code, rows.channel_code], table[1][rows.message_code, rows.channel_code])


def contact_verdict(store: FeatureStore, ex: Expanded, histories: SendHistories) -> ContactDecision:
    """The contact policy on every candidate row of ``ex``: :func:`features.pairs.pair_contact` on the rows'
    pairs (the same function on a fraction of the rows; a test compares it with the policy on every row)."""
    if not len(ex):
        return _contact_every_row(store, ex, histories)
    pairs, p = Pairs.of_rows(store, ex)
    return pair_contact(store, pairs, histories).rows(p, ex.slot)


def _contact_every_row(store: FeatureStore, ex: Expanded, histories: SendHistories) -> ContactDecision:
    """The contact policy on every row (the reference :func:`contact_verdict` equals)."""
    rows = ex.rows
    if rows.channel_code is not None and rows.message_code is not None:   # codes into the vocabulary: no hashing
        return policy_on_rows(store, ex.group, rows.channel_code, rows.message_code, rows.send_at, ex.timezones,
                              histories)
    return apply_contact_policy_batch(ex.group, rows.channel, rows.message_id, rows.send_at, ex.timezones, histories,
                                      store.config.contact_policy)


RULES_HOUR = 10
"""The local hour the lifecycle rules aim at."""


def rank(values: np.ndarray) -> np.ndarray:
    """Dense ranks (1 = lowest)."""
    return pd.Series(values).rank(method="dense").to_numpy() if len(values) else values


def local_hours(ex: Expanded) -> np.ndarray:
    """Local hour of each candidate's send time in its user's zone."""
    from features.history import local_time

    hour, _ = local_time(ex.rows.send_at, ex.timezones[ex.group])
    return hour


def rules_priority(store: FeatureStore, ex: Expanded) -> np.ndarray:
    """The lifecycle rules a CRM team writes, as a priority per candidate (higher first): the message aimed
    most narrowly at the user's stage, then the newest, then the channel first in the configured order,
    then the slot nearest 10:00 local, then the catalog's order. Eligibility (stage targeting, consent) is the
    candidates' own."""
    history = store.history
    m = ex.rows.message_code
    narrow = len(history.message_stages[0]) - history.message_stages[m].sum(axis=1)          # 0..3
    start = history.catalog_arrays["start_ns"][m].astype(np.float64)
    newest = rank(np.where(np.isfinite(start), start, -np.inf))
    channel_order = len(store.globals.vocabulary.channels) - ex.rows.channel_code
    distance = np.abs(local_hours(ex) - RULES_HOUR)
    # Last, the catalog's order: rules are deterministic (propensity 1), never a draw between equals.
    catalog_order = 1e-3 * (1.0 - m / (len(history.message_stages) + 1.0))
    return narrow * 1e9 + newest * 1e4 + channel_order * 1e2 + (24 - distance) + catalog_order + 1.0


def priority_decide(store: FeatureStore, ex: Expanded, histories: SendHistories, priority: np.ndarray,
                    explorer: Explorer, rng: np.random.Generator, contact: ContactDecision | None = None,
                    k: int = 1) -> ModelDecisions:
    """A baseline policy's decisions: ``decide_slate`` over every candidate row with ``priority`` as its
    expected value (value 1, no threshold: a baseline always sends when something is allowed).
    ``probability`` of the result is the priority."""
    if contact is None:
        contact = contact_verdict(store, ex, histories)
    candidates = ScoredCandidates(ex.rows.message_id, ex.rows.channel, ex.rows.send_at, priority, np.ones(len(ex)))
    slate = decide_slate(ex.group, ex.n_groups, candidates, histories, ex.timezones, store.config.contact_policy,
                         explorer, rng, k=k, threshold=-np.inf, contact=contact)
    return ModelDecisions(ex, np.asarray(priority, dtype=float), slate.first, slate)


def arm_decide(store: FeatureStore, artifact: ScoringArtifact, candidates: Pairs | Expanded,
               histories: SendHistories, arm: str, explorer: Explorer, rng: np.random.Generator,
               threshold: float = 0.0, contact: PairContact | ContactDecision | None = None, k: int = 1,
               arms: dict | None = None, patch=None) -> ModelDecisions:
    """The decisions of one experiment arm (the service and batch scoring both call this):

    * ``model`` — :func:`model_decide` with ``explorer``;
    * ``rules`` — :func:`rules_priority`, greedy (propensity 1);
    * ``random`` — every allowed (message, channel) pair equally likely (exact propensities), at its allowed
      slot nearest 10:00 local.

    (``holdout`` decides nothing: its callers answer without items.) Every arm sees the same candidates and
    contact policy. For the baselines, ``probability`` holds the model's calibrated probability of the chosen
    rows (for the answer's ``score``) and NaN elsewhere.
    """
    if arm == "model":
        return model_decide(store, artifact, candidates, histories, explorer, rng, threshold, contact=contact, k=k,
                            arms=arms, patch=patch)
    if arm not in ("rules", "random"):
        raise ValueError(f"unknown arm {arm!r}: expected model, rules or random")
    ex, contact = _as_rows(store, candidates, histories, contact)
    if arm == "rules":
        priority, chooser = rules_priority(store, ex), Greedy()
    elif arm == "random":
        # Equal values for every pair (a tie-break of 1e-9 picks the slot nearest 10:00): softmax is uniform.
        priority, chooser = 1.0 + 1e-9 * (24 - np.abs(local_hours(ex) - RULES_HOUR)) / 24, Softmax()
    else:
        raise ValueError(f"unknown arm {arm!r}: expected model, rules or random")
    md = priority_decide(store, ex, histories, priority, chooser, rng, contact=contact, k=k)
    chosen = md.slate.row
    probability = np.full(len(ex), np.nan)
    if len(chosen):
        probability[chosen] = score(store, artifact, ex.take(chosen).rows, patch=patch)
    return replace(md, probability=probability, slate=replace(md.slate, score=probability[chosen]))


def hour_bucket(times: np.ndarray) -> np.ndarray:
    """Send times to the hour (a logged send at 10:07 is the 10:00 slot's action)."""
    return np.asarray(times, dtype=np.int64) // HOUR_NS
