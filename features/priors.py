"""The strengths of the features' smoothing: configured, or learned per family of rates from the log.

Every smoothed rate of the features is (k + s·μ) / (n + s): a cell's own k successes in n sends, shrunk
toward its parent's rate μ with ``s`` pseudo-sends. The cells of one kind form a *family* (every user ×
channel pair's opens, say) with one strength (:class:`PriorStrengths`, the names of
``FeatureConfig.PRIOR_FAMILIES``). ``[features] prior_strength = "auto"`` learns each family's strength
from the log by empirical Bayes (:func:`features.strength.fit_strength`, beta-binomial marginal likelihood)
over the family's cells as the features count them — the 90 days before the end of the log for the user
families, all of it for messages and segments — each cell with the parent the features shrink it toward.

The strengths are learned once, when the shared tables are built (``features.pipeline.Globals.build``):
the training set and the online store of the same data learn the same numbers, and no request pays for
them. What that leaks: a training row's features count only events strictly before its send, but the ~15
strengths are learned from the whole training log, later outcomes included — the leak of any
hyperparameter tuned on the training log, one scalar per family. Online, the store learns them from the
history up to now: nothing of the future.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd

from features.history import DAY_NS, PopulationRates, Vocabulary, codes_in, event_masks, local_time
from features.keys import pair
from nbm.shrinkage import fit_strength
from nbm.attribution import attribute
from nbm.config import AttributionConfig, NbmConfig
from nbm.dataset import Dataset

DEFAULT_STRENGTH = 10.0
"""A family's strength when nothing is configured and too little is there to learn it (the former fixed default)."""
GLOBAL_PRIOR = {"opens": 0.1, "clicks": 0.02, "converts": 0.005}
"""Fixed priors of the overall rates: what an empty history gives."""
WINDOW_NS = 90 * DAY_NS
"""The user features' window (features/compute.py): the user families' cells count it."""
MAX_FIT_USERS = 20_000
"""Users whose cells the strengths are learned on: beyond, a sample chosen by a hash of the user id."""


@dataclass(frozen=True)
class PriorStrengths:
    """Pseudo-sends of each family's smoothing toward its parent's rate (docs/features.md, "Smoothing").

    ``learned`` names the families whose strength was learned from the log; the others are configured, or
    :data:`DEFAULT_STRENGTH` (``population`` under ``"auto"``; a family with too few cells to learn from).
    """

    population: float = DEFAULT_STRENGTH            # channel, topic, tag rates toward the overall; overall toward fixed
    message_opens: float = DEFAULT_STRENGTH         # a message's rates toward its topic's rate
    message_clicks: float = DEFAULT_STRENGTH
    message_converts: float = DEFAULT_STRENGTH
    user_opens: float = DEFAULT_STRENGTH            # a user's open rate (the parent of user × hour) toward the overall
    user_channel_opens: float = DEFAULT_STRENGTH    # user × channel toward the channel's (or the segment's) rate
    user_channel_clicks: float = DEFAULT_STRENGTH
    user_topic_opens: float = DEFAULT_STRENGTH      # user × topic toward the topic's (or the segment's) rate
    user_topic_clicks: float = DEFAULT_STRENGTH
    user_tag_clicks: float = DEFAULT_STRENGTH       # user × tag toward the tag's rate
    user_hour_opens: float = DEFAULT_STRENGTH       # user × local hour toward the user's own open rate
    user_hour_visits: float = DEFAULT_STRENGTH      # share of visits at an hour toward 1/24
    user_weekday_visits: float = DEFAULT_STRENGTH   # share of visits on a weekday toward 1/7
    segment_channel_opens: float = DEFAULT_STRENGTH  # segment × channel toward the channel's rate
    segment_channel_clicks: float = DEFAULT_STRENGTH
    segment_topic_opens: float = DEFAULT_STRENGTH   # segment × topic toward the topic's rate
    segment_topic_clicks: float = DEFAULT_STRENGTH
    learned: tuple[str, ...] = ()

    @classmethod
    def families(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name != "learned")

    @classmethod
    def uniform(cls, strength: float) -> PriorStrengths:
        """Every family ``strength`` (``prior_strength`` a number: the smoothing nbm had before "auto")."""
        return cls(**{name: float(strength) for name in cls.families()})

    def as_dict(self) -> dict[str, float]:
        """``{family: strength}``: what ``nbm train`` logs, and what ``[features] prior_strength`` accepts to pin them."""
        return {name: float(getattr(self, name)) for name in self.families()}


