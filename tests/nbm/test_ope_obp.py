"""nbm's IPS, SNIPS and DR equal the Open Bandit Pipeline's on the same inputs (pinned: obp cannot be imported
here, its dependencies do not fit nbm's pins).

The pinned numbers are obp 0.4.1's own code: the ``_estimate_round_rewards`` methods of
``InverseProbabilityWeighting``, ``SelfNormalizedInverseProbabilityWeighting`` and ``DoublyRobust`` in
``obp/ope/estimators.py`` of ``obp-0.4.1-py3-none-any.whl`` (``pip download obp==0.4.1 --no-deps``), taken out
of the file with ``ast`` and run with numpy on the seeded input of :func:`_obd_like`, each value the mean of
the rounds' terms as ``estimate_policy_value`` takes it. Their formulas, with
``w = action_dist[t, a_t, pos_t] / pscore_t``:

* IPW: ``mean(w r)``;
* SNIPW: ``mean(w r / mean(w))``;
* DR: ``mean(np.average(q̂[t, :, pos_t], weights=action_dist[t, :, pos_t]) + w (r − q̂[t, a_t, pos_t]))``.

The input has the Open Bandit Dataset's shape: 5 actions × 3 positions, the evaluation policy's and the
reward model's values position-wise, the logged propensity the behaviour policy's of the logged action in its
position. nbm's ``BanditLog`` of it: ``target`` = π_e(a_t | pos_t), ``q_logged`` = q̂(a_t, pos_t),
``q_target`` = Σ_a π_e(a | pos_t) q̂(a, pos_t) (π_e sums to 1 over actions, so it is obp's weighted average).
"""

from __future__ import annotations

import numpy as np
import pytest

from nbm.ope import BanditLog, doubly_robust, ips, snips

OBP_0_4_1 = {"ips": 0.23908832608346128, "snips": 0.2224312364936696, "dr": 0.20981307762530213}


def _obd_like(seed: int = 7, n: int = 200, k: int = 5, positions: int = 3):
    """(reward, action, position, pscore, action_dist, q_hat) in obp's shapes, seeded."""
    rng = np.random.default_rng(seed)

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    behaviour = softmax(rng.normal(size=(n, k, positions)) * 0.5)
    evaluation = softmax(rng.normal(size=(n, k, positions)) * 2.0)
    position = rng.integers(0, positions, n)
    cum = behaviour[np.arange(n), :, position].cumsum(axis=1)
    action = (rng.random((n, 1)) < cum).argmax(axis=1)
    reward = (rng.random(n) < 0.3).astype(float)
    q_hat = rng.uniform(0.1, 0.6, size=(n, k, positions))
    pscore = behaviour[np.arange(n), action, position]
    return reward, action, position, pscore, evaluation, q_hat


def _bandit_log() -> BanditLog:
    reward, action, position, pscore, evaluation, q_hat = _obd_like()
    rows = np.arange(len(reward))
    pi, q = evaluation[rows, :, position], q_hat[rows, :, position]      # (rounds, actions) at each round's position
    return BanditLog(reward, pscore, pi[rows, action], q[rows, action], (pi * q).sum(axis=1))


@pytest.mark.parametrize(("estimator", "name"), [(ips, "ips"), (snips, "snips"), (doubly_robust, "dr")])
def test_nbm_estimators_equal_obp_on_the_same_inputs(estimator, name) -> None:
    assert estimator(_bandit_log()) == pytest.approx(OBP_0_4_1[name], rel=1e-12)


def test_the_seeded_input_is_the_one_the_numbers_were_pinned_on() -> None:
    """A changed generator would make the pins meaningless rather than wrong: check the input itself."""
    reward, action, position, pscore, evaluation, q_hat = _obd_like()
    assert (reward.sum(), np.bincount(position).tolist()) == (48.0, [65, 71, 64])
    assert pscore.sum() == pytest.approx(48.26215511, rel=1e-8)
    assert np.allclose(evaluation.sum(axis=1), 1.0)
