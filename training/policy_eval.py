"""The value of decision policies on the test window, off-policy, from the logged propensities.

Every logged decision of the test window is replayed: each policy decides for the same user as of the
same time, with the same contact history, through the decision path the service runs
(:func:`decision.decide.decide_many`),
and its probability of the logged action gives the importance weight. The reward of a decision follows the
data (:mod:`training.reward`): the revenue attributed to its send when the log's conversions carry revenue,
else whether its send converted, else whether it was clicked (0 when it sent nothing). What a logged action
is follows the log too (:mod:`training.actions`): (message, channel, send hour) when the logged sends fall on
nbm's send slots, as nbm's own decisions do; (message, channel) when they fall at any time, with each policy's
probability summed over its slots. Policies:

* ``model`` — the trained model's decision policy: calibrated P(convert) × message value, contact policy,
  best slot, greedy, nothing below the threshold;
* ``uniform`` — uniform over the eligible (message, channel, slot) actions, always sending;
* ``popular`` — the message with the most attributed conversions before the test window, on the channel
  with the best conversion rate, at the slot hour with the best conversion rate, under the contact policy;
* ``rules`` — the lifecycle rules a CRM team writes: the newest eligible message aimed most narrowly at the
  user's lifecycle stage, on the first consented channel in the configured order, at the slot nearest
  10:00 local, under the contact policy.

Estimators (:mod:`nbm.ope`): SNIPS, and doubly robust with the model's calibrated P (× value, for a revenue
reward) as reward model, each with a seeded bootstrap 95 % interval, plus the effective sample size of the
weights. When the data has a ``decisions`` table, decisions that sent nothing are evaluated too; without it,
only decisions that sent something are (the estimate is then conditional on sending, and says so).

Rewards are right-censored at the end of the log: a conversion that comes after the last logged event is
not in the data yet, so the decisions of the last hours would look worse than they are (on the simulated
world the uniform policy's last test day lost 41 % of its revenue that way, the whole week 6 %). Only
decisions whose outcomes have had time to arrive are evaluated: those made at least the *outcome horizon*
plus the longest logged decision-to-send delay before the log ends. The horizon is the 99th percentile of
the log's send-to-conversion delays (:func:`outcome_horizon`), at most ``attribution.convert_days`` (for a
click reward: of its send-to-click delays, at most ``attribution.open_click_hours``); the decisions held back
are counted in the report.
"""

from __future__ import annotations

import json

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from decision.arms import BASELINES, PriorityPolicy, local_hours, rank
from decision.decide import decide_many, eligible_candidates
from decision.histories import SendIndex, lookback_ns
from decision.pairs import CandidateRows
from decision.scoring import score
from features.pipeline import FeatureStore
from nbm.artifact import ScoringArtifact
from nbm.attribution import GRADE, attribute
from nbm.dataset import Dataset
from nbm.ope import BanditLog, estimate
from nbm.policy.explore import Greedy
from training.actions import KEYS, SLOT, ActionKey, Offered, choose, hour_bucket
from training.reward import REWARDS, Reward, reward_of

POLICIES = ("model", "uniform", "popular", "rules")
CHUNK = 20_000
"""Decisions replayed at once (bounds the candidate rows in memory: ~300 per decision)."""
UNIFORM_SAMPLE = 8
"""Candidates sampled per decision for the reward model's value of the uniform policy."""


@dataclass
class LoggedDecisions:
    """The test window's logged decisions, one row each (``sent`` False: nothing was sent)."""

    frame: pd.DataFrame
    scope: str                     # "decisions" (every decision) or "sends" (only those that sent)
    dropped_without_propensity: int = 0
    censored: int = 0
    """Decisions left out because their outcomes could still arrive after the log's end."""
    until: int | None = None
    """Latest decision time evaluated (ns since the epoch); ``None``: no decision was held back."""
    horizon_hours: float = float("nan")
    """The outcome horizon the cut used (see :func:`outcome_horizon`)."""
    reward: Reward = REWARDS["revenue"]
    """What ``frame["reward"]`` is (:mod:`training.reward`)."""


