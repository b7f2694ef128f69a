"""Choosing the training objective: candidates compared on held-out data by a value-weighted ranking metric
of the logged exploration.

``nbm train`` (``--objective auto``, the default) fits every candidate objective of :data:`CANDIDATES` on the
same time split and keeps the one that ranks the test window's logged *exploration* best by
:func:`value_capture`:

* ``binary`` — LightGBM on the target outcome itself (a conversion, by default): right when conversions are
  plentiful, noise when they are 0.3 % of sends;
* ``funnel`` — LightGBM on the click, 10–50× more frequent, times P(convert | click) of each message shrunk
  toward its topic (``training.fit.fit_followup``): what a rare target needs;
* ``lambdarank`` — a ranker of the graded outcome (open < click < convert) within groups that hold at least
  two sends (``training.fit.ranking_groups``).

**The metric.** The sends the logging policy chose *at random* (its exploration: a logged propensity below
``[training] exploration_propensity``) are an experiment: people and actions drawn without regard to what
anyone expected of them, as the decision's candidates are. Ranked by the model's expected value (P(target) ×
message value × business weight), how much of what they earned comes first? :func:`value_capture` is the area
under that cumulative curve, 0 for a random order (or a constant model) and 1 for hindsight's order. What a
send earned is its revenue (without revenue, message value × reached the target); where fewer than
:data:`MIN_EARNERS` exploration sends reached the target (conversions at 0.3 % of sends), the value of the
deepest outcome that enough of them reached (message value × clicked, then × opened) stands in for it, and
says so. It is unmeasured — and the choice falls back to :data:`FALLBACK` — with fewer than
:data:`MIN_EARNERS` earning sends even so, or a log without propensities.

Measured on the zoo (``benchmarks/quality.py``, docs/retraining.md "Which objective"), the value capture ranks
the objectives as each world's truth does where the within-person concordance below did not.

**Logged beside it.** The within-person *value concordance*: a decision chooses among one person's
candidates, so a model is judged on how it orders
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
"""The objective kept when the comparison cannot tell (too little exploration): it learns from clicks, which a
log has even when conversions are rare."""
MIN_GROUPS = 30
"""Users with a pair of held-out sends that earned differently needed for the concordance to mean something."""
MIN_EARNERS = 30
"""Held-out exploration sends that earned something needed for the value capture to mean something."""
STAND_INS = ("click", "open")
"""Outcomes whose value stands in for a target too rare in the exploration, deepest first."""


@dataclass(frozen=True)
class Capture:
    """:func:`value_capture` of one model on the held-out exploration, and what it rests on."""

    value: float           # NaN when unmeasured
    sends: int             # exploration sends ranked
    earners: int           # … of which earned something
    outcome: str           # what "earned" means: the target, or the outcome standing in for it

    @property
    def measured(self) -> bool:
        return self.earners >= MIN_EARNERS and np.isfinite(self.value)

    @classmethod
    def unmeasured(cls, sends: int = 0, outcome: str = "") -> Capture:
        return cls(float("nan"), sends, 0, outcome)
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


def value_capture(expected: np.ndarray, gain: np.ndarray) -> float:
    """How much of ``gain`` comes first when the rows are ordered by ``expected`` (highest first): the area under
    the cumulative share of gain along that order, rescaled so that a random order scores 0 and the best order
    (by ``gain`` itself) 1; rows tied on ``expected`` share their gain evenly (a constant model scores 0). NaN
    when nothing earned."""
    expected, gain = np.asarray(expected, float), np.asarray(gain, float)
    total = gain.sum()
    if not len(gain) or total <= 0:
        return float("nan")

    def area(order_key: np.ndarray) -> float:
        order = np.argsort(-order_key, kind="stable")
        key, g = order_key[order], gain[order]
        block = np.r_[0, np.cumsum(key[1:] != key[:-1])]          # runs of equal keys
        g = (np.bincount(block, weights=g) / np.bincount(block))[block]
        return float(np.cumsum(g).sum() / total / len(g))

    random = (len(gain) + 1) / (2 * len(gain))
    best = area(gain)
    return float("nan") if best <= random else (area(expected) - random) / (best - random)


def exploration(rows: pd.DataFrame, threshold: float) -> np.ndarray:
    """Which logged sends the logging policy chose at random: a propensity below ``threshold``."""
    if "propensity" not in rows:
        return np.zeros(len(rows), dtype=bool)
    propensity = rows["propensity"].to_numpy(dtype=float)
    return np.isfinite(propensity) & (propensity < threshold)


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


def choose(results: dict[str, Capture], usable: dict[str, bool]) -> tuple[str, str]:
    """The objective to keep and why: the highest measured value capture among usable (not degenerate) models;
    :data:`FALLBACK` (or the first usable one) when none is measured."""
    measured = {k: v for k, v in results.items() if usable.get(k) and v.measured}
    if measured:
        best = max(measured, key=lambda k: measured[k].value)
        c = measured[best]
        what = "" if c.outcome in ("", "target") else f", valued by {c.outcome}s standing in for the rarer target"
        return best, (f"highest value capture of the test window's exploration ({c.value:.3f}, {c.sends:,} sends, "
                      f"{c.earners:,} earning{what})")
    fallback = FALLBACK if usable.get(FALLBACK) else next((k for k, ok in usable.items() if ok), FALLBACK)
    return fallback, (f"the comparison cannot tell (fewer than {MIN_EARNERS} exploration sends that earned in the "
                      f"test window, or no logged propensities): {fallback} by default")


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
    capture: Capture = Capture.unmeasured()


@dataclass(frozen=True)
class Comparison:
    candidates: dict[str, Candidate]
    chosen: str
    reason: str

    def table(self) -> pd.DataFrame:
        """One row per candidate: the metric, what it rests on, AUC, rounds, degenerate or not, chosen."""
        return pd.DataFrame([{
            "objective": c.objective, "value_capture": c.capture.value, "exploration_sends": c.capture.sends,
            "exploration_earners": c.capture.earners, "capture_outcome": c.capture.outcome,
            "value_concordance": c.concordance.value, "users_with_pairs": c.concordance.groups,
            "pairs": c.concordance.pairs, "test_auc": c.metrics.get("test_auc", float("nan")),
            "test_log_loss": c.metrics.get("test_log_loss", float("nan")),
            "best_iteration": c.metrics.get("best_iteration", float("nan")), "seconds": c.seconds,
            "degenerate": "; ".join(c.degenerate), "chosen": c.objective == self.chosen}
            for c in self.candidates.values()])


def fit_candidate(split: TimeSplit, params: RankerParams, catalog: pd.DataFrame | None,
                  config: NbmConfig, figures: bool = True, client=None) -> Candidate:
    """Fit ``params.objective`` (on the Dask cluster of ``client`` when the training window is large enough:
    ``[training] dask_min_rows``), evaluate it on the test window (metrics, value capture and concordance,
    degeneracy)."""
    began = time.perf_counter()
    artifact = fit_ranker(split, params, catalog, client, config.training.dask_min_rows)
    evaluation = evaluate(artifact, split.test, figures=figures)
    rounds = artifact.booster.best_iteration or artifact.booster.current_iteration()
    metrics = {**evaluation.metrics, "best_iteration": float(rounds),
               "train_positives": float(target_of(split.train, params.target).sum()),
               "valid_positives": float(target_of(split.valid, params.target).sum())}
    concordance = concordance_of(artifact, split.test, catalog, config.arbitration)
    capture = capture_of(artifact, split.test, catalog, config)
    metrics.update(value_concordance=concordance.value, concordance_users=float(concordance.groups),
                   **capture_metrics(capture))
    degenerate = degeneracy(ModelEvidence.of(metrics, params.target), config.training)
    return Candidate(params.objective, artifact, evaluation, metrics, concordance, degenerate,
                     time.perf_counter() - began, capture)


def capture_metrics(capture: Capture) -> dict[str, float]:
    """The value capture's figures as MLflow metrics."""
    return {"value_capture": capture.value, "exploration_sends": float(capture.sends),
            "exploration_earners": float(capture.earners)}


