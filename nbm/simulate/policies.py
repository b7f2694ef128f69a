"""Policies that can act in the simulated world, under one template-method base.

:meth:`Policy.act` does the shared work (checks the answer's shape and that no action breaks consent or
the catalog); subclasses write :meth:`Policy._act`. Every policy returns the exact probability of each
choice, so a log written by any of them supports off-policy evaluation.

* :class:`NothingPolicy` — sends nothing (a holdout).
* :class:`UniformRandomPolicy` — uniform over the eligible actions.
* :class:`EpsilonMixPolicy` — a base policy, and with probability ε a uniform draw over the eligible
  actions and "send nothing"; the logging policy is ``EpsilonMixPolicy(RuleBasedPolicy(), ε)``.
* :class:`OraclePolicy` — greedy on the ground truth: the best a myopic policy can do (for benchmarks).
* :class:`~nbm.simulate.population_oracle.PopulationOraclePolicy` — greedy on the truth's expectation over
  each person's hidden taste given what is observable of them: the best without learning individuals.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from nbm.simulate.context import Actions, DecisionContext

USER_CHUNK = 4096
"""Users evaluated at once by the oracle, to bound memory (chunk × messages × channels × slots)."""


class Policy(ABC):
    """Base of the simulated world's policies."""

    name: str = "policy"

    def act(self, ctx: DecisionContext, rng: np.random.Generator) -> Actions:
        """Choose today's actions for the users of ``ctx``; see :class:`Actions`."""
        actions = self._act(ctx, rng)
        if len(np.unique(actions.users)) != len(actions):
            raise ValueError(f"policy `{self.name}` chose more than one action for a user on one day")
        if len(actions) and ((actions.propensity <= 0) | (actions.propensity > 1)).any():
            raise ValueError(f"policy `{self.name}` returned a propensity outside (0, 1]")
        return actions

    @abstractmethod
    def _act(self, ctx: DecisionContext, rng: np.random.Generator) -> Actions: ...


class NothingPolicy(Policy):
    """Sends nothing: the holdout arm."""

    name = "nothing"

    def _act(self, ctx: DecisionContext, rng: np.random.Generator) -> Actions:
        return Actions.empty()


def draw_uniform(ctx: DecisionContext, rows: np.ndarray, rng: np.random.Generator, with_nothing: bool) -> tuple[Actions, np.ndarray]:
    """Draw one eligible action uniformly for each user ``rows`` (positions in ``ctx``).

    Returns the actions of the users who got one and ``n_actions`` (int, len(rows)): the size of each
    user's choice set (eligible actions, plus one for "nothing" when ``with_nothing``).
    """
    n_slots = len(ctx.slot_hours)
    eligible = ctx.eligible(rows)                                  # (r, m, c)
    flat = eligible.reshape(len(rows), eligible.shape[1] * eligible.shape[2])
    n_pairs = flat.sum(axis=1)
    n_actions = n_pairs * n_slots + (1 if with_nothing else 0)
    pick = np.floor(rng.random(len(rows)) * n_actions).astype(np.int64)
    sends = pick < n_pairs * n_slots
    pair, slot = pick // n_slots, pick % n_slots
    position = (np.cumsum(flat, axis=1) <= pair[:, None]).sum(axis=1)  # index of the (pair+1)-th True
    n_channels = eligible.shape[2]
    r = np.flatnonzero(sends)
    actions = Actions(
        users=ctx.users[rows[r]], messages=position[r] // n_channels, channels=position[r] % n_channels,
        slots=slot[r], propensity=1.0 / n_actions[r],
    )
    return actions, n_actions


