"""Benchmark of one batch of decisions in-process, stage by stage: candidates, contact policy, features, scoring.

The world of ``benchmarks/serve.py`` (100 eligible messages × 3 channels × 6 slots = 1,800 candidates a user);
``--decisions`` users decided as of one time. Printed per stage: seconds for the batch, milliseconds per
decision; last, the whole batch through the service's engine (best of 3 batches of new users, a fresh
state store), and the median of ``--batches`` batches like those ``benchmarks/serve.py`` sends (seeded
random users at its batch time). It uses only interfaces older than the work it measures, so the same file
run against an older checkout (``PYTHONPATH=OLD_CHECKOUT python benchmarks/decision_batch.py --world DIR``)
compares revisions.

    .venv/bin/python benchmarks/decision_batch.py [--decisions 500] [--batches 9] [--world DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
NOW = pd.Timestamp("2026-11-01T00:00:00Z").value


def _best(f, repeat: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=500)
    parser.add_argument("--batches", type=int, default=9, help="batches of random users for the median row")
    parser.add_argument("--world", type=Path, help="a world built by an earlier run (kept); default: a fresh one")
    args = parser.parse_args()
    from serve import prepared_world

    root = prepared_world(args.world)
    from features.pipeline import FeatureStore
    from decision.contact import contact_verdict
    from decision.pairs import expand_many
    from nbm.config import load_config
    from nbm.dataset import load_dataset
    from nbm.policy.contact import SendHistories
    from serving.registry import load_model

    config = load_config()
    dataset, _ = load_dataset(root / "world", config)
    store = FeatureStore.build(dataset, config)
    artifact = load_model("models:/nbm-ranker@champion", config).artifact
    users = dataset.users["user_id"].to_numpy(dtype=object)[: args.decisions]
    now = np.full(len(users), NOW, dtype=np.int64)
    seconds, ex = _best(lambda: expand_many(store, users, now))
    rows = {"candidates (expand_many)": seconds}
    rows["contact policy"], _ = _best(lambda: contact_verdict(store, ex, SendHistories.empty()))
    pairs = np.flatnonzero(ex.slot == ex.n_slots[ex.group] // 2)          # one slot a pair: stage 1's rows
    stage1 = ex.take(pairs).rows
    rows["features of the pairs"], columns = _best(lambda: store.featurise_columns(stage1))
    rows["features of every candidate"], _ = _best(lambda: store.featurise_columns(ex.rows), repeat=1)
    rows["scoring the pairs"], _ = _best(lambda: artifact.score(columns))
    # The whole batch as the service decides it (candidates to reserved, logged answers), each call for
    # users not decided before (a user decided again at the same time is mostly capped: cheaper).
    from serving.engine import Engine, EngineSettings

    state = Path(tempfile.mkdtemp()) / "state.db"
    engine = Engine(config.model_copy(update={"state_url": f"sqlite:///{state}"}), EngineSettings(data=root / "world"))
    everyone = iter(dataset.users["user_id"].tolist())
    batches = [[{"user_id": next(everyone), "now": pd.Timestamp(NOW)} for _ in range(len(users))] for _ in range(4)]
    engine.recommend_many(batches.pop())                                             # warm-up
    rows["whole batch (Engine.recommend_many)"] = min(_best(lambda b=b: engine.recommend_many(b), repeat=1)[0]
                                                      for b in batches)
    # The batches benchmarks/serve.py sends: users drawn at random (seeded), at its batch time, each batch
    # of users not decided before; the median of `--batches`, which is what one worker's rate follows (the
    # row above, the best batch of the first users, is kept to compare revisions with older runs).
    from serve import BATCH_NOW

    pool = np.random.default_rng(0).permutation(dataset.users["user_id"].to_numpy(dtype=object)[4 * len(users):])
    at, times = pd.Timestamp(BATCH_NOW), []
    for i in range(min(args.batches, len(pool) // len(users))):     # a world too small for --batches: fewer
        batch = [{"user_id": u, "now": at} for u in pool[i * len(users):(i + 1) * len(users)]]
        times.append(_best(lambda: engine.recommend_many(batch), repeat=1)[0])
    if times:
        rows[f"service's batches (median of {len(times)})"] = float(np.median(times))
    print(f"{len(users):,} decisions, {len(ex):,} candidates, {len(pairs):,} pairs; compiled booster: "
          f"{getattr(artifact, 'compiled', None) is not None}; code from {Path(contact_verdict.__code__.co_filename).parents[1]}")
    for name, seconds in rows.items():
        print(f"{name:30s} {seconds:8.3f} s  {seconds / len(users) * 1e3:7.3f} ms a decision")


if __name__ == "__main__":
    main()
