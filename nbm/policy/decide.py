"""``decide()``: the one decision function — contact policy, arbitration, send time, exploration.

Given the scored candidates of one user (every eligible message × channel × send slot with its calibrated
probability), it

1. applies the contact policy (caps, gaps, cooldowns; quiet hours move the send time);
2. arbitrates: expected value = probability × message value × business weight − the send's expected cost
   (unsubscribe cost × P(unsubscribe), when the caller gives it); per (message, channel) the best allowed
   slot is its send time;
3. sends nothing when the best expected value is below ``threshold`` (``reason = "below_threshold"``): with
   a cost, a send whose risk outweighs its value is not made;
4. lets the explorer choose among the remaining (message, channel) pairs worth at least ``threshold`` and
   returns the propensity.

Pure (no I/O, randomness only through ``rng``), so the service, batch scoring and offline replay call the
same code. Feature computation and scoring happen before, in the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nbm.arrays import append, run_starts, take
from nbm.config import ContactPolicyConfig
from nbm.policy.contact import ContactDecision, SendHistories, SendHistory, apply_contact_policy_batch
from nbm.policy.explore import Explorer, ThompsonStatistics


@dataclass(frozen=True)
class ScoredCandidates:
    """One user's candidates, aligned arrays: ids, send times (int64 ns), probabilities and values."""

    message_id: np.ndarray
    channel: np.ndarray
    send_at: np.ndarray
    probability: np.ndarray
    value: np.ndarray
    weight: np.ndarray | None = None
    pair: np.ndarray | None = None
    """Per row, when the caller has it: an integer naming its (decision, message, channel), the same for
    the rows of one pair and increasing with the decision (computed from the ids when absent)."""
    cost: np.ndarray | None = None
    """Per row: the expected cost of the send (unsubscribe cost × P(unsubscribe)), subtracted from its
    expected value; ``None``: no cost."""

    def __len__(self) -> int:
        return len(self.message_id)

    def expected(self) -> np.ndarray:
        """Expected value of each row: probability × value × weight − cost."""
        out = np.asarray(self.probability, dtype=float) * np.asarray(self.value, dtype=float)
        if self.weight is not None:
            out = out * np.asarray(self.weight, dtype=float)
        if self.cost is not None:
            out = out - np.asarray(self.cost, dtype=float)
        return out


@dataclass(frozen=True)
class Item:
    message_id: str
    channel: str
    send_at: pd.Timestamp
    score: float
    propensity: float


@dataclass(frozen=True)
class Suppressed:
    message_id: str
    channel: str
    reason: str


@dataclass(frozen=True)
class Decision:
    """The answer: at most one item; every suppressed (message, channel) with its reason; a reason when empty."""

    items: list[Item]
    suppressed: list[Suppressed] = field(default_factory=list)
    reason: str = ""
    propensity_error: float = 0.0


@dataclass(frozen=True)
class BatchDecision:
    """The decisions of many users at once (see :func:`decide_batch`).

    Per decision (length ``n_groups``): ``chosen`` (candidate row, −1 when nothing is sent), ``propensity``,
    ``propensity_error`` and ``reason`` (``""`` when something is sent). Per candidate row: ``allowed``,
    ``contact_reason`` and the (quiet-hours-moved) ``send_at``. Per (message, channel) pair that has an
    allowed slot: ``pair_row`` (its best allowed row), ``pair_group`` and ``pair_probability`` — the
    probability that the decision picks this pair (all zero in a decision that sends nothing); off-policy
    evaluation reads a policy's probability of any logged action from them.
    """

    chosen: np.ndarray
    propensity: np.ndarray
    propensity_error: np.ndarray
    reason: np.ndarray
    allowed: np.ndarray
    contact_reason: np.ndarray
    send_at: np.ndarray
    pair_row: np.ndarray
    pair_group: np.ndarray
    pair_probability: np.ndarray
    pair: np.ndarray | None = None
    """Per candidate row: its (decision, message, channel) pair code."""


