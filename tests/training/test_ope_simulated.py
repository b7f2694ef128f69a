"""Off-policy estimates against the simulated world's ground truth (issue 7)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.worlds import evaluate_on_simulated_world


@pytest.mark.slow
def test_off_policy_estimates_of_the_uniform_policy_against_the_true_value(tmp_path) -> None:
    """The rules-based log (ε = 0.1 uniform exploration) of 8,000 users × 42 days, the uniform policy as the
    target, valued on the test week's logged decisions whose outcomes are all in the log (~39,000; the
    last ~16,000, whose conversions could still come after the log's end, are held back) against the value
    the world's ground truth gives the same decisions.

    Measured (this seed): truth 0.2019 per decision; IPS 7.3 %, SNIPS 5.7 %, DR 4.3 % off, effective
    sample size 4,243. Before the censoring cut the same estimators were 17–18 % low (IPS, SNIPS): the
    last day's conversions were missing from the log but not from the truth. This is one draw: over seeds
    21–25 (this setup, one seed at a time) the IPS errors were +7.3, −1.3, +4.6, −14.6, −9.6 %
    (DR +4.3 … −15.5 %) — revenue is rare and heavy-tailed, so at this log size the sampling error alone
    is ~9 % (SNIPS's 95 % interval ±40 %);
    ``benchmarks/ope_accuracy.py`` measures the bar on 50,000 users × 60 days (docs/benchmarks.md).
    """
    _, report = evaluate_on_simulated_world(tmp_path, n_users=8000, n_days=42, seed=21)
    uniform = report.values["uniform"]
    truth = uniform.true_value
    errors = {name: abs(value - truth) / truth for name, value in
              (("ips", uniform.ips), ("snips", uniform.snips), ("dr", uniform.dr))}
    assert np.isfinite(truth) and truth > 0 and uniform.ess > 2000
    assert report.logged.censored > 0 and 24 <= report.logged.horizon_hours <= 7 * 24
    assert uniform.snips_low <= truth <= uniform.snips_high, (truth, uniform.snips_low, uniform.snips_high)
    assert max(errors.values()) <= 0.10, (truth, errors)
