"""Explorers: every one returns the probability of its choice, checked against seeded frequencies."""

from __future__ import annotations

import numpy as np
import pytest

from nbm.policy.explore import EXPLORERS, EpsilonGreedy, Greedy, Softmax, Thompson, ThompsonStatistics

VALUES = np.array([0.8, 1.0, 0.3, 1.0, 0.05])
DEFAULTS = {"greedy": {}, "epsilon_greedy": {"epsilon": 0.2}, "softmax": {"temperature": 0.3}, "thompson": {"samples": 400}}


@pytest.mark.parametrize("name", sorted(EXPLORERS))
def test_every_explorer_is_registered_with_defaults_and_validates_input(name) -> None:
    explorer = EXPLORERS[name](**DEFAULTS[name])
    rng = np.random.default_rng(0)
    choice = explorer.choose(VALUES, rng, ThompsonStatistics(np.ones(5), np.ones(5)))
    assert 0 <= choice.index < len(VALUES) and 0 < choice.propensity <= 1
    with pytest.raises(ValueError, match="`values`"):
        explorer.choose(np.array([]), rng)
    with pytest.raises(ValueError, match="`values`"):
        explorer.choose(np.array([1.0, np.nan]), rng)


@pytest.mark.parametrize("explorer", [Greedy(), EpsilonGreedy(0.2), Softmax(0.3)], ids=lambda e: e.name)
def test_exact_propensities_match_100k_seeded_decisions(explorer) -> None:
    rng = np.random.default_rng(42)
    n = 100_000
    counts = np.zeros(len(VALUES))
    propensity = np.zeros(len(VALUES))
    for _ in range(n):
        choice = explorer.choose(VALUES, rng)
        counts[choice.index] += 1
        propensity[choice.index] = choice.propensity
    frequency = counts / n
    expected = explorer.probabilities(VALUES)
    assert np.abs(frequency - expected).max() <= 0.01
    chosen = counts > 0
    np.testing.assert_allclose(propensity[chosen], expected[chosen])


def test_known_probabilities() -> None:
    np.testing.assert_allclose(Greedy().probabilities(VALUES), [0, 0.5, 0, 0.5, 0])
    np.testing.assert_allclose(EpsilonGreedy(0.2).probabilities(VALUES), [0.04, 0.44, 0.04, 0.44, 0.04])
    soft = Softmax(1.0).probabilities(np.array([0.0, 1.0]))
    np.testing.assert_allclose(soft, [1 / (1 + np.e), np.e / (1 + np.e)])


def test_thompson_propensity_estimates_match_frequencies() -> None:
    """30k seeded decisions, as for the exact explorers; the mean estimated propensity of each candidate
    matches its frequency (≤ 0.01)."""
    explorer = Thompson(samples=400)
    statistics = ThompsonStatistics(np.array([30, 2, 0, 50, 5.0]), np.array([70, 3, 1, 150, 20.0]))
    values = np.array([1.0, 1.0, 1.0, 1.2, 2.0])
    rng = np.random.default_rng(7)
    n = 30_000
    chosen = np.zeros(n, dtype=int)
    estimates = np.zeros(n)
    for i in range(n):
        choice = explorer.choose(values, rng, statistics)
        chosen[i], estimates[i] = choice.index, choice.propensity
        assert choice.propensity_error <= 0.5 / np.sqrt(400) + 1e-12
    for k in range(len(values)):
        picked = chosen == k
        if picked.sum() > 200:
            assert abs(picked.mean() - estimates[picked].mean()) <= 0.01, k
    # Pairs with few impressions get explored: the unproven candidate 2 is chosen now and then.
    assert 0 < (chosen == 2).mean() < 0.5


@pytest.mark.parametrize(("cls", "kwargs", "field"), [
    (EpsilonGreedy, {"epsilon": 1.5}, "`epsilon`"), (Softmax, {"temperature": 0}, "`temperature`"),
    (Thompson, {"samples": 0}, "`samples`"),
])
def test_invalid_settings_name_the_field(cls, kwargs, field) -> None:
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)


def test_explorers_take_their_parameters_from_the_configuration(tmp_path) -> None:
    from nbm.config import load_config
    from nbm.errors import NbmError
    from nbm.policy.explore import make_explorer

    path = tmp_path / "nbm.toml"
    path.write_text("[explorer]\nepsilon = 0.3\ntemperature = 0.5\nthompson_samples = 400\n")
    settings = load_config(path).explorer
    epsilon = make_explorer("epsilon_greedy", settings)
    assert epsilon.epsilon == 0.3 and make_explorer("epsilon_greedy").epsilon == 0.1
    np.testing.assert_allclose(epsilon.probabilities(VALUES), [0.06, 0.41, 0.06, 0.41, 0.06])
    assert make_explorer("softmax", settings).temperature == 0.5
    assert make_explorer("thompson", settings).samples == 400
    assert make_explorer("greedy", settings).name == "greedy"
    with pytest.raises(ValueError, match="unknown explorer"):
        make_explorer("boltzmann", settings)
    for bad, field in (("epsilon = 1.5", "epsilon"), ("temperature = 0", "temperature"),
                       ("thompson_samples = 0", "thompson_samples")):
        path.write_text(f"[explorer]\n{bad}\n")
        with pytest.raises(NbmError, match=field):
            load_config(path)
