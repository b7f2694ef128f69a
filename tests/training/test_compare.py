"""The objective comparison's metric against a brute-force reference, and its choice rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.compare import (FALLBACK, MIN_GROUPS, Concordance, choose, realized_gain,
                              value_concordance)


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
    many, few = MIN_GROUPS, MIN_GROUPS - 1
    results = {"binary": Concordance(0.70, many, 900), "funnel": Concordance(0.65, many, 900),
               "lambdarank": Concordance(0.80, many, 900)}
    assert choose(results, {"binary": True, "funnel": True, "lambdarank": True})[0] == "lambdarank"
    assert choose(results, {"binary": True, "funnel": True, "lambdarank": False})[0] == "binary"
    thin = {k: Concordance(v.value, few, 10) for k, v in results.items()}
    chosen, reason = choose(thin, {"binary": True, "funnel": True, "lambdarank": True})
    assert chosen == FALLBACK and "cannot tell" in reason


def test_realized_gain():
    rows = pd.DataFrame({"revenue": [0.0, 0.0, 0.0], "message_value": [10.0, 20.0, np.nan], "label": [3, 2, 3],
                         "propensity": [0.5, np.nan, 0.001]})
    assert realized_gain(rows, "convert").tolist() == [10.0, 0.0, 1.0]     # no revenue: value × converted
    assert realized_gain(rows.assign(revenue=[7.0, 0.0, 0.0]), "convert").tolist() == [7.0, 0.0, 0.0]
