"""The objective comparison's metric against a brute-force reference, and its choice rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbm.attribution import GRADE
from nbm.config import NbmConfig
from training.compare import (FALLBACK, MIN_EARNERS, Capture, capture_of, choose, exploration, realized_gain,
                              value_capture, value_concordance)


def brute_force(expected, gain, group, weight):
    num = den = 0.0
    users = set()
    for i in range(len(gain)):
        for j in range(len(gain)):
            if group[i] == group[j] and gain[i] > gain[j]:
                w = (gain[i] - gain[j]) * weight[i] * weight[j]
                num += w * (1.0 if expected[i] > expected[j] else 0.5 if expected[i] == expected[j] else 0.0)
                den += w
                users.add(group[i])
    return num / den, len(users)


@pytest.mark.parametrize("seed", range(5))
def test_value_concordance_equals_the_pairwise_definition(seed):
    rng = np.random.default_rng(seed)
    n = 300
    group = rng.integers(0, 40, n).astype(str)
    gain = np.where(rng.random(n) < 0.2, rng.choice([0.0, 10.0, 25.0], n), 0.0)
    expected = np.round(rng.random(n), 1)                  # ties on purpose
    weight = rng.uniform(0.5, 3.0, n)
    got = value_concordance(expected, gain, group, weight)
    want, users = brute_force(expected, gain, group, weight)
    assert got.value == pytest.approx(want, rel=1e-12)
    assert got.groups == users


def test_value_concordance_extremes():
    group = np.repeat(np.arange(50), 4)
    gain = np.tile([0.0, 0.0, 5.0, 20.0], 50)
    assert value_concordance(gain, gain, group).value == 1.0             # the right order
    assert value_concordance(-gain, gain, group).value == 0.0            # the reverse
    assert value_concordance(np.ones(200), gain, group).value == 0.5     # a constant model: a coin
    nothing = value_concordance(np.ones(200), np.zeros(200), group)
    assert np.isnan(nothing.value) and nothing.groups == 0 and not nothing.measured


def test_choice_skips_degenerate_and_falls_back_when_unmeasured():
    many, few = MIN_EARNERS, MIN_EARNERS - 1
    results = {"binary": Capture(0.30, 900, many, "target"), "funnel": Capture(0.25, 900, many, "target"),
               "lambdarank": Capture(0.40, 900, many, "click")}
    chosen, reason = choose(results, {"binary": True, "funnel": True, "lambdarank": True})
    assert chosen == "lambdarank" and "clicks standing in" in reason
    assert choose(results, {"binary": True, "funnel": True, "lambdarank": False})[0] == "binary"
    thin = {k: Capture(v.value, 900, few, v.outcome) for k, v in results.items()}
    chosen, reason = choose(thin, {"binary": True, "funnel": True, "lambdarank": True})
    assert chosen == FALLBACK and "cannot tell" in reason


def capture_by_definition(expected, gain):
    """The area under the cumulative share of gain, each row at its expected position when ties are broken at
    random (after every row expected higher, in the middle of its ties), rescaled: random 0, hindsight 1."""
    n, total = len(gain), gain.sum()

    def area(key):
        position = np.array([(key > key[i]).sum() + ((key == key[i]).sum() + 1) / 2 for i in range(n)])
        return float(np.sum(gain * (n + 1 - position)) / (n * total))

    random = (n + 1) / (2 * n)
    return (area(expected) - random) / (area(gain) - random)


@pytest.mark.parametrize("seed", range(5))
def test_value_capture_equals_its_definition(seed):
    rng = np.random.default_rng(seed)
    n = 400
    gain = np.where(rng.random(n) < 0.1, rng.choice([3.0, 10.0, 25.0], n), 0.0)
    expected = np.round(gain * rng.uniform(0, 1, n) + rng.random(n), 1)        # informative, with ties
    assert value_capture(expected, gain) == pytest.approx(capture_by_definition(expected, gain), rel=1e-9)


def test_value_capture_extremes():
    gain = np.tile([0.0, 0.0, 0.0, 5.0, 20.0], 40)
    assert value_capture(gain, gain) == pytest.approx(1.0)                       # hindsight's order
    assert value_capture(-gain, gain) < -0.9                                     # the reverse
    assert value_capture(np.ones(200), gain) == pytest.approx(0.0, abs=1e-12)    # a constant model: random
    shuffled = np.random.default_rng(0).permutation(200).astype(float)
    assert abs(value_capture(shuffled, gain)) < 0.2
    assert np.isnan(value_capture(np.arange(200.0), np.zeros(200)))             # nothing earned: unmeasured


def test_exploration_is_a_logged_propensity_below_the_threshold():
    rows = pd.DataFrame({"propensity": [0.9, 0.0004, np.nan, 0.5, 0.49]})
    assert exploration(rows, 0.5).tolist() == [False, True, False, False, True]
    assert not exploration(rows.drop(columns="propensity"), 0.5).any()           # no propensities: no exploration


class _Model:
    """An artifact's ``score`` and ``target``: the score is a column of the rows."""

    def __init__(self, target: str = "convert") -> None:
        self.target = target

    def score(self, rows):
        return rows["p"].to_numpy()


def _log(n: int, converts: int, clicks: int, opens: int = 0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = np.zeros(n, dtype=int)
    label[:opens] = GRADE["open"]
    label[:clicks] = GRADE["click"]
    label[:converts] = GRADE["convert"]
    return pd.DataFrame({"label": label, "revenue": np.where(label >= GRADE["convert"], 30.0, 0.0),
                         "message_value": rng.choice([10.0, 30.0], n), "p": np.linspace(1, 0, n),
                         "propensity": np.where(np.arange(n) % 2 == 0, 0.001, 0.9),
                         "message_id": "m", "user_id": np.arange(n).astype(str)})


def test_capture_ranks_the_exploration_by_its_target_or_a_frequent_stand_in():
    config = NbmConfig()
    plenty = capture_of(_Model(), _log(2000, converts=200, clicks=600), None, config)
    assert plenty.outcome == "target" and plenty.sends == 1000 and plenty.earners == 100 and plenty.measured
    assert plenty.value > 0.5                          # the score puts the earners first
    # Conversions too rare among the exploration: the value of the clicks stands in, and says so.
    rare = capture_of(_Model(), _log(2000, converts=20, clicks=600), None, config)
    assert rare.outcome == "click" and rare.earners == 300 and rare.measured
    # Nothing frequent enough either: unmeasured, never a number from a handful of sends.
    thin = capture_of(_Model(), _log(2000, converts=4, clicks=40), None, config)
    assert not thin.measured and np.isnan(thin.value) and thin.outcome == "target" and thin.earners == 2
    # A click model's stand-in is the open: never an outcome at or after its own target.
    clicks = capture_of(_Model("click"), _log(2000, converts=10, clicks=40, opens=900), None, config)
    assert clicks.outcome == "open" and clicks.earners == 450 and clicks.measured
    none = capture_of(_Model(), _log(2000, 200, 600).drop(columns="propensity"), None, config)
    assert not none.measured and none.sends == 0


def test_realized_gain():
    rows = pd.DataFrame({"revenue": [0.0, 0.0, 0.0], "message_value": [10.0, 20.0, np.nan], "label": [3, 2, 3],
                         "propensity": [0.5, np.nan, 0.001]})
    assert realized_gain(rows, "convert").tolist() == [10.0, 0.0, 1.0]     # no revenue: value × converted
    assert realized_gain(rows.assign(revenue=[7.0, 0.0, 0.0]), "convert").tolist() == [7.0, 0.0, 0.0]
