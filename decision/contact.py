"""The contact policy's verdict on the candidates of many decisions, per (pair, slot) or per row.

:func:`pair_contact` runs :func:`nbm.policy.contact.apply_contact_policy_batch` once per (decision,
channel, slot) that some pair uses, and again only for the pairs of messages the user was sent before
(the cooldown, and topic caps): the same verdicts as the policy on every candidate row (:func:`contact_verdict`
against :func:`_contact_every_row`, tested), at a fraction of the rows.

Two rules need more than the send history, and are applied here to both: **outcome-based suppression**
(:func:`ignored_pairs`: a message or topic ignored ``ignored_sends`` times is paused, from the feature store's
opens and clicks), and a **mandatory** message's send time, the decision's own (not a slot moved out of quiet
hours).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from decision.pairs import CandidateRows, Pairs
from features.pipeline import FeatureStore
from nbm.arrays import Spread
from features.keys import pair
from nbm.policy.contact import REASON_NAMES, REASONS, ContactDecision, SendHistories, apply_contact_policy_batch

DAY_NS = 86_400 * 10**9
IGNORED = REASONS.index("suppressed_ignored") + 1


@dataclass(frozen=True)
class PairContact:
    """The contact policy's verdict on every (pair, slot): ``allowed`` (False where the pair is not
    eligible at the slot), ``code`` (the reason, an index into :data:`REASON_NAMES`) and ``send_at`` (the
    send time after the quiet hours)."""

    allowed: np.ndarray
    code: np.ndarray
    send_at: np.ndarray
    held: np.ndarray | None = None          # per pair: paused by outcome-based suppression
    fixed_at: np.ndarray | None = None      # per pair: a mandatory message's send time (−1: none)

    def take(self, index: np.ndarray) -> PairContact:
        return PairContact(self.allowed[index], self.code[index], self.send_at[index],
                           None if self.held is None else self.held[index],
                           None if self.fixed_at is None else self.fixed_at[index])

    def rows(self, p: np.ndarray, s: np.ndarray, spread_reasons: bool = False) -> ContactDecision:
        """The verdicts of the rows (pair ``p[i]``, slot ``s[i]``); with ``spread_reasons`` the reasons' names
        are a :class:`~nbm.arrays.Spread` over their codes (built only where read)."""
        code = self.code[p, s]
        return ContactDecision(self.allowed[p, s], Spread(REASON_NAMES, code) if spread_reasons else REASON_NAMES[code],
                               self.send_at[p, s], code, None if self.held is None else self.held[p],
                               None if self.fixed_at is None else self.fixed_at[p])

    @classmethod
    def of_rows(cls, contact: ContactDecision, pairs: Pairs, p: np.ndarray, s: np.ndarray) -> PairContact:
        """The verdicts of rows (pair ``p``, slot ``s``) laid out per (pair, slot)."""
        shape = pairs.ok.shape
        allowed, send_at = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=np.int64)
        code = np.zeros(shape, dtype=np.int8)
        allowed[p, s], send_at[p, s] = contact.allowed, contact.send_at
        code[p, s] = contact.code if contact.code is not None else \
            pd.Index(REASON_NAMES).get_indexer(np.asarray(contact.reason, dtype=object))
        return cls(allowed, code, send_at)


def pair_contact(store: FeatureStore, pairs: Pairs, histories: SendHistories) -> PairContact:
    """The contact policy on every eligible (pair, slot) of ``pairs``.

    Every rule but the cooldown depends on (decision, channel, send time) alone: the policy runs once per
    (decision, channel, slot) that some pair uses — for a message nobody was sent, so that the cooldown
    cannot apply — and again, on their own rows, for the pairs of messages the decision's user was sent
    before. The same function on a fraction of the rows, so the same verdicts (a test compares them with the
    policy run on every row). Below :data:`GRID_MIN_DECISIONS` decisions, one call on every row costs less
    than the two.
    """
    voc, policy = store.globals.vocabulary, store.config.contact_policy
    n_ch, n_msg = len(voc.channels), len(voc.messages)
    width = pairs.slot_times.shape[1]
    if not len(pairs):
        empty = np.zeros((0, width))
        return PairContact(empty.astype(bool), empty.astype(np.int8), empty.astype(np.int64))
    channel_type, _, nobody_type, message_code = vocabulary_types(voc)
    # The slot grid is already out of quiet hours (expand_pairs moved it before the window check and scoring).
    slot_times = pairs.slot_times
    if pairs.n_groups < GRID_MIN_DECISIONS:
        p, s = np.nonzero(pairs.ok)
        every = policy_on_rows(store, pairs.group[p], pairs.channel_code[p], pairs.message_code[p],
                               slot_times[pairs.group[p], s], pairs.timezones, histories, shifted=True)
        return _finish_pairs(store, pairs, PairContact.of_rows(every, pairs, p, s))
    # The grid: (decision, channel) cells that some pair uses × their slots.
    # (A table of the n_groups × n_ch possible cells, not a sort of the ~150,000 pairs of a batch.)
    pair_key = pairs.group * n_ch + pairs.channel_code
    present = np.zeros(pairs.n_groups * n_ch, dtype=bool)
    present[pair_key] = True
    cell_key = np.flatnonzero(present)
    g = np.repeat(cell_key // n_ch, width)
    c = np.repeat(cell_key % n_ch, width)
    slot = np.tile(np.arange(width), len(cell_key))
    at = slot_times[g, slot]
    cell = np.flatnonzero(at >= 0)                  # (shifting keeps a slot's time ≥ 0, a missing one −1)
    grid = apply_contact_policy_batch(g[cell], pd.Categorical.from_codes(c[cell], dtype=channel_type, validate=False),
                                      pd.Categorical.from_codes(np.full(len(cell), n_msg), dtype=nobody_type,
                                                                validate=False),
                                      at[cell], pairs.timezones, histories, policy, shifted=True)
    allowed, code = np.zeros(len(g), dtype=bool), np.zeros(len(g), dtype=np.int8)
    send_at = at.copy()
    allowed[cell], code[cell], send_at[cell] = grid.allowed, grid.code, grid.send_at
    of_pair = (np.cumsum(present) - 1)[pair_key]                  # each pair's cell, in cell_key's order
    allowed = allowed.reshape(-1, width)[of_pair] & pairs.ok
    code = code.reshape(-1, width)[of_pair]
    send_at = send_at.reshape(-1, width)[of_pair]
    # Pairs of messages the decision's user was sent: the policy on their own rows (cooldown included).
    h_message = np.fromiter((message_code.get(m, -1) for m in np.asarray(histories.messages, dtype=object).tolist()),
                            np.int64, len(histories.messages))
    known = h_message >= 0
    sent = np.unique(np.asarray(histories.group, np.int64)[known] * n_msg + h_message[known])
    again = np.flatnonzero(np.isin(pairs.group * n_msg + pairs.message_code, sent, kind="table")) if len(sent) else sent
    if policy.topic_caps or policy.mandatory_messages or policy.mandatory_topics:
        again = np.union1d(again, _topic_rows(store, pairs, h_message, known, histories))
    if len(again):
        a, s = np.nonzero(pairs.ok[again])
        p = again[a]
        own = policy_on_rows(store, pairs.group[p], pairs.channel_code[p], pairs.message_code[p],
                             slot_times[pairs.group[p], s], pairs.timezones, histories, shifted=True)
        allowed[p, s], code[p, s], send_at[p, s] = own.allowed, own.code, own.send_at
    return _finish_pairs(store, pairs, PairContact(allowed, code, send_at))


def _topic_rows(store: FeatureStore, pairs: Pairs, h_message: np.ndarray, known: np.ndarray,
                histories: SendHistories) -> np.ndarray:
    """The pairs the grid cannot judge beyond the cooldown: those of a capped topic the decision's user was sent
    (``topic_caps``), and mandatory messages' (judged on their own rows, where they pass every rule)."""
    voc, policy = store.globals.vocabulary, store.config.contact_policy
    n_topics = len(voc.topics)
    topic = voc.message_topic[pairs.message_code]
    out = np.zeros(len(pairs), dtype=bool)
    if policy.topic_caps:
        capped = np.isin(np.arange(n_topics), voc.topics.get_indexer(list(policy.topic_caps)))
        h_topic = np.where(known, voc.message_topic[np.maximum(h_message, 0)], -1)
        hit = known & (h_topic >= 0)
        hit[hit] = capped[h_topic[hit]]
        sent = np.unique(np.asarray(histories.group, np.int64)[hit] * n_topics + h_topic[hit])
        if len(sent):
            out |= (topic >= 0) & np.isin(pairs.group * n_topics + topic, sent)
    out |= _mandatory(store, pairs.message_code)
    return np.flatnonzero(out)