def expected_value(artifact: ScoringArtifact, rows: pd.DataFrame, catalog: pd.DataFrame | None,
                   arbitration: ArbitrationConfig) -> np.ndarray:
    """What the decision maximises for each row: P(target) × message value × business weight of ``[arbitration]``."""
    value = rows["message_value"].to_numpy(dtype=float) if "message_value" in rows else np.ones(len(rows))
    expected = artifact.score(rows) * np.nan_to_num(value, nan=1.0)
    if catalog is not None and (arbitration.message_weights or arbitration.topic_weights):
        weights = pd.Series(arbitration.weights(catalog["message_id"], catalog["topic"]),
                            index=catalog["message_id"].to_numpy(dtype=object))
        expected = expected * weights.reindex(rows["message_id"].to_numpy(dtype=object)).fillna(1.0).to_numpy()
    return expected


def capture_of(artifact: ScoringArtifact, test: pd.DataFrame, catalog: pd.DataFrame | None,
               config: NbmConfig) -> Capture:
    """:func:`value_capture` of ``artifact`` on the exploration sends of ``test`` (see the module docstring)."""
    rows = test[exploration(test, config.training.exploration_propensity)]
    if not len(rows):
        return Capture.unmeasured()
    expected = expected_value(artifact, rows, catalog, config.arbitration)
    gain, outcome = realized_gain(rows, artifact.target), "target"
    if (gain > 0).sum() < MIN_EARNERS:
        value = np.nan_to_num(rows["message_value"].to_numpy(dtype=float), nan=1.0) if "message_value" in rows \
            else np.ones(len(rows))
        for stand_in in (o for o in STAND_INS if GRADE[o] < GRADE[artifact.target]):
            reached = rows["label"].to_numpy() >= GRADE[stand_in]
            if reached.sum() >= MIN_EARNERS:
                gain, outcome = np.where(reached, value, 0.0), stand_in
                break
    earners = int((gain > 0).sum())
    if earners < MIN_EARNERS:
        return Capture(float("nan"), len(rows), earners, outcome)
    return Capture(value_capture(expected, gain), len(rows), earners, outcome)


