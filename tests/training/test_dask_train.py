"""``nbm train`` with ``dask_scheduler = "local"`` (issue 42): its training set is built on a LocalCluster of
worker processes, and the model it trains is the in-process one — the same held-out metrics (the training set
is equal row for row, and LightGBM is seeded: the tolerance is 1e-9)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from nbm.cli import main

pytestmark = pytest.mark.slow


def _trained(tmp_path: Path, data: Path, name: str, scheduler: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    from mlflow import MlflowClient

    from nbm.config import load_config
    from training.tracking import MODEL_NAME, use_tracking

    home, config = tmp_path / name, tmp_path / f"{name}.toml"
    config.write_text(f'dask_scheduler = "{scheduler}"\n')
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
