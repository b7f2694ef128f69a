"""Decision quality across worlds (issue 39): nbm against four baselines, the population oracle and the oracle.

For the default world and every preset of ``nbm.simulate.presets.PRESETS``: simulate a seeded world and its
log; train nbm as ``nbm train`` does (``training.job.run_training``: load and validate the data directory,
training set, default ``RankerParams`` with ``nbm train``'s default objective ``auto`` (the comparison's
first), calibration, MLflow run and registry, promotion gate; its off-policy evaluation is skipped) under the preset's recommended ``nbm.toml`` (``Preset.nbm_toml``; the default world:
nbm's defaults); then, on the morning after the log (the world's state at ``env.now``), decide ONCE for every
live user with

* ``uniform`` — uniform over every eligible (message, channel, slot): its exact expectation (the 0 of the scale);
* ``popular`` — the eligible message with the most attributed conversions in the log (then clicks), on the
  channel and at the local slot hour with the highest click rate in the log;
* ``rules`` — the world's lifecycle CRM (``RuleBasedPolicy``: welcome, win-back, Tuesday promotion, Friday
  newsletter; it sends nothing else on other days);
* ``lightgbm`` — the "60-line notebook": a plain LightGBM classifier of P(click) per logged send on the user's
  opens and clicks per topic and per channel before the send, the message's topic, channel and value, the
  send's local hour and the user attributes; greedy on P(click) × value over every eligible action;
* ``nbm`` — nbm's decision path (``decision.decide.decide_many``: eligibility and stages by the operator's
  ``[lifecycle]``, contact policy, two-stage scoring, greedy), as ``training.simulated.ModelPolicy``, its items
  played at the world's slot of their local hour (``DecisionContext.actions_at``);
* ``population_oracle`` — greedy on the truth's expectation over each person's hidden taste given what is
  observable of them (``nbm.simulate.population_oracle``);
* ``oracle`` — greedy on the truth (the 1 of the scale);

and value each policy's actions with the world's ground truth (expected revenue − unsubscribe cost ×
P(unsubscribe), ``Environment.respond``). The baselines choose among the world's eligible actions
(``DecisionContext.eligible``); nbm's sends are checked against the same rule (stages, consent), and counted.
Targets (issue 39): nbm ≥ 1.2 × lightgbm and ≥ 0.9 × population oracle (normalised); in ``taste`` and
``timing`` nbm above the population oracle; no send outside a message's stages or outside consent. A second
table shows where nbm's value goes: its decisions with one part left to the truth (send only where the true
value is positive; the best slot for its message and channel; the best channel and slot for its message).

The log is 56 days by default: the ``lifecycle`` world's stages follow 45 days of clicks, which a shorter log
cannot show. The decision day is a Tuesday (``--decide-on``) on which no time zone changes its clock.

    .venv/bin/python benchmarks/quality.py [--users 5000] [--days 56] [--seed 0] [--presets default,sparse,…]
                                           [--decide-on 2026-11-10] [--objectives binary,lambdarank,binary:click]
                                           [--unsubscribe-cost 100]

``--objectives`` trains nbm again with each objective (``OBJECTIVE[:TARGET]``) and values its decisions beside the
default's; ``--unsubscribe-cost C`` makes an unsubscribe cost C in every world and to nbm (``[arbitration]
unsubscribe_cost``), and values nbm's decisions with cost 0 (send whenever allowed: threshold 0) and ``auto`` too.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from rich.console import Console

from decision.decide import decide_many
from decision.histories import SendIndex, lookback_ns
from features.pipeline import FeatureStore, build_training_set
from nbm.artifact import ScoringArtifact
from nbm.attribution import GRADE
from nbm.config import NbmConfig, load_config
from nbm.dataset import Dataset, build_dataset
from nbm.simulate import (PRESETS, Actions, OraclePolicy, PopulationOraclePolicy, RuleBasedPolicy, SimulatedData,
                          simulate, world_config)
from nbm.simulate.context import DecisionContext
from nbm.simulate.generate import links_table, users_table
from nbm.simulate.manifest import write_world
from nbm.simulate.policies import USER_CHUNK, action_values, true_value_of, uniform_values
from nbm.simulate.world import World
from training.fit import RankerParams
from training.job import run_training
from training.tracking import load_registered

DEFAULT = "default"
WORLDS = (DEFAULT, *PRESETS)
INDIVIDUAL_WORLDS = ("taste", "timing")
"""Worlds where nbm must beat the population oracle: it has to learn individuals."""
POLICIES = ("uniform", "popular", "rules", "lightgbm", "nbm", "population_oracle", "oracle")
ATTRIBUTES = ("country", "age_band", "app_installed", "favourite_category")
DECIDE_ON = pd.Timestamp("2026-11-10T00:00:00Z")
"""A Tuesday: the world's rules send their weekly promotion to everybody that day. No time zone of the world
changes its clock on it (the world takes one UTC offset per day: on a day of change, nbm's send times an hour
apart from the world's slots would be dropped)."""


@dataclass(frozen=True)
class Audit:
    """nbm's decisions against the world's own eligibility: items answered, played, and refused by it."""

    items: int
    played: int
    outside_stages: int
    lookahead: int             # … of which the world's stage counts activity after the decision instant
    outside_consent: int
    other_ineligible: int      # not live today, or a channel the message does not allow
    moved: int                 # sent at another instant than a slot of today (quiet hours), played at its hour
    reasons: dict[str, int]    # why nothing was sent, per decision without an item


@dataclass(frozen=True)
class WorldRun:
    world: str
    live_users: int
    weekday: str
    value: dict[str, float]    # true value of each policy's decisions, summed over the live users
    sends: dict[str, int]
    audit: Audit
    headroom: dict[str, float]  # nbm's decisions with one part left to the truth (:func:`what_if`)
    training: str              # test AUC and the gate's verdict
    seconds: dict[str, float]  # per stage: simulate, nbm train, nbm decides, baselines, oracles

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    def normalised(self, policy: str) -> float:
        return self.scaled(self.value[policy])

    def scaled(self, value: float) -> float:
        """A true value on the scale 0 = uniform random, 1 = oracle."""
        low, high = self.value["uniform"], self.value["oracle"]
        return (value - low) / (high - low)


def nbm_config(preset: str, home: Path, unsubscribe_cost: float | None = None) -> NbmConfig:
    """The preset's recommended ``nbm.toml`` (nbm's defaults for the default world), with ``home`` under a
    scratch directory, loaded as ``nbm train`` loads it; ``unsubscribe_cost`` the operator's
    ``[arbitration] unsubscribe_cost`` (``None``: the default, auto)."""
    path = home / "nbm.toml"
    home.mkdir(parents=True, exist_ok=True)
    cost = "" if unsubscribe_cost is None else f"\n[arbitration]\nunsubscribe_cost = {unsubscribe_cost}\n"
    path.write_text(f'home = "{home.as_posix()}"\n' + (PRESETS[preset].nbm_toml if preset != DEFAULT else "") + cost)
    return load_config(path, environ={})


def with_cost(config: NbmConfig, cost: float | str) -> NbmConfig:
    """``config`` with ``[arbitration] unsubscribe_cost = cost``."""
    return config.model_copy(update={"arbitration": config.arbitration.model_copy(update={"unsubscribe_cost": cost})})


def train_nbm(data: SimulatedData, config: NbmConfig, workdir: Path, seed: int,
              objective: str = "auto") -> tuple[ScoringArtifact, str]:
    """``nbm train --data DIR --seed SEED`` in-process, without its off-policy evaluation; the trained
    artifact, and the objective trained (``auto``, ``nbm train``'s default: the one its comparison ranks first)
    with its test AUC and the gate's verdict. ``objective`` as ``nbm train --objective``, or
    ``OBJECTIVE:TARGET`` (e.g. ``binary:click``)."""
    objective, _, target = objective.partition(":")
    write_world(data.tables, workdir / "data", "parquet")
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
        result = run_training(workdir / "data", config,
                              RankerParams(objective=objective, target=target or "convert", seed=seed),
                              console=Console(quiet=True), evaluate_policy=False)
        artifact = load_registered("challenger")
    gate = "degenerate: " + "; ".join(result.gate.degenerate) if result.gate.degenerate else "promoted"
    trained = result.comparison.chosen if result.comparison is not None else objective
    return artifact, f"{trained}, AUC {result.metrics.get('test_auc', float('nan')):.3f}, {gate}"


def nbm_decisions(ctx: DecisionContext, artifact: ScoringArtifact, config: NbmConfig,
                  seed: int) -> tuple[Actions, Audit]:
    """nbm's decision for every live user of ``ctx`` (as ``training.simulated.ModelPolicy``), and its audit."""
    env = ctx.environment
    world = env.world
    tables = {"events": env.history(), "messages": world.catalog.table, "users": users_table(world),
              "links": links_table(world)}
    dataset, _ = build_dataset(tables, config, now=pd.Timestamp(ctx.now, tz="UTC"))
    store = FeatureStore.build(dataset, config, strengths=artifact.prior_strengths)   # the model's smoothing
    users = world.population.user_ids[ctx.users]
    now = np.full(ctx.k, ctx.now, dtype=np.int64)
    histories = SendIndex.of(dataset.events).histories(users, now, lookback_ns(config.contact_policy))
    decided = decide_many(store, artifact, users, now, histories, np.random.default_rng(seed))
    slate, rows = decided.model.slate, decided.model.scored.rows
    position = np.asarray(slate.decision, dtype=np.int64)
    message = world.message_index(np.asarray(rows.message_id[slate.row], dtype=object))
    channel = world.channel_index(np.asarray(rows.channel[slate.row], dtype=object))
    eligible = ctx.eligible(position)[np.arange(len(position)), message, channel]
    outside_stages = ~world.catalog.stages[message, ctx.stage[position]]
    # The world's state holds each person's last visit and click, outcomes of yesterday's sends included: one
    # after midnight already counts in the morning's stage, which no log up to the decision can show.
    last = {"visit": env.state.last_visit, "click": env.state.last_click}[env.activity][ctx.users[position]]
    lookahead = outside_stages & (last > ctx.now)
    outside_consent = ~ctx.consent[position, channel]
    actions, _, moved = ctx.actions_at(position, message_id_of(world, message),
                                       np.asarray(world.config.channels)[channel], slate.send_at,
                                       np.ones(len(position)))
    # Why nothing is sent: the contact policy's verdict where it suppressed every candidate, else the reason.
    reasons = pd.Series([pd.Series([s["reason"] for s in blocked]).mode().iloc[0] if blocked else reason
                         for reason, items, blocked in zip(decided.reason, decided.items, decided.suppressed)
                         if not items], dtype=object).value_counts()
    return actions, Audit(len(position), len(actions), int(outside_stages.sum()), int(lookahead.sum()),
                          int(outside_consent.sum()),
                          int((~eligible & ~outside_stages & ~outside_consent).sum()), moved,
                          {str(k): int(v) for k, v in reasons.items()})


def message_id_of(world: World, message: np.ndarray) -> np.ndarray:
    return world.catalog.table["message_id"].to_numpy(dtype=object)[message]


def popular_actions(ctx: DecisionContext, sends: pd.DataFrame) -> Actions:
    """Each user's eligible message with the most attributed conversions in the log (then clicks), on the
    eligible channel with the highest click rate and at the slot hour with the highest click rate."""
    world = ctx.environment.world
    clicked = sends["label"].to_numpy() >= GRADE["click"]
    converted = sends["label"].to_numpy() >= GRADE["convert"]
    message = world.message_index(sends["message_id"].to_numpy(dtype=object))
    n_messages, channels = world.catalog.n, list(world.config.channels)
    score = (np.bincount(message, weights=converted, minlength=n_messages) * 1e6
             + np.bincount(message, weights=clicked, minlength=n_messages))
    by_channel = pd.Series(clicked).groupby(sends["channel_name"].to_numpy()).mean()
    channel_rate = by_channel.reindex(channels).fillna(0.0).to_numpy()
    by_hour = pd.Series(clicked).groupby(np.round(sends["time_local_hour"].to_numpy()).astype(int)).mean()
    slot = int(np.argmax(by_hour.reindex(list(ctx.slot_hours)).fillna(0.0).to_numpy()))
    parts = []
    for rows in np.array_split(np.arange(ctx.k), max(1, ctx.k // USER_CHUNK)):
        eligible = ctx.eligible(rows)
        has = eligible.any(axis=(1, 2))
        best = np.argmax(np.where(eligible.any(axis=2), score[None, :], -np.inf), axis=1)
        channel = np.argmax(np.where(eligible[np.arange(len(rows)), best], channel_rate[None, :], -np.inf), axis=1)
        parts.append(Actions(ctx.users[rows[has]], best[has], channel[has], np.full(int(has.sum()), slot),
                             np.ones(int(has.sum()))))
    return Actions.concat(parts)


# -- the "60-line notebook": a plain LightGBM click model × message value ----------------------------------

def user_counts(events: pd.DataFrame, topics: pd.Index, channels: pd.Index, user_ids: np.ndarray,
                at: np.ndarray) -> np.ndarray:
    """Opens and clicks of ``user_ids[i]`` strictly before ``at[i]`` (int64 ns), by topic and by channel:
    float (n, 2 · (topics + channels)), columns open × topic, click × topic, open × channel, click × channel."""
    outcomes = events[events["event_type"].isin(["open", "click"])]
    kind = (outcomes["event_type"].to_numpy(dtype=object) == "click").astype(np.int64)
    topic = topics.get_indexer(outcomes["topic"].to_numpy(dtype=object))
    channel = channels.get_indexer(outcomes["channel"].to_numpy(dtype=object))
    n_t, n_c = len(topics), len(channels)
    one_hot = np.zeros((len(outcomes), 2 * (n_t + n_c)))
    ok = topic >= 0
    one_hot[np.flatnonzero(ok), kind[ok] * n_t + topic[ok]] = 1.0
    ok = channel >= 0
    one_hot[np.flatnonzero(ok), 2 * n_t + kind[ok] * n_c + channel[ok]] = 1.0
    people = pd.Index(pd.unique(np.concatenate([outcomes["user_id"].to_numpy(dtype=object), user_ids])))
    stamps = np.concatenate([outcomes["timestamp"].to_numpy(dtype="datetime64[ns]").view(np.int64), at])
    ranks = np.unique(stamps, return_inverse=True)[1].astype(np.int64)
    width = int(ranks.max(initial=0)) + 1
    event_user = people.get_indexer(outcomes["user_id"].to_numpy(dtype=object))
    query_user = people.get_indexer(user_ids)
    key = event_user * width + ranks[:len(outcomes)]
    order = np.argsort(key, kind="stable")
    cumulative = np.vstack([np.zeros((1, one_hot.shape[1])), np.cumsum(one_hot[order], axis=0)])
    start = np.searchsorted(key[order], query_user * width, side="left")
    end = np.searchsorted(key[order], query_user * width + ranks[len(outcomes):], side="left")
    return cumulative[end] - cumulative[start]


class Notebook:
    """P(click) of a send from a plain LightGBM classifier, greedy on P(click) × message value."""

    def __init__(self, seed: int = 0, rounds: int = 300) -> None:
        self.seed = seed
        self.rounds = rounds

    def fit(self, dataset: Dataset, sends: pd.DataFrame, world: World) -> Notebook:
        """Learn P(click) of the logged ``sends`` (a training set's ids and labels) from the log of ``dataset``."""
        self.world_ = world
        catalog = world.catalog.table.set_index("message_id")
        self.topics_ = pd.Index(list(world.config.topics))
        self.channels_ = pd.Index(list(world.config.channels))
        self.events_ = dataset.events.assign(topic=catalog["topic"].reindex(dataset.events["message_id"]).to_numpy())
        self.attributes_ = users_table(world).set_index("user_id")[[*ATTRIBUTES, "loyalty_points"]]
        self.categories_ = {a: pd.Index(sorted(self.attributes_[a].dropna().unique())) for a in ATTRIBUTES}
        user_ids = sends["user_id"].to_numpy(dtype=object)
        at = sends["timestamp"].to_numpy(dtype="datetime64[ns]").view(np.int64)
        frame = self.frame(user_counts(self.events_, self.topics_, self.channels_, user_ids, at), user_ids,
                           world.message_index(sends["message_id"].to_numpy(dtype=object)),
                           self.channels_.get_indexer(sends["channel_name"].to_numpy(dtype=object)),
                           np.round(sends["time_local_hour"].to_numpy()))
        label = (sends["label"].to_numpy() >= GRADE["click"]).astype(int)
        params = dict(objective="binary", learning_rate=0.05, num_leaves=31, min_data_in_leaf=50, seed=self.seed,
                      deterministic=True, force_row_wise=True, num_threads=2, verbose=-1)
        self.booster_ = lgb.train(params, lgb.Dataset(frame, label), num_boost_round=self.rounds)
        return self

    def frame(self, counts: np.ndarray, user_ids: np.ndarray, message: np.ndarray, channel: np.ndarray,
              hour: np.ndarray) -> pd.DataFrame:
        catalog = self.world_.catalog
        columns = {f"count_{i}": counts[:, i] for i in range(counts.shape[1])}
        columns["topic"] = pd.Categorical.from_codes(catalog.topic[message], categories=self.topics_)
        columns["channel"] = pd.Categorical.from_codes(channel, categories=self.channels_)
        columns["value"] = catalog.value[message]
        columns["hour"] = hour
        attributes = self.attributes_.reindex(user_ids)
        for name in ATTRIBUTES:
            columns[name] = pd.Categorical(attributes[name].to_numpy(dtype=object), categories=self.categories_[name])
        columns["loyalty_points"] = attributes["loyalty_points"].to_numpy(dtype=float)
        return pd.DataFrame(columns)

    def act(self, ctx: DecisionContext) -> Actions:
        """Every live user's eligible action of the highest P(click) × value (one each)."""
        user_ids = self.world_.population.user_ids[ctx.users]
        counts = user_counts(self.events_, self.topics_, self.channels_, user_ids, np.full(ctx.k, ctx.now))
        hours = np.asarray(ctx.slot_hours, dtype=float)
        parts = []
        for rows in np.array_split(np.arange(ctx.k), max(1, ctx.k // 500)):
            r, m, c = np.nonzero(ctx.eligible(rows))
            s = np.tile(np.arange(len(hours)), len(r))
            r, m, c = (np.repeat(a, len(hours)) for a in (r, m, c))
            p = self.booster_.predict(self.frame(counts[rows[r]], user_ids[rows[r]], m, c, hours[s]))
            score = p * self.world_.catalog.value[m]
            order = np.lexsort((-score, r))
            first = order[np.r_[True, r[order][1:] != r[order][:-1]]] if len(r) else order
            parts.append(Actions(ctx.users[rows[r[first]]], m[first], c[first], s[first], np.ones(len(first))))
        return Actions.concat(parts)


def what_if(ctx: DecisionContext, actions: Actions) -> dict[str, float]:
    """True value of ``actions`` with one part of each decision left to the truth: sending only where the
    true value is positive (send or nothing), the best slot for the chosen (message, channel), the best
    channel and slot for the chosen message. Sums over the users, like the policies' values."""
    rows = np.searchsorted(ctx.users, actions.users)
    value_of = true_value_of(ctx, rows)
    everyone, n_slots = np.arange(len(actions)), len(ctx.slot_hours)
    eligible = ctx.eligible(rows)[everyone, actions.messages]                 # (sends, channels)
    best_slot = np.full(len(actions), -np.inf)
    best_channel_slot = np.full(len(actions), -np.inf)
    for channel in range(eligible.shape[1]):
        ok = np.flatnonzero(eligible[:, channel])
        for slot in range(n_slots):
            v = value_of(ok, actions.messages[ok], np.full(len(ok), channel), slot)
            best_channel_slot[ok] = np.maximum(best_channel_slot[ok], v)
            mine = actions.channels[ok] == channel
            best_slot[ok[mine]] = np.maximum(best_slot[ok[mine]], v[mine])
    value = action_values(ctx, actions)
    return {"only where worth it": float(np.maximum(value, 0.0).sum()), "best slot": float(best_slot.sum()),
            "best channel and slot": float(best_channel_slot.sum())}


# -- one world ------------------------------------------------------------------------------------------------

def run_world(name: str, users: int, days: int, seed: int, decide_on: pd.Timestamp, scratch: Path,
              objectives: tuple[str, ...] = (), unsubscribe_cost: float | None = None) -> WorldRun:
    """One world: ``unsubscribe_cost`` (when given) is the world's cost of an unsubscribe and the operator's
    ``[arbitration] unsubscribe_cost``; nbm's decisions are then also made with cost 0 (send whenever the
    contact policy allows: threshold 0) and with ``auto``."""
    seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(stage: str):
        began = time.perf_counter()
        yield
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - began

    with timed("simulate"):
        sim = world_config(None if name == DEFAULT else name, n_users=users, n_days=days, seed=seed,
                           start=decide_on - pd.Timedelta(days=days))
        if unsubscribe_cost is not None:
            sim = replace(sim, unsubscribe_cost=unsubscribe_cost)
        data = simulate(sim)
    workdir = scratch / name
    config = nbm_config(name, workdir / "home", unsubscribe_cost)
    with timed("nbm train"):
        artifact, training = train_nbm(data, config, workdir, seed)
    env = data.environment                    # the world's state on the morning after the log
    ctx = env.context()
    rng = np.random.default_rng(seed)
    actions: dict[str, Actions] = {}
    with timed("nbm decides"):
        actions["nbm"], audit = nbm_decisions(ctx, artifact, config, seed)
        if unsubscribe_cost is not None:
            actions["nbm:cost 0"], _ = nbm_decisions(ctx, artifact, with_cost(config, 0.0), seed)
            actions["nbm:cost auto"], _ = nbm_decisions(ctx, artifact, with_cost(config, "auto"), seed)
    for objective in objectives:      # nbm trained with another objective (--objectives), beside the default
        with timed(f"nbm {objective}"):
            other, _ = train_nbm(data, config, scratch / f"{name}-{objective}", seed, objective)
            actions[f"nbm:{objective}"], _ = nbm_decisions(ctx, other, config, seed)
    with timed("baselines"):
        default_config = NbmConfig(home=workdir / "home")
        dataset, _ = build_dataset(data.tables, default_config, now=data.world.config.period_end)
        sends = build_training_set(dataset, default_config)     # the log's sends and their attributed outcomes
        actions["popular"] = popular_actions(ctx, sends)
        actions["rules"] = RuleBasedPolicy().act(ctx, rng)
        actions["lightgbm"] = Notebook(seed).fit(dataset, sends, data.world).act(ctx)
    with timed("oracles"):
        actions["population_oracle"] = PopulationOraclePolicy(seed=seed).act(ctx, rng)
        actions["oracle"] = OraclePolicy().act(ctx, rng)
        value = {"uniform": float(uniform_values(ctx).sum())}
        value |= {policy: float(action_values(ctx, a).sum()) for policy, a in actions.items()}
        headroom = what_if(ctx, actions["nbm"])
    sends_count = {"uniform": int((ctx.n_eligible_actions() > 0).sum())} | {p: len(a) for p, a in actions.items()}
    weekday = pd.Timestamp(ctx.now, tz="UTC").day_name()
    return WorldRun(name, ctx.k, weekday, value, sends_count, audit, headroom, training, seconds)


# -- the report -----------------------------------------------------------------------------------------------

def targets(run: WorldRun) -> list[tuple[str, bool]]:
    nbm, lightgbm, population = (run.normalised(p) for p in ("nbm", "lightgbm", "population_oracle"))
    out = [("nbm ≥ 1.2 × lightgbm", nbm >= 1.2 * lightgbm),
           ("nbm ≥ 0.9 × population oracle", nbm >= 0.9 * population)]
    if run.world in INDIVIDUAL_WORLDS:
        out.append(("nbm > population oracle", nbm > population))
    outside = run.audit.outside_stages - run.audit.lookahead + run.audit.outside_consent
    out.append(("no send outside stages or consent" + (" (but the world's look-ahead)" if run.audit.lookahead else ""),
                outside == 0))
    return out


def report(runs: list[WorldRun], args: argparse.Namespace, seconds: float) -> None:
    print(f"decision quality across worlds: {args.users:,} users, {args.days} logged days, seed {args.seed}; one "
          f"decision per live user on {runs[0].weekday if runs else '—'} {args.decide_on.date()} 00:00 UTC, the "
          "morning after the log, valued by each world's ground truth")
    print("\ntrue value normalised: 0 = uniform random, 1 = oracle")
    normalised = pd.DataFrame({r.world: {p: r.normalised(p) for p in POLICIES[1:-1]} for r in runs}).T
    normalised["nbm / pop. oracle"] = normalised["nbm"] / normalised["population_oracle"]
    normalised["nbm / lightgbm"] = normalised["nbm"] / normalised["lightgbm"]
    print(normalised.round(3).to_string())
    variants = sorted({p for r in runs for p in r.value if p.startswith("nbm:")})
    if variants:
        print("\nnbm trained with other objectives (--objectives), or deciding with another unsubscribe cost "
              "(--unsubscribe-cost), normalised")
        print(pd.DataFrame({r.world: {p: r.normalised(p) for p in ("nbm", *variants) if p in r.value}
                            for r in runs}).T.round(3).to_string())

    print("\ntargets (issue 39)")
    for run in runs:
        print(f"  {run.world:<10} " + "; ".join(f"{what}: {'met' if ok else 'MISSED'}" for what, ok in targets(run)))

    print("\nwhere nbm's value goes: its decisions (normalised) with one part left to the truth")
    headroom = pd.DataFrame({r.world: {"nbm": r.normalised("nbm")} | {k: r.scaled(v) for k, v in r.headroom.items()}
                             for r in runs}).T
    print(headroom.round(3).to_string())

    print("\ntrue value per 1,000 live users (expected revenue − unsubscribe cost × P(unsubscribe)); sends below")
    raw = pd.DataFrame({r.world: {p: 1000 * r.value[p] / r.live_users for p in POLICIES} for r in runs}).T
    print(raw.round(1).to_string())
    print(pd.DataFrame({r.world: {p: r.sends[p] for p in POLICIES} for r in runs}).T.to_string())

    print("\nnbm's decisions checked by the world's eligibility, and the world's run")
    audit = pd.DataFrame({r.world: {
        "live users": r.live_users, "day": r.weekday, "items": r.audit.items, "played": r.audit.played,
        "outside stages": r.audit.outside_stages, "… world's look-ahead": r.audit.lookahead,
        "outside consent": r.audit.outside_consent,
        "other ineligible": r.audit.other_ineligible, "moved": r.audit.moved,
        "no item (why)": ", ".join(f"{k} {v}" for k, v in r.audit.reasons.items()) or "—",
        "training": r.training} for r in runs}).T
    print(audit.to_string())
    print("\nseconds per world")
    timing = pd.DataFrame({r.world: r.seconds | {"total": r.total_seconds} for r in runs}).T
    print(timing.round(1).to_string())
    print(f"\nall worlds: {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--days", type=int, default=56)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--presets", default=",".join(WORLDS), help=f"comma-separated, among {', '.join(WORLDS)}")
    parser.add_argument("--objectives", default="",
                        help="comma-separated objectives to train nbm with too (binary, funnel, lambdarank), beside "
                             "the default, each valued the same way")
    parser.add_argument("--unsubscribe-cost", type=float, default=None,
                        help="the worlds' cost of an unsubscribe (default: each world's own, 10) and nbm's "
                             "[arbitration] unsubscribe_cost; nbm also decides with cost 0 and auto")
    parser.add_argument("--decide-on", type=pd.Timestamp, default=DECIDE_ON,
                        help="the decision day (UTC); the log ends on it (default %(default)s)")
    args = parser.parse_args()
    decide_on = args.decide_on.tz_localize("UTC") if args.decide_on.tzinfo is None else args.decide_on
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    unknown = sorted(set(names) - set(WORLDS))
    if unknown:
        parser.error(f"--presets: unknown {unknown}; expected among {', '.join(WORLDS)}")
    if "lifecycle" in names and args.days <= 45:
        print("note: the lifecycle world's stages follow 45 days of clicks; a log of --days ≤ 45 cannot show them "
              "(nbm will disagree with the world's stage for people whose last click predates the log)")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    began = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory(prefix="nbm-quality-") as scratch:
        for name in names:
            runs.append(run_world(name, args.users, args.days, args.seed, decide_on, Path(scratch),
                                  tuple(o for o in args.objectives.split(",") if o), args.unsubscribe_cost))
            print(f"[{name}: {runs[-1].total_seconds:.0f} s]", flush=True)
    report(runs, args, time.perf_counter() - began)


if __name__ == "__main__":
    main()