@dataclass
class PolicyActions:
    """Each decision's actions with positive probability under one policy (``decision`` indexes the log)."""

    decision: list[np.ndarray] = field(default_factory=list)
    message_id: list[np.ndarray] = field(default_factory=list)
    channel: list[np.ndarray] = field(default_factory=list)
    send_at: list[np.ndarray] = field(default_factory=list)
    probability: list[np.ndarray] = field(default_factory=list)

    def add(self, decision, message_id, channel, send_at, probability) -> None:
        for name, value in zip(("decision", "message_id", "channel", "send_at", "probability"),
                               (decision, message_id, channel, send_at, probability)):
            getattr(self, name).append(np.asarray(value))

    def frame(self) -> pd.DataFrame:
        cols = ("decision", "message_id", "channel", "send_at", "probability")
        if not self.decision:
            return pd.DataFrame({c: [] for c in cols})
        return pd.DataFrame({c: np.concatenate(getattr(self, c)) for c in cols})


@dataclass
class Replay:
    """Per policy: π(logged action | x) and the reward model's value Σ_a π(a|x) q̂(x, a), per decision."""

    target: dict[str, np.ndarray]
    q_target: dict[str, np.ndarray]
    actions: dict[str, pd.DataFrame]
    action: ActionKey = SLOT
    """What ``target`` matched the logged sends on (:mod:`training.actions`)."""
    by_action: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    """π(logged action | x) per policy under each action key (``KEYS``); ``target`` is ``action``'s."""
    covered: dict[str, int] = field(default_factory=dict)
    """Logged sends among their decision's eligible actions, per action key (:func:`training.actions.choose`)."""


@dataclass(frozen=True)
class PolicyValue:
    policy: str
    snips: float
    snips_low: float
    snips_high: float
    dr: float
    dr_low: float
    dr_high: float
    ips: float
    ess: float
    matched: int
    true_value: float = float("nan")


def outcome_horizon(dataset: Dataset, attribution, quantile: float = 0.99, min_conversions: int = 30,
                    outcome: str = "convert") -> float:
    """Hours after a send by which ``quantile`` of its attributed ``outcome`` events (conversions, or clicks)
    have arrived, from the log.

    Measured on sends whose whole attribution window (``attribution.convert_days``; for clicks
    ``open_click_hours``) lies inside the log, so that the delays themselves are not cut short; with fewer
    than ``min_conversions`` of those, on every attributed outcome; with fewer than that, the window itself.
    Never more than the window. (:func:`outcome_delays` and :func:`horizon_of_delays`: a log in parts gives
    each part's delays, and the horizon is computed from all of them.)
    """
    events = dataset.events
    if not len(events):
        return outcome_window(attribution, outcome)
    delays = outcome_delays(events, attribution, outcome)
    return horizon_of_delays(*delays, int(events["timestamp"].max().value), attribution, outcome, quantile,
                             min_conversions)


def outcome_window(attribution, outcome: str) -> float:
    """Hours of the attribution window of ``outcome``."""
    return float(attribution.convert_days) * 24.0 if outcome == "convert" else float(attribution.open_click_hours)


def outcome_delays(events: pd.DataFrame, attribution, outcome: str, attributed: np.ndarray | None = None
                   ) -> tuple[int, np.ndarray, np.ndarray]:
    """The log's ``outcome`` events: how many, and for those attributed to a send, the send's instant and the
    delay (int64 ns). ``attributed``: :func:`nbm.attribution.attribute` of ``events``, when already computed."""
    kinds = events["event_type"].to_numpy(dtype=object)
    outcomes = np.flatnonzero(kinds == outcome)
    if not len(outcomes):
        return 0, np.zeros(0, np.int64), np.zeros(0, np.int64)
    if attributed is None:
        attributed = attribute(events, attribution).to_numpy()
    sends = attributed[outcomes]
    found = sends >= 0
    stamps = events["timestamp"].to_numpy(dtype="int64")
    return len(outcomes), stamps[sends[found]], stamps[outcomes[found]] - stamps[sends[found]]