class UniformRandomPolicy(Policy):
    """Uniform over every eligible (message, channel, slot); nothing only when none is eligible."""

    name = "uniform"

    def _act(self, ctx: DecisionContext, rng: np.random.Generator) -> Actions:
        parts = [draw_uniform(ctx, rows, rng, with_nothing=False)[0]
                 for rows in np.array_split(np.arange(ctx.k), max(1, ctx.k // USER_CHUNK))]
        return Actions.concat(parts)


class EpsilonMixPolicy(Policy):
    """Follow ``base``; with probability ``epsilon`` per user-day, draw uniformly instead.

    The uniform draw covers every eligible action and "send nothing". The propensity of the action taken
    is exact: ``(1 − ε) · [action = base's action] + ε / (eligible actions + 1)``.
    """

    def __init__(self, base: Policy, epsilon: float) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"`epsilon` must lie in [0, 1], got {epsilon!r}")
        self.base = base
        self.epsilon = epsilon
        self.name = f"{base.name}+eps{epsilon:g}"

    def _act(self, ctx: DecisionContext, rng: np.random.Generator) -> Actions:
        base = self.base.act(ctx, rng)
        explore = rng.random(ctx.k) < self.epsilon
        n_actions = ctx.n_eligible_actions() + 1
        position = np.full(ctx.k, -1)
        position[np.searchsorted(ctx.users, base.users)] = np.arange(len(base))  # ctx.users is sorted
        # Users who follow the base policy keep its action.
        keep = np.flatnonzero(~explore & (position >= 0))
        kept = base.take(position[keep])
        kept = Actions(kept.users, kept.messages, kept.channels, kept.slots,
                       (1.0 - self.epsilon) + self.epsilon / n_actions[keep])
        # Explorers draw uniformly; the draw may coincide with the base action.
        rows = np.flatnonzero(explore)
        drawn, _ = draw_uniform(ctx, rows, rng, with_nothing=True)
        at = np.searchsorted(ctx.users, drawn.users)
        same = position[at] >= 0
        b = position[at[same]]
        same[same] = ((base.messages[b] == drawn.messages[same]) & (base.channels[b] == drawn.channels[same])
                      & (base.slots[b] == drawn.slots[same]))
        drawn = Actions(drawn.users, drawn.messages, drawn.channels, drawn.slots,
                        np.where(same, 1.0 - self.epsilon, 0.0) + self.epsilon / n_actions[at])
        both = Actions.concat([kept, drawn])
        # "Nothing": the base chose nothing (kept with 1 − ε), or the uniform draw picked "nothing".
        nothing = np.where(position < 0, 1.0 - self.epsilon, 0.0) + self.epsilon / n_actions
        return Actions(both.users, both.messages, both.channels, both.slots, both.propensity, nothing)


class OraclePolicy(Policy):
    """Greedy on the true value of the world's current state; sends nothing when no value is positive."""

    name = "oracle"

    def _act(self, ctx: DecisionContext, rng: np.random.Generator) -> Actions:
        parts = []
        for rows in np.array_split(np.arange(ctx.k), max(1, ctx.k // USER_CHUNK)):
            best, value = best_actions(ctx, rows)
            parts.append(best.take(np.flatnonzero(value > 0)))
        return Actions.concat(parts)


ValueOf = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]
"""``value_of(r, m, c, slot)``: the value of sending message ``m[i]`` on channel ``c[i]`` at ``slot`` to the user
at position ``r[i]`` of the users decided for (arrays of one length; ``slot`` an index of ``slot_hours``)."""


def true_value_of(ctx: DecisionContext, rows: np.ndarray) -> ValueOf:
    """The ground truth's value of the actions of users ``rows`` of ``ctx``, at the world's current state."""
    env, users = ctx.environment, ctx.users[rows]
    return lambda r, m, c, slot: env.respond(users[r], m, c, env.send_time(users[r], slot)).value


def best_actions(ctx: DecisionContext, rows: np.ndarray, value_of: ValueOf | None = None) -> tuple[Actions, np.ndarray]:
    """The best eligible action of each user ``rows`` by ``value_of`` (default: the truth's value,
    :func:`true_value_of`) and its value by it; users without an eligible action are left out."""
    n_slots = len(ctx.slot_hours)
    value_of = value_of or true_value_of(ctx, rows)
    eligible = ctx.eligible(rows)
    r, m, c = np.nonzero(eligible)
    users = ctx.users[rows]
    value = np.full((len(rows), n_slots), -np.inf)
    best_pair = np.zeros((len(rows), n_slots), dtype=np.int64)
    if len(r):
        for s in range(n_slots):
            v = value_of(r, m, c, s)
            order = np.lexsort((-v, r))                   # per user, best first
            first = order[np.r_[True, r[order][1:] != r[order][:-1]]]
            value[r[first], s] = v[first]
            best_pair[r[first], s] = first
    slot = np.argmax(value, axis=1)
    top = value[np.arange(len(rows)), slot]
    pair = best_pair[np.arange(len(rows)), slot]
    has = np.isfinite(top)
    actions = Actions(users[has], m[pair[has]] if len(r) else pair[has], c[pair[has]] if len(r) else pair[has],
                      slot[has], np.ones(int(has.sum())))
    return actions, top[has]


def action_values(ctx: DecisionContext, actions: Actions) -> np.ndarray:
    """The true value of each of ``actions`` at the world's current state (what the day's sends are worth)."""
    env = ctx.environment
    return env.respond(actions.users, actions.messages, actions.channels,
                       env.send_time(actions.users, actions.slots)).value


def uniform_values(ctx: DecisionContext, rows: np.ndarray | None = None) -> np.ndarray:
    """Each user's expected true value under :class:`UniformRandomPolicy`: the mean true value of every eligible
    (message, channel, slot) of the users ``rows`` of ``ctx`` (all by default); 0 for a user with none."""
    rows = np.arange(ctx.k) if rows is None else np.asarray(rows)
    total, count = np.zeros(len(rows)), np.zeros(len(rows))
    for part in np.array_split(np.arange(len(rows)), max(1, len(rows) // USER_CHUNK)):
        r, m, c = np.nonzero(ctx.eligible(rows[part]))
        value_of = true_value_of(ctx, rows[part])
        for slot in range(len(ctx.slot_hours)):
            total[part] += np.bincount(r, weights=value_of(r, m, c, slot), minlength=len(part))
        count[part] = np.bincount(r, minlength=len(part)) * len(ctx.slot_hours)
    return np.divide(total, count, out=np.zeros(len(rows)), where=count > 0)
