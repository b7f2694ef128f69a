"""Offline metrics of a scoring artifact on the test window: ranking, calibration, importance (with plots)."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import log_loss, ndcg_score, roc_auc_score  # noqa: E402

from nbm.artifact import ScoringArtifact  # noqa: E402
from training.fit import target_of  # noqa: E402


@dataclass(frozen=True)
class Evaluation:
    """Metrics (name → value) and figures (file name → matplotlib figure)."""

    metrics: dict[str, float]
    figures: dict[str, plt.Figure]


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Mean |observed − predicted| over equal-count bins of the prediction, weighted by bin size."""
    if not len(p):
        return float("nan")
    order = np.argsort(p, kind="stable")
    error = 0.0
    for chunk in np.array_split(order, bins):
        if len(chunk):
            error += len(chunk) * abs(y[chunk].mean() - p[chunk].mean())
    return error / len(p)


def mean_ndcg(rows: pd.DataFrame, scores: np.ndarray, k: int) -> float:
    """Mean NDCG@k over ranking groups with at least two sends and some positive label."""
    frame = pd.DataFrame({"group": rows["group"].to_numpy(), "label": rows["label"].to_numpy(), "score": scores})
    values = [ndcg_score([g["label"].to_numpy()], [g["score"].to_numpy()], k=k)
              for _, g in frame.groupby("group", sort=False) if len(g) > 1 and g["label"].max() > 0]
    return float(np.mean(values)) if values else float("nan")


def evaluate(artifact: ScoringArtifact, test: pd.DataFrame, ks: tuple[int, ...] = (1, 3, 5),
             figures: bool = False) -> Evaluation:
    """AUC, log loss, ECE, NDCG@k and the spread of the predictions (standard deviation, distinct values: the
    promotion gate's near-constant check) on ``test``; a reliability plot and a feature-importance plot (with
    ``figures``)."""
    p = artifact.score(test)
    y = target_of(test, artifact.target)
    metrics = {
        "test_rows": float(len(test)),
        "test_positive_rate": float(y.mean()) if len(y) else float("nan"),
        "test_mean_prediction": float(p.mean()) if len(p) else float("nan"),
        "test_prediction_std": float(p.std()) if len(p) else float("nan"),
        "test_distinct_predictions": float(len(np.unique(p))),
        "test_auc": float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan"),
        "test_log_loss": float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[0, 1])) if len(y) else float("nan"),
        "test_ece": expected_calibration_error(p, y),
    }
    for k in ks:
        metrics[f"test_ndcg_at_{k}"] = mean_ndcg(test, p, k)
    if not figures:
        return Evaluation(metrics, {})
    return Evaluation(metrics, {"reliability.png": _reliability(p, y), "importance.png": _importance(artifact)})


def _reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> plt.Figure:
    """Observed rate against predicted probability in ``bins`` bins of equal counts, both axes in % and zoomed to
    the range the bins span (predictions are small: a 0–100 % axis would show a dot), each bin's count beside it."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    order = np.argsort(p, kind="stable")
    chunks = [c for c in np.array_split(order, bins) if len(c)]
    x = np.array([p[c].mean() for c in chunks]) * 100
    rate = np.array([y[c].mean() for c in chunks]) * 100
    top = max(float(x.max(initial=0)), float(rate.max(initial=0)), 1e-3) * 1.1
    ax.plot([0, top], [0, top], color="grey", lw=1, ls="--", label="perfect calibration")
    ax.plot(x, rate, marker="o", label="model (bins of equal counts)")
    for xi, ri, c in zip(x, rate, chunks):
        ax.annotate(f"n={len(c):,}", (xi, ri), textcoords="offset points", xytext=(4, -10), fontsize=7, color="#555")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("predicted probability, bin mean (%)")
    ax.set_ylabel("observed rate (%)")
    ax.set_title("Reliability on the test window")
    ax.legend(loc="upper left", frameon=False)
    fig.tight_layout()
    return fig


def _importance(artifact: ScoringArtifact, top: int = 25) -> plt.Figure:
    gain = artifact.booster.feature_importance(importance_type="gain")
    order = np.argsort(gain)[::-1][:top][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(order) + 1))
    ax.barh(np.asarray(artifact.features)[order], gain[order])
    ax.set_xlabel("total gain")
    ax.set_title("Feature importance")
    fig.tight_layout()
    return fig
