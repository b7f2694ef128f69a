"""The zoo of worlds (``nbm simulate --preset``): each preset shows its structure, measured on a seeded small
world against the default world of the same size, and a preset world rebuilt from ``world.json`` replays to
the same log.

Measured on the seeded worlds of these tests (seed 3; docs/simulator.md gives the ranges over seeds 0–5,
which the thresholds leave room for):

* sparse: conversions 0.17 % of sends (default 2.3 %), clicks 23× conversions;
* taste: individual (user × message) variance of log P(click) 161× the population's (message) variance
  (default 2×);
* timing: the best slot is not the commonest one for 78 % of people (default 56 %); personal slots beat the
  population's best slot by 67 % of value (default 15 %), and the best daytime slot is worth 3.0× the worst
  (default 1.3×);
* lifecycle: the world's stage agrees with nbm's stage from the log under the preset's `[lifecycle]` for all
  users; the two thirds who visited but did not click for 45 days are dormant; win-back messages (dormant
  only) are worth 7.6× the others and the oracle picks one for 69 % of dormant users;
* churn: median message lifetime 7 days; the median message gets 0.41× the default world's sends, the
  median message live at the log's end 0.26×.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nbm.cli import main
from nbm.config import LIFECYCLE_STAGES, LifecycleConfig, load_config
from nbm.errors import UsageError
from nbm.lifecycle import stages_at
from nbm.schema import EVENT_TYPES
from nbm.simulate import SimConfig, SimulatedData, World, simulate
from nbm.simulate.environment import Environment
from nbm.simulate.generate import environment_for
from nbm.simulate.manifest import NBM_TOML_EXAMPLE, WORLD, read_world_manifest, world_manifest
from nbm.simulate.policies import best_actions
from nbm.simulate.presets import PRESETS, get_preset, world_config

DAY_NS = 86_400 * 10**9
ACTIVE, DORMANT = LIFECYCLE_STAGES.index("active"), LIFECYCLE_STAGES.index("dormant")


def _pair(preset: str, **size) -> tuple[SimulatedData, SimulatedData]:
    """The preset's world and the default world at the same size and seed."""
    return simulate(world_config(preset, **size)), simulate(world_config(None, **size))


# -- the presets as a table ------------------------------------------------------------------------------

def test_there_are_at_least_five_presets_and_each_changes_the_structure() -> None:
    assert {"sparse", "taste", "timing", "lifecycle", "churn"} <= set(PRESETS)
    for name, preset in PRESETS.items():
        assert preset.name == name
        assert preset.changes(), f"{name}: no knob differs from the default world"
        assert preset.differs and preset.matters


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_the_recommended_configuration_is_a_valid_nbm_toml(name: str, tmp_path: Path) -> None:
    path = tmp_path / "nbm.toml"
    path.write_text(PRESETS[name].nbm_toml)
    config = load_config(path, environ={})
    if name == "lifecycle":
        # The operator's lifecycle is the world's own definition.
        assert config.lifecycle == PRESETS[name].world.lifecycle


def test_the_default_world_is_unchanged_event_for_event() -> None:
    """Pinned from the simulator before presets existed: the new knobs default to the old behaviour."""
    events = simulate(SimConfig(n_users=300, n_days=10, seed=7)).tables["events"]
    text = events.astype(str).to_csv(index=False)
    assert len(events) == 1693
    assert hashlib.sha256(text.encode()).hexdigest() == \
        "e4016db60bda5469f64d554add7c24e7e56a924749a254d1492d76ac0d9488e2"
    assert world_config(None, n_users=300, n_days=10, seed=7) == SimConfig(n_users=300, n_days=10, seed=7)


