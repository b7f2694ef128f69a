"""MLflow tracking and registry of trained rankers.

Each training is one MLflow run: parameters, metrics (never NaN: an undefined one is left out), plots,
the training data as a dataset input with a digest of its files (:func:`log_data`), the whole scoring
artifact (booster + calibrator + features) under ``nbm_artifact/``, and two logged models:

- ``model``, registered as ``nbm-ranker`` with alias ``challenger``: an ``mlflow.pyfunc`` model
  (``training/ranker_pyfunc.py``) whose ``predict`` gives nbm's calibrated score from a DataFrame of the
  named feature columns, with that signature and an input example;
- ``booster``, the LightGBM booster in MLflow's native flavour (``mlflow.lightgbm.load_model``), its input
  the float32 feature matrix.

The model version's tags: ``nbm_artifact`` (the artifact's URI: what ``nbm serve``, ``nbm recommend`` and
``nbm evaluate`` load and score with, never through pyfunc) and ``nbm_booster`` (the native booster's URI).
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import mlflow
import mlflow.lightgbm
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import ColSpec, Schema

from nbm.artifact import ScoringArtifact
from nbm.config import NbmConfig

MODEL_NAME = "nbm-ranker"
ARTIFACT_PATH = "nbm_artifact"
HELD_OUT_PATH = "nbm_artifact_held_out"
"""The fit a run's test figures judge, when the registered model was refitted on the whole log."""
PYFUNC_CODE = Path(__file__).with_name("ranker_pyfunc.py")
"""The registered model's code (MLflow's models from code)."""


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
    (:data:`HELD_OUT_PATH`, the version's tag ``nbm_artifact_held_out``) for ``nbm evaluate``.
    ``example``: training-set rows (at least the features; a funnel's also ``message_id``), the first five
    of which are the models' input examples."""
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_training needs an active MLflow run")
    mlflow.log_params({k: v for k, v in params.items()})
    mlflow.log_metrics(finite(metrics))
    for name, figure in figures.items():
        mlflow.log_figure(figure, name)
        import matplotlib.pyplot as plt     # (imported by training.metrics, which made the figure, on Agg)

        plt.close(figure)                   # pyplot keeps every figure it made until closed
    if held_out is not None:
        with tempfile.TemporaryDirectory() as tmp:
            held_out.save(tmp)
            mlflow.log_artifacts(tmp, artifact_path=HELD_OUT_PATH)
    with tempfile.TemporaryDirectory() as tmp:
        saved = artifact.save(Path(tmp) / ARTIFACT_PATH)
        mlflow.log_artifacts(str(saved), artifact_path=ARTIFACT_PATH)
        frame = pyfunc_frame(artifact, example.head(5))
        # Requirements stated, not inferred: inferring them imports the model in a subprocess (~4 s a model).
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(PYFUNC_CODE), artifacts={"nbm_artifact": str(saved)},
            signature=pyfunc_signature(artifact, example), input_example=frame, registered_model_name=MODEL_NAME,
            pip_requirements=pyfunc_requirements())
    matrix = artifact.matrix(example.head(5))
    native = mlflow.lightgbm.log_model(artifact.booster, name="booster", input_example=matrix,
                                       signature=infer_signature(matrix, artifact.booster.predict(matrix)),
                                       pip_requirements=mlflow.lightgbm.get_default_pip_requirements())
    version = str(info.registered_model_version)
    artifact_uri = f"runs:/{run.info.run_id}/{ARTIFACT_PATH}"
    client = MlflowClient()
    client.set_model_version_tag(MODEL_NAME, version, "nbm_artifact", artifact_uri)
    client.set_model_version_tag(MODEL_NAME, version, "nbm_booster", native.model_uri)
    if held_out is not None:
        client.set_model_version_tag(MODEL_NAME, version, "nbm_artifact_held_out",
                                     f"runs:/{run.info.run_id}/{HELD_OUT_PATH}")
    client.set_registered_model_alias(MODEL_NAME, alias, version)
    return LoggedModel(run.info.run_id, version, artifact_uri)


def finite(metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` without its undefined (NaN or infinite) figures: MLflow would chart a NaN as a value."""
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


def pyfunc_columns(artifact: ScoringArtifact) -> list[str]:
    """The registered model's required input columns: the features in the booster's order, then a funnel's
    ``message_id`` (its optional ``topic`` is not among them)."""
    return [*artifact.features, *(["message_id"] if artifact.followup is not None else [])]


def pyfunc_frame(artifact: ScoringArtifact, rows: pd.DataFrame) -> pd.DataFrame:
    """``rows``' model input as a caller sends it: the named columns as the feature pipeline makes them, but
    user attributes (pandas categoricals) as their labels, a missing one ``None``."""
    frame = rows[pyfunc_columns(artifact)].copy()
    for name in frame.columns:
        if name in artifact.categories or name == "message_id":
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame


def pyfunc_signature(artifact: ScoringArtifact, rows: pd.DataFrame) -> ModelSignature:
    """The registered model's input columns, named, typed after the training set's ``rows`` (user attributes
    and ``message_id`` strings, integer features — counts, codes of the pipeline's categories — longs,
    booleans booleans, the rest doubles; every column required, a value may be missing in a float one; a
    funnel's ``topic`` optional), and one output column, ``score``."""
    text = set(artifact.categories) | {"message_id"}

    def kind(name: str) -> str:
        dtype = rows[name].dtype
        if name in text or not pd.api.types.is_numeric_dtype(dtype):
            return "string"
        if pd.api.types.is_bool_dtype(dtype):
            return "boolean"
        return "long" if pd.api.types.is_integer_dtype(dtype) else "double"

    columns = [ColSpec(kind(name), name) for name in pyfunc_columns(artifact)]
    if artifact.followup is not None:
        columns.append(ColSpec("string", "topic", required=False))
    return ModelSignature(inputs=Schema(columns), outputs=Schema([ColSpec("double", "score")]))


def pyfunc_requirements() -> list[str]:
    """What the pyfunc model needs installed, pinned to this environment (and the ``nbm`` package itself,
    which is not on PyPI: docs/retraining.md)."""
    return [f"mlflow=={mlflow.__version__}", f"lightgbm=={lgb.__version__}", f"numpy=={np.__version__}",
            f"pandas=={pd.__version__}"]


def log_data(data: Path, rows: pd.DataFrame) -> str:
    """Log the training data as the run's dataset input (context ``training``): named after its directory,
    its source that directory, its digest :func:`data_digest` of the input files, its schema the training
    set's columns (``rows``). Returns the digest.

    A metadata-only dataset: MLflow's ``from_pandas`` would infer the schema from every row in Python
    (3.5 s on 20,000 sends; minutes on a million), where a thousand rows say the columns' types."""
    digest = data_digest(data)
    with warnings.catch_warnings():
        # MLflow's two hints here do not apply: a local path is "a LocalArtifactDatasetSource" under two of its
        # names, and the integer columns' hint is about a model's input schema.
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(Path(data).resolve()))
        schema = infer_signature(rows.head(1000)).inputs
    mlflow.log_input(MetaDataset(source, name=Path(data).resolve().name, digest=digest, schema=schema),
                     context="training")
    return digest


def data_digest(data: Path, length: int = 16) -> str:
    """SHA-256 (first ``length`` hex digits) of the data directory's tables (and its event parts,
    ``events/*.parquet``): their names and bytes, in name order.
    The same files give the same digest wherever they lie; a changed row changes it."""
    digest = hashlib.sha256()
    data = Path(data)
    from features.parts import event_parts

    for path in sorted(data.iterdir()) + event_parts(data):       # (a log in parts: its events/*.parquet too)
        if path.is_file() and path.suffix in (".parquet", ".csv"):
            digest.update(path.relative_to(data).as_posix().encode() + b"\0")
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
    return digest.hexdigest()[:length]


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

