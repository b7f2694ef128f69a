"""The ground truth behaves as documented, and the log is drawn from it.

Statistical checks use seeded worlds; each states its tolerance. Two-proportion z statistics are
compared with the normal quantile of a one-sided test at p < 1e-4 (z > 3.72).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from nbm.simulate import SimConfig, World

Z_CRITICAL = stats.norm.isf(1e-4)


def _z_two_proportions(hits_a: int, n_a: int, hits_b: int, n_b: int) -> float:
    """z statistic of H1: rate a > rate b (pooled standard error)."""
    pooled = (hits_a + hits_b) / (n_a + n_b)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    return (hits_a / n_a - hits_b / n_b) / se


def _sends_with_outcomes(data) -> pd.DataFrame:
    """Sends with boolean columns ``open`` and ``unsubscribe``: did that outcome follow this send.

    Outcomes carry their decision id part of the time; the others are attributed to the latest earlier
    send of the same message to the same person (identifiers resolved through the links).
    """
    events = data.tables["events"].copy()
    links = data.tables["links"]
    alias = dict(zip(links["identifier_b"], links["identifier_a"]))
    for _ in range(2):  # cookie → device → user
        events["user_id"] = events["user_id"].map(alias).fillna(events["user_id"])
    sends = events[events["event_type"] == "send"].copy()
    for kind in ("open", "unsubscribe"):
        outcome = events[events["event_type"] == kind]
        direct = outcome["decision_id"].dropna()
        by_window = pd.merge_asof(
            outcome[outcome["decision_id"].isna()][["timestamp", "user_id", "message_id"]],
            sends[["timestamp", "user_id", "message_id", "decision_id"]],
            on="timestamp", by=["user_id", "message_id"], direction="backward",
        )["decision_id"].dropna()
        sends[kind] = sends["decision_id"].isin(pd.concat([direct, by_window]))
    return sends


def test_topic_matched_messages_engage_more(small_world) -> None:
    world = small_world.world
    sends = _sends_with_outcomes(small_world)
    users = world.user_index(sends["user_id"])
    messages = world.message_index(sends["message_id"])
    top_topic = world.population.interest.argmax(axis=1)[users]
    matched = world.catalog.topic[messages] == top_topic
    opens = sends["open"].to_numpy()
    z = _z_two_proportions(opens[matched].sum(), matched.sum(), opens[~matched].sum(), (~matched).sum())
    assert opens[matched].mean() > 1.5 * opens[~matched].mean()
    assert z > Z_CRITICAL


def test_more_contacts_in_seven_days_bring_more_unsubscribes(large_world) -> None:
    sends = _sends_with_outcomes(large_world).sort_values("timestamp")
    counts = (sends.assign(one=1).set_index("timestamp").groupby("user_id")["one"]
              .rolling("7D").sum().reset_index())
    sends = sends.merge(counts.rename(columns={"one": "contacts_7d"}), on=["user_id", "timestamp"], how="left")
    # contacts_7d counts this send too: light = at most one other contact in the week before.
    light = sends["contacts_7d"] <= 2
    heavy = sends["contacts_7d"] >= 4
    unsub = sends["unsubscribe"].to_numpy()
    z = _z_two_proportions(unsub[heavy].sum(), heavy.sum(), unsub[light].sum(), light.sum())
    assert unsub[heavy].mean() > 1.5 * unsub[light].mean()
    assert z > Z_CRITICAL


def test_realised_outcomes_match_the_ground_truth(small_world) -> None:
    """Observed opens and conversions lie within 4 standard deviations of the truth's expectation."""
    daily = small_world.daily
    for expected, observed in (("expected_opens", "opens"), ("expected_converts", "converts")):
        mean = daily[expected].sum()
        # Var of a sum of Bernoullis ≤ its mean; 4 sd of that bound.
        assert abs(daily[observed].sum() - mean) <= 4 * np.sqrt(mean), (observed, daily[observed].sum(), mean)


def test_quiet_hours_fatigue_and_preferred_hour_shape_the_response() -> None:
    world = World.build(SimConfig(n_users=2000, n_days=7, seed=4))
    truth, pop = world.truth, world.population
    n = pop.n
    users = np.arange(n)
    messages = np.zeros(n, dtype=np.int64)
    email = np.zeros(n, dtype=np.int64)
    day = world.config.period_start.value + 2 * 86_400 * 10**9
    offset = truth.utc_offset_hours(users, np.full(n, day))

    def at_local(hour: np.ndarray) -> np.ndarray:
        return day + (np.mod(hour - offset, 24.0) * 3600e9).astype(np.int64)

    rested, tired = np.zeros(n), np.full(n, 4.0)
    engaged = np.ones(n)
    best = truth.respond(users, messages, email, at_local(np.round(pop.preferred_hour) % 24), rested, engaged)
    awake_far = np.mod(np.round(pop.preferred_hour) + 12, 24)
    night = truth.respond(users, messages, email, at_local(np.full(n, 3.0)), rested, engaged)
    assert (truth.local_hour(users, at_local(np.full(n, 3.0))).round() == 3).all()
    assert night.p_open.mean() < best.p_open.mean()
    assert night.p_unsubscribe.mean() > best.p_unsubscribe.mean()
    far = truth.respond(users, messages, email, at_local(awake_far), rested, engaged)
    assert far.p_open.mean() < best.p_open.mean()
    fatigued = truth.respond(users, messages, email, at_local(np.round(pop.preferred_hour) % 24), tired, engaged)
    assert (fatigued.p_open < best.p_open).all()
    assert (fatigued.p_unsubscribe > best.p_unsubscribe).all()
    # Expected revenue is the product of the funnel and the message's value.
    funnel = (1 - best.p_bounce) * best.p_open * best.p_click_given_open * best.p_convert_given_click
    np.testing.assert_allclose(best.expected_revenue, funnel * world.catalog.value[messages])


def test_observable_attributes_correlate_with_latent_traits(small_world) -> None:
    world = small_world.world
    stated = world.favourite_topic
    known = stated >= 0
    truly_top = world.population.interest.argmax(axis=1)
    agreement = (stated[known] == truly_top[known]).mean()
    assert 0.5 < agreement < 0.8  # 60 % right by construction, plus chance
    app = world.population.attributes["app_installed"].to_numpy() == "yes"
    push = world.config.channels.index("push")
    assert world.population.responsiveness[app, push].mean() > world.population.responsiveness[~app, push].mean() + 0.3