# -- the command line and world.json ---------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_world_rebuilt_from_its_manifest_replays_to_the_same_log(name: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / name
    assert main(["simulate", "--out", str(out), "--users", "300", "--days", "12", "--seed", "5",
                 "--preset", name]) == 0
    spec = json.loads((out / WORLD).read_text())
    assert (spec["preset"], spec["users"], spec["days"], spec["seed"]) == (name, 300, 12, 5)
    rebuilt = read_world_manifest(out)
    assert rebuilt.preset == name and rebuilt.lifecycle == PRESETS[name].world.lifecycle
    again = simulate(rebuilt).tables["events"]
    written = pd.read_parquet(out / "events.parquet")
    for column in ("event_id", "user_id", "event_type", "message_id", "channel", "decision_id"):
        assert written[column].astype(str).tolist() == again[column].astype(str).tolist(), column
    assert (written["timestamp"] == again["timestamp"]).all()
    np.testing.assert_array_equal(written["value"].to_numpy(), again["value"].to_numpy())
    default = simulate(world_config(None, n_users=300, n_days=12, seed=5)).tables["events"]
    what = ["timestamp", "user_id", "event_type", "message_id"]
    assert not again[what].equals(default[what]), "the preset's world is another world than the default"
    printed = capsys.readouterr().out
    assert f"preset `{name}`" in printed and PRESETS[name].nbm_toml.strip() in printed
    assert (out / NBM_TOML_EXAMPLE).read_text() == PRESETS[name].nbm_toml


def test_an_unknown_preset_is_a_usage_error_that_lists_the_presets(tmp_path: Path, capsys) -> None:
    assert main(["simulate", "--out", str(tmp_path / "w"), "--users", "50", "--days", "2", "--preset", "dense"]) == 2
    error = capsys.readouterr().err
    assert "'dense'" in error and all(name in error for name in PRESETS)
    assert not (tmp_path / "w").exists()
    with pytest.raises(UsageError, match="unknown preset"):
        get_preset("dense")


