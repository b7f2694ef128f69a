"""Choosing the training objective: candidates compared on held-out data by a value-weighted ranking metric
of the logged exploration.

``nbm train --objective auto`` (the default) fits every candidate objective of :data:`CANDIDATES` on the
same time split and keeps the one that ranks the test window's logged sends best by :func:`value_concordance`:

* ``binary`` — LightGBM on the target outcome itself (a conversion, by default): right when conversions are
  plentiful, noise when they are 0.3 % of sends;
* ``funnel`` — LightGBM on the click, 10–50× more frequent, times P(convert | click) of each message shrunk
  toward its topic (``training.fit.fit_followup``): what a rare target needs;
* ``lambdarank`` — a ranker of the graded outcome (open < click < convert) within groups that hold at least
  two sends (``training.fit.ranking_groups``).

**The metric.** A decision chooses among one person's candidates, so a model is judged on how it orders
sends *to the same person*: of two held-out sends to one user where one earned more than the other (its
revenue; without revenue, message value × reached the target), how often does the model's expected value
(P(target) × message value × business weight, what the decision maximises) put the better one first —
weighted by how much more it earned. 0.5 is a coin, 1 a perfect order. (Weighting the pairs by the inverse
of the logging policy's propensities (clipped at their 99th percentile) was tried and left out: a few heavily
weighted sends swung it between 0.48 and 0.998; docs/retraining.md.) Unlike AUC it compares messages for one person, not people; unlike a replayed policy
value it needs no logged action to match the model's choice, so it still measures something when the
log's exploration is thin (where SNIPS and DR rest on an effective sample of a few sends). It is
unmeasured — and the choice falls back to :data:`FALLBACK` — when fewer than :data:`MIN_GROUPS` users have
such a pair.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from nbm.artifact import ScoringArtifact
from nbm.attribution import GRADE
from nbm.config import ArbitrationConfig, NbmConfig
from training.fit import RankerParams, TimeSplit, fit_ranker, target_of
from training.gate import ModelEvidence, degeneracy
from training.metrics import Evaluation, evaluate

AUTO = "auto"
"""``--objective auto``: compare :data:`CANDIDATES` and keep the best."""
CANDIDATES: tuple[str, ...] = ("binary", "funnel", "lambdarank")
FALLBACK = "funnel"
"""The objective kept when the comparison cannot tell (too few pairs): it learns from clicks, which a log has
even when conversions are rare."""
MIN_GROUPS = 30
"""Users with a pair of held-out sends that earned differently needed for the metric to mean something."""
@dataclass(frozen=True)
class Concordance:
    """:func:`value_concordance` of one model: the metric, and what it rests on."""

    value: float           # NaN when unmeasured
    groups: int            # users with at least one pair
    pairs: int

    @property
    def measured(self) -> bool:
        return self.groups >= MIN_GROUPS and np.isfinite(self.value)


def realized_gain(rows: pd.DataFrame, target: str) -> np.ndarray:
    """What each logged send earned: its attributed revenue, or — when the log holds no revenue — message value
    × 1[reached ``target``]."""
    revenue = rows["revenue"].to_numpy(dtype=float) if "revenue" in rows else np.zeros(len(rows))
    revenue = np.nan_to_num(revenue)
    if (revenue > 0).any():
        return revenue
    value = rows["message_value"].to_numpy(dtype=float) if "message_value" in rows else np.ones(len(rows))
    reached = rows["label"].to_numpy() >= GRADE[target]
    return np.where(reached, np.nan_to_num(value, nan=1.0), 0.0)


def value_concordance(expected: np.ndarray, gain: np.ndarray, group: np.ndarray,
                      weight: np.ndarray | None = None) -> Concordance:
    """Σ over pairs (i, j) of one group with gain_i > gain_j of (gain_i − gain_j) · w_i · w_j · [expected_i >
    expected_j] (½ on a tie), over the same sum without the indicator.

    Pairs are formed for every send that earned something against every send of its group that earned less,
    so the cost is (earning sends × group size), not (group size)²."""
    expected, gain = np.asarray(expected, float), np.asarray(gain, float)
    weight = np.ones(len(gain)) if weight is None else np.asarray(weight, float)
    codes, _ = pd.factorize(np.asarray(group, dtype=object))
    order = np.argsort(codes, kind="stable")
    codes, expected, gain, weight = codes[order], expected[order], gain[order], weight[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else np.zeros(0, int)
    ends = np.r_[starts[1:], len(codes)]
    run = np.repeat(np.arange(len(starts)), ends - starts)
    earners = np.flatnonzero(gain > 0)
    if not len(earners):
        return Concordance(float("nan"), 0, 0)
    size = (ends - starts)[run[earners]]
    owner = np.repeat(earners, size)                                     # one entry per (earner, group member)
    member = starts[run[owner]] + (np.arange(len(owner)) - np.repeat(np.cumsum(size) - size, size))
    better = gain[owner] > gain[member]
    owner, member = owner[better], member[better]
    if not len(owner):
        return Concordance(float("nan"), 0, 0)
    w = (gain[owner] - gain[member]) * weight[owner] * weight[member]
    right = np.where(expected[owner] > expected[member], 1.0, np.where(expected[owner] == expected[member], 0.5, 0.0))
    return Concordance(float(np.sum(w * right) / np.sum(w)), int(len(np.unique(run[owner]))), int(len(owner)))


def choose(results: dict[str, Concordance], usable: dict[str, bool]) -> tuple[str, str]:
    """The objective to keep and why: the highest measured concordance among usable (not degenerate) models;
    :data:`FALLBACK` (or the first usable one) when none is measured."""
    measured = {k: v for k, v in results.items() if usable.get(k) and v.measured}
    if measured:
        best = max(measured, key=lambda k: measured[k].value)
        return best, f"highest value concordance on the test window ({measured[best].value:.3f}, " \
                     f"{measured[best].groups:,} users with pairs)"
    fallback = FALLBACK if usable.get(FALLBACK) else next((k for k, ok in usable.items() if ok), FALLBACK)
    return fallback, (f"the comparison cannot tell (fewer than {MIN_GROUPS} users with a pair of sends that earned "
                      f"differently): {fallback} by default")


@dataclass(frozen=True)
class Candidate:
    """One objective fitted on the split: the artifact, its held-out evaluation and concordance, and why it is
    degenerate (empty: usable)."""

    objective: str
    artifact: ScoringArtifact
    evaluation: Evaluation
    metrics: dict[str, float]
    concordance: Concordance
    degenerate: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class Comparison:
    candidates: dict[str, Candidate]
    chosen: str
    reason: str

    def table(self) -> pd.DataFrame:
        """One row per candidate: the metric, what it rests on, AUC, rounds, degenerate or not, chosen."""
        return pd.DataFrame([{
            "objective": c.objective, "value_concordance": c.concordance.value, "users_with_pairs": c.concordance.groups,
            "pairs": c.concordance.pairs, "test_auc": c.metrics.get("test_auc", float("nan")),
            "test_log_loss": c.metrics.get("test_log_loss", float("nan")),
            "best_iteration": c.metrics.get("best_iteration", float("nan")), "seconds": c.seconds,
            "degenerate": "; ".join(c.degenerate), "chosen": c.objective == self.chosen}
            for c in self.candidates.values()])


def fit_candidate(split: TimeSplit, params: RankerParams, catalog: pd.DataFrame | None,
                  config: NbmConfig, figures: bool = True) -> Candidate:
    """Fit ``params.objective``, evaluate it on the test window (metrics, value concordance, degeneracy)."""
    began = time.perf_counter()
    artifact = fit_ranker(split, params, catalog)
    evaluation = evaluate(artifact, split.test, figures=figures)
    rounds = artifact.booster.best_iteration or artifact.booster.current_iteration()
    metrics = {**evaluation.metrics, "best_iteration": float(rounds),
               "train_positives": float(target_of(split.train, params.target).sum()),
               "valid_positives": float(target_of(split.valid, params.target).sum())}
    concordance = concordance_of(artifact, split.test, catalog, config.arbitration)
    metrics.update(value_concordance=concordance.value, concordance_users=float(concordance.groups))
    degenerate = degeneracy(ModelEvidence.of(metrics, params.target), config.training)
    return Candidate(params.objective, artifact, evaluation, metrics, concordance, degenerate,
                     time.perf_counter() - began)


def concordance_of(artifact: ScoringArtifact, test: pd.DataFrame, catalog: pd.DataFrame | None,
                   arbitration: ArbitrationConfig = ArbitrationConfig()) -> Concordance:
    """:func:`value_concordance` of ``artifact`` on ``test``: its expected value (P(target) × message value ×
    business weight of ``[arbitration]``) against what each send earned, per user."""
    value = test["message_value"].to_numpy(dtype=float) if "message_value" in test else np.ones(len(test))
    expected = artifact.score(test) * np.nan_to_num(value, nan=1.0)
    if catalog is not None and (arbitration.message_weights or arbitration.topic_weights):
        weights = pd.Series(arbitration.weights(catalog["message_id"], catalog["topic"]),
                            index=catalog["message_id"].to_numpy(dtype=object))
        expected = expected * weights.reindex(test["message_id"].to_numpy(dtype=object)).fillna(1.0).to_numpy()
    return value_concordance(expected, realized_gain(test, artifact.target), test["user_id"].to_numpy(dtype=object))


def compare_objectives(split: TimeSplit, params: RankerParams, catalog: pd.DataFrame | None,
                       config: NbmConfig, objectives: tuple[str, ...] = CANDIDATES,
                       progress=None) -> Comparison:
    """Fit every objective of ``objectives`` with ``params`` otherwise, and choose (:func:`choose`)."""
    candidates = {}
    for objective in objectives:
        if objective == "funnel" and GRADE[params.given] >= GRADE[params.target]:
            continue                          # a funnel needs a target after its first step
        if progress is not None:
            progress(objective)
        candidates[objective] = fit_candidate(split, replace(params, objective=objective), catalog, config,
                                              figures=False)
    chosen, reason = choose({k: c.concordance for k, c in candidates.items()},
                            {k: not c.degenerate for k, c in candidates.items()})
    return Comparison(candidates, chosen, reason)