def horizon_of_delays(count: int, sent_at: np.ndarray, delay: np.ndarray, end: int, attribution, outcome: str,
                      quantile: float = 0.99, min_conversions: int = 30) -> float:
    """:func:`outcome_horizon` from :func:`outcome_delays` (summed over the parts of a log) and the log's last
    instant ``end`` (int64 ns)."""
    window = outcome_window(attribution, outcome)
    if count < min_conversions:
        return window
    complete = sent_at <= end - int(window * 3600e9)
    if int(complete.sum()) >= min_conversions:
        delay = delay[complete]
    if len(delay) < min_conversions:
        return window
    return float(min(np.quantile(delay, quantile) / 3600e9, window))


def logged_decisions(dataset: Dataset, test: pd.DataFrame, artifact: ScoringArtifact, start: pd.Timestamp,
                     max_decisions: int | None, seed: int, horizon_hours: float | None = None,
                     reward: Reward = REWARDS["revenue"], end: int | None = None) -> LoggedDecisions:
    """The decisions of the test window (at most ``max_decisions``, a seeded uniform sample) with their
    ``reward`` and the reward model's ``q_logged`` (``artifact``'s probability, × value for revenue).

    Decisions later than the log's end minus ``horizon_hours`` minus the longest logged decision-to-send
    delay are left out (their rewards are not all in the log yet; see the module's docstring), unless that
    would leave none. ``horizon_hours`` None: no cut. ``end``: the log's end (int64 ns) when ``dataset`` holds a
    sample of its people (default: its own last event).
    """
    q = artifact.score(test) * (_values(dataset, test["message_id"]) if reward.value_weighted else 1.0)
    sends = pd.DataFrame({
        "decision_id": test["decision_id"].to_numpy(dtype=object), "event_id": test["event_id"].to_numpy(dtype=object),
        "user_id": test["user_id"].to_numpy(dtype=object), "message_id": test["message_id"].to_numpy(dtype=object),
        "channel": test["channel_name"].to_numpy(dtype=object), "send_at": test["timestamp"].to_numpy(dtype="int64"),
        "reward": reward.of(test), "q_logged": q, "send_propensity": test["propensity"].to_numpy(dtype=float),
    })
    decisions = dataset.decisions
    if decisions is not None and len(decisions):
        d = decisions[decisions["timestamp"] >= start]
        frame = pd.DataFrame({"decision_id": d["decision_id"].to_numpy(dtype=object),
                              "user_id": d["user_id"].to_numpy(dtype=object),
                              "now": d["timestamp"].to_numpy(dtype="int64"),
                              "propensity": d["propensity"].to_numpy(dtype=float),
                              "trigger": _trigger_messages(d)})
        first = sends[sends["decision_id"].notna()].drop_duplicates("decision_id")
        frame = frame.merge(first.drop(columns=["user_id"]), on="decision_id", how="left")
        frame["sent"] = frame["message_id"].notna()
        frame["propensity"] = frame["propensity"].fillna(frame["send_propensity"])
        scope = "decisions"
    else:
        frame = sends.assign(now=sends["send_at"], propensity=sends["send_propensity"], sent=True, trigger=None)
        scope = "sends"
    frame["reward"] = frame["reward"].fillna(0.0)
    frame["q_logged"] = frame["q_logged"].fillna(0.0)
    usable = frame["propensity"].between(0, 1, inclusive="right")
    dropped = int((~usable).sum())
    frame = frame[usable].reset_index(drop=True)
    censored, until = 0, None
    if horizon_hours is not None and len(frame) and len(dataset.events):
        sent = frame["sent"].to_numpy(dtype=bool)
        lag = int((frame["send_at"].to_numpy()[sent] - frame["now"].to_numpy()[sent]).max()) if sent.any() else 0
        last = int(dataset.events["timestamp"].max().value) if end is None else int(end)
        cut = last - int(horizon_hours * 3600e9) - max(lag, 0)
        mature = frame["now"].to_numpy(dtype="int64") <= cut
        if mature.any() and not mature.all():
            censored, until = int((~mature).sum()), cut
            frame = frame[mature].reset_index(drop=True)
    if max_decisions is not None and len(frame) > max_decisions:
        keep = np.sort(np.random.default_rng(seed).choice(len(frame), max_decisions, replace=False))
        frame = frame.iloc[keep].reset_index(drop=True)
    frame = frame.sort_values(["now", "user_id"], kind="stable").reset_index(drop=True)
    return LoggedDecisions(frame[["decision_id", "user_id", "now", "propensity", "sent", "message_id", "channel",
                                  "send_at", "reward", "q_logged", "trigger"]], scope, dropped, censored, until,
                           float("nan") if horizon_hours is None else float(horizon_hours), reward)


