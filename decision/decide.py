"""``decide_many()``: the one decision path, for the service, ``nbm recommend``, off-policy replay and the
simulated A/B loop.

For many decisions at once (user ``user_ids[i]`` as of ``now[i]``): every eligible candidate pair
(:func:`decision.pairs.expand_pairs`), less those the caller's ``keep`` drops (a request's filters, channels
lost since the snapshot); the contact policy's verdict on every (pair, slot) given each decision's send
history (:func:`decision.contact.pair_contact`); the arm's choice (:func:`decision.arms.arm_decide`: two-stage
scoring and the explorer for the model, a priority for the baselines; the holdout decides nothing); and,
per decision, the answer's items, suppressed pairs, reason, slate propensity and planned sends
(:class:`Decisions`). Callers own only what is theirs: where the histories come from (the snapshot and the
state store, or the data directory), what an answer is called and where it goes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from decision.answer import Answer, slate_items, suppressed_by_decision
from decision.arms import PriorityPolicy, arm_decide
from decision.contact import PairContact, pair_contact
from decision.pairs import CandidateRows, Pairs, expand_pairs
from decision.scoring import ModelDecisions
from features.pipeline import FeatureStore
from nbm.artifact import ScoringArtifact
from nbm.policy.contact import ContactDecision, SendHistories
from nbm.policy.explore import Explorer, Greedy

HOLDOUT = "holdout"
"""The arm that decides nothing (its decisions are logged without items)."""


@dataclass(frozen=True)
class Eligible:
    """The eligible candidates of many decisions (:class:`~decision.pairs.Pairs`) and the contact policy's
    verdict on each (pair, slot) given the decisions' send histories; several arms or models decided over
    the same decisions (off-policy replay) share them."""

    pairs: Pairs
    contact: PairContact

    @cached_property
    def rows(self) -> tuple[CandidateRows, ContactDecision]:
        """The same candidates one row per (pair, slot), with the verdict on each row: what the priority
        baselines rank (built once, shared by every baseline decided over these candidates)."""
        ex, p, s = self.pairs.expanded()
        return ex, self.contact.rows(p, s)


def eligible_candidates(store: FeatureStore, user_ids: np.ndarray, now: np.ndarray, histories: SendHistories,
                        keep: Callable[[Pairs], np.ndarray | None] | None = None) -> Eligible:
    """Every eligible candidate pair of ``user_ids[i]`` as of ``now[i]`` that ``keep(pairs)`` keeps (``None``:
    all), with the contact policy's verdicts."""
    pairs = expand_pairs(store, np.asarray(user_ids, dtype=object), np.asarray(now, dtype=np.int64))
    kept = keep(pairs) if keep is not None else None
    if kept is not None:
        pairs = pairs.take(np.flatnonzero(kept))
    return Eligible(pairs, pair_contact(store, pairs, histories))


