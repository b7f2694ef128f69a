"""Benchmark of the compiled booster on a campaign batch's real rows: lleaves' compile options and the rows' order.

The world of ``benchmarks/serve.py`` (built once under ``--world``, kept). One batch of 500 random users at
serve.py's batch time goes through the service's engine while the compiled forest's calls are recorded;
their rows (stage 1: every (message, channel) at its reference slot; stage 2: the slots of the best pairs)
are then scored again, best of ``--reps``, printed in milliseconds beside ``Booster.predict`` on the same
rows as float32 (the floor it replaces):

* compile options: lleaves' defaults (what ``nbm.compiled`` uses), ``fcodemodel="small"``, ``fblocksize``
  10 / 20 / 80 and ``use_fp64=False``, each with the largest difference from the defaults' scores;
* the stage-1 rows in other orders (the engine's is user, then message, then channel): lleaves' speed
  depends on how predictable its branches are from one row to the next.

    .venv/bin/python benchmarks/compiled_forest.py --world DIR [--reps 5]
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

from nbm.compiled import CHUNK_ROWS  # noqa: E402


def _ms(score, matrix: np.ndarray, reps: int) -> float:
    """Best of ``reps`` milliseconds to score ``matrix`` in chunks of ``CHUNK_ROWS``, as the engine does."""
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for lo in range(0, len(matrix), CHUNK_ROWS):
            score(matrix[lo:lo + CHUNK_ROWS])
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def batch_rows(world: Path) -> tuple[object, list[np.ndarray]]:
    """The engine's booster, and the float64 rows of each compiled-forest call of one 500-user batch."""
    from serve import BATCH_NOW, prepared_world

    from nbm.config import load_config
    from serving.engine import Engine, EngineSettings

    root = prepared_world(world)
    state = Path(tempfile.mkdtemp()) / "state.db"
    engine = Engine(load_config().model_copy(update={"state_url": f"sqlite:///{state}"}),
                    EngineSettings(data=root / "world"))
    forest = engine.model.artifact.compiled
    if forest is None:
        raise SystemExit("the booster could not be compiled here: nothing to measure")
    model, chunks, calls = forest.model, [], []
    real = model.predict

    def record(data, n_jobs=None):
        chunks.append(np.array(data))
        return real(data, n_jobs=n_jobs)

    def count(self, n, columns):
        calls.append(n)
        return predict_columns(self, n, columns)

    predict_columns = type(forest).predict_columns
    model.predict = record
    type(forest).predict_columns = count
    try:
        users = np.random.default_rng(0).permutation(engine.dataset.users["user_id"].to_numpy(dtype=object))
        engine.recommend_many([{"user_id": u, "now": pd.Timestamp(BATCH_NOW)} for u in users[:500]])
    finally:
        del model.predict
        type(forest).predict_columns = predict_columns
    rows = np.concatenate(chunks)
    return engine.model.artifact.booster, np.split(rows, np.cumsum(calls)[:-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True, help="built here by serve.py's build_world if absent")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    import lleaves

    booster, calls = batch_rows(args.world)
    rows = np.concatenate(calls)
    stage1 = calls[0]
    print(f"rows of one 500-decision batch: {' + '.join(f'{len(c):,}' for c in calls)} = {len(rows):,}; "
          f"{booster.num_trees()} trees, {booster.num_feature()} features")
    single = rows.astype(np.float32)
    print(f"floor: Booster.predict (float32, one thread)   {_ms(lambda m: booster.predict(m, num_threads=1), single, 1):8.1f} ms")

    with tempfile.TemporaryDirectory() as tmp:
        model_file = Path(tmp) / "model.txt"
        model_file.write_text(booster.model_to_string(), encoding="utf-8")
        reference, default = None, None
        for options in ({}, {"fcodemodel": "small"}, {"fblocksize": 10}, {"fblocksize": 20}, {"fblocksize": 80},
                        {"use_fp64": False}):
            model = lleaves.Model(model_file=str(model_file))
            model.compile(cache=None, **options)
            data = single if options.get("use_fp64") is False else rows
            scores = model.predict(data, n_jobs=1)
            reference = scores if reference is None else reference
            default = model if default is None else default
            name = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "defaults (nbm.compiled)"
            print(f"lleaves {name:<32} {_ms(lambda m: model.predict(m, n_jobs=1), data, args.reps):8.1f} ms   "
                  f"max |Δ score| {float(np.abs(scores - reference).max()):.1e}")

        names = booster.feature_name()
        user = np.unique(stage1[:, [i for i, n in enumerate(names) if n.startswith("user_")]], axis=0,
                         return_inverse=True)[1].ravel()
        message = np.unique(stage1[:, [i for i, n in enumerate(names) if n.startswith("message_")]], axis=0,
                            return_inverse=True)[1].ravel()
        channel = np.unique(stage1[:, [i for i, n in enumerate(names) if n.startswith("uc_")]], axis=0,
                            return_inverse=True)[1].ravel()
        scores = default.predict(stage1, n_jobs=1)
        orders = {"the engine's (user, message, channel)": np.arange(len(stage1)),
                  "user, channel, message": np.lexsort((message, channel, user)),
                  "user, then score": np.lexsort((scores, user)),
                  "message, then user": np.lexsort((user, message)),
                  "by score": np.argsort(scores, kind="stable"),
                  "random (seeded)": np.random.default_rng(0).permutation(len(stage1))}
        print(f"stage-1 rows ({len(stage1):,}) in other orders, lleaves' defaults:")
        for name, order in orders.items():
            print(f"  {name:<40} {_ms(lambda m: default.predict(m, n_jobs=1), stage1[order], args.reps):8.1f} ms")


if __name__ == "__main__":
    main()
