"""Off-policy estimates against the simulated world's ground truth (issue 7)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.worlds import evaluate_on_simulated_world


@pytest.mark.slow
def test_off_policy_estimates_of_the_uniform_policy_against_the_true_value(tmp_path) -> None:
    """The rules-based log (ε = 0.1 uniform exploration) of 8,000 users × 42 days, the uniform policy as the
    target, valued on the test week's ~40,000 logged decisions against the value the world's ground truth
    gives the same decisions.

    Measured (this seed): truth 0.1997 per decision; DR 4.1 % off; SNIPS 16.7 % and IPS 18.4 % off, with an
    effective sample size of 5,966 — revenue is rare and heavy-tailed, so the importance-weighted means
    need a bigger log for 10 %: on 50,000 users × 60 days SNIPS is 6.0 % and DR 2.5 % off
    (``benchmarks/ope_accuracy.py``, docs/benchmarks.md). Here: DR within 10 %, and the truth inside
    SNIPS's 95 % bootstrap interval.
    """
    _, report = evaluate_on_simulated_world(tmp_path, n_users=8000, n_days=42, seed=21)
    uniform = report.values["uniform"]
    truth = uniform.true_value
    errors = {name: abs(value - truth) / truth for name, value in
              (("ips", uniform.ips), ("snips", uniform.snips), ("dr", uniform.dr))}
    assert np.isfinite(truth) and truth > 0 and uniform.ess > 2000
    assert errors["dr"] <= 0.10, (truth, errors)
    assert uniform.snips_low <= truth <= uniform.snips_high, (truth, uniform.snips_low, uniform.snips_high)
    assert errors["ips"] <= 0.30 and errors["snips"] <= 0.30, (truth, errors)     # coarse: measured 17–18 %