def _mandatory(store: FeatureStore, message_code: np.ndarray) -> np.ndarray:
    """Whether each message (vocabulary code) is mandatory (``[contact_policy] mandatory_*``)."""
    policy = store.config.contact_policy
    if not policy.mandatory_messages and not policy.mandatory_topics:
        return np.zeros(len(message_code), dtype=bool)
    by_code = policy.mandatory(np.asarray(store.globals.vocabulary.messages, dtype=object))
    return by_code[message_code]


def _finish_pairs(store: FeatureStore, pairs: Pairs, contact: PairContact) -> PairContact:
    """Suppression of ignored messages or topics, and mandatory messages' send time, on every (pair, slot)."""
    policy = store.config.contact_policy
    mandatory = _mandatory(store, pairs.message_code)
    held = fixed_at = None
    if policy.ignored_sends and len(pairs):
        held = ignored_pairs(store, pairs.user_code[pairs.group], pairs.message_code, pairs.now[pairs.group]) \
            & ~mandatory
        hit = contact.allowed & held[:, None]
        contact.allowed[hit] = False
        contact.code[hit] = IGNORED
    mandatory &= _live_at(store, pairs.message_code, pairs.now[pairs.group])
    if mandatory.any():
        rows = np.flatnonzero(mandatory)
        contact.send_at[rows] = np.where(pairs.ok[rows], pairs.now[pairs.group[rows]][:, None], contact.send_at[rows])
        fixed_at = np.where(mandatory, pairs.now[pairs.group], -1)
    return PairContact(contact.allowed, contact.code, contact.send_at, held, fixed_at)


