"""The promotion gate of ``nbm train``: never a degenerate model; otherwise the champion only on evidence.

In this order:

1. **Degenerate model** (:func:`degeneracy`). A model that learned nothing is never promoted, not even
   by ``--force-promote``, whether or not a champion exists; ``nbm train`` logs it (for inspection),
   tags it ``nbm.gate=degenerate`` and exits 1. Each reason names its value:

   * held-out (test window) AUC NaN (one class only) or ≤ ``[training] min_test_auc`` (0.52);
   * ``best_iteration`` ≤ :data:`MAX_DEGENERATE_ITERATION` (1): early stopping kept at most one tree, so
     the validation loss never improved after the first step of size ``learning_rate`` (0.05) from the
     base rate;
   * near-constant test predictions: standard deviation ≤ :data:`MIN_PREDICTION_CV` (1 %) of their mean.
     The decision ranks candidates by calibrated probability × message value, so predictions that vary by
     1 % of their level reorder only messages whose values lie within about 1 % of each other: the choice
     is the message value's, not the model's. (All-zero predictions count: 0 ≤ 1 % of 0.)
   * no positive of the target outcome in the training or the validation window (nothing to learn from,
     or nothing to stop early and calibrate on).

2. **No champion yet**: a model that is not degenerate becomes the first champion.

3. **Unmeasured comparison**: when the effective sample size of the challenger's or the champion's
   policy is below ``[training] min_policy_ess`` (100), their doubly robust difference is unusable; the
   champion is kept (``--force-promote`` may still promote). A low ESS says the *log* cannot value the
   policy — a greedy policy over hundreds of actions on a log that explores 10 % has an ESS of ~5 on nbm's
   own simulated world while its true value is 3× uniform's — so it does not make the model degenerate.

4. **DR comparison**: promoted when the lower bound of the 95 % interval of the paired DR difference
   (challenger − champion) is above zero; ``--force-promote`` promotes a model that loses it (logged).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from nbm.config import TrainingConfig
from training.policy_eval import Difference, PolicyReport, dr_terms, paired_difference

MAX_DEGENERATE_ITERATION = 1
"""A model whose early stopping kept this many boosting rounds or fewer is degenerate."""
MIN_PREDICTION_CV = 0.01
"""Test predictions whose standard deviation is at most this share of their mean are near-constant."""
NO_SERVING = "no champion: `nbm serve` has nothing to serve until a model passes the gate"


@dataclass(frozen=True)
class ModelEvidence:
    """What the degeneracy check reads: the held-out figures of a fitted model and its training windows."""

    target: str
    train_positives: int
    valid_positives: int
    test_auc: float
    best_iteration: int
    mean_prediction: float
    prediction_std: float
    distinct_predictions: int

    @classmethod
    def of(cls, metrics: Mapping[str, float], target: str) -> ModelEvidence:
        """From ``nbm train``'s metrics (``training.metrics.evaluate``'s, plus the job's counts)."""
        return cls(target, int(metrics["train_positives"]), int(metrics["valid_positives"]),
                   float(metrics["test_auc"]), int(metrics["best_iteration"]), float(metrics["test_mean_prediction"]),
                   float(metrics["test_prediction_std"]), int(metrics["test_distinct_predictions"]))


def degeneracy(evidence: ModelEvidence, settings: TrainingConfig = TrainingConfig()) -> tuple[str, ...]:
    """Why the model is degenerate, one reason per failed check with its value; empty when it is not."""
    e = evidence
    reasons = [f"no positive of the target `{e.target}` in the {window} window"
               for window, positives in (("training", e.train_positives), ("validation", e.valid_positives))
               if positives == 0]
    if not math.isfinite(e.test_auc):
        reasons.append("held-out AUC n/a (the test window holds one class only)")
    elif e.test_auc <= settings.min_test_auc:
        reasons.append(f"held-out AUC {e.test_auc:.3f} ≤ {settings.min_test_auc:.2f}")
    if e.best_iteration <= MAX_DEGENERATE_ITERATION:
        reasons.append(f"best_iteration {e.best_iteration} ≤ {MAX_DEGENERATE_ITERATION}")
    if not e.prediction_std > MIN_PREDICTION_CV * e.mean_prediction:
        values = f"{e.distinct_predictions:,} distinct value{'s' if e.distinct_predictions != 1 else ''}"
        reasons.append(f"near-constant test predictions: std {e.prediction_std:.2g} ≤ {MIN_PREDICTION_CV:.0%} of the "
                       f"mean {e.mean_prediction:.4g} ({values})")
    return tuple(reasons)


