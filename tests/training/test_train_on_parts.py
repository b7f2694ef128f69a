"""``nbm train`` on a log in parts (``events/*.parquet``, issue 42): the shared tables and the training set built by
a LocalCluster's workers, a part each, with the risk model's labels; the model, its held-out metrics and its risk
equal the in-memory training's, and the off-policy evaluation reads the test window's people from the parts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nbm.cli import main

pytestmark = pytest.mark.slow


def _parted(data: Path, parted: Path, parts: int = 3) -> Path:
    """``data`` with its events as Parquet parts by a hash of the canonical user (the other tables copied)."""
    from features.pipeline import partition_of
    from nbm.config import load_config
    from nbm.dataset import load_dataset

    dataset, _ = load_dataset(data, load_config())
    (parted / "events").mkdir(parents=True)
    events = pd.read_parquet(data / "events.parquet")
    of = partition_of(dataset.identity.apply(events["user_id"].astype(str)), parts)
    for i in range(parts):
        events[of == i].to_parquet(parted / "events" / f"part-{i:05d}.parquet", index=False)
    for name in ("messages", "users", "links", "decisions"):
        if (data / f"{name}.parquet").exists():
            pd.read_parquet(data / f"{name}.parquet").to_parquet(parted / f"{name}.parquet", index=False)
    if (data / "world.json").exists():          # the simulated world's ground truth
        (parted / "world.json").write_text((data / "world.json").read_text())
    return parted


def _train(tmp_path: Path, data: Path, name: str, monkeypatch, extra: list[str] = (), scheduler: str = "") -> tuple:
    from mlflow import MlflowClient

    from nbm.config import load_config
    from training.tracking import MODEL_NAME, use_tracking

    home, config = tmp_path / name, tmp_path / f"{name}.toml"
    config.write_text(f'dask_scheduler = "{scheduler}"\n')
    monkeypatch.setenv("NBM_HOME", str(home))
    code = main(["train", "--config", str(config), "--data", str(data), "--no-compare", "--valid-days", "5",
                 "--test-days", "5", *extra])
    if code != 0:
        return code, None, None
    use_tracking(load_config(config), "nbm")
    client = MlflowClient()
    run = client.get_run(client.get_model_version(MODEL_NAME, "1").run_id)
    return code, run.data.metrics, run.data.tags


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("parts-world")
    data = root / "world"
    assert main(["simulate", "--out", str(data), "--users", "600", "--days", "28", "--seed", "6"]) == 0
    return data, _parted(data, root / "parted")


def test_train_on_parts_gives_the_in_memory_model_risk_and_policy_values(world, tmp_path, monkeypatch, capsys) -> None:
    data, parted = world
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    code, here, _ = _train(tmp_path, data, "in-memory", monkeypatch)
    assert code == 0
    code, there, tags = _train(tmp_path, parted, "parts", monkeypatch, scheduler="local")
    assert code == 0
    assert "nbm.policy_people" not in tags               # every person of the test window: no sample
    compared = [k for k in here if k.startswith(("test_", "risk_", "unsubscribe_cost_auto_", "prior_strength_",
                                                  "policy_", "train_", "valid_", "value_"))
                and not k.endswith("_seconds")]
    assert {"test_auc", "risk_overall_rate", "policy_model_dr", "policy_rules_snips", "train_rows"} <= set(compared)
    for key in compared:
        a, b = here[key], there[key]
        assert (np.isnan(a) and np.isnan(b)) or b == pytest.approx(a, abs=1e-9), key


def test_train_on_parts_samples_the_test_windows_people_and_needs_a_cluster(world, tmp_path, monkeypatch,
                                                                            capsys) -> None:
    _, parted = world
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    code, _, _ = _train(tmp_path, parted, "no-cluster", monkeypatch)
    assert code == 2 and "dask_scheduler" in capsys.readouterr().err
    code, metrics, tags = _train(tmp_path, parted, "sampled", monkeypatch, ["--max-decisions", "300"],
                                 scheduler="local")
    assert code == 0
    people, of = int(tags["nbm.policy_people"]), int(tags["nbm.policy_people_of"])
    assert 0 < people < of
    assert 0 < metrics["policy_decisions"] <= 300
    assert "off-policy evaluation on" in capsys.readouterr().err


def test_evaluating_some_people_gives_their_decisions_the_whole_logs_values(world) -> None:
    """What the evaluation of a log in parts relies on (training/sources.py): the decisions of a sample of people,
    replayed with their own events, the whole log's globals and its end, get the values, decision for decision,
    that the whole log's evaluation gives them."""
    from features.pipeline import Globals, build_training_set
    from nbm.config import NbmConfig
    from nbm.dataset import Dataset, load_dataset
    from training.fit import RankerParams, fit_ranker, time_split
    from training.policy_eval import evaluate_policies, outcome_horizon

    data, _ = world
    config = NbmConfig()
    dataset, _ = load_dataset(data, config)
    split = time_split(build_training_set(dataset, config), valid_days=5, test_days=5)
    artifact = fit_ranker(split, RankerParams(objective="binary"))
    history = pd.concat([split.train, split.valid], ignore_index=True)
    horizon = outcome_horizon(dataset, config.attribution)
    run = lambda d, test, **kw: evaluate_policies(d, config, history, test, split.test_start,  # noqa: E731
                                                  {"model": artifact}, artifact, max_decisions=None, seed=0,
                                                  horizon_hours=horizon, **kw)
    whole = run(dataset, split.test)
    window = dataset.decisions[dataset.decisions["timestamp"] >= split.test_start]
    people = frozenset(sorted(pd.unique(window["user_id"].to_numpy(dtype=object)))[::3])
    mine = lambda frame: frame[frame["user_id"].astype(object).isin(people).to_numpy()].reset_index(drop=True)  # noqa: E731
    sample = Dataset(mine(dataset.events), dataset.messages, mine(dataset.users), dataset.links, dataset.identity,
                     mine(dataset.decisions))
    assert len(sample.events) < 0.5 * len(dataset.events)
    some = run(sample, mine(split.test), shared=Globals.build(dataset, config),
               end=int(dataset.events["timestamp"].max().value))
    rows = pd.Index(whole.logged.frame["decision_id"]).get_indexer(some.logged.frame["decision_id"])
    assert (rows >= 0).all() and len(rows) == whole.logged.frame["user_id"].isin(people).sum() > 100
    for name in ("model", "uniform", "popular", "rules"):
        if name == "model":   # (the others' q̂ use one random stream over the decisions: uniform's draws, ties)
            np.testing.assert_allclose(some.replayed.q_target[name], whole.replayed.q_target[name][rows], rtol=0,
                                       atol=1e-12, err_msg=name)
        np.testing.assert_allclose(some.replayed.target[name], whole.replayed.target[name][rows], rtol=0, atol=1e-12,
                                   err_msg=name)