def _live_at(store: FeatureStore, message_code: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Whether each message (vocabulary code) is live at ``at``: a mandatory message goes at the decision's time
    only when it may be sent then; otherwise at its slot, as any other."""
    catalog = store.history.catalog_arrays
    return (catalog["start_ns"][message_code] <= at) & (at < catalog["end_ns"][message_code])


def _finish_rows(store: FeatureStore, ex: CandidateRows, contact: ContactDecision) -> ContactDecision:
    """:func:`_finish_pairs` on candidate rows."""
    policy = store.config.contact_policy
    if not policy.ignored_sends and not policy.mandatory_messages and not policy.mandatory_topics:
        return contact
    rows = ex.rows
    voc = store.globals.vocabulary
    codes = rows.message_code if rows.message_code is not None else voc.messages.get_indexer(
        np.asarray(rows.message_id, dtype=object))
    codes = np.asarray(codes, dtype=np.int64)
    mandatory = _mandatory(store, np.maximum(codes, 0)) & (codes >= 0)
    allowed, code = np.array(contact.allowed, dtype=bool), np.array(contact.code, dtype=np.int8)
    send_at = np.array(contact.send_at, dtype=np.int64)
    held = fixed_at = None
    if policy.ignored_sends and len(codes):
        user_code = rows.user_code if rows.user_code is not None else store.history.user_codes(
            np.asarray(rows.user_id, dtype=object))
        held = ignored_pairs(store, np.asarray(user_code, np.int64), np.maximum(codes, 0),
                             np.asarray(rows.as_of, np.int64)) & ~mandatory & (codes >= 0)
        hit = allowed & held
        allowed[hit], code[hit] = False, IGNORED
    now_live = mandatory & _live_at(store, np.maximum(codes, 0), np.asarray(rows.as_of, np.int64))
    if now_live.any():
        fixed_at = np.where(now_live, np.asarray(rows.as_of, np.int64), -1)
        send_at[now_live] = fixed_at[now_live]
    return ContactDecision(allowed, REASON_NAMES[code], send_at, code, held, fixed_at)


def ignored_pairs(store: FeatureStore, user_code: np.ndarray, message_code: np.ndarray, now: np.ndarray) -> np.ndarray:
    """Outcome-based suppression: whether each (user, message) at ``now`` is paused because the message — or its
    topic, ``[contact_policy] ignored_by`` — was ignored: sent at least ``ignored_sends`` times within the
    ``ignored_within_days`` up to ``L``, the user's last event with it before ``now`` (its last send, unless a
    bounce or an unattributed outcome came after), with no open or click of it from the first day of that
    window until ``now``, and ``now`` less than ``ignored_pause_days`` after ``L``. From the store's
    history (the snapshot's events, or a live user's with their feedback): every stage that decides by the
    store pauses alike."""
    policy, history, voc = store.config.contact_policy, store.history, store.globals.vocabulary
    n = len(message_code)
    if not policy.ignored_sends or not n:
        return np.zeros(n, dtype=bool)
    now = np.asarray(now, dtype=np.int64)
    if policy.ignored_by == "topic":
        index, engaged = history.user_topic, ("opens", "clicks")
        key = pair(np.asarray(user_code, np.int64), voc.message_topic[message_code], voc.topic_slots)
    else:
        index, engaged = history.user_message, ("engaged",)
        key = pair(np.asarray(user_code, np.int64), np.asarray(message_code, np.int64), voc.message_slots)
    dense = index.dense(key)
    last = index.last_time(key, now, dense=dense)
    pause, window = int(policy.ignored_pause_days * DAY_NS), int(policy.ignored_within_days * DAY_NS)
    candidates = np.flatnonzero(~np.isnan(last) & (now - np.nan_to_num(last) < pause))
    out = np.zeros(n, dtype=bool)
    if not len(candidates):
        return out
    d = (dense[0][candidates], dense[1][candidates])
    k, t, at = key[candidates], now[candidates], last[candidates].astype(np.int64)
    names = ("sends", *engaged)
    start = index.totals(k, at - window, names, None, dense=d)
    upto_last = index.totals(k, at + 10**6, ("sends",), None, dense=d)       # the indexes count whole ms: L included
    upto_now = index.totals(k, t, engaged, None, dense=d)
    sends = upto_last["sends"] - start["sends"]
    engagements = sum(upto_now[e] - start[e] for e in engaged)
    out[candidates] = (sends >= policy.ignored_sends) & (engagements == 0)
    return out


def policy_on_rows(store: FeatureStore, group: np.ndarray, channel_code: np.ndarray, message_code: np.ndarray,
                   send_at: np.ndarray, timezones: np.ndarray, histories: SendHistories,
                   shifted: bool = False) -> ContactDecision:
    """The contact policy on candidate rows given by vocabulary codes (categoricals: no hashing of ids);
    ``shifted``: ``send_at`` is already out of quiet hours (see ``apply_contact_policy_batch``)."""
    channel_type, message_type, _, _ = vocabulary_types(store.globals.vocabulary)
    # (Codes of the vocabulary, in range: not validated again, which cost more than the policy on a decision.)
    return apply_contact_policy_batch(group, pd.Categorical.from_codes(channel_code, dtype=channel_type, validate=False),
                                      pd.Categorical.from_codes(message_code, dtype=message_type, validate=False), send_at,
                                      timezones, histories, store.config.contact_policy, shifted=shifted)


GRID_MIN_DECISIONS = 12
"""From this many decisions on, the grid is the faster way (``pair_contact`` on the bench world: 1 decision
0.74 ms on the grid against 0.42 on every row, 16 decisions 1.37 against 1.68, 500 decisions 16 against 66)."""
NOBODY = "\x00no message"
"""A message id no history holds: the grid's candidates, for which the cooldown never applies."""