def _trigger_messages(decisions: pd.DataFrame) -> np.ndarray:
    """Per logged decision, the messages its trigger allowed (a tuple; ``None``: not a triggered decision), from
    the decisions table's optional ``trigger`` JSON (what the service logs, docs/serving.md "Triggers")."""
    out = np.full(len(decisions), None, dtype=object)
    if "trigger" not in decisions:
        return out
    for i, text in enumerate(decisions["trigger"].tolist()):
        if isinstance(text, str) and text:
            try:
                out[i] = tuple(json.loads(text).get("messages") or ())
            except (ValueError, AttributeError):
                out[i] = None
    return out


def _trigger_keep(part: pd.DataFrame):
    """``keep`` for :func:`~decision.decide.eligible_candidates`: a triggered decision's pairs only among its
    trigger's messages, as the service decided it (``None`` when no decision of ``part`` was triggered)."""
    triggers = part["trigger"].tolist() if "trigger" in part else []
    if not any(t is not None for t in triggers):
        return None

    def keep(pairs) -> np.ndarray:
        allowed = np.ones(len(pairs), dtype=bool)
        names = np.asarray(pairs.messages, dtype=object)
        for g, messages in enumerate(triggers):
            if messages is None:
                continue
            mine = pairs.group == g
            allowed[mine] = np.isin(names[pairs.message_code[mine]], list(messages))
        return allowed

    return keep


def censoring_note(logged) -> str | None:
    """One line on the decisions left out because their outcomes could still arrive after the log's end."""
    if not logged.censored:
        return None
    until = pd.Timestamp(logged.until, tz="UTC").strftime("%Y-%m-%d %H:%M")
    outcome = "conversion" if logged.reward.outcome == "convert" else logged.reward.outcome
    return (f"{logged.censored:,} decisions after {until} UTC are not evaluated: their {outcome}s could still "
            f"arrive after the log's end (outcome horizon {logged.horizon_hours:.0f} h, the 99th percentile of the "
            f"log's send-to-{outcome} delays)")


def _values(dataset: Dataset, message_ids) -> np.ndarray:
    value = dataset.messages.set_index("message_id")["value"]
    return pd.Series(np.asarray(message_ids, dtype=object)).map(value).fillna(1.0).to_numpy(dtype=float)


