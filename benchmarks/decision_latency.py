"""Benchmark of one worker's decision latency in-process: its distribution, and the state store's write in it.

The world of ``benchmarks/serve.py`` (100 eligible messages × 3 channels × 6 slots a user). The service's
engine with a fresh SQLite state store decides ``--decisions`` requests of fresh users (at serve.py's
``/recommend`` time), one at a time and then ``--together`` at a time (what a worker decides together
under concurrent calls); printed per size: p50, p90, p99, p99.9 and max of a call, and of the state store's
write inside it (``reserve_many``: the decision log and the planned items, one transaction), with the
count of writes over 3 ms. The floor, measured in the same run: the compiled booster alone on one
decision's 1,800 candidate rows. It uses only interfaces older than the work it measures, so the same
file run against an older checkout (``PYTHONPATH=OLD_CHECKOUT python benchmarks/decision_latency.py
--world DIR``) compares revisions.

    .venv/bin/python benchmarks/decision_latency.py [--world DIR] [--decisions 1500] [--together 4]
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


def _summary(ms: np.ndarray) -> str:
    p = np.percentile(ms, [50, 90, 99, 99.9])
    return f"p50 {p[0]:6.2f}  p90 {p[1]:6.2f}  p99 {p[2]:6.2f}  p99.9 {p[3]:6.2f}  max {ms.max():6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1500, help="decisions per size (fresh users each)")
    parser.add_argument("--together", type=int, default=4, help="requests decided together, the second size")
    parser.add_argument("--world", type=Path, help="a world built by an earlier run (kept); default: a fresh one")
    args = parser.parse_args()
    from serve import prepared_world

    root = prepared_world(args.world)
    from decision.candidates import expand
    from nbm.config import load_config
    from serve import NOW, per_call_ms
    from serving.engine import Engine, EngineSettings

    config = load_config()
    state = Path(tempfile.mkdtemp()) / "state.db"
    engine = Engine(config.model_copy(update={"state_url": f"sqlite:///{state}"}),
                    EngineSettings(data=root / "world", seed=1))
    writes: list[float] = []
    reserve = engine.state.reserve_many

    def timed_reserve(reservations):
        t = time.perf_counter()
        try:
            return reserve(reservations)
        finally:
            writes.append(time.perf_counter() - t)

    engine.state.reserve_many = timed_reserve
    users = np.random.default_rng(0).permutation(engine.dataset.users["user_id"].to_numpy(dtype=object)).tolist()
    needed = 2 * args.decisions + 10 * (1 + args.together)
    if needed > len(users):
        raise SystemExit(f"the world has {len(users):,} users; --decisions {args.decisions} needs {needed:,}")
    now = pd.Timestamp(NOW)
    fresh = iter(users)

    rows = expand(engine.store, users[0], now)
    matrix = engine.model.artifact.matrix(engine.store.featurise_columns(rows))
    compiled = engine.model.artifact.compiled
    floor = float("nan") if compiled is None else per_call_ms(lambda: compiled.predict(matrix))
    print(f"{len(rows):,} candidates a decision; floor: compiled booster alone on them {floor:.2f} ms; "
          f"code from {Path(Engine.__init__.__code__.co_filename).parents[1]}")
    for size in (1, args.together):
        batches = [[{"user_id": next(fresh), "now": now} for _ in range(size)] for _ in range(10)]
        for batch in batches:                                                            # warm-up
            engine.recommend_many(batch)
        batches = [[{"user_id": next(fresh), "now": now} for _ in range(size)] for _ in range(args.decisions // size)]
        writes.clear()
        calls = []
        for batch in batches:
            t = time.perf_counter()
            engine.recommend_many(batch)
            calls.append(time.perf_counter() - t)
        ms, write_ms = np.asarray(calls) * 1e3, np.asarray(writes) * 1e3
        print(f"{size} at a time, {len(calls):,} calls:  call   {_summary(ms)}")
        print(f"{'':{len(str(size)) + 25}}  state write {_summary(write_ms)}  ({int((write_ms > 3).sum())} over 3 ms)")


if __name__ == "__main__":
    main()