def test_a_sample_of_people_is_valued_with_the_whole_logs_reward_and_horizon(world) -> None:
    """However few people are drawn (down to people whose decisions sent nothing, or none at all), their evaluation
    data carry the whole log's reward and outcome horizon, and events with the log's columns."""
    from features.parts import Tables, scattered, shared_of_parts
    from nbm.cluster import dask_client
    from nbm.config import NbmConfig
    from nbm.dataset import load_dataset
    from training.fit import time_split
    from training.policy_eval import outcome_horizon
    from training.reward import reward_of
    from training.sources import OnParts

    data, parted = world
    config = NbmConfig()
    dataset, _ = load_dataset(data, config)
    reward = reward_of(dataset.events)
    horizon = outcome_horizon(dataset, config.attribution, outcome=reward.outcome)
    tables = Tables.read(parted, config, now=pd.Timestamp.now(tz="UTC"), decisions=True)
    rows = pd.DataFrame({"user_id": dataset.decisions["user_id"], "timestamp": dataset.decisions["timestamp"]})
    with dask_client("local", workers=2, dashboard=False) as client:
        on_workers = scattered(client, tables, config)
        source = OnParts(client, shared_of_parts(client, parted, tables, config, on_workers=on_workers), tables,
                         config, on_workers)
        split = time_split(rows.assign(event_id=np.arange(len(rows)).astype(str)), 5, 5)
        for max_decisions, seed in [(None, 0), (5, 16), (5, 29)]:       # 16: nobody with events; 29: clicks only
            chosen = source.policy_data(split, max_decisions, seed)
            assert chosen.reward == reward and chosen.horizon_hours == pytest.approx(horizon), (max_decisions, seed)
            assert list(chosen.dataset.events.columns) == list(dataset.events.columns)
            assert (chosen.people is None) == (max_decisions is None)
            kinds = set(chosen.dataset.events["event_type"])
            if seed == 16:                                   # the cases the draws stand for, checked
                assert len(chosen.dataset.events) == 0
            if seed == 29:
                assert "click" in kinds and "convert" not in kinds
        after = split.__class__(**{**split.__dict__, "test_start": pd.Timestamp("2030-01-01", tz="UTC")})
        empty = source.policy_data(after, 100, 0)            # no decision in the window: nobody
        assert len(empty.dataset.events) == 0 and list(empty.dataset.events.columns) == list(dataset.events.columns)
        assert empty.reward == reward
