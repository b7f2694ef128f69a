"""Many decisions at once, as of their own times: candidates, contact histories, model scores.

Off-policy evaluation replays the decision policy over every logged decision of a test window, and
batch scoring (``nbm recommend``) decides for every user as of one time. Both need, for thousands of
(user, time) decision points, what the service computes for one request: the eligible candidates
(:func:`features.candidates.expand`, vectorised here), the user's past sends for the contact policy, and
the calibrated probability of each candidate. The decision itself is :func:`nbm.policy.decide.decide_batch`.

Scoring every (message × channel × slot) of every decision costs ~300 rows a decision; :func:`model_decide`
scores in two stages instead: every (message, channel) pair that the contact policy allows at one
reference slot (the allowed slot nearest the middle of the day's slots), then every allowed slot of each
decision's ``top_pairs`` best pairs, and decides among those. With the default ``top_pairs`` the greedy
choice equals full enumeration in almost every decision (a test measures the agreement).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from features.compute import DAY_NS, HOUR_NS, Candidates, lifecycle_stage
from features.keys import pair
from features.pipeline import FeatureStore
from nbm.artifact import ScoringArtifact
from nbm.policy.contact import ContactDecision, SendHistories, apply_contact_policy_batch
from nbm.policy.eligibility import eligible
from nbm.policy.decide import BatchDecision, ScoredCandidates, Slate, decide_slate
from nbm.policy.explore import Arms, Explorer, Greedy, Softmax

TOP_PAIRS = 4
RESLOT_MAX_ROWS = 1_000_000
"""Up to this many stage-1 rows, their feature columns are kept and reused for stage 2."""
"""Pairs per decision scored at every slot in :func:`model_decide`'s second stage."""


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


_OBJECTS: dict[int, tuple[pd.Index, np.ndarray]] = {}


def _objects(index: pd.Index) -> np.ndarray:
    """``index`` as an object array, converted once per index (Arrow-backed strings convert slowly)."""
    hit = _OBJECTS.get(id(index))
    if hit is None or hit[0] is not index:
        hit = (index, np.asarray(index, dtype=object))
        _OBJECTS[id(index)] = hit
    return hit[1]


