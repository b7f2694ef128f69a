"""Benchmark of training (issue 5): 1M logged sends → fitted, calibrated, evaluated model in ≤ 5 minutes.

First in-process without tuning and MLflow: training set, time split, LightGBM with early stopping,
calibration, evaluation. The raw floor measured in the same run: LightGBM alone on the same training matrix
for the same number of rounds. Then the whole ``nbm train`` command on the same data, end to end: MLflow
run and registry in a fresh embedded store, the off-policy evaluation of the policies (50,000 replayed
decisions, the default) and their true values from the simulated world.

    .venv/bin/python benchmarks/train.py [--sends 1000000]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightgbm as lgb

from features.pipeline import build_training_set
from nbm.config import load_config
from nbm.dataset import load_dataset
from training.metrics import evaluate
from training.fit import RankerParams, feature_columns, fit_ranker, lightgbm_datasets, time_split

SENDS_PER_USER_60D = 16.6  # measured: 100k users × 60 days ≈ 1.66M sends
TARGET_SECONDS = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=1_000_000)
    args = parser.parse_args()
    config = load_config(environ={})
    users = int(args.sends / SENDS_PER_USER_60D)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "nbm.cli", "simulate", "--out", tmp, "--users", str(users), "--days", "60",
                        "--seed", "3"], check=True, stdout=subprocess.DEVNULL)
        t = time.perf_counter()
        dataset, _ = load_dataset(Path(tmp), config)
        load = time.perf_counter() - t
        t = time.perf_counter()
        command = subprocess.run([sys.executable, "-m", "nbm.cli", "train", "--data", tmp],
                                 env={**os.environ, "NBM_HOME": str(Path(tmp) / "home"), "MLFLOW_DISABLE_TELEMETRY": "true"},
                                 capture_output=True, text=True)
        whole = time.perf_counter() - t
        if command.returncode != 0:
            raise SystemExit(f"nbm train failed ({command.returncode}): {command.stderr[-2000:]}")
    t = time.perf_counter()
    rows = build_training_set(dataset, config)
    features = time.perf_counter() - t
    split = time_split(rows)
    params = RankerParams()
    t = time.perf_counter()
    artifact = fit_ranker(split, params)
    fit = time.perf_counter() - t
    t = time.perf_counter()
    metrics = evaluate(artifact, split.test).metrics
    evaluation = time.perf_counter() - t
    rounds = artifact.booster.current_iteration()
    train, _ = lightgbm_datasets(split, feature_columns(split.train), params)
    t = time.perf_counter()
    lgb.train({**params.lightgbm(), "metric": "none"}, train, num_boost_round=rounds)
    floor = time.perf_counter() - t
    total = load + features + fit + evaluation
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"training benchmark: {len(rows):,} logged sends ({len(dataset.events):,} events, {users:,} users)")
    print(f"  load + validate        {load:8.1f} s")
    print(f"  training set           {features:8.1f} s")
    print(f"  fit + calibrate        {fit:8.1f} s   ({rounds} rounds, {len(split.train):,} training rows)")
    print(f"  evaluate               {evaluation:8.1f} s   (test AUC {metrics['test_auc']:.3f}, ECE {metrics['test_ece']:.4f})")
    print(f"  total                  {total:8.1f} s   target ≤ {TARGET_SECONDS:.0f} s  {'OK' if total <= TARGET_SECONDS else 'MISSED'}")
    print(f"  peak memory            {peak:8.2f} GiB")
    print(f"  raw floor              {floor:8.1f} s   (lgb.train alone, same rows and rounds)")
    print(f"  nbm train, end to end  {whole:8.1f} s   (MLflow, policy replay and true values included) "
          f"target ≤ {TARGET_SECONDS:.0f} s  {'OK' if whole <= TARGET_SECONDS else 'MISSED'}")


if __name__ == "__main__":
    main()
