"""Fitting the ranker: a time split of the training set, LightGBM with early stopping, calibration.

The split is by time, never random: train on the oldest sends, stop early on the next window, keep the
newest for evaluation. Scores are calibrated on the validation window (isotonic, or sigmoid) into the
probability of the target outcome, because the decision policy multiplies them by message value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from nbm.attribution import GRADE
from features.declarations import CATEGORICAL, FEATURE_NAMES
from nbm.artifact import Calibrator, FollowUp, ScoringArtifact, library_versions
from nbm.shrinkage import shrink, strength_or
from nbm.errors import UnusableInputError
from training.dask_fit import fit_on_cluster, on_cluster

DAY = pd.Timedelta(days=1)
FOLLOWUP_STRENGTH = 30.0
"""Pseudo-clicks of a funnel's P(convert | click) toward its parent's rate when the data cannot learn them."""


@dataclass(frozen=True)
class TimeSplit:
    """Training-set rows by window: ``train`` < ``valid_start`` ≤ ``valid`` < ``test_start`` ≤ ``test``."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    valid_start: pd.Timestamp
    test_start: pd.Timestamp


def time_split(rows: pd.DataFrame, valid_days: float | None = None, test_days: float | None = None) -> TimeSplit:
    """Split a training set by send time: the last ``test_days`` for test, the ``valid_days`` before for validation.

    A window not given (``None``) follows the log: a quarter of the span of its send times, at most 7 days —
    7 + 7 days on a log of four weeks or more, 1.75 + 1.75 on a week-long log (which fixed 7-day windows
    would leave with no training window) — so that at least half the span is left to train on. The windows
    used are ``valid_start`` and ``test_start`` of the result (docs/retraining.md, "time split").
    """
    end = rows["timestamp"].max()
    span_days = (end - rows["timestamp"].min()) / DAY
    derived = min(7.0, span_days / 4) if span_days > 0 else 7.0
    valid_days = derived if valid_days is None else valid_days
    test_days = derived if test_days is None else test_days
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

    objective: Literal["auto", "binary", "lambdarank", "funnel"] = "funnel"   # auto: training.compare
    target: Literal["open", "click", "convert"] = "convert"
    given: Literal["open", "click"] = "click"       # funnel: the frequent outcome the booster learns
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
    refit: bool = True          # serve the booster refitted on every window (refit_ranker)

    def lightgbm(self) -> dict[str, object]:
        params = {k: v for k, v in asdict(self).items()
                  if k not in ("target", "given", "calibration", "num_boost_round", "early_stopping_rounds", "refit")}
        params.update(bagging_freq=1, deterministic=True, force_row_wise=True, verbose=-1)
        if self.objective == "funnel":
            params["objective"] = "binary"
        params["metric"] = "ndcg" if self.objective == "lambdarank" else "binary_logloss"
        if self.objective == "lambdarank":
            params["eval_at"] = [1, 3, 5]
        return params

    def __post_init__(self) -> None:
        # A funnel whose target is not after its first step (``--target click`` or ``open``) has no second
        # step: it is the target's binary model.
        if self.objective == "funnel" and GRADE[self.given] >= GRADE[self.target]:
            object.__setattr__(self, "objective", "binary")

    @property
    def booster_target(self) -> str:
        """The outcome the booster's calibrated probability is of: ``given`` for a funnel, else ``target``."""
        return self.given if self.objective == "funnel" else self.target


def feature_columns(rows: pd.DataFrame) -> list[str]:
    return [*FEATURE_NAMES, *(c for c in rows.columns if c.startswith("attr_"))]


def _matrix(rows: pd.DataFrame, features: list[str], categories: dict[str, tuple[str, ...]]) -> np.ndarray:
    """The rows' feature matrix as the booster reads it (float32, categoricals as their codes)."""
    artifact = ScoringArtifact(booster=None, calibrator=Calibrator.identity(), features=tuple(features),  # type: ignore[arg-type]
                               categories=categories)
    return artifact.matrix(rows)


def _categorical(features: list[str], categories: dict[str, tuple[str, ...]]) -> list[int]:
    return [i for i, name in enumerate(features) if name in CATEGORICAL or name in categories]


def _dataset(rows: pd.DataFrame, features: list[str], params: RankerParams, categories: dict[str, tuple[str, ...]],
             reference: lgb.Dataset | None = None, pre_filter: bool = True) -> tuple[lgb.Dataset, pd.DataFrame]:
    if params.objective == "lambdarank":
        rows = rows.assign(group=ranking_groups(rows)).sort_values(["group", "timestamp"], kind="stable")
        rows = rows.reset_index(drop=True)
    label = rows["label"].to_numpy() if params.objective == "lambdarank" else target_of(rows, params.booster_target)
    categorical = _categorical(features, categories)
    data = lgb.Dataset(_matrix(rows, features, categories), label=label, feature_name=features, categorical_feature=categorical,
                       reference=reference, free_raw_data=False,
                       params=None if pre_filter else {"feature_pre_filter": False})
    if params.objective == "lambdarank":
        data.set_group(rows.groupby("group", sort=False).size().to_numpy())
    return data, rows


