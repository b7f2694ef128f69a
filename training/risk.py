"""The cost side of a send, learned from the log: P(unsubscribe | send) and what an unsubscribe costs.

A send can lose a channel: the person unsubscribes (or the address bounces). The decision weighs each
candidate's expected value against ``[arbitration] unsubscribe_cost`` × P(unsubscribe) and sends nothing
when no candidate is worth its risk (``decision.scoring``). Here:

* **labels** — an unsubscribe is attributed to the send it answers: the latest send before it that carries
  its decision id on its channel, else
  the person's latest send on the same channel within ``[attribution] open_click_hours`` before it;
* **P(unsubscribe)** — a small LightGBM (:data:`RISK_PARAMS`) on the ranker's features, which hold what
  drives unsubscribes (recent contacts per channel and overall, hours since the last contact, the person's
  affinity to the topic, the channel, the local hour), early-stopped on the validation window and calibrated
  there (isotonic). With fewer than :data:`MIN_POSITIVES` unsubscribes in either window the model would be
  noise: each channel's rate, shrunk toward the overall rate by a learned strength, is the risk instead;
* **auto cost** — with ``unsubscribe_cost = "auto"`` an unsubscribe costs what the channel earned from one
  person in the log, scaled to ``[arbitration] unsubscribe_horizon_days``: the revenue attributed to sends on
  the channel / the people sent anything on it / the log's days × the horizon. A brand that knows its
  number (lifetime value of an email address) sets it.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.declarations import CATEGORICAL
from nbm.artifact import Calibrator, Risk, ScoringArtifact
from nbm.config import NbmConfig
from nbm.dataset import Dataset
from nbm.shrinkage import shrink, strength_or
from training.fit import fit_calibrator

MIN_POSITIVES = 30
"""Unsubscribes needed in the training and in the validation window to fit the risk model."""
RISK_PARAMS = dict(objective="binary", learning_rate=0.05, num_leaves=7, min_data_in_leaf=200, feature_fraction=0.9,
                   bagging_fraction=0.8, bagging_freq=1, lambda_l2=10.0, deterministic=True, force_row_wise=True,
                   verbose=-1, num_threads=2)
ROUNDS, PATIENCE = 150, 20
DAY_NS = 86_400 * 10**9
LABEL = "label_unsubscribed"
"""A training-set column of :func:`unsubscribed`, when the rows were built where the events were (a log in parts:
:func:`risk_columns`); otherwise the labels are computed from the dataset's events."""


def unsubscribed(dataset: Dataset, rows: pd.DataFrame, config: NbmConfig) -> np.ndarray:
    """Per training-set row (a logged send, by ``event_id``): 1 when an unsubscribe is attributed to it."""
    events = dataset.events
    unsubs = events[events["event_type"] == "unsubscribe"]
    out = np.zeros(len(rows), dtype=np.int8)
    if not len(unsubs) or not len(rows):
        return out
    sends = events[events["event_type"] == "send"]
    send_of_event = pd.Series(np.arange(len(rows)), index=rows["event_id"].to_numpy(dtype=object))
    # 1. By decision id: the latest send before it carrying the unsubscribe's decision id on its channel (a
    # slate may send twice on one channel).
    carried = unsubs["decision_id"].notna().to_numpy()
    left = unsubs.loc[carried, ["decision_id", "channel", "timestamp"]].assign(row=np.flatnonzero(carried))
    right = sends.dropna(subset=["decision_id"])[["decision_id", "channel", "timestamp", "event_id"]]
    matched = pd.merge_asof(left.sort_values("timestamp", kind="stable"),
                            right.sort_values("timestamp", kind="stable").rename(columns={"event_id": "event_id_send"}),
                            on="timestamp", by=["decision_id", "channel"], direction="backward")
    direct = pd.DataFrame({"event_id_send": np.full(len(unsubs), None, dtype=object)})
    direct.loc[matched["row"].to_numpy(), "event_id_send"] = matched["event_id_send"].to_numpy(dtype=object)
    hit = direct["event_id_send"].dropna().to_numpy(dtype=object)
    found = send_of_event.reindex(hit).dropna().to_numpy(dtype=np.int64)
    out[found] = 1
    # 2. By window: the latest send to the person on the channel within the open/click window.
    rest = unsubs[direct["event_id_send"].isna().to_numpy()]
    if len(rest):
        window = pd.Timedelta(hours=config.attribution.open_click_hours)
        left = rest[["user_id", "channel", "timestamp"]].sort_values("timestamp", kind="stable")
        right = sends[["user_id", "channel", "timestamp", "event_id"]].sort_values("timestamp", kind="stable")
        matched = pd.merge_asof(left, right, on="timestamp", by=["user_id", "channel"], direction="backward",
                                tolerance=window)
        found = send_of_event.reindex(matched["event_id"].dropna().to_numpy(dtype=object)).dropna()
        out[found.to_numpy(dtype=np.int64)] = 1
    return out