def prior_strengths(dataset: Dataset, vocabulary: Vocabulary, rates: PopulationRates,
                    config: NbmConfig, end: int | None = None) -> PriorStrengths:
    """The strengths ``[features] prior_strength`` asks for: a number for every family, or each family
    configured or learned from ``dataset`` (with the shared ``vocabulary`` and population ``rates``). ``end``: the
    instant (ns) the cells are counted as of when ``dataset`` is a sample of a log's users (features/parts.py),
    by default just after its last event."""
    setting = config.features.prior_strength
    if not isinstance(setting, (str, dict)):
        return PriorStrengths.uniform(float(setting))
    pinned = dict(setting) if isinstance(setting, dict) else {}
    strengths = replace(PriorStrengths(), **pinned)
    if set(pinned) >= set(PriorStrengths.families()) - {"population"} or not len(dataset.events):
        return strengths
    return _Learner(dataset, vocabulary, rates, strengths, pinned, config.attribution, end).learn()


def global_rates(rates: PopulationRates, t: np.ndarray, strength: float) -> dict[str, np.ndarray]:
    """The overall opens, clicks and conversions per send before the day of ``t``, smoothed toward
    :data:`GLOBAL_PRIOR` with ``strength`` (the ``population`` family's)."""
    overall = rates.overall.totals(np.zeros(len(t), np.int64), rates.day_start(t), ("sends", "opens", "clicks", "converts"))
    return {o: (overall[o] + strength * p0) / (overall["sends"] + strength) for o, p0 in GLOBAL_PRIOR.items()}


