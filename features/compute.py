"""Featurise candidates: (user, message, channel, send time) as of a decision time, in one vectorised pass.

The same function serves the training set (one row per logged send, ``as_of`` = the send's time) and
online candidates (``as_of`` = now, ``send_at`` = a slot in the next hours), so what is trained on is what
is served. Columns follow :data:`features.declarations.FEATURE_NAMES`, then one ``attr_<name>`` column per
user attribute of the ``users`` table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.declarations import CATEGORICAL, FEATURE_NAMES
from features.history import History, PopulationRates, codes_in, local_time
from features.keys import pair
from features.priors import GLOBAL_PRIOR, PriorStrengths, global_rates
from nbm.arrays import Spread, distinct_rows, prepend, take
from nbm.config import NbmConfig
from nbm.lifecycle import loyal_window_ns, stage_codes

DAY_NS, HOUR_NS = 86_400 * 10**9, 3_600 * 10**9


@dataclass(frozen=True)
class Candidates:
    """Rows to featurise; arrays of equal length. Times are int64 ns since the epoch (UTC)."""

    user_id: np.ndarray
    message_id: np.ndarray
    channel: np.ndarray
    as_of: np.ndarray
    send_at: np.ndarray
    message_code: np.ndarray | None = None   # codes in the history's vocabulary, when the caller has them
    channel_code: np.ndarray | None = None
    user_code: np.ndarray | None = None      # codes of History.user_codes in the history featurising them

    def __len__(self) -> int:
        return len(self.user_id)


def featurise(history: History, rates: PopulationRates, strengths: PriorStrengths, rows: Candidates) -> pd.DataFrame:
    """The feature frame of ``rows`` (one row each, same order); rates smoothed with ``strengths``."""
    return pd.DataFrame(featurise_columns(history, rates, strengths, rows), copy=False)


def featurise_columns(history: History, rates: PopulationRates, strengths: PriorStrengths, rows: Candidates,
                      spread: bool = False) -> dict[str, np.ndarray | Spread]:
    """:func:`featurise` as a dict of column arrays (no DataFrame: the service's hot path).

    ``spread=True`` is for scoring at once: a feature shared by many rows comes as a
    :class:`~nbm.arrays.Spread` (its distinct values and each row's index into them) instead of a full
    column, and numeric columns keep the dtype they were computed in (float64 mostly) — the compiled
    booster's row buffers round every value through float32 as they are filled, so the scores are the same,
    without building and converting ~56 columns of every row.

    Each entity's features are computed once per distinct (entity, as-of time) and broadcast: the ~300
    candidates of one decision share one user, 3 (user, channel) pairs and a few topics, and a campaign
    batch shares its messages across all users. On a training set (every row its own time) nothing is
    shared and each block runs on the rows themselves.
    """
    voc = history.vocabulary
    user = rows.user_code if rows.user_code is not None else history.user_codes(np.asarray(rows.user_id, dtype=object))
    message = rows.message_code if rows.message_code is not None else codes_in(rows.message_id, voc.messages)
    channel = rows.channel_code if rows.channel_code is not None else codes_in(rows.channel, voc.channels)
    topic = np.where(message >= 0, voc.message_topic[np.maximum(message, 0)], -1)
    t, send_at = np.asarray(rows.as_of, dtype=np.int64), np.asarray(rows.send_at, dtype=np.int64)
    time_code = _codes(t)
    out: dict[str, np.ndarray] = {}

    # Global rates, themselves smoothed toward fixed priors so that an empty history gives sane values
    # (computed once per distinct as-of time).
    global_rate = _Shared(np.zeros(len(t), np.int64), time_code).apply(
        lambda i: global_rates(rates, t[i], strengths.population), spread)

    by_user = _Shared(user, time_code)
    users = by_user.apply(lambda i: _user_block(history, user[i], t[i]), spread)
    profile = users.pop("_attributes")
    out.update({k: v for k, v in users.items() if not k.startswith("_")})

    n_ch = len(voc.channels)
    uc = pair(user, np.maximum(channel, 0), n_ch)
    out.update(by_user.within(np.maximum(channel, 0), n_ch, uc, time_code).apply(
        lambda i: _user_channel_block(history, rates, strengths, user[i], uc[i], np.maximum(channel[i], 0), t[i],
                                      _rows(global_rate, i)), spread))
    out["user_contacts_7d"] = users["_sends_7d"]

    global_click, global_open = global_rate["clicks"], global_rate["opens"]
    ut = pair(user, np.maximum(topic, 0), voc.topic_slots)
    own = {"opens": users["_opens_90d"], "clicks": users["_clicks_90d"], "sends": users["_sends_90d"]}
    out.update(by_user.within(np.maximum(topic, 0), len(voc.topics), ut, time_code).apply(
        lambda i: _user_topic_block(history, rates, strengths, user[i], ut[i], np.maximum(topic[i], 0), t[i],
                                    global_click[i], global_open[i], {k: v[i] for k, v in own.items()}), spread))
    send_code = _codes(send_at)
    slot_key = pair(user, send_code, int(send_code.max()) + 1 if len(send_code) else 1)
    opens90, sends90, visits90 = users["_opens_90d"], users["_sends_90d"], out["user_visits_90d"]
    out.update(_Shared(slot_key, time_code).apply(
        lambda i: _slot_features(history, user[i], t[i], send_at[i], strengths, opens90[i], sends90[i], visits90[i],
                                 global_open[i]), spread))

    n_times = int(time_code.max()) + 1 if len(time_code) else 1
    by_message = _Shared.of_cells((message + 1) * n_times + time_code, (len(voc.messages) + 1) * n_times, message,
                                  time_code)
    out.update(by_message.apply(
        lambda i: _message_block(history, rates, message[i], topic[i], t[i], strengths, _rows(global_rate, i)), spread))
    out["message_topic"] = topic
    out["channel"] = channel
    um = pair(user, np.maximum(message, 0), voc.message_slots)
    out.update(by_user.within(message + 1, len(voc.messages) + 1, um, time_code).apply(
        lambda i: _user_message_block(history, rates, user[i], message[i], um[i], t[i], global_click[i], strengths),
        spread))

    if spread:
        columns = {name: _as_int(out[name]) if name in CATEGORICAL else out[name] for name in FEATURE_NAMES}
    else:    # float32, as LightGBM scores them: half the memory of a 10M-row training set
        columns = {name: out[name].astype(np.int64) if name in CATEGORICAL else np.asarray(out[name], dtype=np.float32)
                   for name in FEATURE_NAMES}
    columns.update({f"attr_{column}": values for column, values in profile.items()})
    columns.update(_topic_matches(history, user, topic, spread))
    return columns


TOPIC_MATCH_SUFFIX = "_is_topic"
"""``attr_<name>_is_topic``: whether the user's text attribute ``name`` names the candidate's topic."""


def topic_attributes(history: History) -> dict[str, np.ndarray]:
    """The text attributes of the users table whose values name topics of the catalog (a stated favourite
    category): at least half of their categories, and two or more, are topic names (compared without case or
    surrounding blanks). Per such attribute, each category's topic code (:func:`topic_groups`; -1 when it names
    none)."""
    return _topic_match(history)[0]


def topic_groups(history: History) -> np.ndarray:
    """Per topic code, the code of the first topic of the same name without case or surrounding blanks: topics
    "News" and "news " are one topic to a person's stated favourite."""
    return _topic_match(history)[1]


def _topic_match(history: History) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """:func:`topic_attributes` and :func:`topic_groups`, worked out once per history (a few milliseconds of
    pandas that the service's every request would otherwise pay): its vocabulary never changes."""
    cached = getattr(history, "_topic_match", None)
    if cached is not None:
        return cached
    normalised = _normalised(history.vocabulary.topics)
    group = (np.asarray(pd.Series(np.arange(len(normalised))).groupby(normalised.to_numpy()).transform("min"),
                        dtype=np.int64) if len(normalised) else np.zeros(0, dtype=np.int64))
    first = pd.Series(group, index=normalised)
    first = first[~first.index.duplicated()]
    attributes = {}
    for name, categories in history.vocabulary.attributes.items():
        code = first.reindex(_normalised(categories)).fillna(-1).to_numpy(dtype=np.int64)
        named = int((code >= 0).sum())
        if named >= 2 and 2 * named >= len(categories):
            attributes[name] = code
    history._topic_match = (attributes, group)
    return history._topic_match


def _normalised(names: pd.Index) -> pd.Index:
    return pd.Index(pd.Index(names.astype(str)).str.strip().str.casefold())


def _topic_matches(history: History, user: np.ndarray, topic: np.ndarray, spread: bool) -> dict[str, np.ndarray]:
    """``attr_<name>_is_topic`` of each row (:func:`topic_attributes`): 1 where the user's attribute names the
    row's topic, 0 where it names another, NaN where the user has no value (or is unknown, or the row no
    known message). A tree learns "the stated favourite" from it in one split, where the attribute and the topic
    as two categoricals need an interaction of every pair."""
    out = {}
    n_known = len(history.user_frame)
    matching = topic_attributes(history)
    if matching:
        group = topic_groups(history)
        topic = np.where(topic >= 0, group[np.maximum(topic, 0)], -1)
    for name, topic_of in matching.items():
        codes = history.attributes[name][0]
        category = np.where(user < n_known, codes[np.minimum(user, max(n_known - 1, 0))], -1) if n_known else \
            np.full(len(user), -1)
        stated = np.where(category >= 0, topic_of[np.maximum(category, 0)], -2)
        match = np.where((category < 0) | (topic < 0), np.nan, (stated == topic).astype(float))
        out[f"attr_{name}{TOPIC_MATCH_SUFFIX}"] = match if spread else match.astype(np.float32)
    return out


def _as_int(values):
    if isinstance(values, Spread):
        return Spread(np.asarray(values.values).astype(np.int64, copy=False), values.index)
    return np.asarray(values).astype(np.int64, copy=False)


def _rows(columns: dict[str, np.ndarray], index) -> dict[str, np.ndarray]:
    return {name: values[index] for name, values in columns.items()}


def _codes(values: np.ndarray) -> np.ndarray:
    """Dense int64 codes of ``values`` (one code when all are equal: a decision's candidates)."""
    if not len(values) or values[0] == values[-1] and (values == values[0]).all():
        return np.zeros(len(values), dtype=np.int64)
    return pd.factorize(values)[0].astype(np.int64)


class _Shared:
    """Rows that share a (key, as-of time): a block of features is computed on one row of each and broadcast."""

    def __init__(self, keys: np.ndarray, time_code: np.ndarray) -> None:
        n = len(keys)
        self.first = self.inverse = None
        if n and keys[0] == keys[-1] and (keys == keys[0]).all() and (time_code == time_code[0]).all():
            self.first, self.inverse = np.zeros(1, np.int64), np.zeros(n, np.int64)
            return
        starts = run = None
        if n > 64:
            # Candidates come grouped by decision: a (key, time) that comes in runs is shared run by run,
            # without hashing (a key in two runs is computed twice: the same values).
            new = (keys[1:] != keys[:-1]) | (time_code[1:] != time_code[:-1])
            n_runs = int(new.sum()) + 1
            if n_runs <= n // 2:
                starts, run = prepend(0, np.flatnonzero(new) + 1), np.cumsum(prepend(False, new)).astype(np.int64)
                if n_runs <= n // 8:
                    self.first, self.inverse = starts, run
                    return
        # Otherwise by hashing the keys (of each run's first row, when rows come in short runs).
        k_keys, k_time = (keys, time_code) if starts is None else (keys[starts], time_code[starts])
        m = len(k_keys)
        n_times = int(k_time.max()) + 1 if m else 0
        if n > 64 and n_times <= m // 2:    # a training set (a time per row) shares nothing: skip the hashing
            key_code = pd.factorize(k_keys)[0].astype(np.int64)
            inverse, first = distinct_rows(key_code * n_times + k_time)     # < m², no overflow
            if len(first) <= n // 2:        # worth it only when rows really share
                if starts is not None:
                    inverse, first = inverse[run], starts[first]
                self.inverse, self.first = inverse, first
                return
        if starts is not None:
            self.first, self.inverse = starts, run

    def within(self, sub: np.ndarray, n_sub: int, keys: np.ndarray, time_code: np.ndarray) -> _Shared:
        """The rows that share one of these rows' entries and a ``sub`` code in ``[0, n_sub)`` (a user's
        rows and their channel, say): ``keys`` (with ``time_code``) name the same sharing, hashed only when
        the table of (entries × ``n_sub``) cells is not small (:meth:`of_cells`)."""
        if self.inverse is None:
            return _Shared(keys, time_code)
        return _Shared.of_cells(self.inverse * n_sub + sub, len(self.first) * n_sub, keys, time_code)

    @staticmethod
    def of_cells(cell: np.ndarray, n_cells: int, keys: np.ndarray, time_code: np.ndarray) -> _Shared:
        """The rows that share a ``cell`` in ``[0, n_cells)``, found in a table of the cells without hashing
        when it holds at most 4 entries a row; otherwise ``_Shared(keys, time_code)`` (the same sharing)."""
        n = len(cell)
        if not n or n_cells > 4 * n:
            return _Shared(keys, time_code)
        present = np.zeros(n_cells, dtype=bool)
        present[cell] = True
        distinct = np.flatnonzero(present)
        out = _Shared.__new__(_Shared)
        out.first = out.inverse = None
        if len(distinct) <= n // 2:        # worth it only when rows really share
            row = np.empty(n_cells, dtype=np.int64)
            row[cell] = np.arange(n)             # a row of each cell
            out.first, out.inverse = row[distinct], (np.cumsum(present) - 1)[cell]
        return out

    def apply(self, block, spread: bool = False) -> dict[str, object]:
        """``block(rows)`` (a dict of per-row arrays) on one row per distinct key, then for every row (as
        :class:`~nbm.arrays.Spread` columns with ``spread``)."""
        if self.first is None:
            return block(slice(None))
        return {name: _broadcast(values, self.inverse, spread) for name, values in block(self.first).items()}


def _broadcast(values, inverse: np.ndarray, spread: bool = False):
    if isinstance(values, dict):
        return {k: _broadcast(v, inverse, spread) for k, v in values.items()}
    if spread:
        return Spread(values if isinstance(values, pd.Categorical) else np.asarray(values), inverse)
    if isinstance(values, pd.Categorical):
        return values.take(inverse)
    return np.asarray(values)[inverse]


def lost_channels(history: History, user: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(users × channels of the vocabulary) bool: the user unsubscribed from or bounced on the channel before ``t``."""
    n_ch = len(history.vocabulary.channels)
    every = np.arange(n_ch)
    return history.user_channel.totals(pair(np.repeat(user, n_ch), np.tile(every, len(user)), n_ch),
                                       np.repeat(t, n_ch), ("lost",))["lost"].reshape(len(user), n_ch) > 0


def consented_channels(history: History, user: np.ndarray) -> np.ndarray:
    """(users × channels of the vocabulary) bool: the channels in each user's consent (none for a new user)."""
    return np.asarray(_profile(history, user)["consent"], dtype=bool)


def channel_loss_features(consent: np.ndarray, lost: np.ndarray) -> dict[str, np.ndarray]:
    """The user features that the channels lost (``lost``, users × channels) decide."""
    return {"user_unsubscribed_channels": lost.sum(axis=1), "user_consented_channels": (consent & ~lost).sum(axis=1)}


def _user_block(history: History, user: np.ndarray, t: np.ndarray) -> dict[str, object]:
    """Features of the user alone as of ``t`` (plus ``_``-named parts other blocks need)."""
    cfg, voc = history.config, history.vocabulary
    out: dict[str, object] = {}
    windows = (7 * DAY_NS, 30 * DAY_NS, 90 * DAY_NS)
    loyal = loyal_window_ns(cfg.lifecycle)           # the loyal stage's window of conversions, when it has one
    user_sums = history.user.window_totals(
        user, t, ("visits", "converts", "revenue", "opens", "clicks", "sends"),
        windows if loyal is None or loyal in windows else (*windows, loyal))
    for days, window in zip((7, 30, 90), windows):
        for name in ("visits", "converts", "revenue"):
            out[f"user_{name}_{days}d"] = user_sums[window][name]
    profile = _profile(history, user)
    out["user_days_since_signup"] = (t - profile["signup"]) / DAY_NS
    for name, key in (("visit", "activity"), ("open", "open"), ("click", "click"), ("convert", "convert")):
        out[f"user_days_since_{name}"] = (t - history.last[key].last_time(user, t)) / DAY_NS
    out["user_lifecycle_stage"] = lifecycle_stage(cfg, out["user_days_since_signup"], out["user_days_since_visit"],
                                                  None if loyal is None else user_sums[loyal]["converts"])
    act = cfg.activity
    ratio = out["user_visits_30d"] / (act.ideal_visits_per_week * 30 / 7)
    out["user_activity_state"] = np.where(ratio >= act.power_ratio, 0, np.where(
        ratio >= act.core_ratio, 1, np.where(ratio >= act.casual_ratio, 2, 3)))
    recent = user_sums[30 * DAY_NS]
    implicit = 1 - np.exp(-(recent["visits"] + recent["opens"] + 2 * recent["clicks"] + 5 * recent["converts"]) / 10)
    n_ch = len(voc.channels)
    lost = lost_channels(history, user, t)
    explicit = 0.5 * profile["completeness"] + 0.5 * profile["consent"].sum(axis=1) / n_ch
    out["user_engagement_explicit"] = explicit
    out["user_engagement_implicit"] = implicit
    out["user_engagement_score"] = 0.3 * explicit + 0.7 * implicit
    out.update(channel_loss_features(profile["consent"], lost))
    out["time_hours_since_contact"] = (t - history.last["send"].last_time(user, t)) / HOUR_NS
    out["_sends_7d"] = user_sums[7 * DAY_NS]["sends"]
    out["_opens_90d"], out["_sends_90d"] = user_sums[90 * DAY_NS]["opens"], user_sums[90 * DAY_NS]["sends"]
    out["_clicks_90d"] = user_sums[90 * DAY_NS]["clicks"]
    out["_attributes"] = profile["attributes"]
    return out


def _user_channel_block(history: History, rates: PopulationRates, s: PriorStrengths, user: np.ndarray, uc: np.ndarray,
                        channel: np.ndarray, t: np.ndarray, global_rate: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Features of the (user, channel) pair as of ``t``: rates shrunk toward the user's segment's rate of the
    channel (the channel's population rate without segments)."""
    out: dict[str, np.ndarray] = {}
    dense = history.user_channel.dense(uc)
    uc_sums = history.user_channel.window_totals(uc, t, ("sends", "opens", "clicks"),
                                                 (DAY_NS, 7 * DAY_NS, 30 * DAY_NS, 90 * DAY_NS), dense=dense)
    w30, w90 = uc_sums[30 * DAY_NS], uc_sums[90 * DAY_NS]
    out["uc_sends_30d"], out["uc_opens_30d"], out["uc_clicks_30d"] = w30["sends"], w30["opens"], w30["clicks"]
    segment = history.segment_of(user)
    for outcome, strength, segment_strength in (("opens", s.user_channel_opens, s.segment_channel_opens),
                                                ("clicks", s.user_channel_clicks, s.segment_channel_clicks)):
        prior = rates.rate(rates.channel, channel, t, outcome, global_rate[outcome], s.population)
        prior = rates.segment_rate("channel", segment, channel, t, outcome, prior, segment_strength)
        out[f"uc_{outcome[:-1]}_rate"] = (w90[outcome] + strength * prior) / (w90["sends"] + strength)
    out["uc_hours_since_contact"] = (t - history.user_channel.last_time(uc, t, dense=dense)) / HOUR_NS
    out["uc_contacts_24h"] = uc_sums[DAY_NS]["sends"]
    out["uc_contacts_7d"] = uc_sums[7 * DAY_NS]["sends"]
    return out


def _user_topic_block(history: History, rates: PopulationRates, s: PriorStrengths, user: np.ndarray, ut: np.ndarray,
                      topic: np.ndarray, t: np.ndarray, global_click: np.ndarray,
                      global_open: np.ndarray, own: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The user's smoothed affinity to the message's topic as of ``t``, shrunk toward the user's segment's
    rate of the topic (the topic's population rate without segments); and its *lift*: the user's rate on the
    topic shrunk toward the user's own rate over every topic (``own``: the user's 90-day totals), divided by
    that own rate — which topics this person prefers, whatever how much they open in general."""
    wt = history.user_topic.totals(ut, t, ("sends", "opens", "clicks"), 90 * DAY_NS)
    segment = history.segment_of(user)
    out = {}
    for outcome, base, strength, segment_strength in (
            ("clicks", global_click, s.user_topic_clicks, s.segment_topic_clicks),
            ("opens", global_open, s.user_topic_opens, s.segment_topic_opens)):
        prior = rates.rate(rates.topic, topic, t, outcome, base, s.population)
        prior = rates.segment_rate("topic", segment, topic, t, outcome, prior, segment_strength)
        out[f"ut_{outcome[:-1]}_affinity"] = (wt[outcome] + strength * prior) / (wt["sends"] + strength)
        # The user's own rate, shrunk toward the population's, is the lift's parent: 1 = no preference.
        rate = (own[outcome] + strength * base) / (own["sends"] + strength)
        out[f"ut_{outcome[:-1]}_lift"] = (wt[outcome] / rate + strength) / (wt["sends"] + strength)
    return out


def _user_message_block(history: History, rates: PopulationRates, user: np.ndarray, message: np.ndarray,
                        um: np.ndarray, t: np.ndarray, global_click: np.ndarray,
                        strengths: PriorStrengths) -> dict[str, np.ndarray]:
    """Features of the (user, message) pair as of ``t``: what the user got of it, and their tag affinity."""
    known = message >= 0
    dense = history.user_message.dense(um)            # looked up once for both queries
    wm = history.user_message.totals(um, t, ("sends", "engaged"), dense=dense)
    return {
        "um_received": wm["sends"] * known,
        "um_days_since_received": np.where(known, (t - history.user_message.last_time(um, t, dense=dense)) / DAY_NS,
                                           np.nan),
        "um_engaged": (wm["engaged"] > 0).astype(float) * known,
        "ug_click_affinity": _tag_affinity(history, rates, user, message, t, global_click, strengths),
    }


def _message_block(history: History, rates: PopulationRates, message: np.ndarray, topic: np.ndarray, t: np.ndarray,
                   s: PriorStrengths, global_rate: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Features of the message alone as of ``t`` (NaN or 0 for a message outside the catalog). Its rates are
    shrunk toward its topic's (itself shrunk toward the overall rate): a message sent a few times — a new one
    in a catalog that turns over weekly — is judged by its topic, not by every message."""
    catalog = history.catalog_arrays
    known = message >= 0
    m = np.maximum(message, 0)
    out = {"message_age_days": np.where(known, (t - catalog["start_at"][m]) / DAY_NS, np.nan)}
    per_message = rates.message.totals(m, rates.day_start(t), ("sends", "opens", "clicks", "converts"))
    for outcome, strength in (("opens", s.message_opens), ("clicks", s.message_clicks),
                              ("converts", s.message_converts)):
        parent = np.where(topic >= 0, rates.rate(rates.topic, np.maximum(topic, 0), t, outcome, global_rate[outcome],
                                                 s.population), global_rate[outcome])
        out[f"message_{outcome[:-1]}_rate"] = (per_message[outcome] + strength * parent) / (
            per_message["sends"] + strength)
    out["message_sends"] = per_message["sends"] * known
    out["message_value"] = np.where(known, catalog["value"][m], np.nan)
    return out


NEAR_HOURS = 2
"""Hours either side of a candidate's local hour that its ``…_near`` features count."""
NEAR_WEIGHTS = np.exp(-0.5 * (np.arange(NEAR_HOURS + 1) / 1.5) ** 2)
"""Weight of the counts d hours away (d = 0 … NEAR_HOURS): a Gaussian of width 1.5 h."""

SLOT_FEATURES = ("uh_open_rate", "uh_open_rate_near", "uh_visit_share", "uh_visit_share_near",
                 "uh_hours_from_visit_peak", "user_visit_hour_concentration", "uw_visit_share", "time_local_hour", "time_local_weekday",
                 "time_hours_until_send")
"""The features that depend on a candidate's send time; every other feature is the same at every slot."""


PEAK_RESULTANT = 1e-9
"""Length of the mean visit vector (of 1 for visits always at one hour) below which the visits have no peak hour."""
NO_PEAK_HOURS = 6.0
"""Hours from the visit peak of visits with none: every hour is as near, 6 h from a random one on average."""


def _slot_features(history: History, user: np.ndarray, t: np.ndarray, send_at: np.ndarray, s: PriorStrengths,
                   opens90: np.ndarray, sends90: np.ndarray, visits90: np.ndarray,
                   global_open: np.ndarray) -> dict[str, np.ndarray]:
    local_hour, local_weekday = local_time(send_at, _zones(history, user))
    own_open = (opens90 + s.user_opens * global_open) / (sends90 + s.user_opens)
    wh = history.user_hour.totals(pair(user, local_hour, 24), t, ("sends", "opens"), 90 * DAY_NS)
    at_hour = history.visit_hour.totals(pair(user, local_hour, 24), t, ("n",), 90 * DAY_NS)["n"]
    at_day = history.visit_weekday.totals(pair(user, local_weekday, 7), t, ("n",), 90 * DAY_NS)["n"]
    # Near the hour: the same counts at the hours around it, weighted by a Gaussian of the distance
    # (NEAR_HOURS): a person's habit is an hour ± a couple, which one exact hour of 24 sees too little of.
    near_sends, near_opens, near_visits = (wh["sends"] * NEAR_WEIGHTS[0], wh["opens"] * NEAR_WEIGHTS[0],
                                           at_hour * NEAR_WEIGHTS[0])
    for d in range(1, len(NEAR_WEIGHTS)):
        for hour in (np.mod(local_hour + d, 24), np.mod(local_hour - d, 24)):
            other = history.user_hour.totals(pair(user, hour, 24), t, ("sends", "opens"), 90 * DAY_NS)
            near_sends = near_sends + NEAR_WEIGHTS[d] * other["sends"]
            near_opens = near_opens + NEAR_WEIGHTS[d] * other["opens"]
            near_visits = near_visits + NEAR_WEIGHTS[d] * history.visit_hour.totals(pair(user, hour, 24), t, ("n",),
                                                                                   90 * DAY_NS)["n"]
    kernel = NEAR_WEIGHTS[0] + 2 * NEAR_WEIGHTS[1:].sum()
    # The hour the person visits around: the circular mean of their visits' local hours over 90 days.
    clock = history.user.totals(user, t, ("visit_cos", "visit_sin", "visits"), 90 * DAY_NS)
    # Visits spread evenly round the clock (6:00 and 18:00, say) have no peak: their vectors cancel, and what
    # is left of the sums is rounding noise, whose angle depends on the order they were added in (one pass or a
    # user partition, the snapshot or the training set). Below PEAK_RESULTANT a visit: no peak, concentration 0.
    resultant = np.hypot(clock["visit_cos"], clock["visit_sin"])
    visited = clock["visits"] > 0
    peaked = visited & (resultant > PEAK_RESULTANT * np.maximum(clock["visits"], 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        peak = np.mod(np.arctan2(clock["visit_sin"], clock["visit_cos"]) * 24 / (2 * np.pi), 24.0)
        gap = np.abs(local_hour - peak)
        from_peak = np.where(peaked, np.minimum(gap, 24.0 - gap), np.where(visited, NO_PEAK_HOURS, np.nan))
        concentration = np.where(visited, np.where(peaked, resultant / np.maximum(clock["visits"], 1), 0.0), np.nan)
    return {
        "uh_hours_from_visit_peak": from_peak,
        "user_visit_hour_concentration": concentration,
        "uh_open_rate": (wh["opens"] + s.user_hour_opens * own_open) / (wh["sends"] + s.user_hour_opens),
        "uh_open_rate_near": (near_opens + s.user_hour_opens * own_open) / (near_sends + s.user_hour_opens),
        "uh_visit_share": (at_hour + s.user_hour_visits / 24) / (visits90 + s.user_hour_visits),
        "uh_visit_share_near": (near_visits / kernel + s.user_hour_visits / 24) / (visits90 + s.user_hour_visits),
        "uw_visit_share": (at_day + s.user_weekday_visits / 7) / (visits90 + s.user_weekday_visits),
        "time_local_hour": local_hour,
        "time_local_weekday": local_weekday,
        "time_hours_until_send": (send_at - t) / HOUR_NS,
    }


def reslot_columns(history: History, rates: PopulationRates, strengths: PriorStrengths, base: dict[str, np.ndarray],
                   base_index: np.ndarray, rows: Candidates) -> dict[str, np.ndarray]:
    """Columns of ``rows``, each the candidate ``base_index`` of ``base`` at another send time.

    Only :data:`SLOT_FEATURES` are computed again: equal to :func:`featurise_columns` of ``rows`` (a test
    checks it) at a fraction of the cost — the service scores every slot of its best pairs this way.
    """
    shared: dict = {}          # spread columns that shared an index share the new one
    out = {name: take(values, base_index, shared) for name, values in base.items()}
    user = rows.user_code if rows.user_code is not None else history.user_codes(np.asarray(rows.user_id, dtype=object))
    t, send_at = np.asarray(rows.as_of, dtype=np.int64), np.asarray(rows.send_at, dtype=np.int64)
    w90 = history.user.window_totals(user, t, ("opens", "sends", "visits"), (90 * DAY_NS,))[90 * DAY_NS]
    overall = rates.overall.totals(np.zeros(len(t), np.int64), rates.day_start(t), ("sends", "opens"))
    p = strengths.population
    global_open = (overall["opens"] + p * GLOBAL_PRIOR["opens"]) / (overall["sends"] + p)
    for name, values in _slot_features(history, user, t, send_at, strengths, w90["opens"], w90["sends"],
                                       w90["visits"], global_open).items():
        out[name] = values.astype(np.int64) if name in CATEGORICAL else np.asarray(values, dtype=np.float32)
    return out


def lifecycle_stage(config: NbmConfig, days_since_signup: np.ndarray, days_since_activity: np.ndarray,
                    conversions: np.ndarray | None = None) -> np.ndarray:
    """Stage codes (new 0, active 1, at_risk 2, dormant 3, loyal 4) of the features and the decision path: the
    one rule, :func:`nbm.lifecycle.stage_codes`, on the days since the last activity (``History.last["activity"]``)
    and, with a loyal stage, the conversions in its window."""
    return stage_codes(config.lifecycle, days_since_signup, days_since_activity, conversions)


def user_stages(history: History, user: np.ndarray, t: np.ndarray, signup: np.ndarray) -> np.ndarray:
    """Lifecycle stage codes of users ``user`` (the history's codes) as of ``t`` (int64 ns), with their
    ``signup`` times (ns, NaN unknown): the stage the decision path's eligibility reads."""
    window = loyal_window_ns(history.config.lifecycle)
    conversions = None if window is None else history.user.totals(user, t, ("converts",), window)["converts"]
    return lifecycle_stage(history.config, (t - signup) / DAY_NS,
                           (t - history.last["activity"].last_time(user, t)) / DAY_NS, conversions).astype(np.int64)


def _zones(history: History, user: np.ndarray) -> np.ndarray:
    zones = history.timezone
    if not len(zones):
        return np.full(len(user), "UTC", dtype=object)
    out = zones[np.minimum(user, len(zones) - 1)]          # a copy, of the zones' own str objects
    unknown = user >= len(zones)
    if unknown.any():
        out[unknown] = "UTC"
    return out


def _profile(history: History, user: np.ndarray) -> dict[str, object]:
    """Signup time, consent matrix, profile completeness and attributes of each query's user."""
    n_known = len(history.user_frame)
    has = user < n_known
    r = np.where(has, user, 0)
    if not n_known:
        n = len(user)
        return {"signup": np.full(n, np.nan), "consent": np.zeros((n, len(history.vocabulary.channels)), bool),
                "completeness": np.zeros(n), "attributes": {}}
    attrs = {}
    for column, (values, categories) in history.attributes.items():
        if categories is None:
            attrs[column] = np.where(has, values[r], np.nan)
        else:
            attrs[column] = pd.Categorical.from_codes(np.where(has, values[r], -1), categories=categories)
    return {
        "signup": np.where(has, history.signup[r], np.nan),
        "consent": history.consent_matrix[r] & has[:, None],
        "completeness": np.where(has, history.completeness[r], 0.0),
        "attributes": attrs,
    }


def _tag_affinity(history: History, rates: PopulationRates, user: np.ndarray, message: np.ndarray, t: np.ndarray,
                  global_click: np.ndarray, strengths: PriorStrengths) -> np.ndarray:
    """Mean over the message's tags of the user's smoothed click rate on that tag (NaN without tags)."""
    m = np.maximum(message, 0)
    counts = np.where(message >= 0, history.tag_start[m + 1] - history.tag_start[m], 0)
    q = np.repeat(np.arange(len(user)), counts)
    if not len(q):
        return np.full(len(user), np.nan)
    # Position of each (query, tag) pair in its message's tag list, then the tag code.
    offset = np.arange(len(q)) - np.repeat(np.cumsum(counts) - counts, counts)
    tag = history.tag_codes[history.tag_start[m[q]] + offset]
    n_tags = len(history.vocabulary.tags)
    # A decision's messages share tags: look up each (user, as-of, tag) once. Rows come in runs of one
    # (user, as-of) — a decision's candidates — so a table (runs × tags) finds them without hashing.
    run = np.cumsum(prepend(False, (user[1:] != user[:-1]) | (t[1:] != t[:-1]) | (global_click[1:] != global_click[:-1])))
    n_runs = int(run[-1]) + 1
    if n_runs * n_tags <= 4 * len(q):
        cell = run[q] * n_tags + tag
        present = np.zeros(n_runs * n_tags, dtype=bool)
        present[cell] = True
        distinct = np.flatnonzero(present)
        first = np.searchsorted(run, distinct // n_tags)        # a row of each distinct cell's run
        d_tag, d_user, d_t, d_click = distinct % n_tags, user[first], t[first], global_click[first]
        of_q = (np.cumsum(present) - 1)[cell]
    else:
        d_tag, d_user, d_t, d_click, of_q = tag, user[q], t[q], global_click[q], slice(None)
    totals = history.user_tag.totals(pair(d_user, d_tag, history.vocabulary.tag_slots), d_t, ("sends", "clicks"),
                                     90 * DAY_NS)
    prior = rates.rate(rates.tag, d_tag, d_t, "clicks", d_click, strengths.population)
    strength = strengths.user_tag_clicks
    affinity = ((totals["clicks"] + strength * prior) / (totals["sends"] + strength))[of_q]
    sums = np.bincount(q, weights=affinity, minlength=len(user))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