def risk_columns(dataset: Dataset, rows: pd.DataFrame, config: NbmConfig) -> dict[str, np.ndarray]:
    """The columns :func:`fit_risk` needs of the events, for the training set of a part of the log (each part holds
    every event of its users, and an unsubscribe is attributed to a send of its own person)."""
    return {LABEL: unsubscribed(dataset, rows, config)}


def _labels(dataset: Dataset | None, rows: pd.DataFrame, config: NbmConfig) -> np.ndarray:
    if LABEL in rows.columns:
        return rows[LABEL].to_numpy(dtype=np.int8)
    return unsubscribed(dataset, rows, config)


def fit_risk(dataset: Dataset | None, split, artifact: ScoringArtifact, config: NbmConfig) -> Risk:
    """P(unsubscribe | send) and the auto cost per channel, from the training and validation windows (their
    :data:`LABEL` column, or the labels from ``dataset``'s events)."""
    train_y = _labels(dataset, split.train, config)
    valid_y = _labels(dataset, split.valid, config)
    seen = pd.concat([split.train, split.valid], ignore_index=True)
    y = np.concatenate([train_y, valid_y])
    channel = seen["channel_name"].to_numpy(dtype=object)
    by_channel = pd.DataFrame({"channel": channel, "y": y}).groupby("channel")["y"].agg(["sum", "size"])
    overall = float((y.sum() + 0.5) / (len(y) + 1.0))
    strength = strength_or(by_channel["sum"], by_channel["size"], overall, default=1000.0, min_cells=2)
    rates = dict(zip(by_channel.index.astype(str), map(float, shrink(by_channel["sum"], by_channel["size"], overall,
                                                                        strength))))
    costs, default_cost = channel_costs(dataset, seen, config.arbitration.unsubscribe_horizon_days)
    booster, calibrator = None, Calibrator.identity()
    if train_y.sum() >= MIN_POSITIVES and valid_y.sum() >= MIN_POSITIVES:
        features = list(artifact.features)
        categorical = [i for i, name in enumerate(features) if name in artifact.categories or name in CATEGORICAL]
        train = lgb.Dataset(artifact.matrix(split.train), label=train_y, feature_name=features,
                            categorical_feature=categorical, free_raw_data=False)
        valid = lgb.Dataset(artifact.matrix(split.valid), label=valid_y, reference=train)
        booster = lgb.train({**RISK_PARAMS, "seed": 0}, train, num_boost_round=ROUNDS, valid_sets=[valid],
                            callbacks=[lgb.early_stopping(PATIENCE, verbose=False)])
        calibrator = fit_calibrator(booster.predict(artifact.matrix(split.valid)), valid_y)
    return Risk(booster, calibrator, rates, overall, costs, default_cost)


def channel_costs(dataset: Dataset, seen: pd.DataFrame, horizon_days: float) -> tuple[dict[str, float], float]:
    """What one person's channel earned over ``horizon_days``, per channel, in the sends of ``seen``: revenue
    attributed to its sends / the people sent anything on it / the days the sends span × the horizon; and
    the same over every channel for the channels without sends."""
    span = max((seen["timestamp"].max() - seen["timestamp"].min()).value / DAY_NS, 1.0) if len(seen) else 1.0
    revenue = seen["revenue"].to_numpy(dtype=float)
    frame = pd.DataFrame({"channel": seen["channel_name"].to_numpy(dtype=object),
                          "user": seen["user_id"].to_numpy(dtype=object), "revenue": np.nan_to_num(revenue)})
    per = frame.groupby("channel").agg(revenue=("revenue", "sum"), people=("user", "nunique"))
    costs = {str(c): float(r.revenue / max(r.people, 1) / span * horizon_days) for c, r in per.iterrows()}
    default = float(frame["revenue"].sum() / max(frame["user"].nunique(), 1) / span * horizon_days)
    return costs, default
