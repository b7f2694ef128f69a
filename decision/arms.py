"""The decisions of each experiment arm: ``model`` (two-stage scoring) and the baselines ``rules`` and
``random``, which rank every candidate row by a priority (:class:`PriorityPolicy`).

Every arm sees the same candidates and contact policy; ``holdout`` decides nothing
(:func:`decision.decide.decide_many` answers it without candidates). Off-policy evaluation adds
baselines of its own (``popular``) as further :class:`PriorityPolicy` objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from decision.contact import PairContact, as_rows, contact_verdict
from decision.pairs import CandidateRows, Pairs
from decision.scoring import ModelDecisions, model_decide, score
from features.history import local_time
from features.pipeline import FeatureStore
from nbm.artifact import ScoringArtifact
from nbm.policy.contact import ContactDecision, SendHistories
from nbm.policy.decide import ScoredCandidates, decide_slate
from nbm.policy.explore import Explorer, Greedy, Softmax

RULES_HOUR = 10
"""The local hour the lifecycle rules aim at."""


def rank(values: np.ndarray) -> np.ndarray:
    """Dense ranks (1 = lowest)."""
    return pd.Series(values).rank(method="dense").to_numpy() if len(values) else values


def local_hours(ex: CandidateRows) -> np.ndarray:
    """Local hour of each candidate's send time in its user's zone."""
    hour, _ = local_time(ex.rows.send_at, ex.timezones[ex.group])
    return hour


def rules_priority(store: FeatureStore, ex: CandidateRows) -> np.ndarray:
    """The lifecycle rules a CRM team writes, as a priority per candidate (higher first): the message aimed
    most narrowly at the user's stage, then the newest, then the channel first in the configured order,
    then the slot nearest 10:00 local, then the catalog's order. Eligibility (stage targeting, consent) is the
    candidates' own."""
    history = store.history
    m = ex.rows.message_code
    narrow = len(history.message_stages[0]) - history.message_stages[m].sum(axis=1)          # 0..4
    start = history.catalog_arrays["start_ns"][m].astype(np.float64)
    newest = rank(np.where(np.isfinite(start), start, -np.inf))
    channel_order = len(store.globals.vocabulary.channels) - ex.rows.channel_code
    distance = np.abs(local_hours(ex) - RULES_HOUR)
    # Last, the catalog's order: rules are deterministic (propensity 1), never a draw between equals.
    catalog_order = 1e-3 * (1.0 - m / (len(history.message_stages) + 1.0))
    return narrow * 1e9 + newest * 1e4 + channel_order * 1e2 + (24 - distance) + catalog_order + 1.0


def priority_decide(store: FeatureStore, ex: CandidateRows, histories: SendHistories, priority: np.ndarray,
                    explorer: Explorer, rng: np.random.Generator, contact: ContactDecision | None = None,
                    k: int = 1) -> ModelDecisions:
    """A baseline policy's decisions: ``decide_slate`` over every candidate row with ``priority`` as its
    expected value (value 1, no threshold: a baseline always sends when something is allowed).
    ``probability`` of the result is the priority."""
    if contact is None:
        contact = contact_verdict(store, ex, histories)
    candidates = ScoredCandidates(ex.rows.message_id, ex.rows.channel, ex.rows.send_at, priority, np.ones(len(ex)))
    slate = decide_slate(ex.group, ex.n_groups, candidates, histories, ex.timezones, store.config.contact_policy,
                         explorer, rng, k=k, threshold=-np.inf, contact=contact)
    return ModelDecisions(ex, np.asarray(priority, dtype=float), slate.first, slate)


def random_priority(store: FeatureStore, ex: CandidateRows) -> np.ndarray:
    """Equal values for every pair, and a tie-break of 1e-9 that picks the slot nearest 10:00 local: softmax
    over them is uniform over the pairs (exact propensities)."""
    return 1.0 + 1e-9 * (24 - np.abs(local_hours(ex) - RULES_HOUR)) / 24


@dataclass(frozen=True)
class PriorityPolicy:
    """A baseline that ranks every candidate row by ``priority(store, rows)`` and chooses with ``explorer``
    (greedy: propensity 1; softmax over equal priorities: uniform)."""

    name: str
    priority: Callable[[FeatureStore, CandidateRows], np.ndarray]
    explorer: Explorer


BASELINES = {"rules": PriorityPolicy("rules", rules_priority, Greedy()),
             "random": PriorityPolicy("random", random_priority, Softmax())}
"""The baseline arms the service and batch scoring serve, by name."""


def arm_decide(store: FeatureStore, artifact: ScoringArtifact, candidates: Pairs | CandidateRows,
               histories: SendHistories, arm: str | PriorityPolicy, explorer: Explorer, rng: np.random.Generator,
               threshold: float = 0.0, contact: PairContact | ContactDecision | None = None, k: int = 1,
               statistics: dict | None = None, patch=None) -> ModelDecisions:
    """The decisions of one experiment arm:

    * ``model`` — :func:`model_decide` with ``explorer`` (and Thompson sampling's ``statistics``);
    * ``rules`` — :func:`rules_priority`, greedy (propensity 1);
    * ``random`` — every allowed (message, channel) pair equally likely (exact propensities), at its allowed
      slot nearest 10:00 local;
    * a :class:`PriorityPolicy` — its priority, with its own explorer.

    Every arm sees the same candidates and contact policy. For the baselines, ``probability`` holds the
    model's calibrated probability of the chosen rows (for the answer's ``score``) and NaN elsewhere.
    """
    if arm == "model":
        return model_decide(store, artifact, candidates, histories, explorer, rng, threshold, contact=contact, k=k,
                            statistics=statistics, patch=patch)
    policy = arm if isinstance(arm, PriorityPolicy) else BASELINES.get(arm)
    if policy is None:
        raise ValueError(f"unknown arm {arm!r}: expected model, {', '.join(BASELINES)}")
    ex, contact = as_rows(store, candidates, histories, contact)
    md = priority_decide(store, ex, histories, policy.priority(store, ex), policy.explorer, rng, contact=contact, k=k)
    chosen = md.slate.row
    probability = np.full(len(ex), np.nan)
    if len(chosen):
        probability[chosen] = score(store, artifact, ex.take(chosen).rows, patch=patch)
    return replace(md, probability=probability, slate=replace(md.slate, score=probability[chosen]))
