"""A seeded synthetic experiment in the data contract, with known effects, for the A/B analysis tests.

`make_world` draws one experiment, ``spring-test``, over ``WINDOW_DAYS`` days:

* arms by :data:`SHARES` — ``model``, ``rules`` (the control), ``random`` and ``holdout``. ``random`` has exactly
  the truth of ``rules`` (the A/A pair); ``holdout`` is never sent anything.
* each user enters (first decision) in the first 10 days and has 1–4 decisions; the experiment's first decision
  is at :data:`START`, its last at :data:`END`. A decision of a treated arm sends one message with probability
  0.9 on the user's preferred channel (users without consent get nothing); 10 % of those sends carry no
  ``decision_id`` (the window fallback). Each user opens a send with their own probability (Beta, mean 30 %;
  ``model`` × 1.2), clicks 40 % of opens, unsubscribes 1 % of sends (``model`` 2 %: a guardrail breach).
  Before entry, other campaigns send Poisson(1.5) messages per consenting user, no decision id, no unsubscribe:
  the pre-period of opens, clicks and clicks per send.
* conversions: a latent rate ``λ ~ Gamma(0.3, 0.4)`` per user; ``Poisson(λ)`` conversions in the pre-period (of the
  user's window length, just before it) and ``Poisson(λ · lift)`` in the window, ``lift`` = 0.7 in ``holdout``,
  1 in ``rules``/``random``, and in ``model`` 3 for tier ``gold`` but 1 elsewhere (the planted segment
  effect). Revenue per conversion = the user's spend level (lognormal) × noise, so the pre-period predicts it.
* lifecycle: 15 % signed up < 20 days before entry (new), 2 % exactly 30 days (not new); last visit before
  entry 2–20 days (active), 25–55 (at risk), 70–120 (dormant) or never; some exactly 21 or 60 days (the
  boundaries: active, at risk); 30 % also visit after entry, which must not change their stage. Clicks and
  conversions before entry are activity too (``nbm.lifecycle``) and make some of them more recent. Nobody
  consents to ``in_app`` or ``wechat`` (empty segments).
* a second experiment ``other-test`` decides for 200 users, with sends carrying its own ids.
* user attribute ``tier`` includes the value :data:`SCRIPT` (to check escaping) and ``age`` is numeric.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbm.config import ExperimentConfig, NbmConfig
from nbm.dataset import Dataset, build_dataset
from nbm.io import write_table

EXPERIMENT = "spring-test"
OTHER = "other-test"
SHARES = {"model": 0.35, "rules": 0.30, "random": 0.25, "holdout": 0.10}
START = pd.Timestamp("2026-10-01T00:00:00Z")
WINDOW_DAYS = 14
END = START + pd.Timedelta(days=WINDOW_DAYS)
NOW = pd.Timestamp("2026-12-01T00:00:00Z")
SCRIPT = "<script>alert('tier')</script>"
CHANNELS = ("email", "sms", "push")
DAY = pd.Timedelta(days=1).value


def experiment_config(**changes) -> NbmConfig:
    """The configuration that ran ``spring-test`` (shares :data:`SHARES`, control ``rules``)."""
    return NbmConfig(experiment=ExperimentConfig(name=EXPERIMENT, arms=SHARES, control="rules"), **changes)


def make_world(n_users: int = 12_000, seed: int = 7) -> dict[str, pd.DataFrame]:
    """Raw tables (as Parquet would give them) of the experiment described in the module docstring."""
    rng = np.random.default_rng(seed)
    user_ids = np.array([f"u{i:06d}" for i in range(n_users)], dtype=object)
    arm = rng.choice(list(SHARES), n_users, p=list(SHARES.values()))
    tier = rng.choice(["gold", "silver", SCRIPT], n_users, p=[0.3, 0.6, 0.1])
    entry = START.value + (rng.random(n_users) * 10 * DAY).astype(np.int64)
    entry[0], arm[0] = START.value, "rules"
    consent = [";".join(c for c in CHANNELS if rng.random() < 0.5) for _ in range(n_users)]
    preferred = np.array([c.split(";")[0] if c else "" for c in consent], dtype=object)

    new = rng.random(n_users) < 0.15
    days = np.where(new, rng.uniform(1, 20, n_users), rng.uniform(200, 800, n_users))
    days[rng.random(n_users) < 0.02] = 30.0  # exactly new_days before entry: not new
    signup = entry - (days * DAY).astype(np.int64)
    users = pd.DataFrame({"user_id": user_ids, "signup_at": pd.to_datetime(signup, utc=True),
                          "timezone": "UTC", "consent": consent, "tier": tier,
                          "age": rng.integers(18, 80, n_users).astype(float)})

    # decisions: the first at entry, then up to 3 more between entry and END; one user pinned at END
    extra = rng.integers(0, 4, n_users)
    d_user = np.r_[np.arange(n_users), np.repeat(np.arange(n_users), extra)]
    d_time = np.r_[entry, entry[np.repeat(np.arange(n_users), extra)]
                   + (rng.random(extra.sum()) * (END.value - entry[np.repeat(np.arange(n_users), extra)]))
                   .astype(np.int64)]
    d_user, d_time = np.r_[d_user, 0], np.r_[d_time, END.value]
    decisions = pd.DataFrame({"decision_id": [f"d{i:07d}" for i in range(len(d_user))],
                              "timestamp": pd.to_datetime(d_time, utc=True), "user_id": user_ids[d_user],
                              "propensity": 1.0, "policy": arm[d_user], "arm": arm[d_user],
                              "experiment": EXPERIMENT})

    length = END.value - entry
    opener = rng.beta(2.0, 4.67, n_users)  # each user's open probability per send, mean 0.3
    sent = (arm[d_user] != "holdout") & (preferred[d_user] != "") & (rng.random(len(d_user)) < 0.9)
    s_user, s_time = d_user[sent], d_time[sent] + rng.integers(60, 3_600, sent.sum()) * 10**9
    s_decision = decisions["decision_id"].to_numpy()[sent].copy()
    s_decision[rng.random(sent.sum()) < 0.1] = None
    events = _sends(rng, s_user, s_time, s_decision, preferred, np.where(arm == "model", 1.2, 1.0) * opener,
                    np.where(arm == "model", 0.02, 0.01))
    earlier = np.repeat(np.arange(n_users), rng.poisson(1.5, n_users) * (preferred != ""))  # other campaigns
    e_time = entry[earlier] - (rng.random(len(earlier)) * length[earlier]).astype(np.int64) - 1
    events += _sends(rng, earlier, e_time, np.full(len(earlier), None), preferred, opener, np.zeros(n_users))

    rate = rng.gamma(0.3, 0.4, n_users)
    lift = np.select([arm == "holdout", (arm == "model") & (tier == "gold")], [0.7, 3.0], 1.0)
    spend = rng.lognormal(3.0, 0.5, n_users)
    for counts, begin in ((rng.poisson(rate), entry - length), (rng.poisson(rate * lift), entry)):
        c_user = np.repeat(np.arange(n_users), counts)
        c_time = begin[c_user] + (rng.random(len(c_user)) * length[c_user]).astype(np.int64)
        value = spend[c_user] * rng.lognormal(0, 0.3, len(c_user))
        events.append(_events("convert", c_user, c_time, None, value=value))

    stage = rng.choice(4, n_users, p=[0.5, 0.2, 0.15, 0.15])
    seen = stage < 3
    ago = np.select([stage == 0, stage == 1], [rng.uniform(2, 20, n_users), rng.uniform(25, 55, n_users)],
                    rng.uniform(70, 120, n_users))
    ago[rng.random(n_users) < 0.04] = 21.0  # exactly at_risk_after_days: still active
    ago[(stage == 1) & (rng.random(n_users) < 0.1)] = 60.0  # exactly dormant_after_days: still at risk
    events.append(_events("visit", np.flatnonzero(seen), entry[seen] - (ago[seen] * DAY).astype(np.int64), None))
    later = np.flatnonzero(rng.random(n_users) < 0.3)  # visits after entry: no say in the (pre-treatment) stage
    events.append(_events("visit", later, entry[later] + 1 + (rng.random(len(later)) * length[later]).astype(np.int64),
                          None))

    other = rng.choice(n_users, 200, replace=False)
    o_time = entry[other] + DAY // 2
    o_ids = [f"o{i:05d}" for i in range(200)]
    decisions = pd.concat([decisions, pd.DataFrame({
        "decision_id": o_ids, "timestamp": pd.to_datetime(o_time, utc=True), "user_id": user_ids[other],
        "propensity": 1.0, "policy": "other", "arm": "model", "experiment": OTHER})], ignore_index=True)
    has_channel = preferred[other] != ""
    events.append(_events("send", other[has_channel], o_time[has_channel] + 60 * 10**9,
                          preferred[other][has_channel], np.array(o_ids, dtype=object)[has_channel]))

    events = pd.concat(events, ignore_index=True)
    events.insert(0, "event_id", [f"e{i:08d}" for i in range(len(events))])
    events["user_id"] = user_ids[events.pop("user")]
    messages = pd.DataFrame({"message_id": ["m1"], "topic": ["offers"], "channels": [list(CHANNELS)]})
    return {"users": users, "events": events, "decisions": decisions, "messages": messages}


def _sends(rng, user, time, decision, preferred, p_open, p_unsubscribe) -> list[pd.DataFrame]:
    """Sends and what followed: opens with the user's probability ``p_open``, clicks 40 % of opens."""
    channel = preferred[user]
    opened = rng.random(len(user)) < p_open[user]
    clicked = opened & (rng.random(len(user)) < 0.4)
    unsub = rng.random(len(user)) < p_unsubscribe[user]
    hour = 3_600 * 10**9
    return [_events("send", user, time, channel, decision),
            _events("open", user[opened], time[opened] + hour, channel[opened], decision[opened]),
            _events("click", user[clicked], time[clicked] + hour + 60 * 10**9, channel[clicked], decision[clicked]),
            _events("unsubscribe", user[unsub], time[unsub] + 2 * hour, channel[unsub])]


def _events(kind: str, user: np.ndarray, time: np.ndarray, channel, decision=None, value=None) -> pd.DataFrame:
    n = len(user)
    return pd.DataFrame({
        "user": user, "timestamp": pd.to_datetime(np.asarray(time, dtype=np.int64), utc=True), "event_type": kind,
        "message_id": "m1" if kind in ("send", "open", "click") else None,
        "channel": channel if channel is not None else [None] * n,
        "decision_id": decision if decision is not None else [None] * n,
        "value": value if value is not None else np.full(n, np.nan),
    })


def load(tables: dict[str, pd.DataFrame], config: NbmConfig | None = None) -> Dataset:
    dataset, report = build_dataset({k: v.copy() for k, v in tables.items()}, config or experiment_config(), NOW)
    assert not len(report.problems), report.problems.head()
    return dataset


def write_world(tables: dict[str, pd.DataFrame], directory) -> None:
    for name, frame in tables.items():
        write_table(frame, directory, name, "parquet")


@pytest.fixture(scope="session")
def world() -> dict[str, pd.DataFrame]:
    return make_world()


@pytest.fixture(scope="session")
def dataset(world) -> Dataset:
    return load(world)


@pytest.fixture
def config() -> NbmConfig:
    return experiment_config()