def test_the_help_names_every_preset(capsys) -> None:
    assert main(["simulate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in PRESETS)


def test_a_default_world_writes_no_preset_and_custom_knobs_cannot_be_recorded(tmp_path: Path) -> None:
    assert world_manifest(SimConfig(n_users=10, n_days=2))["preset"] is None
    custom = replace(PRESETS["taste"].config(n_users=10, n_days=2), promo_live_days=3.0)
    with pytest.raises(ValueError, match="world.json"):
        world_manifest(custom)
    with pytest.raises(ValueError, match="world.json"):
        world_manifest(SimConfig(n_users=10, n_days=2, preset="dense"))
    (tmp_path / WORLD).write_text(json.dumps({**world_manifest(SimConfig(n_users=10, n_days=2)), "preset": "dense"}))
    with pytest.raises(UsageError, match="unknown preset 'dense'"):
        read_world_manifest(tmp_path)


# -- each preset's structure -----------------------------------------------------------------------------

def _counts(data: SimulatedData) -> pd.Series:
    return data.tables["events"]["event_type"].value_counts().reindex(list(EVENT_TYPES), fill_value=0)


def test_sparse_conversions_are_rare_and_clicks_many_times_more_frequent() -> None:
    sparse, default = _pair("sparse", n_users=1500, n_days=28, seed=3)
    n = _counts(sparse)
    assert n["convert"] / n["send"] <= 0.005            # ≈ 0.2 %: message and organic conversions together
    assert 10 <= n["click"] / n["convert"] <= 50         # ≈ 20
    assert n["open"] / n["convert"] >= 25
    d = _counts(default)
    assert d["convert"] / d["send"] >= 0.015 and d["click"] / d["convert"] < 5


def _individual_over_population(config: SimConfig, n: int = 1500) -> float:
    """Variance of log P(click) over (user, message) explained by the user × message interaction, over the
    variance of the messages' main effect (population popularity), at the start of the period: every
    message that targets all stages, by email at 12:00 local."""
    env = environment_for(config)
    ctx = env.context()
    users = ctx.users[:n]
    messages = np.flatnonzero(ctx.live & env.world.catalog.stages.all(axis=1))
    u, m = (a.ravel() for a in np.meshgrid(users, messages, indexing="ij"))
    at = env.send_time(u, list(config.slot_hours).index(12))
    email = list(config.channels).index("email")
    logp = np.log(env.respond(u, m, np.full(len(u), email), at).p_click).reshape(len(users), len(messages))
    popularity = logp.mean(axis=0) - logp.mean()
    interaction = logp - logp.mean(axis=1, keepdims=True) - logp.mean(axis=0, keepdims=True) + logp.mean()
    return float(interaction.var() / popularity.var())


def test_taste_individual_taste_dominates_population_popularity() -> None:
    taste = _individual_over_population(world_config("taste", n_users=1500, n_days=5, seed=3))
    default = _individual_over_population(world_config(None, n_users=1500, n_days=5, seed=3))
    assert default < 10                   # ≈ 3: message quality matters next to taste
    assert taste >= 50 and taste >= 10 * default   # ≈ 250


def _slot_values(config: SimConfig, n: int = 1500) -> np.ndarray:
    """True value of each person's best eligible (message, channel) at each slot, (people, slots), at the
    start of the period (people with an eligible pair only)."""
    env = environment_for(config)
    ctx = env.context()
    rows = np.arange(min(n, ctx.k))
    r, m, c = np.nonzero(ctx.eligible(rows))
    value = np.full((len(rows), len(config.slot_hours)), -np.inf)
    for slot in range(len(config.slot_hours)):
        v = env.respond(ctx.users[rows][r], m, c, env.send_time(ctx.users[rows][r], slot)).value
        np.maximum.at(value[:, slot], r, v)
    return value[np.isfinite(value).all(axis=1)]


def _timing_figures(config: SimConfig) -> tuple[float, float, float]:
    """(share of people whose best slot is not the commonest best slot, gain of each person's best slot over
    the population's best slot, mean value at the best daytime slot over the worst)."""
    value = _slot_values(config)
    best = value.argmax(axis=1)
    not_modal = float((best != np.bincount(best).argmax()).mean())
    gain = float(value.max(axis=1).mean() / value[:, value.mean(axis=0).argmax()].mean() - 1)
    daytime = value[:, [i for i, h in enumerate(config.slot_hours) if h < config.quiet_hours[0]]]
    spread = float(daytime.max(axis=1).mean() / np.maximum(daytime.min(axis=1), 1e-9).mean())
    return not_modal, gain, spread


def test_timing_each_persons_hour_dominates() -> None:
    not_modal, gain, spread = _timing_figures(world_config("timing", n_users=1500, n_days=5, seed=3))
    d_not_modal, d_gain, d_spread = _timing_figures(world_config(None, n_users=1500, n_days=5, seed=3))
    assert not_modal >= 0.7 and not_modal >= d_not_modal + 0.15    # ≈ 0.79 against ≈ 0.57
    assert gain >= 0.4 and gain >= 3 * d_gain                     # ≈ 0.64 against ≈ 0.13
    assert spread >= 2.0 and d_spread < 1.6                       # ≈ 2.8 against ≈ 1.3


@pytest.fixture(scope="module")
def lifecycle_world() -> SimulatedData:
    """50 days: longer than the 45 days of the world's dormancy, so the log holds every click that counts."""
    return simulate(world_config("lifecycle", n_users=2000, n_days=50, seed=3))


def _canonical_events(data: SimulatedData, until: int) -> pd.DataFrame:
    """The log with every event under its person's canonical id (what identity resolution gives nbm)."""
    columns = data.environment.log.columns(until=until)
    return pd.DataFrame({
        "user_id": data.world.population.user_ids[columns["user"].astype(np.int64)],
        "timestamp": pd.to_datetime(columns["timestamp"].astype(np.int64), utc=True),
        "event_type": np.asarray(EVENT_TYPES, dtype=object)[columns["event_type"].astype(np.int64)],
    })


def test_lifecycle_stages_follow_clicks_by_the_recommended_configuration(lifecycle_world, tmp_path) -> None:
    (tmp_path / "nbm.toml").write_text(PRESETS["lifecycle"].nbm_toml)
    operator = load_config(tmp_path / "nbm.toml", environ={}).lifecycle
    env = lifecycle_world.environment
    ctx = env.context()                          # the world's stage on the day after the log
    events = _canonical_events(lifecycle_world, env.now)
    users = lifecycle_world.tables["users"]
    ids = lifecycle_world.world.population.user_ids[ctx.users]
    at = np.full(len(ids), env.now, dtype=np.int64)
    by_clicks = stages_at(events, users, ids, at, operator)
    assert (by_clicks == ctx.stage).mean() >= 0.99
    # People who visited in the last 21 days but have not clicked for 45 are dormant in this world …
    last = {kind: events[events["event_type"] == kind].groupby("user_id")["timestamp"].max() for kind in ("visit", "click")}
    visit_days = (env.now - last["visit"].reindex(ids).to_numpy(dtype="datetime64[ns]").view("int64")) / DAY_NS
    click = last["click"].reindex(ids)
    click_days = np.where(click.isna(), np.inf,
                          (env.now - click.to_numpy(dtype="datetime64[ns]").view("int64")) / DAY_NS)
    old = ctx.days_since_signup >= operator.new_days
    visiting_not_clicking = old & (visit_days <= 21) & (click_days > 45)
    assert visiting_not_clicking.mean() >= 0.3
    assert (ctx.stage[visiting_not_clicking] == DORMANT).mean() >= 0.99
    # … while nbm's default lifecycle (visits count) calls nearly everyone who is not new active.
    by_visits = stages_at(events, users, ids, at, load_config(environ={}).lifecycle)
    assert (by_visits[old] == ACTIVE).mean() >= 0.9


def test_lifecycle_the_most_valuable_messages_target_dormant_users(lifecycle_world) -> None:
    catalog = lifecycle_world.world.catalog
    dormant_only = catalog.stages[:, DORMANT] & (catalog.stages.sum(axis=1) == 1)
    assert dormant_only.any()
    assert dormant_only[np.argmax(catalog.value)]
    assert catalog.value[dormant_only].mean() >= 3 * catalog.value[~dormant_only].mean()
    ctx = lifecycle_world.environment.context()
    best, _ = best_actions(ctx, np.flatnonzero(ctx.stage == DORMANT))
    assert dormant_only[best.messages].mean() >= 0.5      # ≈ 0.7 of dormant users: the oracle's choice


def _message_sends(data: SimulatedData) -> tuple[pd.Series, np.ndarray]:
    """Sends per message in the log (messages live at some time of the period), and the live ones at its end."""
    catalog, config = data.world.catalog, data.world.config
    events = data.tables["events"]
    sends = events.loc[events["event_type"] == "send", "message_id"].value_counts()
    sends = sends.reindex(catalog.table["message_id"], fill_value=0)
    in_log = catalog.end_at > config.period_start.value
    return sends[in_log], sends[catalog.live(config.period_end.value - 1)].to_numpy()


def test_churn_messages_live_a_week_and_most_have_little_history() -> None:
    churn, default = _pair("churn", n_users=1500, n_days=60, seed=3)
    catalog, config = churn.world.catalog, churn.world.config
    ends = catalog.end_at < np.iinfo(np.int64).max
    assert ends.mean() >= 0.7
    assert 6 <= np.median((catalog.end_at[ends] - catalog.start_at[ends]) / DAY_NS) <= 8
    new = (catalog.start_at >= config.period_start.value).sum() / config.n_days
    assert 1.5 <= new <= 3.0                             # two new messages a day (and the weekly promotion)
    sends, live_sends = _message_sends(churn)
    d_sends, d_live_sends = _message_sends(default)
    assert sends.median() <= 0.5 * d_sends.median()      # ≈ 0.4
    assert np.median(live_sends) <= 0.5 * np.median(d_live_sends)   # ≈ 0.26: what nbm knows when it decides


def test_a_world_refuses_a_lifecycle_it_cannot_follow() -> None:
    with pytest.raises(ValueError, match="activity_events"):
        SimConfig(lifecycle=LifecycleConfig(activity_events=("open",)))
    with pytest.raises(ValueError, match="loyal"):
        SimConfig(lifecycle=LifecycleConfig(loyal_min_conversions=2))
    with pytest.raises(ValueError, match="kind_stages"):
        SimConfig(kind_stages=((), (), ("new",), ("lapsed",)))
    assert Environment(World.build(PRESETS["lifecycle"].config(n_users=50, n_days=2))).activity == "click"
    assert Environment(World.build(SimConfig(n_users=50, n_days=2))).activity == "visit"
