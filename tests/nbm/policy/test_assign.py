"""Experiment assignment: deterministic, uniform, independent across experiments, stable under share changes."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from nbm.config import ExperimentConfig
from nbm.policy.assign import assign, units

USERS = [f"user-{i}" for i in range(40_000)]


def test_units_are_the_documented_hash() -> None:
    digest = hashlib.sha256(b"s\x00exp\x00alice").digest()[:8]
    assert units(["alice"], "s", "exp")[0] == int.from_bytes(digest, "big") / 2**64


def test_no_experiment_is_all_model() -> None:
    assert set(assign(USERS[:10], ExperimentConfig())) == {"model"}


def test_shares_hold_within_sampling_error() -> None:
    config = ExperimentConfig(name="e1", arms={"model": 0.5, "rules": 0.3, "holdout": 0.2})
    arms = assign(USERS, config)
    observed = [int((arms == a).sum()) for a in ("model", "rules", "holdout")]
    expected = [0.5 * len(USERS), 0.3 * len(USERS), 0.2 * len(USERS)]
    assert stats.chisquare(observed, expected).pvalue > 0.001
    # Uniform units: Kolmogorov–Smirnov against U(0, 1).
    assert stats.kstest(units(USERS, "nbm", "e1"), "uniform").pvalue > 0.001


def test_same_arm_in_another_process() -> None:
    config = ExperimentConfig(name="e1", salt="pepper")
    here = assign(USERS[:50], config).tolist()
    code = ("import json; from nbm.config import ExperimentConfig; from nbm.policy.assign import assign; "
            f"print(json.dumps(assign({USERS[:50]!r}, ExperimentConfig(name='e1', salt='pepper')).tolist()))")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout
    assert eval(there) == here     # noqa: S307 — our own JSON list of strings


def test_experiments_and_salts_are_independent() -> None:
    a = assign(USERS, ExperimentConfig(name="e1", arms={"model": 0.5, "holdout": 0.5}, control="holdout")) == "model"
    b = assign(USERS, ExperimentConfig(name="e2", arms={"model": 0.5, "holdout": 0.5}, control="holdout")) == "model"
    c = assign(USERS, ExperimentConfig(name="e1", salt="other", arms={"model": 0.5, "holdout": 0.5}, control="holdout")) == "model"
    for other in (b, c):
        table = [[(a & other).sum(), (a & ~other).sum()], [(~a & other).sum(), (~a & ~other).sum()]]
        assert stats.chi2_contingency(table).pvalue > 0.001


def test_changing_shares_moves_only_users_across_a_boundary() -> None:
    before = assign(USERS, ExperimentConfig(name="e1", arms={"model": 0.45, "rules": 0.45, "holdout": 0.10}))
    after = assign(USERS, ExperimentConfig(name="e1", arms={"model": 0.50, "rules": 0.40, "holdout": 0.10}))
    moved = before != after
    assert set(zip(before[moved], after[moved])) == {("rules", "model")}
    assert abs(moved.mean() - 0.05) < 0.01
    assert (before[after == "holdout"] == "holdout").all()


@pytest.mark.parametrize("arms", [{"model": 0.5, "rules": 0.6}, {"model": 1.0, "champion": 0.0}, {}])
def test_bad_shares_are_refused(arms) -> None:
    with pytest.raises(ValueError, match="`arms`"):
        ExperimentConfig(name="e", arms=arms, control="model")


def test_the_control_must_be_an_arm() -> None:
    with pytest.raises(ValueError, match="`control`"):
        ExperimentConfig(name="e", arms={"model": 0.5, "holdout": 0.5})
    assert np.isin(assign(USERS[:100], ExperimentConfig(name="e", arms={"random": 1.0}, control="random")),
                   ["random"]).all()
