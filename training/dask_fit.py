"""Boosting on a Dask cluster: ``lightgbm.dask`` for training sets of ``[training] dask_min_rows`` rows or more.

When ``nbm train`` runs with a cluster (``dask_scheduler``, :mod:`nbm.cluster`) and the training window holds at
least ``[training] dask_min_rows`` sends, the booster of a ``binary`` or ``funnel`` objective is fitted by
LightGBM's own distributed training (:class:`lightgbm.dask.DaskLGBMClassifier`: data-parallel, one LightGBM
process per worker, its chunks of the training matrix on each); smaller sets, ``lambdarank`` (whose groups
must not be split across workers) and the risk model are fitted in-process as before.

Early stopping. LightGBM's early-stopping callback is not supported on Dask, so the booster is fitted for
``num_boost_round`` trees and cut afterwards where in-process early stopping would have stopped: the validation
window's log loss is computed tree by tree here, on the whole window (LightGBM on Dask reports only the
validation rows the first worker holds), and the booster keeps the trees up to the best round before
``early_stopping_rounds`` rounds without improvement — the rule of :func:`lightgbm.early_stopping`.

The result is a plain :class:`lightgbm.Booster`: everything after (calibration, the artifact, the refit, the
compiled forest, MLflow) is unchanged. Distributed histograms are not bit-identical to one process's, so the
model is not either; ``tests/training/test_dask_train.py`` bounds the difference in held-out metrics.
"""

from __future__ import annotations

import logging

import lightgbm as lgb
import numpy as np

log = logging.getLogger(__name__)

DASK_OBJECTIVES = ("binary", "funnel")
"""Objectives whose booster may be fitted on the cluster (a funnel's booster is a binary model of the click)."""


def on_cluster(client, rows: int, min_rows: int, objective: str) -> bool:
    """Whether a booster of ``objective`` on ``rows`` training rows is fitted on the cluster of ``client``."""
    return client is not None and objective in DASK_OBJECTIVES and rows >= min_rows


def fit_on_cluster(client, params: dict, x: np.ndarray, y: np.ndarray, features: list[str], categorical: list[int],
                   rounds: int, valid: tuple[np.ndarray, np.ndarray] | None = None,
                   patience: int = 0) -> lgb.Booster:
    """A booster of ``params`` fitted on the cluster of ``client`` on ``x`` (float32, rows × ``features``) and
    the 0/1 labels ``y``, ``rounds`` trees; with ``valid`` (its matrix and labels), cut at the round in-process
    early stopping with ``patience`` would keep (see the module docstring)."""
    import dask.array as da
    from lightgbm.dask import DaskLGBMClassifier

    workers = max(1, len(client.scheduler_info().get("workers", {})))
    chunk = max(1, -(-len(y) // workers))
    data = da.from_array(np.ascontiguousarray(x), chunks=(chunk, x.shape[1]))
    label = da.from_array(np.asarray(y), chunks=(chunk,))
    # LightGBM's own names, spelled as its scikit-learn interface spells them (no alias warnings); every worker
    # uses its own threads.
    names = {"min_data_in_leaf": "min_child_samples", "feature_fraction": "colsample_bytree",
             "bagging_fraction": "subsample", "bagging_freq": "subsample_freq", "lambda_l2": "reg_lambda",
             "seed": "random_state"}
    settings = {names.get(k, k): v for k, v in params.items() if k not in ("metric", "num_threads", "objective")}
    model = DaskLGBMClassifier(client=client, objective="binary", n_estimators=rounds, **settings)
    model.fit(data, label, feature_name=features, categorical_feature=categorical)
    booster = model.booster_
    log.info("lightgbm.dask: %d trees on %d rows over %d workers", booster.current_iteration(), len(y), workers)
    if valid is None or not patience:
        booster.best_iteration = 0            # as lgb.train leaves it without early stopping: every tree is used
        return booster
    best = best_round(valid_log_loss(booster, *valid), patience)
    cut = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    cut.best_iteration = best                 # as early stopping leaves it
    return cut


def valid_log_loss(booster: lgb.Booster, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The binary log loss of ``booster``'s first k trees on (``x``, ``y``), for every k."""
    raw = np.zeros(len(y))
    out = np.empty(booster.current_iteration())
    eps = 1e-15
    for k in range(len(out)):
        raw += booster.predict(x, start_iteration=k, num_iteration=1, raw_score=True)
        p = np.clip(1.0 / (1.0 + np.exp(-raw)), eps, 1 - eps)
        out[k] = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    return out


def best_round(loss: np.ndarray, patience: int) -> int:
    """The number of trees :func:`lightgbm.early_stopping` with ``patience`` keeps on this validation curve: the
    best round seen before ``patience`` rounds in a row without a strict improvement (at least 1)."""
    best, best_at = np.inf, 0
    for k, value in enumerate(loss):
        if value < best:
            best, best_at = value, k
        elif k - best_at >= patience:
            break
    return best_at + 1
