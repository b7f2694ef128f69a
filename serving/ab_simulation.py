"""An A/B test run in the simulated world through the real decision path (``nbm simulate --ab``).

The world that ``nbm simulate`` wrote (``world.json`` rebuilds it and its ground truth exactly) is played
forward ``days`` more days. Every day at 00:00 UTC each live user's decision is asked of the service's
:class:`~serving.engine.Engine` — the same object ``nbm serve`` answers with: the experiment's salted-hash
assignment, eligibility, contact policy, ranker, explorer, state store and decision log — with the
channels the user consents to that day, as a campaign engine would pass them. The world plays the sends'
outcomes from its ground truth, and every event of the day flows back through ``Engine.feedback`` (caps,
planned sends, explorer statistics), with the service's decision ids on the sends and the outcomes that
carry one.

Written to ``out``: the data directory's tables extended by the experiment's days (``events`` with the
new sends and outcomes, ``decisions`` with the service's log: arm, experiment, propensity, policy), ready
for ``nbm ab --data OUT --experiment NAME``, and ``ab_truth.json``: per arm, the ground truth's expected
value of what it sent (what an analysis should find, up to noise), and ``items_off_slot``: answers whose
send time is not one of the world's slots of that day (quiet hours moved it past the day), played at the
slot of the same local hour that day.

The service's feature snapshot is the one it loaded at the start (as a service that is not reloaded
during the test); feedback patches its contact-recency features.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nbm.config import NbmConfig
from nbm.errors import UsageError
from nbm.simulate.context import Actions, DecisionContext
from nbm.simulate.generate import simulate
from nbm.simulate.policies import Policy
from nbm.simulate.truth import DAY_NS
from serving.engine import Engine, EngineSettings

CHUNK = 2_000
"""Users asked of the engine at once."""
FEEDBACK_TYPES = ("send", "open", "click", "convert", "unsubscribe", "bounce")
"""What the campaign engine reports back (visits are the site's, not the CRM's)."""


class EnginePolicy(Policy):
    """The service's engine as a policy of the simulated world (one item per user and day)."""

    name = "service"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.ids: dict[int, str] = {}          # the world's decision number → the service's decision id
        self.arm_value: dict[str, float] = {}
        self.arm_sends: dict[str, int] = {}
        self.moved = 0                           # items whose send time is not one of the world's slots today

    def _act(self, ctx: DecisionContext, rng: np.random.Generator) -> Actions:
        env, world = ctx.environment, ctx.environment.world
        channels = np.asarray(world.config.channels, dtype=object)
        ids = world.population.user_ids[ctx.users]
        now = pd.Timestamp(ctx.now, tz="UTC")
        chosen: list[tuple[int, str, str, int, float, str]] = []
        for lo in range(0, ctx.k, CHUNK):
            requests = [{"user_id": str(u), "now": now, "k": 1, "channels": list(channels[ctx.consent[lo + i]])}
                        for i, u in enumerate(ids[lo:lo + CHUNK])]
            asked = [i for i, r in enumerate(requests) if r["channels"]]    # nobody to reach: no decision asked
            answers = self.engine.recommend_many([requests[i] for i in asked]) if asked else []
            for i, answer in zip(asked, answers):
                if "error" in answer:            # serving.engine.unreserved: no decision was taken
                    continue
                self.ids[env.decisions + lo + i] = answer["decision_id"]
                if answer["items"]:
                    item = answer["items"][0]
                    chosen.append((lo + i, item["message_id"], item["channel"], pd.Timestamp(item["send_at"]).value,
                                   float(item["propensity"]), answer.get("arm", "model")))
        if not chosen:
            return Actions.empty()
        position, message, channel, at, propensity, arm = (np.array(c) for c in zip(*chosen))
        actions, keep, moved = ctx.actions_at(position, message, channel, at, propensity)
        self.moved += moved
        send_at = env.send_time(actions.users, actions.slots)
        value = env.respond(actions.users, actions.messages, actions.channels, send_at).value
        for name in np.unique(arm[keep]):
            mine = arm[keep] == name
            self.arm_value[str(name)] = self.arm_value.get(str(name), 0.0) + float(value[mine].sum())
            self.arm_sends[str(name)] = self.arm_sends.get(str(name), 0) + int(mine.sum())
        return actions


@dataclass(frozen=True)
class AbRun:
    out: Path
    experiment: str
    days: int
    decisions: int
    sends: int
    truth: dict[str, dict[str, float]]


