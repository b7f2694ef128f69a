"""`nbm train` end to end: an MLflow run in the embedded store, registered versions and aliases."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from nbm.cli import main


@pytest.mark.slow
def test_train_logs_registers_and_aliases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBM_HOME", str(tmp_path / "home"))
    data = tmp_path / "world"
    assert main(["simulate", "--out", str(data), "--users", "2000", "--days", "35", "--seed", "8"]) == 0
    assert main(["train", "--data", str(data), "--target", "click"]) == 0
    assert main(["train", "--data", str(data), "--target", "click", "--seed", "1", "--trials", "2", "--no-compare"]) == 0
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
    assert str(client.get_model_version_by_alias(MODEL_NAME, "challenger").version) == "2"
    # The gate: version 2 is champion only if its run says the gate promoted it, with the figures logged.
    second = client.get_run(client.get_model_version(MODEL_NAME, "2").run_id)
    champion_version = str(client.get_model_version_by_alias(MODEL_NAME, "champion").version)
    assert champion_version == ("2" if second.data.tags["nbm.gate"] == "promoted" else "1")
    assert second.data.tags["nbm.champion_before"] == "1" and second.data.tags["nbm.gate_forced"] == "false"
    assert {"policy_model_snips", "policy_model_dr", "policy_model_ess", "policy_uniform_dr", "policy_rules_true_value",
            "policy_model_true_value"} <= set(second.data.metrics)
    # The DR comparison is made only on policies that enough logged decisions support ([training] min_policy_ess).
    if min(second.data.metrics["policy_model_ess"], second.data.metrics["policy_champion_ess"]) < 100:
        assert second.data.tags["nbm.gate"] == "kept_champion" and "gate_dr_difference" not in second.data.metrics
        assert "effective sample size" in second.data.tags["nbm.gate_reason"]
    else:
        assert {"gate_dr_difference", "gate_dr_difference_low"} <= set(second.data.metrics)
    first = client.get_run(client.get_model_version(MODEL_NAME, "1").run_id)
    assert first.data.tags["nbm.gate"] == "promoted"
    # The objectives compared (a funnel of the click is the click's binary model: two candidates), each a nested
    # run with its value concordance, the table in the parent; the objective asked for is the one trained.
    experiment_id = client.get_experiment_by_name("nbm").experiment_id
    compared = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{first.info.run_id}'")
    assert sorted(r.info.run_name for r in compared) == ["objective-binary-click", "objective-lambdarank-click"]
    assert all("value_concordance" in r.data.metrics for r in compared)
    assert first.data.tags["nbm.objective"] == "binary" and "nbm.objective_chosen" in first.data.tags
    assert "objective_comparison.json" in {a.path for a in client.list_artifacts(first.info.run_id)}
    assert 0.5 < first.data.metrics["value_concordance"] <= 1.0
    assert first.data.tags["nbm.gate_reason"].startswith("no champion yet")
    truth = {p: first.data.metrics[f"policy_{p}_true_value"] for p in ("model", "uniform", "popular", "rules")}
    assert truth["model"] > 2 * truth["uniform"] and truth["model"] > 1.3 * truth["rules"]
    # --force-promote overrides the gate, and says so.
    assert main(["train", "--data", str(data), "--target", "click", "--seed", "2", "--no-policy-eval",
                 "--force-promote"]) == 0
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "3"
    assert str(client.get_model_version_by_alias(MODEL_NAME, "challenger").version) == "3"
    third = client.get_run(client.get_model_version(MODEL_NAME, "3").run_id)
    assert third.data.tags["nbm.gate_forced"] == "true" and third.data.tags["nbm.gate"] == "promoted"
    champion = load_registered("champion")
    run = client.get_run(client.get_model_version_by_alias(MODEL_NAME, "champion").run_id)
    assert run.info.run_id == third.info.run_id
    assert run.data.metrics["test_auc"] > 0.65
    assert {"test_log_loss", "test_ece", "best_iteration"} <= set(run.data.metrics)
    # The model served was refitted on every window with the held-out model's trees count.
    m = run.data.metrics
    assert m["refit_rows"] == m["train_rows"] + m["valid_rows"] + m["test_rows"] > m["train_rows"]
    assert champion.booster.current_iteration() == int(m["best_iteration"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"reliability.png", "importance.png", "nbm_artifact", "nbm_artifact_held_out"} <= artifacts
    # A test window that reaches into what even the champion's held-out fit learned from: the gate says so.
    assert main(["train", "--data", str(data), "--target", "click", "--no-compare", "--valid-days", "5",
                 "--test-days", "10"]) in (0, 1)
    fourth = client.get_run(client.get_model_version(MODEL_NAME, "4").run_id)
    assert fourth.data.tags.get("nbm.champion_in_sample") == "true"
    assert second.data.tags.get("nbm.champion_in_sample") is None       # same windows: its held-out fit was not

    from features.pipeline import build_training_set

    dataset, _ = load_dataset(data, config)
    rows = build_training_set(dataset, config).tail(500)
    p = champion.score(rows)
    assert ((p >= 0) & (p <= 1)).all() and np.std(p) > 0
    assert mlflow.get_tracking_uri().startswith("sqlite:///")
    challenger_run = second.info.run_id  # the tuned training
    experiment = client.get_experiment_by_name("nbm").experiment_id
    trials = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{challenger_run}'")
    assert len(trials) == 2 and all("valid_loss" in t.data.metrics for t in trials)

    # Issue 43: the registered model is a pyfunc model whose predict, on named columns as the pipeline makes
    # them, is the service's calibrated score (not the booster's); the native booster is loadable beside it.
    from serving.registry import load_model

    engine = load_model(f"models:/{MODEL_NAME}@champion", config).artifact     # what `nbm serve` scores with
    _assert_pyfunc_scores_as_the_engine(f"models:/{MODEL_NAME}@champion", engine, rows)
    import mlflow.lightgbm

    native = mlflow.lightgbm.load_model(client.get_model_version_by_alias(MODEL_NAME, "champion").tags["nbm_booster"])
    np.testing.assert_allclose(native.predict(engine.matrix(rows)), engine.raw_score(rows), rtol=0, atol=1e-9)
    # Runs say objective, target and data (the latest send's day), the data a dataset input with its digest.
    from training.tracking import data_digest

    for logged in (first, second, third):
        assert re.fullmatch(r"train-binary-click-world-\d{4}-\d{2}-\d{2}", logged.info.run_name)
        (given,) = logged.inputs.dataset_inputs
        assert (given.dataset.name, given.dataset.digest) == ("world", data_digest(data))
        assert logged.data.tags["nbm.data_digest"] == data_digest(data)


def _assert_pyfunc_scores_as_the_engine(uri: str, engine, rows) -> None:
    """``mlflow.pyfunc.load_model(uri).predict`` of ``rows``' named columns equals ``engine.score`` (to 1e-6)."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(uri)
    columns = [*engine.features, *(["message_id"] if engine.followup is not None else [])]
    assert model.metadata.get_input_schema().required_input_names() == columns
    frame = rows[columns].astype({name: object for name in engine.categories})
    np.testing.assert_allclose(model.predict(frame), engine.score(rows), rtol=0, atol=1e-6)
    assert np.abs(model.predict(frame) - engine.raw_score(rows)).max() > 1e-3     # the issue: the booster's score


