"""The candidates of many decisions as (decision, message, channel) pairs, each with a mask of its slots.

A decision's candidates are every eligible (message × channel × send slot): ~1,800 rows for a catalog of
100 messages on 3 channels with 6 slots. Almost everything the decision path does is per pair — the contact
policy depends on (decision, channel, slot) and, for the cooldown, on the message; the model scores every
pair at one reference slot and only the best few pairs at every slot; a suppressed entry names a pair — so
:class:`Pairs` keeps one row per pair and a (pairs × slots) mask, and rows (pair, slot) are gathered only
where they are scored. :meth:`Pairs.expanded` gives the row-per-candidate form (:class:`features.replay.Expanded`)
in the same order, for the baselines that rank every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from features.candidates import out_of_quiet_hours
from features.compute import DAY_NS, Candidates, lifecycle_stage
from features.keys import pair
from features.pipeline import FeatureStore
from nbm.arrays import Spread
from nbm.policy.contact import REASON_NAMES, ContactDecision, SendHistories, apply_contact_policy_batch
from nbm.policy.eligibility import eligible_parts


@dataclass(frozen=True)
class Pairs:
    """Eligible (message, channel) pairs of ``n_groups`` decisions, sorted by (decision, message, channel).

    Per pair: ``group`` (its decision), ``message_code`` and ``channel_code`` (into the vocabulary),
    ``value`` (the message's business value) and ``ok`` (bool, one column per slot: eligible at its
    decision's slot ``s``). Per decision: ``user_ids``, ``user_code`` (the history's), ``now``,
    ``timezones`` and ``slot_times`` (send instants, −1 past a decision's last slot): the configured slots
    already moved out of the user's quiet hours (:func:`features.candidates.out_of_quiet_hours`), so that
    ``ok``, the features and the contact policy all see the time the message would be sent.
    """

    group: np.ndarray
    message_code: np.ndarray
    channel_code: np.ndarray
    value: np.ndarray
    ok: np.ndarray
    user_ids: np.ndarray
    user_code: np.ndarray
    now: np.ndarray
    timezones: np.ndarray
    slot_times: np.ndarray
    messages: np.ndarray      # the vocabulary's message ids, by code (object)
    channels: np.ndarray      # the vocabulary's channels, by code (object)

    def __len__(self) -> int:
        return len(self.group)

    @property
    def n_groups(self) -> int:
        return len(self.now)

    @cached_property
    def n_slots(self) -> np.ndarray:
        """Per decision: how many slots it has."""
        return (self.slot_times >= 0).sum(axis=1)

    def take(self, index: np.ndarray) -> Pairs:
        """The pairs ``index`` (sorted, so that the pairs stay sorted), every decision kept."""
        return Pairs(self.group[index], self.message_code[index], self.channel_code[index], self.value[index],
                     self.ok[index], self.user_ids, self.user_code, self.now, self.timezones, self.slot_times,
                     self.messages, self.channels)

    def rows(self, p: np.ndarray, s: np.ndarray, spread_ids: bool = False):
        """The candidate rows (pair ``p[i]`` at slot ``s[i]``) as an ``Expanded``, in the order given.

        With ``spread_ids`` the id columns (user, message, channel) are :class:`~nbm.arrays.Spread` over the
        per-decision and vocabulary names, built only where read (``np.asarray``, or indexing some rows):
        the model's decision path featurises and decides on the codes, and reads ids of the chosen rows
        alone — three object gathers of ~150,000 rows a campaign batch fewer, twice."""
        from features.replay import Expanded

        g = self.group[p]
        m, c = self.message_code[p], self.channel_code[p]
        if spread_ids:
            ids = Spread(self.user_ids, g), Spread(self.messages, m), Spread(self.channels, c)
        else:
            ids = self.user_ids[g], self.messages[m], self.channels[c]
        rows = Candidates(*ids, self.now[g], self.slot_times[g, s], m, c, self.user_code[g])
        return Expanded(g, rows, np.asarray(s, dtype=np.int64), self.n_slots, self.value[p], self.timezones,
                        self.n_groups, self.slot_times)

    def expanded(self):
        """Every eligible candidate row, sorted by (decision, message, channel, slot) — what ``expand_many``
        returns — with each row's pair and slot."""
        p, s = np.nonzero(self.ok)
        return self.rows(p, s), p, s

    @classmethod
    def of_rows(cls, store: FeatureStore, ex) -> tuple[Pairs, np.ndarray]:
        """The pairs of ``ex``'s rows (an ``Expanded``, any subset of ``expand_many``'s) and each row's pair."""
        voc = store.globals.vocabulary
        n_m, n_c = len(voc.messages), len(voc.channels)
        if ex.slot_times is None:
            raise ValueError("`ex` has no slot instants: build it with expand_many")
        rows = ex.rows
        key = (ex.group * n_m + rows.message_code) * n_c + rows.channel_code
        unique, first, p = np.unique(key, return_index=True, return_inverse=True)
        p = p.reshape(-1)
        ok = np.zeros((len(unique), ex.slot_times.shape[1]), dtype=bool)
        ok[p, ex.slot] = True
        n = ex.n_groups
        user_ids, now = np.full(n, None, dtype=object), np.zeros(n, dtype=np.int64)
        user_ids[ex.group], now[ex.group] = rows.user_id, rows.as_of
        user_code = np.zeros(n, dtype=np.int64)
        user_code[ex.group] = rows.user_code if rows.user_code is not None else \
            store.history.user_codes(np.asarray(rows.user_id, dtype=object))
        return cls(unique // (n_m * n_c), (unique // n_c) % n_m, unique % n_c, ex.value[first], ok, user_ids,
                   user_code, now, ex.timezones, ex.slot_times, _names(voc.messages), _names(voc.channels)), p


_NAMES: dict[int, tuple[pd.Index, np.ndarray]] = {}


def _names(index: pd.Index) -> np.ndarray:
    """``index`` as an object array, converted once per index (Arrow-backed strings convert slowly)."""
    hit = _NAMES.get(id(index))
    if hit is None or hit[0] is not index:
        if len(_NAMES) > 64:         # processes that build many stores do not keep every vocabulary
            _NAMES.clear()
        hit = (index, np.asarray(index, dtype=object))
        _NAMES[id(index)] = hit
    return hit[1]


FEW_DECISIONS = 16
"""Up to this many decisions, :func:`slot_matrix` looks up each one's slots instead of grouping them."""


def slot_matrix(now: np.ndarray, zones: np.ndarray, slot_hours: tuple[int, ...], horizon_hours: float) -> np.ndarray:
    """Slot instants per decision, (n, S) int64, −1 where a decision has fewer slots than S."""
    from features.candidates import slot_times

    width = len(slot_hours) * (int(np.ceil(horizon_hours / 24)) + 1)
    out = np.full((len(now), width), -1, dtype=np.int64)
    if len(now) <= FEW_DECISIONS:     # the service's few decisions: each row's slots looked up (cached)
        for i, (t, zone) in enumerate(zip(np.asarray(now).tolist(), np.asarray(zones, dtype=object).tolist())):
            slots = slot_times(int(t), str(zone), slot_hours, horizon_hours)
            out[i, : len(slots)] = slots
        used = int((out >= 0).sum(axis=1).max()) if len(out) else 0
        return out[:, :used]
    zone_codes, zone_names = pd.factorize(np.asarray(zones, dtype=object))
    times, time_codes = np.unique(now, return_inverse=True)
    n_zones = max(len(zone_names), 1)
    combined, codes = np.unique(time_codes.reshape(-1) * n_zones + zone_codes, return_inverse=True)
    codes = codes.reshape(-1)
    for code, key in enumerate(combined.tolist()):   # distinct (time, time zone): tens to hundreds
        t, zone = times[key // n_zones], zone_names[key % n_zones]
        slots = slot_times(int(t), str(zone), slot_hours, horizon_hours)
        out[codes == code, : len(slots)] = slots
    used = int((out >= 0).sum(axis=1).max()) if len(out) else 0
    return out[:, :used]


def expand_pairs(store: FeatureStore, user_ids: np.ndarray, now: np.ndarray) -> Pairs:
    """Every eligible pair of each decision (``user_ids[i]`` as of ``now[i]``; an unknown user is a new user)."""
    history, voc, cfg = store.history, store.globals.vocabulary, store.config
    user_ids = np.asarray(user_ids, dtype=object)
    now = np.asarray(now, dtype=np.int64)
    n, n_ch = len(user_ids), len(voc.channels)
    code = history.user_codes(user_ids)
    known = code < len(history.users)                # users rows come first in the history's codes
    row = np.where(known, code, -1)
    zones = np.full(n, "UTC", dtype=object)
    zones[known] = history.timezone[row[known]]
    slots = out_of_quiet_hours(slot_matrix(now, zones, cfg.features.slot_hours, cfg.features.horizon_hours),
                               zones, cfg.contact_policy)                # (n, S): send times, out of quiet hours

    consent = np.zeros((n, n_ch), dtype=bool)
    consent[known] = history.consent_matrix[row[known]]
    lost = history.user_channel.totals(pair(np.repeat(code, n_ch), np.tile(np.arange(n_ch), n), n_ch),
                                       np.repeat(now, n_ch), ("lost",))["lost"].reshape(n, n_ch)
    consent &= lost == 0
    signup = np.full(n, np.nan)
    signup[known] = history.signup[row[known]]
    stage = lifecycle_stage(cfg, (now - signup) / DAY_NS,
                            (now - history.last["activity"].last_time(code, now)) / DAY_NS).astype(np.int64)

    allow, live = eligible_parts(history.message_channels, history.message_stages,
                                 history.catalog_arrays["start_ns"], history.catalog_arrays["end_ns"],
                                 consent, stage, slots)                 # (n, m, c) and (n, m, s)
    i, m, c = np.nonzero(allow & live.any(axis=2)[:, :, None])          # sorted by (decision, message, channel)
    value = np.nan_to_num(history.catalog_arrays["value"], nan=1.0)[m]
    return Pairs(i.astype(np.int64), m.astype(np.int64), c.astype(np.int64), value, live[i, m], user_ids,
                 code.astype(np.int64), now, zones, slots, _names(voc.messages), _names(voc.channels))


@dataclass(frozen=True)
class PairContact:
    """The contact policy's verdict on every (pair, slot): ``allowed`` (False where the pair is not
    eligible at the slot), ``code`` (the reason, an index into :data:`REASON_NAMES`) and ``send_at`` (the
    send time after the quiet hours)."""

    allowed: np.ndarray
    code: np.ndarray
    send_at: np.ndarray

    def take(self, index: np.ndarray) -> PairContact:
        return PairContact(self.allowed[index], self.code[index], self.send_at[index])

    def rows(self, p: np.ndarray, s: np.ndarray, spread_reasons: bool = False) -> ContactDecision:
        """The verdicts of the rows (pair ``p[i]``, slot ``s[i]``); with ``spread_reasons`` the reasons' names
        are a :class:`~nbm.arrays.Spread` over their codes (built only where read)."""
        code = self.code[p, s]
        return ContactDecision(self.allowed[p, s], Spread(REASON_NAMES, code) if spread_reasons else REASON_NAMES[code],
                               self.send_at[p, s], code)

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
        return PairContact.of_rows(every, pairs, p, s)
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
    if len(again):
        a, s = np.nonzero(pairs.ok[again])
        p = again[a]
        own = policy_on_rows(store, pairs.group[p], pairs.channel_code[p], pairs.message_code[p],
                             slot_times[pairs.group[p], s], pairs.timezones, histories, shifted=True)
        allowed[p, s], code[p, s], send_at[p, s] = own.allowed, own.code, own.send_at
    return PairContact(allowed, code, send_at)


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