_DTYPES: dict[int, tuple] = {}


def vocabulary_types(voc) -> tuple[pd.CategoricalDtype, pd.CategoricalDtype, pd.CategoricalDtype, dict]:
    """Categorical types of channels, messages, messages plus :data:`NOBODY`, and message → code; built
    once per vocabulary (validating categories on every call cost more than the policy on a small batch)."""
    hit = _DTYPES.get(id(voc))
    if hit is None or hit[0] is not voc:
        messages = voc.messages.tolist()
        hit = (voc, (pd.CategoricalDtype(voc.channels), pd.CategoricalDtype(voc.messages),
                     pd.CategoricalDtype(pd.Index([*messages, NOBODY])), {m: i for i, m in enumerate(messages)}))
        if len(_DTYPES) > 64:         # processes that build many stores do not keep every vocabulary
            _DTYPES.clear()
        _DTYPES[id(voc)] = hit
    return hit[1]


def contact_verdict(store: FeatureStore, ex: CandidateRows, histories: SendHistories) -> ContactDecision:
    """The contact policy on every candidate row of ``ex``: :func:`decision.contact.pair_contact` on the rows'
    pairs (the same function on a fraction of the rows; a test compares it with the policy on every row)."""
    if not len(ex):
        return _contact_every_row(store, ex, histories)
    pairs, p = Pairs.of_rows(store, ex)
    return pair_contact(store, pairs, histories).rows(p, ex.slot)


def _contact_every_row(store: FeatureStore, ex: CandidateRows, histories: SendHistories) -> ContactDecision:
    """The contact policy on every row (the reference :func:`contact_verdict` equals)."""
    rows = ex.rows
    if rows.channel_code is not None and rows.message_code is not None:   # codes into the vocabulary: no hashing
        verdict = policy_on_rows(store, ex.group, rows.channel_code, rows.message_code, rows.send_at, ex.timezones,
                                 histories)
    else:
        verdict = apply_contact_policy_batch(ex.group, rows.channel, rows.message_id, rows.send_at, ex.timezones,
                                             histories, store.config.contact_policy)
    return _finish_rows(store, ex, verdict)


def as_pairs(store: FeatureStore, candidates: Pairs | CandidateRows, histories: SendHistories,
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


def as_rows(store: FeatureStore, candidates: Pairs | CandidateRows, histories: SendHistories,
            contact: PairContact | ContactDecision | None) -> tuple[CandidateRows, ContactDecision]:
    """``candidates`` as rows (every eligible candidate), with the contact policy's verdict on each."""
    if isinstance(candidates, CandidateRows):
        return candidates, contact_verdict(store, candidates, histories) if contact is None else contact
    ex, p, s = candidates.expanded()
    if contact is None:
        contact = pair_contact(store, candidates, histories)
    return ex, contact.rows(p, s)
