"""``nbm train``: load → validate → features → time split → LightGBM → calibration → MLflow run + registry.

With ``--trials N`` a resumable Optuna study (``training.tune``) picks the parameters first.

Still to come (issue 5): the off-policy value of the model's decision policy and
of the baselines, the true value on a simulated world, and the promotion gate that moves ``champion``.
Until the gate exists, the first model trained becomes ``champion`` (there is nothing to compare with);
later ones are registered as ``challenger`` only.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from rich.console import Console
from rich.table import Table

from features.pipeline import build_training_set
from nbm.config import NbmConfig
from nbm.dataset import load_dataset
from nbm.errors import UnusableInputError
from training.evaluate import evaluate
from training.fit import RankerParams, fit_ranker, time_split
from training.tracking import MODEL_NAME, LoggedModel, log_training, use_tracking
from training.tune import tune

PARTITION_EVENTS = 3_000_000
"""Above this many events, the training set is built one user partition at a time (bounded memory)."""


@dataclass(frozen=True)
class TrainResult:
    logged: LoggedModel
    metrics: dict[str, float]
    promoted: bool


def run_training(data: Path, config: NbmConfig, params: RankerParams, experiment: str = "nbm",
                 valid_days: float = 7, test_days: float = 7, trials: int = 0,
                 console: Console | None = None) -> TrainResult:
    console = console or Console(stderr=True)
    began = time.perf_counter()
    with console.status("loading and validating the data…"):
        dataset, report = load_dataset(data, config)
    if not len(dataset.events):
        raise UnusableInputError(f"no valid events in {data}")
    partitions = max(1, -(-len(dataset.events) // PARTITION_EVENTS))
    with console.status(f"building the training set ({len(dataset.events):,} events, {partitions} partition(s))…"):
        rows = build_training_set(dataset, config, partitions)
    split = time_split(rows, valid_days, test_days)
    use_tracking(config, experiment)
    with mlflow.start_run(run_name=f"train-{params.objective}"):
        mlflow.set_tags({"nbm.data": str(data), "nbm.valid_start": str(split.valid_start),
                         "nbm.test_start": str(split.test_start), "nbm.trials": str(trials)})
        if trials > 0:
            storage = f"sqlite:///{(config.home.expanduser() / 'optuna.db').as_posix()}"
            study_name = f"{experiment}-{params.objective}-{params.target}-seed{params.seed}"
            with console.status(f"tuning with Optuna: {trials} trials (study {study_name!r}, resumable)…"):
                params, study = tune(split, params, trials, storage, study_name)
            mlflow.log_metric("optuna_best_valid_loss", study.best_value)
        with console.status(f"fitting LightGBM ({params.objective}, {len(split.train):,} training rows)…"):
            artifact = fit_ranker(split, params)
        evaluation = evaluate(artifact, split.test)
        metrics = {**evaluation.metrics, "best_iteration": float(artifact.booster.best_iteration or 0),
                   "train_rows": float(len(split.train)), "valid_rows": float(len(split.valid)),
                   "validation_problems": float(len(report.problems)), "seconds": time.perf_counter() - began}
        with console.status("logging to MLflow…"):
            logged = log_training(artifact, split.test.head(200), asdict(params), metrics, evaluation.figures)
    promoted = _first_becomes_champion(logged.version)
    _summary(console, logged, metrics, promoted, config)
    return TrainResult(logged, metrics, promoted)


def registered_champion(config: NbmConfig, experiment: str = "nbm") -> str | None:
    """Version of ``nbm-ranker`` behind the ``champion`` alias, or ``None``."""
    use_tracking(config, experiment)
    try:
        return str(MlflowClient().get_model_version_by_alias(MODEL_NAME, "champion").version)
    except MlflowException:
        return None


def _first_becomes_champion(version: str) -> bool:
    client = MlflowClient()
    try:
        client.get_model_version_by_alias(MODEL_NAME, "champion")
        return False
    except MlflowException:
        client.set_registered_model_alias(MODEL_NAME, "champion", version)
        return True


def _summary(console: Console, logged: LoggedModel, metrics: dict[str, float], promoted: bool, config: NbmConfig) -> None:
    table = Table(title="nbm train", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for name in ("train_rows", "valid_rows", "test_rows", "best_iteration", "test_auc", "test_log_loss", "test_ece",
                 "test_ndcg_at_3", "test_positive_rate", "test_mean_prediction", "seconds"):
        value = metrics.get(name, float("nan"))
        table.add_row(name, f"{value:,.0f}" if name.endswith(("rows", "iteration")) else f"{value:.4f}")
    table.add_row("run id", logged.run_id)
    table.add_row("model", f"{MODEL_NAME} version {logged.version} (alias challenger"
                           f"{', champion: first model' if promoted else ''})")
    console.print(table)
    console.print(f"open the runs: mlflow ui --backend-store-uri {config.mlflow_tracking_uri} --host 127.0.0.1")