def test_train_on_too_short_a_log_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBM_HOME", str(tmp_path / "home"))
    data = tmp_path / "world"
    assert main(["simulate", "--out", str(data), "--users", "300", "--days", "10", "--seed", "2"]) == 0
    assert main(["train", "--data", str(data), "--valid-days", "7", "--test-days", "7"]) == 2
    err = capsys.readouterr().err
    assert "window is empty" in err and "Traceback" not in err


def _without_conversions(world: Path, out: Path) -> Path:
    """A copy of ``world`` whose events hold no `convert`: a target without a single positive."""
    import shutil

    import pandas as pd

    shutil.copytree(world, out)
    events = pd.read_parquet(out / "events.parquet")
    events[events["event_type"] != "convert"].to_parquet(out / "events.parquet")
    return out


@pytest.mark.slow
def test_train_never_promotes_a_degenerate_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The issue-39 failure: a target with no positives trained to AUC NaN and was made champion. Now the
    version is logged and tagged why, no alias moves, the reason is printed and `nbm train` exits 1 —
    with no champion, with a champion, and with --force-promote."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    world = tmp_path / "world"
    assert main(["simulate", "--out", str(world), "--users", "800", "--days", "30", "--seed", "5"]) == 0
    barren = _without_conversions(world, tmp_path / "barren")
    windows = ["--valid-days", "5", "--test-days", "5"]
    capsys.readouterr()

    assert main(["train", "--data", str(barren), *windows]) == 1
    err = capsys.readouterr().err
    said = " ".join(err.split())
    assert "nbm-ranker version 1 is degenerate and was not promoted" in said
    assert "no positive of the target `convert` in the training window" in said
    assert "held-out AUC n/a" in said       # (the funnel's click model learned: no best_iteration reason)
    assert "no champion: `nbm serve` has nothing to serve until a model passes the gate" in said
    assert not re.search(r"\bnan\b", err, re.IGNORECASE)     # no undefined figure printed as a number
    assert "Traceback" not in err

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from nbm.config import load_config
    from training.tracking import MODEL_NAME, use_tracking

    use_tracking(load_config(), "nbm")
    client = MlflowClient()
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(MODEL_NAME, "champion")
    first = client.get_model_version(MODEL_NAME, "1")
    tags = client.get_run(first.run_id).data.tags
    assert tags["nbm.gate"] == "degenerate" and "no positive of the target `convert`" in tags["nbm.gate_reason"]
    assert first.tags["nbm_gate"] == "degenerate"

    # A healthy model becomes champion; a degenerate one after it leaves it there, even when forced.
    assert main(["train", "--data", str(world), "--target", "click", "--no-policy-eval", *windows]) == 0
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "2"
    capsys.readouterr()
    assert main(["train", "--data", str(barren), "--no-policy-eval", "--force-promote", *windows]) == 1
    said = " ".join(capsys.readouterr().err.split())
    assert "--force-promote does not promote a degenerate model" in said and "the champion stays version 2" in said
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "2"
    assert client.get_run(client.get_model_version(MODEL_NAME, "3").run_id).data.tags["nbm.gate"] == "degenerate"

    # A funnel's pyfunc model multiplies by its message's P(convert | click), as the service does; the digest
    # tells the two data directories apart.
    from features.pipeline import build_training_set
    from nbm.dataset import load_dataset
    from serving.registry import load_model

    config = load_config()
    rows = build_training_set(load_dataset(barren, config)[0], config).tail(300)
    funnel = load_model(f"models:/{MODEL_NAME}/1", config).artifact
    assert funnel.followup is not None
    _assert_pyfunc_scores_as_the_engine(f"models:/{MODEL_NAME}/1", funnel, rows)
    digests = {client.get_run(client.get_model_version(MODEL_NAME, v).run_id).inputs.dataset_inputs[0].dataset.digest
               for v in ("1", "2")}
    assert len(digests) == 2
