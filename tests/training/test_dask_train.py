"""``nbm train`` with ``dask_scheduler = "local"`` (issue 42): its training set is built on a LocalCluster of
worker processes, and the model it trains is the in-process one — the same held-out metrics (the training set
is equal row for row, and LightGBM is seeded: the tolerance is 1e-9). With ``[training] dask_min_rows`` below
the training window's size the boosters are fitted by ``lightgbm.dask`` on the cluster: distributed histograms
are not one process's, so the held-out metrics are bounded instead (AUC within 0.01, log loss within 2 %)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from nbm.cli import main

pytestmark = pytest.mark.slow


def _trained(tmp_path: Path, data: Path, name: str, scheduler: str, monkeypatch: pytest.MonkeyPatch,
             extra: str = "") -> dict:
    from mlflow import MlflowClient

    from nbm.config import load_config
    from training.tracking import MODEL_NAME, use_tracking

    home, config = tmp_path / name, tmp_path / f"{name}.toml"
    config.write_text(f'dask_scheduler = "{scheduler}"\n{extra}')
    monkeypatch.setenv("NBM_HOME", str(home))
    assert main(["train", "--config", str(config), "--data", str(data), "--no-compare", "--no-policy-eval",
                 "--valid-days", "5", "--test-days", "5"]) == 0
    use_tracking(load_config(config), "nbm")
    client = MlflowClient()
    run = client.get_run(client.get_model_version(MODEL_NAME, "1").run_id)
    return run.data.metrics


def test_train_on_a_local_cluster_gives_the_in_process_models_metrics(tmp_path: Path, monkeypatch, caplog) -> None:
    data = tmp_path / "world"
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    assert main(["simulate", "--out", str(data), "--users", "500", "--days", "28", "--seed", "6"]) == 0
    here = _trained(tmp_path, data, "in-process", "", monkeypatch)
    assert not any("built on the cluster" in r.getMessage() for r in caplog.records)
    with caplog.at_level(logging.INFO, logger="features.pipeline"):
        there = _trained(tmp_path, data, "cluster", "local", monkeypatch)
    assert sum("built on the cluster" in r.getMessage() for r in caplog.records) >= 2      # one per worker at least
    held_out = [k for k in here if k.startswith("test_")]
    assert "test_auc" in held_out
    for key in held_out:
        assert there[key] == pytest.approx(here[key], abs=1e-9), key


def test_boosters_fitted_with_lightgbm_dask_hold_the_in_process_models_quality(tmp_path: Path, monkeypatch,
                                                                               caplog) -> None:
    data = tmp_path / "world"
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    assert main(["simulate", "--out", str(data), "--users", "1500", "--days", "28", "--seed", "8"]) == 0
    here = _trained(tmp_path, data, "in-process", "", monkeypatch)
    with caplog.at_level(logging.INFO, logger="training.dask_fit"):
        there = _trained(tmp_path, data, "cluster", "local", monkeypatch, "[training]\ndask_min_rows = 0\n")
    fitted = [r.getMessage() for r in caplog.records if r.getMessage().startswith("lightgbm.dask:")]
    assert len(fitted) == 2, fitted                       # the held-out booster, then the refit on every window
    print(f"in-process: {here['test_auc']:.4f} AUC, {here['test_log_loss']:.5f} log loss, "
          f"{here['best_iteration']:.0f} trees; lightgbm.dask: {there['test_auc']:.4f}, {there['test_log_loss']:.5f}, "
          f"{there['best_iteration']:.0f}")
    assert there["test_auc"] == pytest.approx(here["test_auc"], abs=0.01)
    assert there["test_log_loss"] == pytest.approx(here["test_log_loss"], rel=0.02)
    assert there["best_iteration"] >= 2 and there["refit_rows"] > 0


def test_the_cut_is_where_lightgbms_early_stopping_stops() -> None:
    """:func:`valid_log_loss` against LightGBM's own evaluation tree by tree, and :func:`best_round` against
    :func:`lightgbm.early_stopping` on the same curve."""
    import lightgbm as lgb
    import numpy as np

    from training.dask_fit import best_round, valid_log_loss

    rng = np.random.default_rng(3)
    x = rng.normal(size=(6000, 6)).astype(np.float32)
    y = (rng.random(6000) < 1 / (1 + np.exp(-(x[:, 0] - 2 + 0.5 * rng.normal(size=6000))))).astype(int)
    params = {"objective": "binary", "learning_rate": 0.2, "num_leaves": 31, "min_data_in_leaf": 5, "verbose": -1,
              "seed": 1, "deterministic": True, "metric": "binary_logloss"}
    train, valid = lgb.Dataset(x[:4000], y[:4000]), lgb.Dataset(x[4000:], y[4000:])
    curve: dict = {}
    full = lgb.train(params, train, num_boost_round=150, valid_sets=[valid], callbacks=[lgb.record_evaluation(curve)])
    logged = np.array(curve["valid_0"]["binary_logloss"])
    assert np.allclose(valid_log_loss(full, x[4000:], y[4000:]), logged, rtol=1e-6, atol=1e-9)
    for patience in (3, 10, 25):
        stopped = lgb.train(params, lgb.Dataset(x[:4000], y[:4000]), num_boost_round=150,
                            valid_sets=[lgb.Dataset(x[4000:], y[4000:])],
                            callbacks=[lgb.early_stopping(patience, verbose=False)])
        assert best_round(logged, patience) == stopped.best_iteration, patience
    assert best_round(np.array([0.5, 0.4, 0.3]), 5) == 3          # never stopped: the best of every round