def _slot_matrix(now: np.ndarray, zones: np.ndarray, slot_hours: tuple[int, ...], horizon_hours: float) -> np.ndarray:
    """Slot instants per decision, (n, S) int64, −1 where a decision has fewer slots than S."""
    from features.candidates import slot_times

    width = len(slot_hours) * (int(np.ceil(horizon_hours / 24)) + 1)
    out = np.full((len(now), width), -1, dtype=np.int64)
    zone_codes, zone_names = pd.factorize(np.asarray(zones, dtype=object))
    times, time_codes = np.unique(now, return_inverse=True)
    combined, codes = np.unique(time_codes.reshape(-1) * max(len(zone_names), 1) + zone_codes, return_inverse=True)
    codes = codes.reshape(-1)
    for code, key in enumerate(combined.tolist()):   # distinct (time, time zone): tens to hundreds
        t, zone = times[key // max(len(zone_names), 1)], zone_names[key % max(len(zone_names), 1)]
        slots = slot_times(int(t), str(zone), slot_hours, horizon_hours)
        out[codes == code, : len(slots)] = slots
    used = int((out >= 0).sum(axis=1).max()) if len(out) else 0
    return out[:, :used]


def expand_many(store: FeatureStore, user_ids: np.ndarray, now: np.ndarray) -> Expanded:
    """Every eligible candidate of each decision (``user_ids[i]`` as of ``now[i]``), as ``expand`` finds them."""
    history, voc, cfg = store.history, store.globals.vocabulary, store.config
    user_ids = np.asarray(user_ids, dtype=object)
    now = np.asarray(now, dtype=np.int64)
    n, n_ch = len(user_ids), len(voc.channels)
    code = history.user_codes(user_ids)
    known = code < len(history.users)                # users rows come first in the history's codes
    row = np.where(known, code, -1)
    zones = np.full(n, "UTC", dtype=object)
    zones[known] = history.timezone[row[known]]
    slots = _slot_matrix(now, zones, cfg.features.slot_hours, cfg.features.horizon_hours)    # (n, S)

    consent = np.zeros((n, n_ch), dtype=bool)
    consent[known] = history.consent_matrix[row[known]]
    lost = history.user_channel.totals(pair(np.repeat(code, n_ch), np.tile(np.arange(n_ch), n), n_ch),
                                       np.repeat(now, n_ch), ("lost",))["lost"].reshape(n, n_ch)
    consent &= lost == 0
    signup = np.full(n, np.nan)
    signup[known] = history.signup[row[known]]
    stage = lifecycle_stage(cfg, (now - signup) / DAY_NS,
                            (now - history.last["activity"].last_time(code, now)) / DAY_NS).astype(np.int64)

    i, m, c, s = np.nonzero(eligible(history.message_channels, history.message_stages,
                                     history.catalog_arrays["start_ns"], history.catalog_arrays["end_ns"],
                                     consent, stage, slots))                            # sorted by decision
    rows = Candidates(
        user_id=user_ids[i], message_id=_objects(voc.messages)[m],
        channel=_objects(voc.channels)[c], as_of=now[i], send_at=slots[i, s],
        message_code=m, channel_code=c, user_code=code[i],
    )
    value = np.nan_to_num(history.catalog_arrays["value"], nan=1.0)[m]
    return Expanded(i.astype(np.int64), rows, s, (slots >= 0).sum(axis=1), value, zones, n, slots)


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
    take = np.repeat(lo - np.r_[0, np.cumsum(sizes)[:-1]], sizes) + np.arange(int(sizes.sum()))
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
        columns = store.featurise_columns(part)
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


def model_decide(store: FeatureStore, artifact: ScoringArtifact, expanded: Expanded, histories: SendHistories,
                 explorer: Explorer, rng: np.random.Generator, threshold: float = 0.0,
                 top_pairs: int = TOP_PAIRS, weight: np.ndarray | None = None,
                 contact: ContactDecision | None = None, k: int = 1, arms: dict | None = None,
                 patch=None) -> ModelDecisions:
    """The model's decision policy for every decision of ``expanded`` (two-stage scoring, then ``decide_slate``).

    The decision sees every allowed (message, channel) pair: the ``top_pairs`` best at every allowed slot,
    the others at their reference slot — so an explorer explores over all of them, and the greedy choice is
    the one full enumeration makes whenever the best pair ranks among the top at the reference slot.
    ``contact`` (the contact policy's verdict on ``expanded``'s rows) is computed when not given; ``arms``
    maps (message, channel) to Thompson sampling's (successes, failures); ``patch`` see :func:`score`.
    """
    policy = store.config.contact_policy
    ex = expanded
    if contact is None:
        contact = contact_verdict(store, ex, histories)
    allowed = contact.allowed
    # Stage 1: each allowed pair at its allowed slot nearest the middle of the decision's slots (the first
    # such slot on a tie). A pair's rows are one run of the rows sorted by pair (expand_many's order).
    idx = np.flatnonzero(allowed)
    pair_key = (ex.group[idx] * (len(store.globals.vocabulary.messages) + 1) + ex.rows.message_code[idx]) \
        * (len(store.globals.vocabulary.channels) + 1) + ex.rows.channel_code[idx]
    if len(idx) > 1 and (pair_key[1:] < pair_key[:-1]).any():
        by_pair = np.argsort(pair_key, kind="stable")
        idx, pair_key = idx[by_pair], pair_key[by_pair]
    n_rows = len(idx)
    new_run = np.r_[True, pair_key[1:] != pair_key[:-1]] if n_rows else np.zeros(0, bool)
    run_start = np.flatnonzero(new_run)
    run_id = np.cumsum(new_run) - 1
    distance = np.abs(ex.slot[idx] - ex.n_slots[ex.group[idx]] // 2)
    nearest = np.minimum.reduceat(distance * n_rows + np.arange(n_rows), run_start) if n_rows else run_start
    reference = idx[nearest % max(n_rows, 1)] if n_rows else idx
    ref_rows = ex.take(reference).rows
    base = None
    if len(reference) <= RESLOT_MAX_ROWS:   # keep stage 1's columns: stage 2 only recomputes slot features
        base = store.featurise_columns(ref_rows)
        if patch is not None:
            patch(base, ref_rows)
        ref_probability = artifact.score(base)
    else:
        ref_probability = score(store, artifact, ref_rows, patch=patch)
    ref_value = ref_probability * ex.value[reference] * (1.0 if weight is None else weight[reference])
    # The best ``top_pairs`` pairs per decision (at least k + 3, so a slate of k has room).
    top_pairs = max(top_pairs, k + 3)
    by_group = np.lexsort((-ref_value, ex.group[reference]))
    g = ex.group[reference[by_group]]
    starts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1] if len(g) else np.zeros(0, np.int64)
    rank = np.arange(len(g)) - np.repeat(starts, np.diff(np.r_[starts, len(g)]))
    top_run = np.zeros(len(reference), dtype=bool)
    top_run[by_group[rank < top_pairs]] = True
    # Stage 2: every allowed slot of those pairs; the other pairs keep their reference slot.
    in_top = top_run[run_id]
    top_rows = idx[in_top]
    if base is not None:
        top_probability = artifact.score(store.reslot_columns(base, run_id[in_top], ex.take(top_rows).rows))
    else:
        top_probability = score(store, artifact, ex.take(top_rows).rows, patch=patch)
    rows = np.concatenate([top_rows, reference[~top_run]])
    probability = np.concatenate([top_probability, ref_probability[~top_run]])
    order = np.argsort(rows, kind="stable")
    rows, probability = rows[order], probability[order]
    scored = ex.take(rows)
    candidates = ScoredCandidates(scored.rows.message_id, scored.rows.channel, scored.rows.send_at, probability,
                                  scored.value, None if weight is None else weight[rows])
    row_arms = None
    if arms is not None:
        pairs = [arms.get((m, c), (0, 0)) for m, c in zip(scored.rows.message_id, scored.rows.channel)]
        row_arms = Arms(np.array([p[0] for p in pairs], float), np.array([p[1] for p in pairs], float))
    slate = decide_slate(scored.group, ex.n_groups, candidates, histories, ex.timezones, policy, explorer, rng,
                         k=k, threshold=threshold, arms=row_arms, contact=contact.take(rows))
    return ModelDecisions(scored, probability, slate.first, slate)


def contact_verdict(store: FeatureStore, ex: Expanded, histories: SendHistories) -> ContactDecision:
    """The contact policy on every candidate row of ``ex``.

    Every rule but the cooldown depends on (decision, channel, send time) alone: with the decisions' slot
    instants at hand, the policy runs once per (decision, channel, slot) — for a message nobody was sent,
    so that the cooldown cannot apply — and again, on their own rows, for the messages a decision's user
    was sent before; each row then takes its verdict from the one that concerns it. The same function on
    ~1 % of the rows, so the same verdicts (a test compares them with the policy on every row).
    """
    voc, rows = store.globals.vocabulary, ex.rows
    policy = store.config.contact_policy
    if ex.slot_times is None or rows.channel_code is None or rows.message_code is None or not len(ex) \
            or ex.n_groups < GRID_MIN_DECISIONS:
        return _contact_every_row(store, ex, histories)
    n_ch, width = len(voc.channels), ex.slot_times.shape[1]
    n_msg = len(voc.messages)
    # The grid: (decision, channel, slot) for every slot a decision has.
    g = np.repeat(np.arange(ex.n_groups, dtype=np.int64), n_ch * width)
    c = np.tile(np.repeat(np.arange(n_ch, dtype=np.int64), width), ex.n_groups)
    slot = np.tile(np.arange(width, dtype=np.int64), ex.n_groups * n_ch)
    at = ex.slot_times[g, slot]
    cell = np.flatnonzero(at >= 0)
    channel_type, message_type, nobody_type, message_code = _vocabulary_types(voc)
    nobody = pd.Categorical.from_codes(np.full(len(cell), n_msg), dtype=nobody_type)
    grid = apply_contact_policy_batch(g[cell], pd.Categorical.from_codes(c[cell], dtype=channel_type), nobody,
                                      at[cell], ex.timezones, histories, policy)
    position = np.full(len(g), -1, dtype=np.int64)
    position[cell] = np.arange(len(cell))
    index = position[(ex.group * n_ch + rows.channel_code) * width + ex.slot]
    allowed, send_at = grid.allowed[index], grid.send_at[index]
    reason_names, reason_codes = np.unique(grid.reason, return_inverse=True)
    reason = reason_codes.reshape(-1)[index]
    # Rows of messages the decision's user was sent: the policy on those rows themselves (cooldown included).
    h_message = np.fromiter((message_code.get(m, -1) for m in np.asarray(histories.messages, dtype=object).tolist()),
                            np.int64, len(histories.messages))
    sent = np.unique(np.asarray(histories.group, np.int64)[h_message >= 0] * n_msg + h_message[h_message >= 0])
    again = np.flatnonzero(np.isin(ex.group * n_msg + rows.message_code, sent)) if len(sent) else np.zeros(0, np.int64)
    if len(again):
        own = apply_contact_policy_batch(
            ex.group[again], pd.Categorical.from_codes(rows.channel_code[again], dtype=channel_type),
            pd.Categorical.from_codes(rows.message_code[again], dtype=message_type), rows.send_at[again],
            ex.timezones, histories, policy)
        allowed, send_at = allowed.copy(), send_at.copy()
        allowed[again], send_at[again] = own.allowed, own.send_at
        names = list(reason_names)
        code_of = {name: i for i, name in enumerate(names)}
        for name in pd.unique(own.reason):
            if name not in code_of:
                code_of[name] = len(names)
                names.append(name)
        reason_names = np.array(names, dtype=object)
        reason = reason.copy()
        reason[again] = np.array([code_of[r] for r in own.reason.tolist()], dtype=np.int64)
    return ContactDecision(allowed, np.asarray(reason_names, dtype=object)[reason], send_at)


GRID_MIN_DECISIONS = 48
"""From this many decisions on, the grid is the faster way (below, two policy calls cost more than one)."""
_NOBODY = "\x00no message"
"""A message id no history holds: the grid's candidates, for which the cooldown never applies."""

_DTYPES: dict[int, tuple] = {}


def _vocabulary_types(voc) -> tuple[pd.CategoricalDtype, pd.CategoricalDtype, pd.CategoricalDtype, dict]:
    """Categorical types of channels, messages, messages plus :data:`_NOBODY`, and message → code; built
    once per vocabulary (validating categories on every call cost more than the policy on a small batch)."""
    hit = _DTYPES.get(id(voc))
    if hit is None or hit[0] is not voc:
        messages = voc.messages.tolist()
        hit = (voc, (pd.CategoricalDtype(voc.channels), pd.CategoricalDtype(voc.messages),
                     pd.CategoricalDtype(pd.Index([*messages, _NOBODY])), {m: i for i, m in enumerate(messages)}))
        if len(_DTYPES) > 64:         # processes that build many stores do not keep every vocabulary
            _DTYPES.clear()
        _DTYPES[id(voc)] = hit
    return hit[1]


def _contact_every_row(store: FeatureStore, ex: Expanded, histories: SendHistories) -> ContactDecision:
    """The contact policy on every row (the reference :func:`contact_verdict` equals)."""
    voc, rows = store.globals.vocabulary, ex.rows
    channels, messages = rows.channel, rows.message_id
    if rows.channel_code is not None and rows.message_code is not None:   # codes into the vocabulary: no hashing
        channel_type, message_type, _, _ = _vocabulary_types(voc)
        channels = pd.Categorical.from_codes(rows.channel_code, dtype=channel_type)
        messages = pd.Categorical.from_codes(rows.message_code, dtype=message_type)
    return apply_contact_policy_batch(ex.group, channels, messages, rows.send_at, ex.timezones, histories,
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
    """A baseline policy's decisions: ``decide_slate`` over every candidate with ``priority`` as its expected
    value (value 1, no threshold: a baseline always sends when something is allowed). ``probability`` of the
    result is the priority."""
    if contact is None:
        contact = contact_verdict(store, ex, histories)
    candidates = ScoredCandidates(ex.rows.message_id, ex.rows.channel, ex.rows.send_at, priority, np.ones(len(ex)))
    slate = decide_slate(ex.group, ex.n_groups, candidates, histories, ex.timezones, store.config.contact_policy,
                         explorer, rng, k=k, threshold=-np.inf, contact=contact)
    return ModelDecisions(ex, np.asarray(priority, dtype=float), slate.first, slate)


def arm_decide(store: FeatureStore, artifact: ScoringArtifact, ex: Expanded, histories: SendHistories, arm: str,
               explorer: Explorer, rng: np.random.Generator, threshold: float = 0.0,
               contact: ContactDecision | None = None, k: int = 1, arms: dict | None = None,
               patch=None) -> ModelDecisions:
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
        return model_decide(store, artifact, ex, histories, explorer, rng, threshold, contact=contact, k=k,
                            arms=arms, patch=patch)
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
    return replace(md, probability=probability)


def hour_bucket(times: np.ndarray) -> np.ndarray:
    """Send times to the hour (a logged send at 10:07 is the 10:00 slot's action)."""
    return np.asarray(times, dtype=np.int64) // HOUR_NS