def replay(store: FeatureStore, logged: LoggedDecisions, artifacts: dict[str, ScoringArtifact],
           reward_model: ScoringArtifact, history_rows: pd.DataFrame, baselines: bool = True,
           threshold: float = 0.0, seed: int = 0, progress=None) -> Replay:
    """Replay every policy (each model of ``artifacts`` and, with ``baselines``, the three baselines).

    Each policy's probability of the logged actions is computed under every action key (``by_action``), with
    the logged sends whose action the eligible candidates cover under each (``covered``, counted by the
    uniform baseline; none without ``baselines``); ``target`` is :data:`~training.actions.SLOT`'s until
    :func:`evaluate_policies` chooses over the whole log."""
    frame = logged.frame
    n = len(frame)
    names = list(artifacts) + (["uniform", "popular", "rules"] if baselines else [])
    by_action = {key: {k: np.zeros(n) for k in names} for key in KEYS}
    counts = dict.fromkeys(KEYS, 0)
    q_target = {k: np.zeros(n) for k in names}
    actions = {k: PolicyActions() for k in names if k != "uniform"}
    rng = np.random.default_rng(seed)
    sends = SendIndex.of(store.dataset.events)
    lookback = lookback_ns(store.config.contact_policy)
    popular = popularity(store, history_rows, logged.reward.outcome)
    priority_baselines = (PriorityPolicy("popular", lambda _, ex: popular(ex), Greedy()), BASELINES["rules"])
    worth = (lambda value: value) if logged.reward.value_weighted else (lambda value: 1.0)  # noqa: E731
    for a in range(0, n, CHUNK):
        part = frame.iloc[a:a + CHUNK]
        users, now = part["user_id"].to_numpy(dtype=object), part["now"].to_numpy(dtype="int64")
        hist = sends.histories(users, now, lookback)
        logged_key = _logged_keys(part, a)
        # Every policy decides over the same candidates: a triggered decision's, its trigger's messages only.
        eligible = eligible_candidates(store, users, now, hist, _trigger_keep(part))
        for name, artifact in artifacts.items():
            md = decide_many(store, artifact, users, now, hist, rng, threshold=threshold, eligible=eligible).model
            b = md.batch
            rows = b.pair_row[b.pair_probability > 0]
            p = b.pair_probability[b.pair_probability > 0]
            acts = _acts(md.scored, rows, b.send_at[rows], p, a)
            actions[name].add(*acts)
            q_rows = score(store, reward_model, md.scored.take(rows).rows) if artifact is not reward_model \
                else md.probability[rows]
            np.add.at(q_target[name], a + md.scored.group[rows], p * q_rows * worth(md.scored.value[rows]))
            _fill(by_action, name, part, a, logged_key, acts)
        if baselines:
            ex = eligible.rows[0]
            voc = store.globals.vocabulary
            offered = Offered.of(a + ex.group, ex.rows.message_code, ex.rows.channel_code,
                                 hour_bucket(ex.rows.send_at), len(voc.messages), len(voc.channels))
            covered = _uniform(store, reward_model, ex, offered, part, a, logged_key,
                               {key: t["uniform"] for key, t in by_action.items()}, q_target["uniform"], rng, worth)
            for key, count in covered.items():
                counts[key] += count
            for policy in priority_baselines:
                # Greedy on a priority; the reward model's P of the chosen rows is their ``probability``.
                md = decide_many(store, reward_model, users, now, hist, rng, arm=policy, eligible=eligible).model
                b = md.batch
                rows = b.chosen[b.chosen >= 0]
                acts = _acts(md.scored, rows, b.send_at[rows], np.ones(len(rows)), a)
                actions[policy.name].add(*acts)
                q_target[policy.name][a + md.scored.group[rows]] = md.probability[rows] * worth(md.scored.value[rows])
                _fill(by_action, policy.name, part, a, logged_key, acts)
        if progress is not None:
            progress(min(a + CHUNK, n), n)
    return Replay(by_action[SLOT.name], q_target, {k: v.frame() for k, v in actions.items()}, SLOT, by_action, counts)


def _acts(ex: CandidateRows, rows: np.ndarray, send_at: np.ndarray, p: np.ndarray, offset: int):
    return (offset + ex.group[rows], ex.rows.message_id[rows], ex.rows.channel[rows], send_at, p)


def _fill(by_action: dict[str, dict[str, np.ndarray]], name: str, part: pd.DataFrame, offset: int,
          logged: pd.DataFrame, acts) -> None:
    for key in KEYS.values():
        by_action[key.name][name][offset:offset + len(part)] = _probability_of_logged(part, offset, logged, acts, key)


def _logged_keys(part: pd.DataFrame, offset: int) -> pd.DataFrame:
    sent = part[part["sent"].to_numpy(dtype=bool)]
    return pd.DataFrame({"decision": offset + np.flatnonzero(part["sent"].to_numpy(dtype=bool)),
                         "message_id": sent["message_id"].to_numpy(dtype=object),
                         "channel": sent["channel"].to_numpy(dtype=object),
                         "hour": hour_bucket(sent["send_at"].to_numpy(dtype="int64"))})


