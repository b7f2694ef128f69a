"""Fitting the ranker: a time split of the training set, LightGBM with early stopping, calibration.

The split is by time, never random: train on the oldest sends, stop early on the next window, keep the
newest for evaluation. Scores are calibrated on the validation window (isotonic, or sigmoid) into the
probability of the target outcome, because the decision policy multiplies them by message value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from nbm.attribution import GRADE
from features.declarations import CATEGORICAL, FEATURE_NAMES
from nbm.artifact import Calibrator, ScoringArtifact, library_versions
from nbm.errors import UnusableInputError

DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class TimeSplit:
    """Training-set rows by window: ``train`` < ``valid_start`` ≤ ``valid`` < ``test_start`` ≤ ``test``."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    valid_start: pd.Timestamp
    test_start: pd.Timestamp


def time_split(rows: pd.DataFrame, valid_days: float = 7, test_days: float = 7) -> TimeSplit:
    """Split a training set by send time: the last ``test_days`` for test, the ``valid_days`` before for validation."""
    end = rows["timestamp"].max()
    test_start = end - test_days * DAY
    valid_start = test_start - valid_days * DAY
    stamps = rows["timestamp"]
    parts = [rows[stamps < valid_start], rows[(stamps >= valid_start) & (stamps < test_start)], rows[stamps >= test_start]]
    for name, part in zip(("train", "valid", "test"), parts):
        if not len(part):
            raise UnusableInputError(f"the {name} window is empty: the log spans {rows['timestamp'].min()} – {end}; "
                             f"shorten `valid_days` ({valid_days}) or `test_days` ({test_days})")
    return TimeSplit(*(p.reset_index(drop=True) for p in parts), valid_start, test_start)


@dataclass(frozen=True)
class RankerParams:
    """LightGBM and calibration settings (the Optuna search space tunes some of them)."""

    objective: Literal["binary", "lambdarank"] = "binary"
    target: Literal["open", "click", "convert"] = "convert"
    calibration: Literal["isotonic", "sigmoid"] = "isotonic"
    num_leaves: int = 31
    learning_rate: float = 0.05
    min_data_in_leaf: int = 100
    feature_fraction: float = 0.9
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    num_boost_round: int = 400
    early_stopping_rounds: int = 40
    num_threads: int = 2
    seed: int = 0

    def lightgbm(self) -> dict[str, object]:
        params = {k: v for k, v in asdict(self).items()
                  if k not in ("target", "calibration", "num_boost_round", "early_stopping_rounds")}
        params.update(bagging_freq=1, deterministic=True, force_row_wise=True, verbose=-1)
        params["metric"] = "ndcg" if self.objective == "lambdarank" else "binary_logloss"
        if self.objective == "lambdarank":
            params["eval_at"] = [1, 3, 5]
        return params


def feature_columns(rows: pd.DataFrame) -> list[str]:
    return [*FEATURE_NAMES, *(c for c in rows.columns if c.startswith("attr_"))]


def _dataset(rows: pd.DataFrame, features: list[str], params: RankerParams, categories: dict[str, tuple[str, ...]],
             reference: lgb.Dataset | None = None) -> tuple[lgb.Dataset, pd.DataFrame]:
    if params.objective == "lambdarank":
        rows = rows.sort_values(["group", "timestamp"], kind="stable").reset_index(drop=True)
    artifact = ScoringArtifact(booster=None, calibrator=Calibrator.identity(), features=tuple(features),  # type: ignore[arg-type]
                               categories=categories)
    label = rows["label"].to_numpy() if params.objective == "lambdarank" else target_of(rows, params.target)
    categorical = [i for i, name in enumerate(features) if name in CATEGORICAL or name in categories]
    data = lgb.Dataset(artifact.matrix(rows), label=label, feature_name=features, categorical_feature=categorical,
                       reference=reference, free_raw_data=False)
    if params.objective == "lambdarank":
        data.set_group(rows.groupby("group", sort=False).size().to_numpy())
    return data, rows


def target_of(rows: pd.DataFrame, target: str) -> np.ndarray:
    """1 where the send reached ``target`` (graded label ≥ its grade)."""
    return (rows["label"].to_numpy() >= GRADE[target]).astype(np.int8)


def categories_of(rows: pd.DataFrame, features: list[str]) -> dict[str, tuple[str, ...]]:
    return {c: tuple(map(str, rows[c].cat.categories)) for c in features if isinstance(rows[c].dtype, pd.CategoricalDtype)}


def lightgbm_datasets(split: TimeSplit, features: list[str], params: RankerParams) -> tuple[lgb.Dataset, lgb.Dataset]:
    """LightGBM datasets of the training and validation windows (labels, groups, categoricals)."""
    categories = categories_of(split.train, features)
    train, _ = _dataset(split.train, features, params, categories)
    valid, _ = _dataset(split.valid, features, params, categories, reference=train)
    return train, valid


def fit_ranker(split: TimeSplit, params: RankerParams = RankerParams()) -> ScoringArtifact:
    """Fit LightGBM on ``split.train`` with early stopping on ``split.valid``; calibrate on ``split.valid``."""
    features = feature_columns(split.train)
    categories = categories_of(split.train, features)
    train, valid = lightgbm_datasets(split, features, params)
    booster = lgb.train(params.lightgbm(), train, num_boost_round=params.num_boost_round, valid_sets=[valid],
                        callbacks=[lgb.early_stopping(params.early_stopping_rounds, verbose=False)])
    uncalibrated = ScoringArtifact(booster, Calibrator.identity(), tuple(features), categories, params.objective,
                                   params.target, library_versions())
    raw = uncalibrated.raw_score(split.valid)
    calibrator = fit_calibrator(raw, target_of(split.valid, params.target), params.calibration)
    return ScoringArtifact(booster, calibrator, tuple(features), categories, params.objective, params.target,
                           library_versions())


def fit_calibrator(raw: np.ndarray, outcome: np.ndarray, method: str = "isotonic", grid: int = 256) -> Calibrator:
    """Raw scores → probabilities of ``outcome``, fitted on held-out rows."""
    if method == "isotonic":
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, outcome)
        return Calibrator(tuple(map(float, iso.X_thresholds_)), tuple(map(float, iso.y_thresholds_)))
    logistic = LogisticRegression(C=1e6).fit(raw.reshape(-1, 1), outcome)
    x = np.linspace(raw.min(), raw.max(), grid)
    return Calibrator(tuple(map(float, x)), tuple(map(float, logistic.predict_proba(x.reshape(-1, 1))[:, 1])))
