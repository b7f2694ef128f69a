"""A zoo of worlds: named presets that differ from the default world in structure, not only in size.

``nbm simulate --preset NAME`` builds one (``docs/simulator.md``, "Presets"). Each :class:`Preset` holds
its world as a :class:`~nbm.simulate.config.SimConfig` template (the size, seed, period and exploration
are the caller's), what differs from the default world and why that matters for nbm, and the nbm
configuration an operator would set for such a brand (``nbm.toml`` text).

* ``sparse`` — conversions are rare (≤ 0.5 % of sends) and valuable; opens and clicks 10–50× more frequent.
* ``taste`` — each person's topic taste dominates the response; message quality and value barely differ.
* ``timing`` — each person's preferred send hour dominates (a narrow, strong hour effect).
* ``lifecycle`` — stages follow *clicks* (dormant after 45 days without one), the most valuable message
  targets dormant users, and visits are frequent and say little.
* ``churn`` — the catalog turns over weekly: two new messages a day, each live about a week.

``world.json`` records the preset's name (``nbm.simulate.manifest``): the same code rebuilds the same world.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import pandas as pd

from nbm.config import LifecycleConfig
from nbm.errors import UsageError
from nbm.simulate.config import EngagementParams, MessyRates, SimConfig

_DEFAULT = EngagementParams()
SIZE_FIELDS = ("n_users", "n_days", "seed", "start", "epsilon", "messy", "preset")
"""Fields of :class:`SimConfig` that a preset leaves to its caller (and its own name)."""


@dataclass(frozen=True)
class Preset:
    """A named world: its structure, what differs and why, and the nbm configuration that fits it.

    Parameters
    ----------
    name
        What ``--preset`` takes.
    differs
        What differs from the default world, in a sentence.
    matters
        Why that matters for nbm: what a model must do to decide well there.
    world
        The world's :class:`SimConfig`; its size, seed, period, exploration and ``messy`` are replaced by
        :meth:`config`'s arguments.
    nbm_toml
        The recommended ``nbm.toml`` for this world (valid for :func:`nbm.config.load_config`).
    """

    name: str
    differs: str
    matters: str
    world: SimConfig
    nbm_toml: str

    def config(self, n_users: int = 10_000, n_days: int = 60, seed: int = 0, start: pd.Timestamp | None = None,
               epsilon: float = 0.1, messy: MessyRates | None = None) -> SimConfig:
        """The world of this preset with the caller's size, seed, period and exploration."""
        return replace(self.world, n_users=n_users, n_days=n_days, seed=seed, start=start, epsilon=epsilon,
                       messy=messy, preset=self.name)

    def changes(self) -> list[tuple[str, object, object]]:
        """``(knob, default value, this world's value)`` for every knob that differs from the default world;
        knobs of :class:`EngagementParams` are named ``engagement.KNOB``."""
        return _changes(SimConfig(), self.world)


def _changes(default: SimConfig, world: SimConfig) -> list[tuple[str, object, object]]:
    out: list[tuple[str, object, object]] = []
    for f in fields(SimConfig):
        if f.name in SIZE_FIELDS:
            continue
        before, after = getattr(default, f.name), getattr(world, f.name)
        if f.name == "engagement":
            out += [(f"engagement.{g.name}", getattr(before, g.name), getattr(after, g.name))
                    for g in fields(EngagementParams) if getattr(before, g.name) != getattr(after, g.name)]
        elif before != after:
            out.append((f.name, before, after))
    return out


SPARSE = Preset(
    name="sparse",
    differs="Conversions are rare and five times as valuable: P(convert | click) ≈ 3–4 % (default ≈ 30 %) and "
            "organic purchases 20× rarer, ≈ 0.2 % of sends in all (default ≈ 2.5 %); opens and clicks are as "
            "in the default world, 15–25× more frequent than conversions.",
    matters="A ranker trained on conversions alone learns message noise; it must use the opens and clicks "
            "and smooth the rare conversion rates hard toward the population.",
    world=SimConfig(
        engagement=replace(_DEFAULT, convert_base=-4.2, organic_purchase_rate=0.001),
        kind_value=(150.0, 300.0, 100.0, 200.0),
    ),
    nbm_toml="""\
# Sparse outcomes: conversions ~0.2 % of sends, clicks 10-50x more frequent.
[features]
group_by = "user"        # ranking groups of several sends (a user-day holds one send)
# prior_strength stays "auto": the smoothing of each family of rates is learned from the log
# (a fixed 200 pseudo-sends, the earlier advice, flattened every person's click affinities)
""",
)