def decide_batch(group: np.ndarray, n_groups: int, candidates: ScoredCandidates, histories: SendHistories,
                 timezones: np.ndarray, policy: ContactPolicyConfig, explorer: Explorer, rng: np.random.Generator,
                 threshold: float = 0.0, statistics: ThompsonStatistics | None = None,
                 contact: ContactDecision | None = None) -> BatchDecision:
    """Decide for ``n_groups`` users at once: ``group`` (per candidate row, sorted) names the decision.

    Exactly the steps of :func:`decide` — which calls this with one group — vectorised over decisions.
    ``contact``, when given, is the contact policy's verdict on these rows, computed before (several
    policies replayed over the same candidates share it).
    """
    group = np.asarray(group, dtype=np.int64)
    n = len(group)
    if n and (np.diff(group) < 0).any():
        raise ValueError("`group` must be sorted")
    reason = np.full(n_groups, "no_eligible_candidate", dtype=object)
    chosen = np.full(n_groups, -1, dtype=np.int64)
    propensity = np.ones(n_groups)
    error = np.zeros(n_groups)
    if contact is None:
        contact = apply_contact_policy_batch(group, candidates.channel, candidates.message_id, candidates.send_at,
                                             timezones, histories, policy)
    empty = np.zeros(0, np.int64)
    if not n:
        return BatchDecision(chosen, propensity, error, reason, contact.allowed, contact.reason, contact.send_at,
                             empty, empty, np.zeros(0), empty)
    expected = candidates.expected()
    if candidates.pair is not None:
        pair = np.asarray(candidates.pair, dtype=np.int64)
    else:
        message_code, _ = pd.factorize(candidates.message_id)
        channel_code, channels = pd.factorize(candidates.channel)
        n_pairs_per_group = (int(message_code.max()) + 1) * max(len(channels), 1)
        pair = group * n_pairs_per_group + message_code.astype(np.int64) * max(len(channels), 1) + channel_code
    has_candidates = np.zeros(n_groups, dtype=bool)
    has_candidates[group] = True
    reason[has_candidates] = "all_suppressed"

    # Send time: the allowed slot with the best expected value, per pair (pairs in order, best row first).
    best_rows = _best_row_per_pair(np.flatnonzero(contact.allowed), pair, expected)
    pair_group = group[best_rows]
    values = expected[best_rows]
    pair_probability = np.zeros(len(best_rows))
    if len(best_rows):
        starts = run_starts(pair_group)
        groups_with_pairs = pair_group[starts]
        top = np.maximum.reduceat(values, starts)
        clears = top >= threshold
        reason[groups_with_pairs[~clears]] = "below_threshold"
        # The explorer chooses among the pairs worth sending: a pair below the threshold (with a cost: one whose
        # risk outweighs its value) is never sent, not even by exploration.
        keep = np.repeat(clears, np.diff(append(starts, len(values)))) & (values >= threshold)
        k_rows = best_rows[keep]
        if len(k_rows):
            k_starts = run_starts(group[k_rows])
            k_statistics = None if statistics is None else statistics.take(k_rows)
            index, p, e = explorer.choose_batch(expected[k_rows], k_starts, rng, k_statistics)
            decided = group[k_rows[k_starts]]
            chosen[decided] = k_rows[index]
            propensity[decided] = p
            error[decided] = e
            reason[decided] = ""
            try:
                pair_probability[np.flatnonzero(keep)] = explorer.probabilities_batch(expected[k_rows], k_starts)
            except NotImplementedError:   # Thompson: only the chosen pair's propensity is known
                pair_probability[np.flatnonzero(keep)[index]] = p
    return BatchDecision(chosen, propensity, error, reason, contact.allowed, contact.reason, contact.send_at,
                         best_rows, pair_group, pair_probability, pair)