class _Learner:
    """The cells of each family as of the end of the log, fitted in the order the parents need."""

    def __init__(self, dataset: Dataset, vocabulary: Vocabulary, rates: PopulationRates, strengths: PriorStrengths,
                 pinned: dict[str, float], attribution: AttributionConfig, end: int | None = None) -> None:
        self.vocabulary, self.rates, self.strengths, self.pinned = vocabulary, rates, strengths, pinned
        self.attribution = attribution
        self.learned: list[str] = []
        events = dataset.events
        times = events["timestamp"].to_numpy(dtype="int64")
        self.t = np.array([end if end is not None else times.max() + 1 if len(times) else 0], dtype=np.int64)
        code, names = pd.factorize(events["user_id"])
        sample = _sample(np.asarray(names, dtype=object))
        self.names = np.asarray(names, dtype=object)[sample]
        self.n_users = len(sample)
        if self.n_users < len(names):
            keep = np.isin(code, sample)
            events, times, code = events[keep].reset_index(drop=True), times[keep], code[keep]
        self.events, self.times = events, times
        self.user = np.searchsorted(sample, code)                  # 0 … users − 1, in the order of `names`
        self.recent = self.times >= self.t[0] - WINDOW_NS
        self.is_ = event_masks(self.events)
        self.channel = codes_in(self.events["channel"], vocabulary.channels)
        self.message = codes_in(self.events["message_id"], vocabulary.messages)
        self.topic = np.where(self.message >= 0, vocabulary.message_topic[np.maximum(self.message, 0)], -1)
        users = dataset.users
        row = pd.Index(users["user_id"].astype(str)).get_indexer(self.names)
        self.segment = (np.where(row >= 0, vocabulary.segments.codes(users)[np.maximum(row, 0)], -1)
                        if vocabulary.segments.active else np.full(self.n_users, -1, dtype=np.int64))
        zones = users["timezone"].astype(str).to_numpy(dtype=object) if len(users) else np.zeros(0, dtype=object)
        self.zone = np.where(row >= 0, zones[np.maximum(row, 0)] if len(zones) else "UTC", "UTC").astype(object)

    def learn(self) -> PriorStrengths:
        g = global_rates(self.rates, self.t, self.strengths.population)
        self._messages(g)
        self._segments(g)
        self._user_channel(g)
        self._user_topic(g)
        self._user_tag(g)
        self._user_hours(g)
        return replace(self.strengths, learned=tuple(self.learned))

    def _fit(self, family: str, successes: np.ndarray, trials: np.ndarray, parent: np.ndarray | float) -> None:
        if family in self.pinned:
            return
        fit = fit_strength(successes, trials, parent)
        if fit.learned:
            self.strengths = replace(self.strengths, **{family: fit.strength})
            self.learned.append(family)

    def _count(self, key: np.ndarray, size: int, mask: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Counts of the recent events of ``mask`` per ``key`` in ``[0, size)``."""
        rows = mask & self.recent
        return {name: np.bincount(key[rows], weights=self.is_[name[:-1]][rows], minlength=size) for name in names}

    def _population(self, index, keys: np.ndarray, outcome: str, parent: np.ndarray) -> np.ndarray:
        return self.rates.rate(index, keys, np.repeat(self.t, len(keys)), outcome, parent, self.strengths.population)

    def _messages(self, g: dict[str, np.ndarray]) -> None:
        codes = np.arange(len(self.vocabulary.messages))
        totals = self.rates.message.totals(codes, self.rates.day_start(np.repeat(self.t, len(codes))),
                                           ("sends", "opens", "clicks", "converts"))
        topic = self.vocabulary.message_topic
        for outcome in ("opens", "clicks", "converts"):
            parent = np.where(topic >= 0, self._population(self.rates.topic, np.maximum(topic, 0), outcome,
                                                           np.full(len(codes), g[outcome][0])), g[outcome][0])
            self._fit(f"message_{outcome}", totals[outcome], totals["sends"], parent)

    def _segments(self, g: dict[str, np.ndarray]) -> None:
        segments = self.vocabulary.segments
        if not segments.active:
            return
        for by, index, size, population in (("channel", self.rates.segment_channel, len(self.vocabulary.channels),
                                             self.rates.channel),
                                            ("topic", self.rates.segment_topic, len(self.vocabulary.topics),
                                             self.rates.topic)):
            segment, key = np.repeat(np.arange(segments.n), size), np.tile(np.arange(size), segments.n)
            packed = pair(segment, key, self.rates.n_channels if by == "channel" else self.rates.n_topics)
            totals = index.totals(packed, self.rates.day_start(np.repeat(self.t, len(key))),
                                  ("sends", "opens", "clicks"))
            for outcome in ("opens", "clicks"):
                self._fit(f"segment_{by}_{outcome}", totals[outcome], totals["sends"],
                          self._population(population, key, outcome, g[outcome][0]))

    def _parents(self, by: str, size: int, outcome: str, g: dict[str, np.ndarray]) -> np.ndarray:
        """The parent rate of every (user, key) cell: the segment's rate, else the population's (users × size)."""
        key = np.tile(np.arange(size), self.n_users)
        population = self._population(getattr(self.rates, by), key, outcome, g[outcome][0])
        segment = np.repeat(self.segment, size)
        strength = getattr(self.strengths, f"segment_{by}_{outcome}")
        return self.rates.segment_rate(by, segment, key, np.repeat(self.t, len(key)), outcome, population, strength)

    def _user_channel(self, g: dict[str, np.ndarray]) -> None:
        n_ch = len(self.vocabulary.channels)
        cells = self._count(pair(self.user, np.maximum(self.channel, 0), n_ch), self.n_users * n_ch, self.channel >= 0,
                            ("sends", "opens", "clicks"))
        for outcome in ("opens", "clicks"):
            self._fit(f"user_channel_{outcome}", cells[outcome], cells["sends"], self._parents("channel", n_ch, outcome, g))

    def _user_topic(self, g: dict[str, np.ndarray]) -> None:
        n_topics = len(self.vocabulary.topics)
        cells = self._count(pair(self.user, np.maximum(self.topic, 0), n_topics), self.n_users * n_topics,
                            self.topic >= 0, ("sends", "opens", "clicks"))
        for outcome in ("opens", "clicks"):
            self._fit(f"user_topic_{outcome}", cells[outcome], cells["sends"], self._parents("topic", n_topics, outcome, g))

    def _user_tag(self, g: dict[str, np.ndarray]) -> None:
        tags = self.vocabulary.message_tags
        n_tags = len(self.vocabulary.tags)
        if not n_tags:
            return
        order = np.argsort(tags.index.to_numpy(), kind="stable")
        start = np.searchsorted(tags.index.to_numpy()[order], np.arange(len(self.vocabulary.messages) + 1))
        tag_codes = tags.to_numpy()[order]
        rows = np.flatnonzero((self.message >= 0) & self.recent & (self.is_["send"] | self.is_["click"]))
        m = self.message[rows]
        counts = start[m + 1] - start[m]
        event = np.repeat(rows, counts)
        offset = np.arange(len(event)) - np.repeat(np.cumsum(counts) - counts, counts)
        key = pair(self.user[event], tag_codes[start[self.message[event]] + offset], n_tags)
        size = self.n_users * n_tags
        sends = np.bincount(key, weights=self.is_["send"][event], minlength=size)
        clicks = np.bincount(key, weights=self.is_["click"][event], minlength=size)
        tag = np.tile(np.arange(n_tags), self.n_users)
        self._fit("user_tag_clicks", clicks, sends, self._population(self.rates.tag, tag, "clicks", g["clicks"][0]))

    def _user_hours(self, g: dict[str, np.ndarray]) -> None:
        everyone = np.ones(len(self.user), dtype=bool)
        own = self._count(self.user, self.n_users, everyone, ("sends", "opens", "visits"))
        self._fit("user_opens", own["opens"], own["sends"], g["opens"][0])
        hour, weekday = local_time(self.times, self.zone[self.user])
        # An open counts at the local hour of the send it answers (features/history.py, user × hour).
        sent = attribute(self.events, self.attribution).to_numpy()
        opened = self.is_["open"] & (sent >= 0) & self.recent
        sends = self.is_["send"] & self.recent
        size = self.n_users * 24
        n = np.bincount(pair(self.user[sends], hour[sends], 24), minlength=size)
        k = np.bincount(pair(self.user[opened], hour[sent[opened]], 24), minlength=size)
        s = self.strengths.user_opens
        own_rate = (own["opens"] + s * g["opens"][0]) / (own["sends"] + s)
        self._fit("user_hour_opens", k, n, np.repeat(own_rate, 24))
        visits = self.is_["visit"] & self.recent
        for family, part, parts in (("user_hour_visits", hour, 24), ("user_weekday_visits", weekday, 7)):
            k = np.bincount(pair(self.user[visits], part[visits], parts), minlength=self.n_users * parts)
            self._fit(family, k, np.repeat(own["visits"], parts), 1.0 / parts)


def _sample(names: np.ndarray) -> np.ndarray:
    """Positions (sorted) of the users whose cells the strengths are learned on: all of them up to
    :data:`MAX_FIT_USERS`, else those with the smallest hashes of their id (:func:`user_hashes`; the same for the
    same log)."""
    if len(names) <= MAX_FIT_USERS:
        return np.arange(len(names))
    return np.sort(np.argpartition(user_hashes(names), MAX_FIT_USERS)[:MAX_FIT_USERS])


def user_hashes(names: np.ndarray) -> np.ndarray:
    """The hash (uint64) of each user id that picks the strengths' sample (:func:`_sample`)."""
    return pd.util.hash_pandas_object(pd.Series(names).astype(str), index=False, hash_key="nbm-prior-sample").to_numpy()