TASTE = Preset(
    name="taste",
    differs="Each person's topic taste dominates the response: interest N(−1.2, 1.0) per topic (a favourite "
            "+1.5) weighs 2.0 on opens, 1.2 on clicks and 0.8 on conversions; message quality (spread 0.1) "
            "and value (spread 0.1) barely differ, and a profile names the true favourite 30 % of the time.",
    matters="Population popularity says little and attributes little more: a model wins by learning each "
            "person's topics from their own opens and clicks (it should beat a population oracle).",
    world=SimConfig(
        engagement=replace(_DEFAULT, topic_weight=2.0, click_topic_weight=1.2, convert_topic_weight=0.8,
                           interest_mean=-1.2, interest_spread=1.0, favourite_boost=1.5, second_boost=1.0,
                           stated_favourite_accuracy=0.3, quality_spread=0.1, value_spread=0.1),
    ),
    nbm_toml="""\
# Individual taste: a person's own topics say more than the population's.
[features]
group_by = "user"        # rank within a person: which messages engage them most

[explorer]
epsilon = 0.15           # keep learning each person's topics
""",
)

TIMING = Preset(
    name="timing",
    differs="Each person's preferred send hour dominates: preferred hours spread evenly over 8, 10, 12, 15 "
            "and 18 h local (± 0.5 h), and the hour fit weighs 3.0 (default 0.8) with a width of 1.5 h "
            "(default 3 h).",
    matters="The send slot is most of the decision and differs between people: a model must learn each "
            "person's hour from their own opens and visits, not a population's best hour.",
    world=SimConfig(
        engagement=replace(_DEFAULT, hour_weight=3.0, hour_width=1.5, preferred_hours=(8.0, 10.0, 12.0, 15.0, 18.0),
                           preferred_hour_shares=(0.2, 0.2, 0.2, 0.2, 0.2), preferred_hour_spread=0.5),
    ),
    nbm_toml="""\
# Personal send times: the hour is most of the decision.
[features]
slot_hours = [8, 10, 12, 15, 18, 21]  # score every slot the brand may send at (21 h is quiet: moved to 8 h)
horizon_hours = 24.0
""",
)

LIFECYCLE = Preset(
    name="lifecycle",
    differs="Stages follow clicks, not visits: dormant after 45 days without a click (the world's rules and "
            "eligibility use this stage); win-back messages target dormant users only and are worth 300 "
            "(the most valuable); visits are frequent (1.0 / 0.7 / 0.5 / 0.35 a day by activity level), ignore "
            "engagement and rarely lead to a purchase.",
    matters="With nbm's default lifecycle (visits count) almost every user looks active and the most valuable "
            "message is never offered; the operator must define activity as the brand does.",
    world=SimConfig(
        lifecycle=LifecycleConfig(activity_events=("click",), dormant_after_days=45.0),
        visits_per_day=(1.0, 0.7, 0.5, 0.35), visit_engagement_power=0.0,
        kind_stages=((), (), ("new",), ("dormant",)), kind_value=(30.0, 60.0, 20.0, 300.0),
        engagement=replace(_DEFAULT, organic_purchase_rate=0.005),
    ),
    nbm_toml="""\
# Active means clicked: dormant after 45 days without a click.
[lifecycle]
activity_events = ["click"]
dormant_after_days = 45.0
""",
)

CHURN = Preset(
    name="churn",
    differs="The catalog turns over weekly: 20 messages at the start (started at most 5 days before), two new "
            "ones a day, newsletters and promotions live 5–9 days (promotions 7), none evergreen; welcome and "
            "win-back messages stay until withdrawn.",
    matters="Most messages have a few days of history when nbm decides: a model must generalise from topic, "
            "kind and channel rather than a message's own rates, and retrain often.",
    world=SimConfig(
        n_initial_messages=20, new_message_every_days=0.5, initial_message_age_days=5.0, evergreen_share=0.0,
        message_lifetime_days=(5.0, 9.0), promo_live_days=7.0,
    ),
    nbm_toml="""\
# A catalog that turns over weekly: retrain daily (`nbm train`).
[explorer]
epsilon = 0.2            # new messages need sends to be learned
""",
)

PRESETS: dict[str, Preset] = {p.name: p for p in (SPARSE, TASTE, TIMING, LIFECYCLE, CHURN)}
"""Every preset by name."""


def get_preset(name: str, where: str = "`--preset`") -> Preset:
    """The preset ``name``; a :class:`~nbm.errors.UsageError` that starts with ``where`` and names the
    presets when there is none."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f"{where}: unknown preset {name!r}; expected one of {', '.join(PRESETS)}") from None


def world_config(preset: str | None = None, n_users: int = 10_000, n_days: int = 60, seed: int = 0,
                 start: pd.Timestamp | None = None, epsilon: float = 0.1,
                 messy: MessyRates | None = None) -> SimConfig:
    """The :class:`SimConfig` of the world ``preset`` (``None``: the default world) at this size."""
    if preset is None:
        return SimConfig(n_users=n_users, n_days=n_days, seed=seed, start=start, epsilon=epsilon, messy=messy)
    return get_preset(preset).config(n_users, n_days, seed, start, epsilon, messy)


def rebuildable(config: SimConfig) -> bool:
    """Whether ``config`` is the default world or its preset's world (at any size): what ``world.json``
    can name and :func:`world_config` rebuild exactly."""
    if config.preset is not None and config.preset not in PRESETS:
        return False
    return config == world_config(config.preset, config.n_users, config.n_days, config.seed, config.start,
                                  config.epsilon, MessyRates() if config.messy is not None else None)
