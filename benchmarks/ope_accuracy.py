"""Issue 5's bars on a simulated world: the trained policy's true value against baselines, and how close
its off-policy estimates (IPS, SNIPS, DR) come to that true value — for both objectives.

Simulates (or reads) ``nbm simulate --users 50000 --days 60``, builds the training set, splits by time
(7 + 7 days), fits the ranker with each objective (default parameters), replays every policy over the
test window's logged decisions (a seeded sample of ``--decisions``), and prints per policy: SNIPS and DR
with 95 % intervals, effective sample size, the true value from the world's ground truth at the same
decisions, and the relative errors of the estimates.

The logged decisions whose conversions could still arrive after the log's end are held back (the
censoring cut of ``training.policy_eval``); the script prints how many, and for the uniform policy the
standard error of its IPS estimate (std of the IPS terms / √n) beside the errors: what "within 10 %" can
mean at this log size. ``--epsilon`` sets the logging policy's uniform exploration (the default world: 0.1).

nbm's quiet hours are off here by default (``--quiet-hours 0,0``): the world's logging policy sends at
every slot hour of the next 24 hours, 21:00 included, and nbm's own (21, 8) move the policies' 21:00 slots
to an 08:00 the log never sends at (the next day's, for users whose 00:00 UTC is outside local 08–21). No
estimator that reweights the log sees those sends (positivity); ``--quiet-hours 21,8`` shows by how much.

    .venv/bin/python benchmarks/ope_accuracy.py [--users 50000] [--days 60] [--decisions 150000] \
        [--test-days 7] [--epsilon 0.1] [--quiet-hours 0,0] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.pipeline import build_training_set
from nbm.config import load_config
from nbm.dataset import load_dataset
from nbm.simulate import SimConfig, simulate
from nbm.simulate.manifest import read_world_manifest, world_manifest, write_world
from training.fit import RankerParams, fit_ranker, time_split
from training.policy_eval import evaluate_policies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--decisions", type=int, default=150_000, help="logged decisions replayed (0: all)")
    parser.add_argument("--data", type=Path, help="an existing `nbm simulate` directory (default: simulate one)")
    parser.add_argument("--objectives", default="binary,lambdarank")
    parser.add_argument("--test-days", type=float, default=7.0, help="days of the test window")
    parser.add_argument("--epsilon", type=float, default=0.1, help="the logging policy's uniform exploration")
    parser.add_argument("--quiet-hours", default="0,0", help="nbm's quiet hours START,END (equal: none)")
    args = parser.parse_args()
    config = load_config(environ={})
    start, end = (int(h) for h in args.quiet_hours.split(","))
    config = config.model_copy(update={"contact_policy": config.contact_policy.model_copy(
        update={"quiet_hours_start": start, "quiet_hours_end": end})})
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            import json

            sim = SimConfig(n_users=args.users, n_days=args.days, seed=args.seed, epsilon=args.epsilon)
            data = Path(tmp)
            write_world(simulate(sim).tables, data, "parquet")
            (data / "world.json").write_text(json.dumps(world_manifest(sim)))
        dataset, _ = load_dataset(data, config)
        rows = build_training_set(dataset, config)
        split = time_split(rows, test_days=args.test_days)
        print(f"world: {args.users:,} users × {args.days} days; {len(dataset.events):,} events; "
              f"{len(rows):,} logged sends; prepared in {time.perf_counter() - began:.0f} s")
        history = pd.concat([split.train, split.valid], ignore_index=True)
        for objective in args.objectives.split(","):
            t = time.perf_counter()
            params = RankerParams(objective=objective, target="convert")
            if objective == "lambdarank":
                config_lr = config.model_copy(update={"features": config.features.model_copy(update={"group_by": "user"})})
                split_lr = time_split(build_training_set(dataset, config_lr), test_days=args.test_days)
                artifact = fit_ranker(split_lr, params)
            else:
                artifact = fit_ranker(split, params)
            fitted = time.perf_counter() - t
            report = evaluate_policies(dataset, config, history, split.test, split.test_start, {"model": artifact},
                                       artifact, max_decisions=args.decisions or None, seed=args.seed,
                                       sim_config=read_world_manifest(data))
            table = pd.DataFrame([v.__dict__ for v in report.values.values()]).set_index("policy")
            table["ips_error"] = table["ips"] / table["true_value"] - 1
            table["snips_error"] = table["snips"] / table["true_value"] - 1
            table["dr_error"] = table["dr"] / table["true_value"] - 1
            print(f"\nobjective {objective}: fitted in {fitted:.0f} s; {len(report.logged.frame):,} decisions "
                  f"({report.logged.frame['sent'].mean():.1%} sent), evaluated in {report.seconds:.0f} s; "
                  f"world recognised {report.true_decisions_seen:,} of them; {report.logged.censored:,} held back "
                  f"(outcome horizon {report.logged.horizon_hours:.0f} h)")
            cols = ["true_value", "ips", "ips_error", "snips", "snips_low", "snips_high", "snips_error", "dr", "dr_low",
                    "dr_high", "dr_error", "ess", "matched"]
            print(table[cols].to_string(float_format=lambda x: f"{x:.4f}"))
            truth = table["true_value"]
            print(f"logged (rules + ε) realised reward per decision: {report.logged.frame['reward'].mean():.4f}")
            print(f"model / uniform (true): {truth['model'] / truth['uniform']:.2f} (bar ≥ 2)   "
                  f"model / rules (true): {truth['model'] / truth['rules']:.2f} (bar ≥ 1.3)   "
                  f"SNIPS error {table.loc['model', 'snips_error']:+.1%}, DR error {table.loc['model', 'dr_error']:+.1%} "
                  f"(bar ±10 %)")
            u = table.loc["uniform"]
            frame = report.logged.frame
            terms = report.replayed.target["uniform"] / frame["propensity"].to_numpy() * frame["reward"].to_numpy()
            se = terms.std(ddof=1) / np.sqrt(len(terms)) / u["true_value"]
            explored = int(((report.replayed.target["uniform"] > 0) & (frame["reward"].to_numpy() > 0)).sum())
            print(f"uniform policy (issue 7's bar: IPS, SNIPS and DR within 10 % of the true value): IPS "
                  f"{u['ips_error']:+.1%}, SNIPS {u['snips_error']:+.1%}, DR {u['dr_error']:+.1%} (ESS {u['ess']:,.0f}; "
                  f"IPS standard error {se:.1%} of the truth; {explored:,} converting decisions the uniform policy "
                  f"could have taken)")
    print(f"\ntotal {time.perf_counter() - began:.0f} s")
    np.seterr(all="ignore")


if __name__ == "__main__":
    main()