def run_ab_simulation(data: Path, out: Path, config: NbmConfig, days: int, model: str, explorer: str = "epsilon_greedy",
                      seed: int = 0, progress=None) -> AbRun:
    """Play ``days`` days of ``config.experiment`` in the world of ``data``; write the result to ``out``."""
    from nbm.simulate.manifest import read_world_manifest, write_world

    if not config.experiment.name:
        raise UsageError("`--experiment`: no experiment is configured; name one (its arms default to "
                         "model 45 %, rules 45 %, holdout 10 %)")
    sim_config = read_world_manifest(data)
    if sim_config is None:
        raise UsageError(f"`--data`: {str(data)!r} was not written by `nbm simulate` (no world.json): the A/B "
                         "simulation needs the world's ground truth")
    if sim_config.messy is not None:
        raise UsageError("`--data`: a world simulated with --messy cannot be replayed exactly; simulate it without")
    logged = simulate(sim_config)                 # the same world, played to the end of its log (deterministic)
    env = logged.environment
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = config.state_url if not config.state_url.startswith("sqlite:///") else f"sqlite:///{out / 'state.db'}"
    (out / "state.db").unlink(missing_ok=True)
    engine = Engine(config.model_copy(update={"state_url": state}),
                    EngineSettings(data=Path(data), model=model, explorer=explorer, seed=seed, reload_seconds=1e9))
    policy = EnginePolicy(engine)
    start = env.now
    for day in range(days):
        before = env.now
        env.step(policy)
        _feedback(engine, env, policy, before, env.now)
        if progress is not None:
            progress(day + 1, days)
    end = env.now
    _feedback(engine, env, policy, end, end + 30 * DAY_NS)      # outcomes of the last days' sends, once
    tables = _tables(logged, env, engine, policy, end + 30 * DAY_NS)
    write_world(tables, out, "parquet")
    log = tables["decisions"]
    mine = log[log["experiment"] == config.experiment.name]
    arms = mine["arm"].value_counts().to_dict()
    truth = {arm: {"users": int(mine.loc[mine["arm"] == arm, "user_id"].nunique()),
                   "sends": policy.arm_sends.get(arm, 0),
                   "true_value": policy.arm_value.get(arm, 0.0)} for arm in sorted(arms)}
    for arm, row in truth.items():
        row["true_value_per_user"] = row["true_value"] / row["users"] if row["users"] else float("nan")
    (out / "ab_truth.json").write_text(json.dumps({
        "experiment": config.experiment.name, "world": str(data), "start": pd.Timestamp(start, tz="UTC").isoformat(),
        "days": days, "shares": config.experiment.arms, "arms": truth,
        "items_off_slot": policy.moved}, indent=2) + "\n")
    return AbRun(out, config.experiment.name, days, len(mine), int(sum(t["sends"] for t in truth.values())), truth)


def _engine_ids(frame: pd.DataFrame, ids: dict[int, str]) -> pd.Series:
    """The events' decision ids, the world's replaced by the service's where the service decided."""
    out = frame["decision_id"].to_numpy(dtype=object).copy()
    if ids:
        numbers = pd.to_numeric(frame["decision_id"].str.slice(1), errors="coerce").fillna(-1).to_numpy(np.int64)
        position = pd.Index(np.fromiter(ids, dtype=np.int64, count=len(ids))).get_indexer(numbers)
        found = position >= 0
        out[found] = np.asarray(list(ids.values()), dtype=object)[position[found]]
    return pd.Series(out, index=frame.index, dtype=object)


def _feedback(engine: Engine, env, policy: EnginePolicy, since: int, until: int) -> None:
    """Report the events in ``[since, until)`` to the engine, as the campaign engine would."""
    frame = env.log.to_frame(until=until, since=since)
    frame = frame[frame["event_type"].isin(FEEDBACK_TYPES).to_numpy()]
    if not len(frame):
        return
    frame = frame.assign(decision_id=_engine_ids(frame, policy.ids))
    frame = frame.assign(timestamp=frame["timestamp"].map(lambda t: t.isoformat()))
    events = frame.astype(object).where(frame.notna(), None).to_dict("records")
    for lo in range(0, len(events), 10_000):
        engine.feedback([{k: v for k, v in e.items() if v is not None} for e in events[lo:lo + 10_000]])


def _tables(logged, env, engine: Engine, policy: EnginePolicy, until: int) -> dict[str, pd.DataFrame]:
    events = env.log.to_frame(until=until)
    events["decision_id"] = pd.array(_engine_ids(events, policy.ids), dtype="str")
    served = engine.state.decision_log()
    served = served[["decision_id", "timestamp", "user_id", "propensity", "policy", "arm", "experiment"]]
    decisions = pd.concat([logged.tables["decisions"].assign(arm=None, experiment=None), served], ignore_index=True)
    return {**logged.tables, "events": events, "decisions": decisions}