MAX_GROUP_ROWS = 5_000
"""Largest ranking group lambdarank is given (LightGBM refuses a query of more than 10,000 rows): a longer
group — a bot's or a shared id's sends — is cut into consecutive pieces of this size."""


def ranking_groups(rows: pd.DataFrame) -> pd.Series:
    """Ranking groups that hold something to rank: the training set's (``[features] group_by``) when at least
    half of the sends share their group with another send, else each user's sends in the window. A group of
    one send gives lambdarank no pair to learn from: under the default ``user_day`` most groups hold one
    send when brands send about once a day, and the ranker then learns nothing (best_iteration 1). Groups
    over :data:`MAX_GROUP_ROWS` sends are cut into pieces (in time order) of at most that many."""
    sizes = rows.groupby("group", sort=False, observed=True)["group"].transform("size")
    group = rows["group"] if (sizes >= 2).mean() >= 0.5 else rows["user_id"].astype(str)
    order = np.argsort(rows["timestamp"].to_numpy(), kind="stable")
    piece = np.empty(len(rows), dtype=np.int64)
    piece[order] = pd.Series(group.to_numpy()[order]).groupby(group.to_numpy()[order], sort=False).cumcount().to_numpy()
    piece //= MAX_GROUP_ROWS
    if not piece.any():
        return group
    return group.astype(str) + "#" + pd.Series(piece, index=rows.index).astype(str)


def target_of(rows: pd.DataFrame, target: str) -> np.ndarray:
    """1 where the send reached ``target`` (graded label ≥ its grade)."""
    return (rows["label"].to_numpy() >= GRADE[target]).astype(np.int8)


def categories_of(rows: pd.DataFrame, features: list[str]) -> dict[str, tuple[str, ...]]:
    return {c: tuple(map(str, rows[c].cat.categories)) for c in features if isinstance(rows[c].dtype, pd.CategoricalDtype)}


def lightgbm_datasets(split: TimeSplit, features: list[str], params: RankerParams,
                      pre_filter: bool = True) -> tuple[lgb.Dataset, lgb.Dataset]:
    """LightGBM datasets of the training and validation windows (labels, groups, categoricals).

    Without ``pre_filter`` the datasets keep the features that LightGBM would drop as unsplittable under
    ``params.min_data_in_leaf``, so that boosters of other ``min_data_in_leaf`` (Optuna's trials) train on them
    as they are: with the pre-filter, a trial asking for a smaller one makes LightGBM print a ``[Fatal]``
    line and build the dataset again (it then trains correctly: the line was false)."""
    categories = categories_of(split.train, features)
    train, _ = _dataset(split.train, features, params, categories, pre_filter=pre_filter)
    valid, _ = _dataset(split.valid, features, params, categories, reference=train, pre_filter=pre_filter)
    return train, valid


def fit_ranker(split: TimeSplit, params: RankerParams = RankerParams(),
               catalog: pd.DataFrame | None = None, client=None, dask_min_rows: int = 0) -> ScoringArtifact:
    """Fit LightGBM on ``split.train`` with early stopping on ``split.valid``; calibrate on ``split.valid``.

    A ``funnel`` fits the booster to ``params.given`` (a click) and adds its second step, P(target | given)
    per message (:func:`fit_followup`, topics from ``catalog``, the messages table), learned from the
    training and validation windows. With a Dask ``client`` and a training window of ``dask_min_rows`` rows or
    more, the booster is fitted on the cluster (:mod:`training.dask_fit`)."""
    features = feature_columns(split.train)
    categories = categories_of(split.train, features)
    if on_cluster(client, len(split.train), dask_min_rows, params.objective):
        booster = fit_on_cluster(client, params.lightgbm(), _matrix(split.train, features, categories),
                                 target_of(split.train, params.booster_target), features,
                                 _categorical(features, categories), params.num_boost_round,
                                 (_matrix(split.valid, features, categories),
                                  target_of(split.valid, params.booster_target)), params.early_stopping_rounds)
    else:
        train, valid = lightgbm_datasets(split, features, params)
        booster = lgb.train(params.lightgbm(), train, num_boost_round=params.num_boost_round, valid_sets=[valid],
                            callbacks=[lgb.early_stopping(params.early_stopping_rounds, verbose=False)])
    uncalibrated = ScoringArtifact(booster, Calibrator.identity(), tuple(features), categories, params.objective,
                                   params.target, library_versions())
    raw = uncalibrated.raw_score(split.valid)
    calibrator = fit_calibrator(raw, target_of(split.valid, params.booster_target), params.calibration)
    followup = None
    if params.objective == "funnel":
        followup = fit_followup(pd.concat([split.train, split.valid], ignore_index=True), params.given,
                                params.target, catalog)
    return ScoringArtifact(booster, calibrator, tuple(features), categories, params.objective, params.target,
                           library_versions(), followup, trained_until=_latest(split.train, split.valid))


REFIT_MIN_ROUNDS = 2
"""A held-out booster with fewer trees than this is degenerate (the gate refuses it): it is not refitted."""