@dataclass(frozen=True)
class GateDecision:
    """What the promotion gate decided, and on which figures."""

    promoted: bool
    reason: str
    champion_version: str | None
    difference: Difference | None
    forced: bool = False
    """``--force-promote`` was given (whether or not it changed the decision)."""
    degenerate: tuple[str, ...] = ()
    """Why the model is degenerate (then never promoted); empty when it is not."""

    @property
    def status(self) -> Literal["degenerate", "promoted", "kept_champion"]:
        """The ``nbm.gate`` tag of the run."""
        return "degenerate" if self.degenerate else "promoted" if self.promoted else "kept_champion"


def promotion_gate(report: PolicyReport | None, champion_version: str | None, force: bool,
                   degenerate: tuple[str, ...] = (), min_policy_ess: float = TrainingConfig().min_policy_ess
                   ) -> GateDecision:
    """Decide whether the challenger (policy ``model`` of ``report``) replaces the champion.

    ``degenerate``: the reasons :func:`degeneracy` found (any → never promoted); ``report``: the policy
    evaluation, ``None`` when it was skipped; ``force``: ``--force-promote``.
    """
    if degenerate:
        reason = "degenerate model: " + "; ".join(degenerate)
        if force:
            reason += "; --force-promote does not promote a degenerate model"
        reason += f"; {NO_SERVING}" if champion_version is None else f"; champion stays version {champion_version}"
        return GateDecision(False, reason, champion_version, None, force, degenerate)
    unmeasured = _low_support(report, min_policy_ess)
    if champion_version is None:
        note = f" (policy value unmeasured: {unmeasured})" if unmeasured else ""
        return GateDecision(True, "no champion yet" + note, None, None)
    if report is None or "champion" not in report.replayed.target:
        why = "the policy was not evaluated" if report is None else "the champion could not be evaluated"
        return GateDecision(force, f"{why}; {'forced' if force else 'champion kept'}", champion_version, None, force)
    if unmeasured:
        reason = f"{unmeasured}: the DR comparison with the champion is unusable"
        return GateDecision(force, reason + ("; promoted by --force-promote" if force else "; champion kept"),
                            champion_version, None, force)
    difference = paired_difference(dr_terms(report.logged, report.replayed, "model"),
                                   dr_terms(report.logged, report.replayed, "champion"))
    better = difference.ci_low > 0
    reason = (f"DR value difference {difference.value:+.4f} per decision, 95% CI "
              f"[{difference.ci_low:+.4f}, {difference.ci_high:+.4f}]: "
              + ("lower bound above zero" if better else "lower bound not above zero"))
    if force and not better:
        return GateDecision(True, reason + "; promoted by --force-promote", champion_version, difference, True)
    return GateDecision(better, reason, champion_version, difference, force)


def _low_support(report: PolicyReport | None, min_policy_ess: float) -> str:
    """Which of the challenger's and the champion's policies too few logged decisions support ('' if none)."""
    if report is None:
        return ""
    ess = {name: report.values[name].ess for name in ("model", "champion") if name in report.values}
    return "; ".join(f"the {name}'s policy has an effective sample size of {_below(value)} < {min_policy_ess:,g}"
                     for name, value in ess.items() if not value >= min_policy_ess)


def _below(ess: float) -> str:
    """``ess`` rounded down to a tenth (so that it never prints as the minimum it is below), e.g. ``5`` or ``99.9``."""
    return f"{math.floor(ess * 10) / 10:,.1f}".removesuffix(".0") if math.isfinite(ess) else "n/a"
