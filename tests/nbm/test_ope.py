"""Off-policy estimators against the true value of a seeded simulated bandit."""

from __future__ import annotations

import numpy as np
import pytest

from nbm.ope import BanditLog, doubly_robust, estimate, ips, snips


def _softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    z = np.exp((scores - scores.max(axis=1, keepdims=True)) / temperature)
    return z / z.sum(axis=1, keepdims=True)


def _world(n: int, seed: int, model_noise: float = 0.0):
    """Contexts × 5 actions with known reward probabilities; softmax logging, sharper softmax target."""
    rng = np.random.default_rng(seed)
    k = 5
    x = rng.normal(size=(n, 3))
    coef = rng.normal(size=(3, k))
    truth = 1 / (1 + np.exp(-(x @ coef - 1.5)))                         # P(reward | x, a)
    logging = _softmax(rng.normal(size=(n, k)) * 0.3, 1.0)                # near-uniform, context-free
    target = _softmax(x @ coef, 0.3)                                      # prefers good actions
    action = (rng.random((n, 1)) < logging.cumsum(axis=1)).argmax(axis=1)
    reward = (rng.random(n) < truth[np.arange(n), action]).astype(float)
    q = np.clip(truth + rng.normal(0, model_noise, truth.shape), 0, 1)    # a reward model, noisy or exact
    rows = np.arange(n)
    log = BanditLog(reward, logging[rows, action], target[rows, action], q[rows, action], (target * q).sum(axis=1))
    true_value = float((target * truth).sum(axis=1).mean())
    return log, true_value


@pytest.mark.parametrize("estimator", [ips, snips, doubly_robust])
def test_estimators_recover_the_true_value(estimator) -> None:
    """Within 5 % of the true value on 200k seeded decisions (their standard errors are ~1 %)."""
    log, truth = _world(200_000, seed=1, model_noise=0.1)
    assert abs(estimator(log) - truth) < 0.05 * truth


def test_doubly_robust_with_an_exact_model_has_the_smallest_error() -> None:
    errors = {f.__name__: [] for f in (ips, snips, doubly_robust)}
    for seed in range(20):
        log, truth = _world(5_000, seed=seed)
        for f in (ips, snips, doubly_robust):
            errors[f.__name__].append(f(log) - truth)
    rmse = {name: float(np.sqrt(np.mean(np.square(e)))) for name, e in errors.items()}
    assert rmse["doubly_robust"] < rmse["snips"] <= rmse["ips"] * 1.05


def test_bootstrap_interval_covers_the_truth_most_of_the_time() -> None:
    covered = 0
    for seed in range(30):
        log, truth = _world(3_000, seed=100 + seed, model_noise=0.1)
        result = estimate(log, "snips", n_bootstrap=200, seed=seed)
        covered += result.ci_low <= truth <= result.ci_high
    assert covered >= 24  # nominal 95 %: 28.5 of 30 expected; ≥ 24 fails with probability < 1 %


def test_degenerate_inputs_give_explicit_results() -> None:
    empty = BanditLog(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))
    assert np.isnan(ips(empty)) and np.isnan(snips(empty)) and np.isnan(doubly_robust(empty))
    zero_weight = BanditLog(np.ones(3), np.full(3, 0.5), np.zeros(3))
    assert np.isnan(snips(zero_weight)) and ips(zero_weight) == 0.0
    one = estimate(BanditLog(np.ones(1), np.ones(1), np.ones(1)), "ips")
    assert one.value == 1.0 and np.isnan(one.ci_low)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"propensity": np.array([0.0])}, "`propensity`"),
    ({"propensity": np.array([1.5])}, "`propensity`"),
    ({"target": np.array([2.0])}, "`target`"),
    ({"target": np.array([0.5, 0.5])}, "`target` has 2 values"),
])
def test_invalid_logs_are_rejected_naming_the_field(kwargs, message) -> None:
    base = {"reward": np.array([1.0]), "propensity": np.array([0.5]), "target": np.array([0.5])}
    with pytest.raises(ValueError, match=message):
        BanditLog(**{**base, **kwargs})
    with pytest.raises(ValueError, match="unknown `estimator`"):
        estimate(BanditLog(**base), "magic")