def _probability_of_logged(part: pd.DataFrame, offset: int, logged: pd.DataFrame, acts,
                           key: ActionKey = SLOT) -> np.ndarray:
    """π(logged action | x) per decision of ``part``: the policy's mass on the logged send's action (matched on
    ``key``'s columns: summed over the policy's slots when the key has no hour), or on nothing."""
    decision, message, channel, send_at, p = acts
    chosen = pd.DataFrame({"decision": decision, "message_id": message, "channel": channel,
                           "hour": hour_bucket(send_at), "p": p})
    on = ["decision", *key.columns]
    out = np.zeros(len(part))
    hit = logged[on].merge(chosen[[*on, "p"]], on=on, how="inner")
    np.add.at(out, hit["decision"].to_numpy(dtype=np.int64) - offset, hit["p"].to_numpy())
    sends = np.zeros(len(part))
    np.add.at(sends, np.asarray(decision, dtype=np.int64) - offset, p)
    nothing = ~part["sent"].to_numpy(dtype=bool)
    out[nothing] = np.clip(1.0 - sends[nothing], 0.0, 1.0)
    return out


def _uniform(store, reward_model, ex: CandidateRows, offered: Offered, part, offset, logged,
             targets: dict[str, np.ndarray], q_target, rng, worth) -> dict[str, int]:
    """Uniform over every eligible (message, channel, slot) (``offered``, by action key): exact π of the logged
    action under each key (``targets``: the key's array to fill), sampled q̂ (mean of UNIFORM_SAMPLE draws).
    Returns the logged sends among the eligible actions under each key (those it gives a positive probability)."""
    size = np.bincount(ex.group, minlength=ex.n_groups)
    nothing = ~part["sent"].to_numpy(dtype=bool)
    voc = store.globals.vocabulary
    d = logged["decision"].to_numpy(dtype=np.int64)
    message = voc.messages.get_indexer(logged["message_id"])
    channel = voc.channels.get_indexer(logged["channel"])
    covered = {}
    for key in KEYS.values():
        candidates = offered.candidates_of(key, d, message, channel, logged["hour"].to_numpy())
        hit = candidates > 0
        covered[key.name] = int(hit.sum())
        p = np.zeros(len(part))
        # A (message, channel) holds its slots' candidates; a slot's action is one candidate, as it always was.
        p[d[hit] - offset] = (1.0 if key is SLOT else candidates[hit]) / size[d[hit] - offset]
        p[nothing] = (size[nothing] == 0).astype(float)
        targets[key.name][offset:offset + len(part)] = p
    has = np.flatnonzero(size > 0)
    if len(has):
        starts = np.r_[0, np.cumsum(size)[:-1]]
        draws = starts[has, None] + (rng.random((len(has), UNIFORM_SAMPLE)) * size[has, None]).astype(np.int64)
        flat = draws.ravel()
        q = score(store, reward_model, ex.take(flat).rows) * worth(ex.value[flat])
        q_target[offset + has] = q.reshape(len(has), UNIFORM_SAMPLE).mean(axis=1)
    return covered


def popularity(store: FeatureStore, history_rows: pd.DataFrame, outcome: str = "convert"):
    """Priority of each candidate under ``popular``, from the training set's sends before the test window:
    the message's attributed conversions (``outcome``: the reward's, clicks on a click log), then the
    channel's conversion rate, then the local hour's."""
    voc = store.globals.vocabulary
    converted = history_rows[history_rows["label"].to_numpy() >= GRADE[outcome]]
    by_message = converted["message_id"].value_counts().reindex(voc.messages).fillna(0.0).to_numpy()
    rate_channel = (converted["channel_name"].value_counts() / history_rows["channel_name"].value_counts())
    rate_hour = (converted["time_local_hour"].round().value_counts()
                 / history_rows["time_local_hour"].round().value_counts())
    message_rank = rank(by_message)
    channel_rank = rank(rate_channel.reindex(voc.channels).fillna(0.0).to_numpy())
    hour_rank = rank(rate_hour.reindex(np.arange(24, dtype=float)).fillna(0.0).to_numpy())

    def priority(ex: CandidateRows) -> np.ndarray:
        # Lexicographic: message first, then channel, then hour (each term below the previous one's step).
        return (message_rank[ex.rows.message_code] * 1e6 + channel_rank[ex.rows.channel_code] * 1e3
                + hour_rank[local_hours(ex)] + 1.0)

    return priority


