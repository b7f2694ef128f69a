"""The message catalog of the simulated world.

Four kinds of message, as a CRM team would have them: newsletters about a topic (all stages),
promotions (two weeks live), welcome messages (stage ``new``) and win-back messages (``at_risk`` and
``dormant``). Each message has a latent quality, unseen in the tables, that shifts every response to it.
New messages keep appearing during the period, so a policy meets messages it has no history for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nbm.config import LIFECYCLE_STAGES
from nbm.simulate.config import SimConfig

KINDS = ("newsletter", "promo", "welcome", "winback")
"""Kinds of message; ``SimConfig.kind_value`` and ``SimConfig.kind_stages`` follow this order."""
SUBTOPICS = ("new-in", "bestsellers", "guides")


@dataclass(frozen=True)
class Catalog:
    """Messages as arrays (index = position) plus the ``messages`` table of the data contract."""

    table: pd.DataFrame           # the messages table, data contract columns
    topic: np.ndarray             # int index into SimConfig.topics
    kind: np.ndarray              # int index into KINDS
    channels: np.ndarray          # bool (m, channels): channels it may be sent on
    stages: np.ndarray            # bool (m, 4): lifecycle stages it targets (all True = no targeting)
    value: np.ndarray             # float: business value of a conversion
    quality: np.ndarray           # float: latent quality, logit units
    start_at: np.ndarray          # int64 ns
    end_at: np.ndarray            # int64 ns; int64 max when open-ended

    @property
    def n(self) -> int:
        return len(self.value)

    def live(self, at_ns: int) -> np.ndarray:
        """Messages that may be sent at ``at_ns`` (bool, length ``n``)."""
        return (self.start_at <= at_ns) & (at_ns < self.end_at)


def build_catalog(config: SimConfig, rng: np.random.Generator) -> Catalog:
    """Draw the catalog: ``n_initial_messages`` live at the start, new ones arriving during the period."""
    day = pd.Timedelta(days=1).value
    start = config.period_start.value
    n_new = int(rng.poisson(config.n_days / config.new_message_every_days)) if config.new_message_every_days > 0 else 0
    n_free = config.n_initial_messages + n_new
    n_promos = int(np.ceil(config.n_days / 7)) + 1
    n = n_free + n_promos
    n_topics = len(config.topics)

    # Free messages: newsletters, welcome and win-back; every kind and topic present on day one.
    free_kinds = np.array([KINDS_INDEX[k] for k in ("newsletter", "welcome", "winback")])
    kind = free_kinds[rng.choice(3, size=n_free, p=(0.8, 0.1, 0.1))]
    kind[:6] = free_kinds[[0, 1, 2, 0, 1, 2]][: len(kind[:6])]
    starts = np.where(
        np.arange(n_free) < config.n_initial_messages,
        start - (rng.random(n_free) * config.initial_message_age_days * day).astype(np.int64) - day,
        start + (rng.random(n_free) * config.n_days * day).astype(np.int64),
    )
    open_ended = (kind != KINDS_INDEX["newsletter"]) | (rng.random(n_free) < config.evergreen_share)
    lifetime = rng.uniform(*config.message_lifetime_days, n_free)
    ends = np.where(open_ended, np.iinfo(np.int64).max, starts + (lifetime * day).astype(np.int64))
    # Weekly promotions: one starts every seven days (the first a week before the period), two weeks live
    # by default (``promo_live_days``).
    promo_starts = start + (np.arange(n_promos) - 1) * 7 * day
    kind = np.concatenate([kind, np.full(n_promos, KINDS_INDEX["promo"])])
    # Messages go live and end at the start of a simulated day (the environment decides once a day).
    starts = start + (np.concatenate([starts, promo_starts]) - start) // day * day
    ends = np.concatenate([ends, promo_starts + int(config.promo_live_days * day)])
    ends = np.where(ends == np.iinfo(np.int64).max, ends, start + (ends - start) // day * day)
    topic = rng.integers(0, n_topics, size=n)
    topic[:n_topics] = np.arange(n_topics)[: len(topic[:n_topics])]

    allowed = rng.random((n, len(config.channels))) < 0.5
    for j, channel in enumerate(config.channels):
        if channel == "email":
            allowed[:, j] = True
        elif channel == "wechat":
            allowed[:, j] = rng.random(n) < 0.3
    stages = np.ones((n, len(LIFECYCLE_STAGES)), dtype=bool)
    stage_lists: list[list[str]] = []
    for i, k in enumerate(kind):  # n is the catalog size (tens to a few hundred)
        targeted = config.kind_stages[k]
        stage_lists.append(list(targeted))
        if targeted:
            stages[i] = [s in targeted for s in LIFECYCLE_STAGES]

    value = np.round(np.asarray(config.kind_value, dtype=float)[kind]
                     * rng.lognormal(0.0, config.engagement.value_spread, n), 2)
    quality = rng.normal(0.0, config.engagement.quality_spread, n)
    width = max(3, len(str(n)))
    ids = [f"m{i:0{width}d}" for i in range(n)]
    topics = np.array(config.topics, dtype=object)
    table = pd.DataFrame({
        "message_id": pd.array(ids, dtype="str"),
        "topic": pd.array(topics[topic], dtype="str"),
        "tags": [[f"{topics[t]}:{SUBTOPICS[s]}", KINDS[k]] for t, s, k in zip(topic, rng.integers(0, 3, n), kind)],
        "channels": [[c for c, ok in zip(config.channels, row) if ok] for row in allowed],
        "lifecycle_stages": stage_lists,
        "value": value,
        "start_at": pd.to_datetime(starts, utc=True),
        "end_at": pd.to_datetime(np.where(ends == np.iinfo(np.int64).max, np.iinfo(np.int64).min, ends), utc=True),
    })
    return Catalog(
        table=table, topic=topic, kind=kind, channels=allowed, stages=stages, value=value,
        quality=quality, start_at=starts.astype(np.int64), end_at=ends.astype(np.int64),
    )


KINDS_INDEX = {k: i for i, k in enumerate(KINDS)}