def concordance_of(artifact: ScoringArtifact, test: pd.DataFrame, catalog: pd.DataFrame | None,
                   arbitration: ArbitrationConfig = ArbitrationConfig()) -> Concordance:
    """:func:`value_concordance` of ``artifact`` on ``test``: its expected value (P(target) × message value ×
    business weight of ``[arbitration]``) against what each send earned, per user."""
    expected = expected_value(artifact, test, catalog, arbitration)
    return value_concordance(expected, realized_gain(test, artifact.target), test["user_id"].to_numpy(dtype=object))


def compare_objectives(split: TimeSplit, params: RankerParams, catalog: pd.DataFrame | None,
                       config: NbmConfig, objectives: tuple[str, ...] = CANDIDATES,
                       progress=None, client=None) -> Comparison:
    """Fit every objective of ``objectives`` with ``params`` otherwise, and choose (:func:`choose`)."""
    candidates = {}
    for objective in objectives:
        if objective == "funnel" and GRADE[params.given] >= GRADE[params.target]:
            continue                          # a funnel needs a target after its first step
        if progress is not None:
            progress(objective)
        candidates[objective] = fit_candidate(split, replace(params, objective=objective), catalog, config,
                                              figures=False, client=client)
    chosen, reason = choose({k: c.capture for k, c in candidates.items()},
                            {k: not c.degenerate for k, c in candidates.items()})
    return Comparison(candidates, chosen, reason)