def estimates(logged: LoggedDecisions, replayed: Replay, n_bootstrap: int = 300, seed: int = 0) -> dict[str, PolicyValue]:
    """SNIPS and DR (with 95 % bootstrap intervals), IPS and effective sample size of every replayed policy."""
    f = logged.frame
    out = {}
    for name, target in replayed.target.items():
        log = BanditLog(f["reward"].to_numpy(dtype=float), f["propensity"].to_numpy(dtype=float), target,
                        f["q_logged"].to_numpy(dtype=float), replayed.q_target[name])
        s = estimate(log, "snips", n_bootstrap, seed=seed)
        d = estimate(log, "dr", n_bootstrap, seed=seed)
        w = log.weight
        ess = float(w.sum() ** 2 / (w ** 2).sum()) if (w ** 2).sum() > 0 else 0.0
        out[name] = PolicyValue(name, s.value, s.ci_low, s.ci_high, d.value, d.ci_low, d.ci_high,
                                float(np.mean(w * log.reward)) if len(w) else float("nan"), ess, int((target > 0).sum()))
    return out


def dr_terms(logged: LoggedDecisions, replayed: Replay, name: str) -> np.ndarray:
    """Per-decision doubly robust terms ``q̂_π + w (r − q̂_logged)`` of policy ``name`` (their mean is DR)."""
    f = logged.frame
    w = replayed.target[name] / f["propensity"].to_numpy(dtype=float)
    return replayed.q_target[name] + w * (f["reward"].to_numpy(dtype=float) - f["q_logged"].to_numpy(dtype=float))


@dataclass(frozen=True)
class Difference:
    """Mean per-decision DR difference (challenger − champion) with its bootstrap interval."""

    value: float
    ci_low: float
    ci_high: float
    n: int


