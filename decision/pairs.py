"""The candidates of many decisions as (decision, message, channel) pairs, each with a mask of its slots.

A decision's candidates are every eligible (message × channel × send slot): ~1,800 rows for a catalog of
100 messages on 3 channels with 6 slots. Almost everything the decision path does is per pair — the contact
policy depends on (decision, channel, slot) and, for the cooldown, on the message; the model scores every
pair at one reference slot and only the best few pairs at every slot; a suppressed entry names a pair — so
:class:`Pairs` keeps one row per pair and a (pairs × slots) mask, and rows (pair, slot) are gathered only
where they are scored. :class:`CandidateRows` is the row-per-candidate form of the same candidates
(:meth:`Pairs.rows`, :meth:`Pairs.expanded`), for the scorer and the baselines that rank every row;
:meth:`Pairs.of_rows` goes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from decision.candidates import out_of_quiet_hours, slot_matrix
from features.compute import Candidates, user_stages
from features.keys import pair
from features.pipeline import FeatureStore
from nbm.arrays import Spread
from nbm.policy.eligibility import eligible_parts


@dataclass(frozen=True)
class Pairs:
    """Eligible (message, channel) pairs of ``n_groups`` decisions, sorted by (decision, message, channel).

    Per pair: ``group`` (its decision), ``message_code`` and ``channel_code`` (into the vocabulary),
    ``value`` (the message's business value) and ``ok`` (bool, one column per slot: eligible at its
    decision's slot ``s``). Per decision: ``user_ids``, ``user_code`` (the history's), ``now``,
    ``timezones`` and ``slot_times`` (send instants, −1 past a decision's last slot): the configured slots
    already moved out of the user's quiet hours (:func:`decision.candidates.out_of_quiet_hours`), so that
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

    def rows(self, p: np.ndarray, s: np.ndarray, spread_ids: bool = False) -> CandidateRows:
        """The candidate rows (pair ``p[i]`` at slot ``s[i]``) as a ``CandidateRows``, in the order given.

        With ``spread_ids`` the id columns (user, message, channel) are :class:`~nbm.arrays.Spread` over the
        per-decision and vocabulary names, built only where read (``np.asarray``, or indexing some rows):
        the model's decision path featurises and decides on the codes, and reads ids of the chosen rows
        alone — three object gathers of ~150,000 rows a campaign batch fewer, twice."""
        g = self.group[p]
        m, c = self.message_code[p], self.channel_code[p]
        if spread_ids:
            ids = Spread(self.user_ids, g), Spread(self.messages, m), Spread(self.channels, c)
        else:
            ids = self.user_ids[g], self.messages[m], self.channels[c]
        rows = Candidates(*ids, self.now[g], self.slot_times[g, s], m, c, self.user_code[g])
        return CandidateRows(g, rows, np.asarray(s, dtype=np.int64), self.n_slots, self.value[p], self.timezones,
                        self.n_groups, self.slot_times)

    def expanded(self) -> tuple[CandidateRows, np.ndarray, np.ndarray]:
        """Every eligible candidate row, sorted by (decision, message, channel, slot) — what ``expand_many``
        returns — with each row's pair and slot."""
        p, s = np.nonzero(self.ok)
        return self.rows(p, s), p, s

    @classmethod
    def of_rows(cls, store: FeatureStore, ex) -> tuple[Pairs, np.ndarray]:
        """The pairs of ``ex``'s rows (a ``CandidateRows``, any subset of ``expand_many``'s) and each row's pair."""
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
    stage = user_stages(history, code, now, signup)

    allow, live = eligible_parts(history.message_channels, history.message_stages,
                                 history.catalog_arrays["start_ns"], history.catalog_arrays["end_ns"],
                                 consent, stage, slots)                 # (n, m, c) and (n, m, s)
    i, m, c = np.nonzero(allow & live.any(axis=2)[:, :, None])          # sorted by (decision, message, channel)
    value = np.nan_to_num(history.catalog_arrays["value"], nan=1.0)[m]
    return Pairs(i.astype(np.int64), m.astype(np.int64), c.astype(np.int64), value, live[i, m], user_ids,
                 code.astype(np.int64), now, zones, slots, _names(voc.messages), _names(voc.channels))


@dataclass(frozen=True)
class CandidateRows:
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

    def take(self, index: np.ndarray) -> CandidateRows:
        r = self.rows
        rows = Candidates(r.user_id[index], r.message_id[index], r.channel[index], r.as_of[index], r.send_at[index],
                          None if r.message_code is None else r.message_code[index],
                          None if r.channel_code is None else r.channel_code[index],
                          None if r.user_code is None else r.user_code[index])
        return CandidateRows(self.group[index], rows, self.slot[index], self.n_slots, self.value[index], self.timezones,
                        self.n_groups, self.slot_times)


def expand_many(store: FeatureStore, user_ids: np.ndarray, now: np.ndarray) -> CandidateRows:
    """Every eligible candidate row of each decision (``user_ids[i]`` as of ``now[i]``), as ``expand`` finds them."""
    return expand_pairs(store, user_ids, now).expanded()[0]