def _best_row_per_pair(rows: np.ndarray, pair: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Per pair among ``rows``, in pair order, its row with the highest expected value (the first on a tie).

    Rows already sorted by pair (the callers' usual order) take one maximum and one minimum per run of
    the pair; others a sort by (pair, −value)."""
    p, e = pair[rows], expected[rows]
    if not len(rows):
        return rows
    if (p[1:] < p[:-1]).any() or np.isnan(e).any():
        order = rows[np.lexsort((-e, p))]
        return order[run_starts(pair[order])]
    starts = run_starts(p)
    best = np.repeat(np.maximum.reduceat(e, starts), np.diff(append(starts, len(p))))
    first = np.minimum.reduceat(np.where(e == best, np.arange(len(p)), len(p)), starts)
    return rows[first]


def decide(candidates: ScoredCandidates, history: SendHistory, timezone: str, policy: ContactPolicyConfig,
           explorer: Explorer, rng: np.random.Generator, threshold: float = 0.0,
           statistics: ThompsonStatistics | None = None,
           k: int = 1) -> Decision:
    """Decide for one user; see the module docstring. ``statistics`` (per candidate row) feed Thompson sampling.

    With ``k > 1``, up to ``k`` items (distinct message × channel) chosen one after another
    (:func:`decide_slate`); each item's propensity is conditional on the items before it.
    """
    if not len(candidates):
        return Decision([], [], "no_eligible_candidate")
    slate = decide_slate(np.zeros(len(candidates), np.int64), 1, candidates, SendHistories.single(history),
                         np.array([timezone], dtype=object), policy, explorer, rng, k, threshold, statistics)
    batch = slate.first
    suppressed = suppressed_pairs(candidates, batch, np.arange(len(candidates)))
    if not len(slate.row):
        return Decision([], suppressed, str(batch.reason[0]))
    items = [Item(str(candidates.message_id[r]), str(candidates.channel[r]), pd.Timestamp(int(t), tz="UTC"),
                  float(score), float(p))
             for r, t, score, p in zip(slate.row, slate.send_at, slate.score, slate.propensity)]
    return Decision(items, suppressed, "", float(batch.propensity_error[0]))


def suppressed_pairs(candidates: ScoredCandidates, batch: BatchDecision, rows: np.ndarray) -> list[Suppressed]:
    """The (message, channel) pairs among ``rows`` (one decision's) with no allowed slot, each with its first reason."""
    if not len(rows):
        return []
    message = np.asarray(candidates.message_id, dtype=object)[rows]
    channel = np.asarray(candidates.channel, dtype=object)[rows]
    codes = batch.pair[rows]
    allowed_codes = np.unique(codes[batch.allowed[rows]])
    blocked = ~np.isin(codes, allowed_codes)
    _, first = np.unique(codes[blocked], return_index=True)
    at = np.flatnonzero(blocked)[np.sort(first)]
    return [Suppressed(str(message[r]), str(channel[r]), str(batch.contact_reason[rows[r]])) for r in at]


@dataclass(frozen=True)
class Slate:
    """Up to ``k`` items per decision: ``items`` rows are (decision, candidate row, send_at, propensity, rank),
    and ``propensity_error``, the standard error of each propensity (0 where it is exact; Thompson's estimate).

    ``row`` names the item's (message, channel) by one of its candidate rows; ``send_at`` is the item's own
    send time and ``score`` its probability there — the row's own unless a ``reslot`` moved it (see
    :func:`decide_slate`)."""

    decision: np.ndarray
    row: np.ndarray
    send_at: np.ndarray
    propensity: np.ndarray
    rank: np.ndarray
    first: BatchDecision
    propensity_error: np.ndarray | None = None
    score: np.ndarray | None = None


Reslot = Callable[[np.ndarray], "tuple[np.ndarray, ScoredCandidates, ContactDecision] | None"]
"""Given chosen candidate rows, the other send slots of those whose pair was scored at one slot only:
``(owner, extra, verdict)`` — per extra row the position of its chosen row in the given ones (sorted, each
owner's rows in slot order, its chosen slot among them), the extra rows scored, and the contact policy's
verdict on them before any pick of the decision. ``None`` when every chosen pair has all its slots."""


def decide_slate(group: np.ndarray, n_groups: int, candidates: ScoredCandidates, histories: SendHistories,
                 timezones: np.ndarray, policy: ContactPolicyConfig, explorer: Explorer, rng: np.random.Generator,
                 k: int = 1, threshold: float = 0.0, statistics: ThompsonStatistics | None = None,
                 contact: ContactDecision | None = None, reslot: Reslot | None = None) -> Slate:
    """``k`` items per decision, chosen one after another by :func:`decide_batch`.

    After each pick the chosen (message, channel) leaves the candidates and its send joins the user's
    history, so the contact policy judges the next pick with it (two items never break a cap or the
    minimum gap together). Each item's propensity is its probability given the items before it; the
    slate's probability is their product. ``k = 1`` is exactly :func:`decide_batch`.

    ``reslot``: when the candidates hold some pairs at one send slot only (two-stage scoring), a pick of
    such a pair is sent at its best allowed slot by the model, found after the choice: ``reslot`` scores
    the pair's other slots, the contact policy judges them with the decision's earlier picks, and the
    best allowed one by expected value (the earliest on a tie) is the item's send time and score. The
    pick's propensity is unchanged: the send time is a function of the chosen pair.
    """
    group = np.asarray(group, np.int64)
    keep = np.arange(len(group))
    parts: list[tuple[np.ndarray, ...]] = []
    first = None
    hist = histories
    initial = contact          # rank 0's verdict: its holds and fixed send times stay for the later ranks
    for rank in range(k):
        sub = candidates if rank == 0 else ScoredCandidates(
            *(take(getattr(candidates, f), keep) for f in ("message_id", "channel", "send_at", "probability", "value")),
            *(None if getattr(candidates, f) is None else take(getattr(candidates, f), keep)
              for f in ("weight", "pair", "cost")))
        again = None
        if rank > 0 and initial is not None and (initial.held is not None or initial.fixed_at is not None):
            # Judged again with the earlier picks, keeping what the send history does not decide.
            again = apply_contact_policy_batch(group[keep], sub.channel, sub.message_id, sub.send_at, timezones, hist,
                                               policy).keeping(initial.take(keep))
        b = decide_batch(group if rank == 0 else group[keep], n_groups, sub, hist, timezones, policy, explorer, rng,
                         threshold, statistics if (statistics is None or rank == 0) else statistics.take(keep),
                         contact if rank == 0 else again)
        first = b if first is None else first
        decided = np.flatnonzero(b.chosen >= 0)
        if not len(decided):
            break
        rows = keep[b.chosen[decided]]
        at = b.send_at[b.chosen[decided]].copy()
        probability = np.asarray(take(candidates.probability, rows), dtype=float).copy()
        if reslot is not None:
            _reslot(reslot, rows, decided, at, probability, rank, hist, timezones, policy)
        parts.append((decided, rows, at, b.propensity[decided], np.full(len(decided), rank),
                      b.propensity_error[decided], probability))
        if rank + 1 == k:
            break
        # The chosen pairs leave; their sends count for the next pick (and only decisions that chose go on).
        chosen_pair = b.pair[b.chosen[decided]]
        still = np.isin(group[keep], decided) & ~np.isin(b.pair, chosen_pair)
        keep = keep[still]
        cm = np.asarray(take(candidates.message_id, rows), dtype=object)
        cc = np.asarray(take(candidates.channel, rows), dtype=object)
        merged_group = np.concatenate([hist.group, decided])
        order = np.lexsort((np.concatenate([hist.times, at]), merged_group))
        hist = SendHistories(merged_group[order], np.concatenate([hist.times, at])[order],
                             np.concatenate([np.asarray(hist.channels, object), cc])[order],
                             np.concatenate([np.asarray(hist.messages, object), cm])[order])
        contact = None
    if not parts:
        e = np.zeros(0, np.int64)
        return Slate(e, e, e, np.zeros(0), e, first, np.zeros(0), np.zeros(0))
    cols = [np.concatenate([p[i] for p in parts]) for i in range(7)]
    order = np.lexsort((cols[4], cols[0]))
    *columns, error, score = (c[order] for c in cols)
    return Slate(*columns, first, error, score)


def _reslot(reslot: Reslot, rows: np.ndarray, decided: np.ndarray, at: np.ndarray, probability: np.ndarray,
            rank: int, hist: SendHistories, timezones: np.ndarray, policy: ContactPolicyConfig) -> None:
    """Move the picks ``rows`` (of decisions ``decided``) whose pair had one slot scored to its best allowed
    slot: ``at`` and ``probability`` are updated in place (see :func:`decide_slate`)."""
    more = reslot(rows)
    if more is None:
        return
    owner, extra, verdict = more
    owner = np.asarray(owner, dtype=np.int64)
    if not len(owner):
        return
    if rank > 0:     # the earlier picks of the decision are in ``hist`` now: judge the slots again with them
        verdict = apply_contact_policy_batch(decided[owner], extra.channel, extra.message_id, extra.send_at,
                                             timezones, hist, policy).keeping(verdict)
    expected = extra.expected()
    ok = np.flatnonzero(np.asarray(verdict.allowed, dtype=bool))
    if not len(ok):
        return
    best = _best_row_per_pair(ok, owner, expected)
    o = owner[best]
    at[o] = np.asarray(verdict.send_at, dtype=np.int64)[best]
    probability[o] = np.asarray(extra.probability, dtype=float)[best]