def paired_difference(a: np.ndarray, b: np.ndarray, n_bootstrap: int = 1000, alpha: float = 0.05,
                      seed: int = 0) -> Difference:
    """Mean of ``a − b`` over the same decisions, with a percentile bootstrap interval (resampling decisions)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    n = len(d)
    if n < 2:
        return Difference(float(d.mean()) if n else float("nan"), float("nan"), float("nan"), n)
    rng = np.random.default_rng(seed)
    means = np.array([d[rng.integers(0, n, n)].mean() for _ in range(n_bootstrap)])
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Difference(float(d.mean()), float(low), float(high), n)


@dataclass
class PolicyReport:
    """Everything the evaluation of a training found, for the summary, MLflow and the promotion gate."""

    logged: LoggedDecisions
    replayed: Replay
    values: dict[str, PolicyValue]
    true_values: dict[str, float] | None
    true_decisions_seen: int
    seconds: float


def evaluate_policies(dataset: Dataset, config, history_rows: pd.DataFrame, test: pd.DataFrame,
                      test_start: pd.Timestamp, artifacts: dict[str, ScoringArtifact], reward_model: ScoringArtifact,
                      max_decisions: int | None = 100_000, partitions: int = 1, seed: int = 0, sim_config=None,
                      threshold: float = 0.0, progress=None, horizon_hours: float | None | str = "auto",
                      shared=None, end: int | None = None, reward: Reward | None = None) -> PolicyReport:
    """Replay the models and baselines over the test window's logged decisions and estimate their values.

    With ``partitions > 1`` the feature indexes are built for one user partition at a time. With
    ``sim_config`` (the data is a simulated world), the true values come from the world's ground truth.
    ``horizon_hours``: the outcome horizon of the censoring cut ("auto": :func:`outcome_horizon` of the
    log; None: no cut — the last decisions' rewards are then incomplete).

    ``dataset`` may hold a sample of the log's people with all their events (a log in parts, ``nbm train``): then
    ``shared`` is the whole log's :class:`features.pipeline.Globals`, ``end`` its last instant (int64 ns),
    ``reward`` and ``horizon_hours`` the whole log's (:func:`training.reward.reward_of`, :func:`outcome_horizon`),
    and ``test`` holds the sample's sends only.
    """
    import time

    from features.pipeline import Globals, partition, partition_of

    began = time.perf_counter()
    reward = reward if reward is not None else reward_of(dataset.events)
    if horizon_hours == "auto":
        horizon_hours = outcome_horizon(dataset, config.attribution, outcome=reward.outcome)
    logged = logged_decisions(dataset, test, reward_model, test_start, max_decisions, seed, horizon_hours, reward,
                              end=end)
    frame = logged.frame
    shared = shared if shared is not None else Globals.build(dataset, config)
    parts = partition_of(frame["user_id"], partitions) if partitions > 1 else np.zeros(len(frame), np.int64)
    pieces = []
    done = [0]
    for index in range(partitions):
        rows = np.flatnonzero(parts == index)
        if not len(rows):
            continue
        data = partition(dataset, partitions, index) if partitions > 1 else dataset
        store = FeatureStore.build(data, config, shared)
        sub = LoggedDecisions(frame.iloc[rows].reset_index(drop=True), logged.scope, reward=reward)

        def tick(k: int, n: int, base=done[0]) -> None:
            if progress is not None:
                progress(base + k, len(frame))

        pieces.append((rows, replay(store, sub, artifacts, reward_model, history_rows, threshold=threshold,
                                    seed=seed + index, progress=tick)))
        done[0] += len(rows)
        del store
    names = list(pieces[0][1].target) if pieces else list(artifacts) + ["uniform", "popular", "rules"]
    by_action = {key: {k: np.zeros(len(frame)) for k in names} for key in KEYS}
    counts = dict.fromkeys(KEYS, 0)
    q_target = {k: np.zeros(len(frame)) for k in names}
    actions: dict[str, list[pd.DataFrame]] = {}
    for rows, r in pieces:
        for k in names:
            q_target[k][rows] = r.q_target[k]
            for key in KEYS:
                by_action[key][k][rows] = r.by_action[key][k]
        for key in KEYS:
            counts[key] += r.covered[key]
        for k, acts in r.actions.items():
            actions.setdefault(k, []).append(acts.assign(decision=rows[acts["decision"].to_numpy(dtype=np.int64)]))
    action = choose(counts)
    replayed = Replay(by_action[action.name], q_target,
                      {k: pd.concat(v, ignore_index=True) for k, v in actions.items()}, action, by_action, counts)
    values = estimates(logged, replayed, seed=seed)
    truth, seen = None, 0
    if sim_config is not None:
        from training.simulated import true_values

        quiet = (config.contact_policy.quiet_hours_start, config.contact_policy.quiet_hours_end)
        truth, seen = true_values(sim_config, frame, replayed.actions, quiet_hours=quiet)
        values = {k: PolicyValue(**{**v.__dict__, "true_value": truth.get(k, float("nan"))}) for k, v in values.items()}
    return PolicyReport(logged, replayed, values, truth, seen, time.perf_counter() - began)


def policy_metrics(report: PolicyReport) -> dict[str, float]:
    """The report as flat MLflow metrics: ``policy_<name>_<estimate>``."""
    out = {"policy_decisions": float(len(report.logged.frame)),
           "policy_decisions_sent": float(report.logged.frame["sent"].sum()),
           "policy_logged_mean_reward": float(report.logged.frame["reward"].mean()) if len(report.logged.frame) else float("nan"),
           "policy_eval_seconds": report.seconds,
           "policy_actions_with_slot": float(report.replayed.action is SLOT),
           **{f"policy_logged_sends_eligible_{key}": float(n) for key, n in report.replayed.covered.items()}}
    for name, v in report.values.items():
        for key in ("snips", "snips_low", "snips_high", "dr", "dr_low", "dr_high", "ips", "ess", "matched",
                    "true_value"):
            value = getattr(v, key)
            if np.isfinite(value):
                out[f"policy_{name}_{key}"] = float(value)
    return out