@dataclass(frozen=True)
class Decisions:
    """What :func:`decide_many` decided for ``n`` decisions. Per decision, in order (built when first read):
    ``items`` and ``suppressed`` (the answer's lists), ``reason`` (why nothing is sent; ``""`` when something
    is), ``propensity`` (of the whole slate) and ``planned`` (``(send_at ns, channel, message_id)`` per
    item); :meth:`answer` makes one an :class:`~decision.answer.Answer`. ``model`` holds the arm's full result
    (the candidates scored, the first pick's batch, the slate) and ``eligible`` the candidates, for callers
    that read more than the answers (off-policy replay); both ``None`` for the holdout."""

    n: int
    model: ModelDecisions | None = None
    eligible: Eligible | None = None
    nothing_reason: str = ""

    def __len__(self) -> int:
        return self.n

    @classmethod
    def nothing(cls, n: int, reason: str) -> Decisions:
        """``n`` decisions that send nothing, for ``reason``."""
        return cls(n, nothing_reason=reason)

    @cached_property
    def _starts(self) -> list[int]:
        return np.searchsorted(self.model.slate.decision, np.arange(self.n + 1)).tolist()

    @cached_property
    def items(self) -> list[list[dict]]:
        if self.model is None:
            return [[] for _ in range(self.n)]
        every_item, starts = slate_items(self.model), self._starts   # the slate's rows are grouped by decision
        return [every_item[starts[i]:starts[i + 1]] for i in range(self.n)]

    @cached_property
    def suppressed(self) -> list[list[dict]]:
        if self.model is None:
            return [[] for _ in range(self.n)]
        blocked = suppressed_by_decision(self.eligible.pairs, self.eligible.contact)
        return [blocked.get(i, []) for i in range(self.n)]

    @cached_property
    def reason(self) -> list[str]:
        if self.model is None:
            return [self.nothing_reason] * self.n
        return [str(r) for r in self.model.batch.reason.tolist()]

    @cached_property
    def propensity(self) -> list[float]:
        if self.model is None:
            return [1.0] * self.n
        p, starts, items = np.asarray(self.model.slate.propensity, dtype=float), self._starts, self.items
        return [float(np.prod(p[starts[i]:starts[i + 1]])) if items[i] else 1.0 for i in range(self.n)]

    @cached_property
    def planned(self) -> list[list[tuple[int, str, str]]]:
        if self.model is None:
            return [[] for _ in range(self.n)]
        send_at, starts = np.asarray(self.model.slate.send_at, dtype=np.int64).tolist(), self._starts
        return [[(at, item["channel"], item["message_id"]) for at, item in zip(send_at[starts[i]:starts[i + 1]], items)]
                for i, items in enumerate(self.items)]

    def answer(self, i: int, decision_id: str, user_id: str, model_version: str, now: int, arm: str | None = None,
               experiment: str | None = None, explorer: str = "greedy", policy: str = "") -> Answer:
        """Decision ``i`` as an :class:`~decision.answer.Answer`, named and labelled by the caller."""
        return Answer(decision_id, user_id, model_version, self.items[i], self.suppressed[i], self.reason[i], int(now),
                      arm, experiment, explorer, policy, self.propensity[i], self.planned[i])


def decide_many(store: FeatureStore, artifact: ScoringArtifact, user_ids: np.ndarray, now: np.ndarray,
                histories: SendHistories, rng: np.random.Generator, arm: str | PriorityPolicy = "model",
                explorer: Explorer | None = None, k: int = 1, threshold: float = 0.0,
                keep: Callable[[Pairs], np.ndarray | None] | None = None, statistics: dict | None = None,
                patch=None, eligible: Eligible | None = None) -> Decisions:
    """Decide for ``user_ids[i]`` as of ``now[i]`` (int64 ns; an unknown user is a new user), each with its
    send history (``histories``, grouped by decision), by one ``arm`` with one ``explorer`` (greedy by
    default), up to ``k`` items each; see the module docstring.

    ``keep(pairs)`` returns which candidate pairs stay (``None``: all); ``eligible``, when given, are the
    candidates already found (:func:`eligible_candidates`; ``keep`` is then not used); ``statistics`` are
    Thompson sampling's (message, channel) → (successes, failures); ``patch(columns, rows)`` updates
    features the caller knows more of before scoring (:func:`decision.scoring.score`). Randomness only
    through ``rng``.
    """
    user_ids = np.asarray(user_ids, dtype=object)
    if arm == HOLDOUT:
        return Decisions.nothing(len(user_ids), HOLDOUT)
    if eligible is None:
        eligible = eligible_candidates(store, user_ids, now, histories, keep)
    elif eligible.pairs.n_groups != len(user_ids):
        raise ValueError(f"`eligible` holds {eligible.pairs.n_groups} decisions, `user_ids` {len(user_ids)}")
    # The model scores pairs; the baselines rank rows (built once per ``eligible``).
    candidates, contact = (eligible.pairs, eligible.contact) if arm == "model" else eligible.rows
    md = arm_decide(store, artifact, candidates, histories, arm, explorer or Greedy(), rng, threshold,
                    contact=contact, k=k, statistics=statistics, patch=patch)
    return Decisions(len(user_ids), md, eligible)
