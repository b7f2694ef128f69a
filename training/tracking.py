"""MLflow tracking and registry of trained rankers.

Each training is one MLflow run: parameters, metrics, plots, the LightGBM booster logged natively as the
run's model (with signature and input example) and registered as ``nbm-ranker`` with alias
``challenger``, and the whole scoring artifact (booster + calibrator + features) under ``nbm_artifact/``.
The model version carries a tag ``nbm_artifact`` with that artifact's URI.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.lightgbm
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature

from nbm.artifact import ScoringArtifact
from nbm.config import NbmConfig

MODEL_NAME = "nbm-ranker"
ARTIFACT_PATH = "nbm_artifact"
HELD_OUT_PATH = "nbm_artifact_held_out"
"""The fit a run's test figures judge, when the registered model was refitted on the whole log."""


@dataclass(frozen=True)
class LoggedModel:
    run_id: str
    version: str
    artifact_uri: str


def use_tracking(config: NbmConfig, experiment: str) -> None:
    """Point MLflow at the configured store and experiment.

    With the embedded SQLite store, the experiment's artifacts live under ``home/mlartifacts`` (MLflow's
    own default would be ``./mlruns`` in whatever directory the command runs in).
    """
    local = config.mlflow_tracking_uri.startswith("sqlite:///")
    if local:
        Path(config.mlflow_tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(config.mlflow_tracking_uri)
    if local and mlflow.get_experiment_by_name(experiment) is None:
        location = (config.home.expanduser().resolve() / "mlartifacts" / experiment).as_uri()
        mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)


def log_training(artifact: ScoringArtifact, example: pd.DataFrame, params: dict[str, object],
                 metrics: dict[str, float], figures: dict, alias: str = "challenger",
                 held_out: ScoringArtifact | None = None) -> LoggedModel:
    """Log one training into the active MLflow run and register the model under ``alias``; ``held_out``, the
    fit the run's figures judge when the registered one was refitted on the whole log, goes beside it
    (:data:`HELD_OUT_PATH`, the version's tag ``nbm_artifact_held_out``) for ``nbm evaluate``."""
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_training needs an active MLflow run")
    mlflow.log_params({k: v for k, v in params.items()})
    mlflow.log_metrics({k: v for k, v in metrics.items() if pd.notna(v)})
    for name, figure in figures.items():
        mlflow.log_figure(figure, name)
    with tempfile.TemporaryDirectory() as tmp:
        artifact.save(tmp)
        mlflow.log_artifacts(tmp, artifact_path=ARTIFACT_PATH)
    if held_out is not None:
        with tempfile.TemporaryDirectory() as tmp:
            held_out.save(tmp)
            mlflow.log_artifacts(tmp, artifact_path=HELD_OUT_PATH)
    matrix = artifact.matrix(example)
    signature = infer_signature(matrix, artifact.score(example))
    # The booster's requirements are the flavour's own (lightgbm pinned to this version): stating them spares
    # MLflow inferring them by importing the model in a subprocess (~4 s of every `nbm train`).
    info = mlflow.lightgbm.log_model(artifact.booster, name="model", signature=signature, input_example=matrix[:5],
                                     registered_model_name=MODEL_NAME,
                                     pip_requirements=mlflow.lightgbm.get_default_pip_requirements())
    version = str(info.registered_model_version)
    artifact_uri = f"runs:/{run.info.run_id}/{ARTIFACT_PATH}"
    client = MlflowClient()
    client.set_model_version_tag(MODEL_NAME, version, "nbm_artifact", artifact_uri)
    if held_out is not None:
        client.set_model_version_tag(MODEL_NAME, version, "nbm_artifact_held_out",
                                     f"runs:/{run.info.run_id}/{HELD_OUT_PATH}")
    client.set_registered_model_alias(MODEL_NAME, alias, version)
    return LoggedModel(run.info.run_id, version, artifact_uri)


def load_registered(alias: str = "champion", held_out_before: pd.Timestamp | None = None) -> ScoringArtifact:
    """The scoring artifact of the model version behind ``alias``; with ``held_out_before``, when that
    model learned from sends at or after it (refitted on a log that reaches into the window to judge it
    on), the fit its own training held out, which learned from less of it (the caller checks
    :meth:`~nbm.artifact.ScoringArtifact.learned_from` for what is left)."""
    client = MlflowClient()
    version = client.get_model_version_by_alias(MODEL_NAME, alias)
    uri = version.tags.get("nbm_artifact") or f"runs:/{version.run_id}/{ARTIFACT_PATH}"
    artifact = ScoringArtifact.load(mlflow.artifacts.download_artifacts(uri))
    held_out = version.tags.get("nbm_artifact_held_out")
    if held_out_before is not None and held_out and artifact.learned_from(held_out_before):
        # The held-out fit learned from less of the window, if not from none of it (the caller checks).
        return ScoringArtifact.load(mlflow.artifacts.download_artifacts(held_out))
    return artifact