def refit_ranker(artifact: ScoringArtifact, split: TimeSplit, params: RankerParams,
                 catalog: pd.DataFrame | None = None, rows: pd.DataFrame | None = None, client=None,
                 dask_min_rows: int = 0) -> ScoringArtifact:
    """The model to serve: ``artifact``'s booster fitted again on every window (training, validation and test),
    with the number of trees early stopping chose for it, and a funnel's second step learned from every window.

    The held-out ``artifact`` says how good the procedure is (test metrics, the objective comparison, the
    policy value and the gate are all its); this one applies the procedure to the whole log, so that the
    last two weeks — often the newest messages' only sends, and the freshest behaviour — are learned from,
    not only looked at. Same trees count and settings on a third more rows give raw scores on the held-out
    model's scale, so the held-out calibrator is kept (measured: docs/retraining.md, "Refit on the whole log").
    """
    rounds = artifact.booster.best_iteration or artifact.booster.current_iteration()
    if rounds < REFIT_MIN_ROUNDS or params.objective == "lambdarank":
        return artifact
    if rows is None:         # every window's sends (the caller's training set, when it has it: no second copy)
        rows = pd.concat([split.train, split.valid, split.test], ignore_index=True)
    features = list(artifact.features)
    if on_cluster(client, len(rows), dask_min_rows, params.objective):
        booster = fit_on_cluster(client, params.lightgbm(), _matrix(rows, features, artifact.categories),
                                 target_of(rows, params.booster_target), features,
                                 _categorical(features, artifact.categories), rounds)
    else:
        data, _ = _dataset(rows, features, params, artifact.categories)
        booster = lgb.train(params.lightgbm(), data, num_boost_round=rounds)
    followup = artifact.followup
    if followup is not None:
        followup = fit_followup(rows, params.given, params.target, catalog)
    return replace(artifact, booster=booster, followup=followup, trained_until=_latest(rows))


def _latest(*windows: pd.DataFrame) -> str:
    """ISO time (UTC) of the latest send in ``windows``."""
    latest = pd.Timestamp(max(w["timestamp"].max() for w in windows if len(w)))
    return (latest.tz_localize("UTC") if latest.tzinfo is None else latest.tz_convert("UTC")).isoformat()


def fit_followup(rows: pd.DataFrame, given: str, target: str, catalog: pd.DataFrame | None = None) -> FollowUp:
    """P(``target`` | ``given``) per message from the sends in ``rows``: each message's rate shrunk toward its
    topic's (``catalog``'s message_id → topic; without it one topic), each topic's toward the overall rate,
    with beta-binomial strengths learned by maximum marginal likelihood (:func:`nbm.shrinkage.fit_strength`;
    :data:`FOLLOWUP_STRENGTH` pseudo-clicks where too few messages or topics say anything).
    Only sends that reached ``given`` count as trials: the rates are conditional on it."""
    reached = target_of(rows, given).astype(bool)
    hit = target_of(rows, target)[reached]
    messages = rows["message_id"].to_numpy(dtype=object)[reached]
    topic_of = {} if catalog is None else dict(zip(catalog["message_id"], catalog["topic"].astype(object)))
    by_message = pd.DataFrame({"message_id": messages, "hit": hit}).groupby("message_id", sort=True)["hit"].agg(
        ["sum", "size"])
    by_message["topic"] = [topic_of.get(m, "") for m in by_message.index]
    by_topic = by_message.groupby("topic", sort=True)[["sum", "size"]].sum()
    overall = float((by_topic["sum"].sum() + 0.5) / (by_topic["size"].sum() + 1.0))     # Jeffreys: never 0
    topic_strength = strength_or(by_topic["sum"], by_topic["size"], overall, FOLLOWUP_STRENGTH, min_cells=3)
    topic_rate = pd.Series(shrink(by_topic["sum"], by_topic["size"], overall, topic_strength), index=by_topic.index)
    message_prior = topic_rate.reindex(by_message["topic"]).to_numpy()
    message_strength = strength_or(by_message["sum"], by_message["size"], message_prior, FOLLOWUP_STRENGTH,
                                   min_cells=5)
    message_rate = shrink(by_message["sum"], by_message["size"], message_prior, message_strength)
    return FollowUp(given, {str(m): float(r) for m, r in zip(by_message.index, message_rate)},
                    {str(t): float(r) for t, r in topic_rate.items()}, {str(m): str(t) for m, t in topic_of.items()},
                    overall, {"message": message_strength, "topic": topic_strength})


def fit_calibrator(raw: np.ndarray, outcome: np.ndarray, method: str = "isotonic", grid: int = 256) -> Calibrator:
    """Raw scores → probabilities of ``outcome``, fitted on held-out rows."""
    if method == "isotonic":
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, outcome)
        return Calibrator(tuple(map(float, iso.X_thresholds_)), tuple(map(float, iso.y_thresholds_)))
    logistic = LogisticRegression(C=1e6).fit(raw.reshape(-1, 1), outcome)
    x = np.linspace(raw.min(), raw.max(), grid)
    return Calibrator(tuple(map(float, x)), tuple(map(float, logistic.predict_proba(x.reshape(-1, 1))[:, 1])))
