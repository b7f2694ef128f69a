"""`nbm train` end to end: an MLflow run in the embedded store, registered versions and aliases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nbm.cli import main


@pytest.mark.slow
def test_train_logs_registers_and_aliases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBM_HOME", str(tmp_path / "home"))
    data = tmp_path / "world"
    assert main(["simulate", "--out", str(data), "--users", "3000", "--days", "35", "--seed", "8"]) == 0
    assert main(["train", "--data", str(data), "--target", "click"]) == 0
    assert main(["train", "--data", str(data), "--target", "click", "--seed", "1", "--trials", "2"]) == 0
    assert (tmp_path / "home" / "optuna.db").exists()
    assert not (tmp_path / "mlruns").exists()  # artifacts live under NBM_HOME

    import mlflow
    from mlflow import MlflowClient

    from nbm.config import load_config
    from nbm.dataset import load_dataset
    from training.tracking import MODEL_NAME, load_registered, use_tracking

    config = load_config()
    use_tracking(config, "nbm")
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(MODEL_NAME, "challenger").version) == "2"
    champion = load_registered("champion")
    run = client.get_run(client.get_model_version_by_alias(MODEL_NAME, "champion").run_id)
    assert run.data.metrics["test_auc"] > 0.65
    assert {"test_log_loss", "test_ece", "best_iteration"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"reliability.png", "importance.png", "nbm_artifact"} <= artifacts

    from features.pipeline import build_training_set

    dataset, _ = load_dataset(data, config)
    rows = build_training_set(dataset, config).tail(500)
    p = champion.score(rows)
    assert ((p >= 0) & (p <= 1)).all() and np.std(p) > 0
    assert mlflow.get_tracking_uri().startswith("sqlite:///")
    challenger_run = client.get_model_version_by_alias(MODEL_NAME, "challenger").run_id
    experiment = client.get_experiment_by_name("nbm").experiment_id
    trials = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{challenger_run}'")
    assert len(trials) == 2 and all("valid_loss" in t.data.metrics for t in trials)


def test_train_on_too_short_a_log_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBM_HOME", str(tmp_path / "home"))
    data = tmp_path / "world"
    assert main(["simulate", "--out", str(data), "--users", "300", "--days", "10", "--seed", "2"]) == 0
    assert main(["train", "--data", str(data), "--valid-days", "7", "--test-days", "7"]) == 2
    err = capsys.readouterr().err
    assert "window is empty" in err and "Traceback" not in err
