"""A simulated world, a ranker trained on it and its off-policy evaluation: the slow training tests' setup."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def evaluate_on_simulated_world(directory: Path, n_users: int, n_days: int, seed: int, test_days: float = 7,
                                quiet_hours: tuple[int, int] = (0, 0)):
    """Simulate a world into ``directory`` (with its manifest), train the ranker on it, and evaluate the
    model's policy and the baselines on the test window against the world's ground truth; (sim, report).

    ``quiet_hours`` are nbm's (``contact_policy.quiet_hours_*``), off by default: the world's logging policy
    sends at every slot hour of the next 24 hours, 21:00 too, and nbm's default (21, 8) would move the
    targets' 21:00 slots to an 08:00 the log never sends at (the next day's, for users whose 00:00 UTC is
    outside local 08–21), which no estimator that reweights the log can see (positivity)."""
    from features.pipeline import build_training_set
    from nbm.config import NbmConfig
    from nbm.dataset import load_dataset
    from nbm.simulate import SimConfig, simulate
    from nbm.simulate.manifest import read_world_manifest, world_manifest, write_world
    from training.fit import RankerParams, fit_ranker, time_split
    from training.policy_eval import evaluate_policies

    sim = SimConfig(n_users=n_users, n_days=n_days, seed=seed)
    write_world(simulate(sim).tables, directory, "parquet")
    (directory / "world.json").write_text(json.dumps(world_manifest(sim)))
    config = NbmConfig()
    config = config.model_copy(update={"contact_policy": config.contact_policy.model_copy(
        update={"quiet_hours_start": quiet_hours[0], "quiet_hours_end": quiet_hours[1]})})
    dataset, _ = load_dataset(directory, config)
    split = time_split(build_training_set(dataset, config), test_days=test_days)
    artifact = fit_ranker(split, RankerParams())
    history = pd.concat([split.train, split.valid], ignore_index=True)
    report = evaluate_policies(dataset, config, history, split.test, split.test_start, {"model": artifact}, artifact,
                               max_decisions=None, seed=0, sim_config=read_world_manifest(directory))
    return sim, report
