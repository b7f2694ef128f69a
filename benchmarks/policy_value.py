"""True value of the trained model's decisions against baselines, on a simulated world (issue 5's bars).

Simulates a world and its logged period, trains the ranker on that log (binary, conversions, default
parameters), then plays each policy forward from the same state for ``--days`` days and prints the true
value from the world's ground truth (expected revenue − unsubscribe cost × expected unsubscribes) and
the expected revenue. ``model`` is nbm's decision path (``decision.decide.decide_many``) with the default
configuration, contact policy included; ``model_loose`` the same with caps loosened to one message a day
and quiet hours off (what the model alone is worth, without the contact policy's restraint). Bars: model ≥
2 × uniform random and ≥ 1.3 × rules.

    .venv/bin/python benchmarks/policy_value.py [--users 3000] [--log-days 42] [--days 14]
"""

from __future__ import annotations

import argparse
import copy
import time

import pandas as pd

from features.pipeline import build_training_set
from nbm.config import load_config
from nbm.dataset import build_dataset
from nbm.simulate import NothingPolicy, OraclePolicy, RuleBasedPolicy, SimConfig, UniformRandomPolicy, simulate
from training.fit import RankerParams, fit_ranker, time_split
from training.simulated import ModelPolicy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--log-days", type=int, default=42)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--oracle", action="store_true", help="also play the oracle (slow)")
    args = parser.parse_args()
    config = load_config(environ={})
    began = time.perf_counter()
    data = simulate(SimConfig(n_users=args.users, n_days=args.log_days, seed=args.seed))
    dataset, _ = build_dataset(data.tables, config, now=data.world.config.period_end)
    artifact = fit_ranker(time_split(build_training_set(dataset, config)), RankerParams(target="convert"))
    trained = time.perf_counter() - began

    loose = config.model_copy(update={"contact_policy": config.contact_policy.model_copy(update=dict(
        weekly_cap_per_channel=7, weekly_cap_total=7, min_gap_hours=0, message_cooldown_days=0, quiet_hours_start=0,
        quiet_hours_end=0))})
    model_loose = ModelPolicy(artifact, loose)
    model_loose.name = "model_loose"
    policies = [ModelPolicy(artifact, config), model_loose, RuleBasedPolicy(), UniformRandomPolicy(), NothingPolicy()]
    if args.oracle:
        policies.append(OraclePolicy())
    rows = []
    for policy in policies:
        env = copy.deepcopy(data.environment)  # the same state at the end of the logged period
        t = time.perf_counter()
        daily = env.run(policy, days=args.days)
        rows.append({"policy": policy.name, "sends": daily["sends"].sum(), "true_value": daily["true_value"].sum(),
                     "expected_revenue": daily["expected_revenue"].sum(),
                     "expected_unsubscribes": daily["expected_unsubscribes"].sum(), "seconds": time.perf_counter() - t})
    table = pd.DataFrame(rows).set_index("policy")
    print(f"policy value on a simulated world: {args.users:,} users, trained on {args.log_days} logged days "
          f"({trained:.0f} s), played {args.days} days from the same state")
    print(table.round(1).to_string())
    model, rules, uniform = (table.loc[p, "true_value"] for p in ("model", "rules", "uniform"))
    print(f"model / uniform (true value): {model / uniform:6.2f}   bar ≥ 2   "
          f"{'OK' if uniform > 0 and model >= 2 * uniform else 'see note: uniform is negative' if uniform <= 0 else 'MISSED'}")
    print(f"model / rules   (true value): {model / rules:6.2f}   bar ≥ 1.3 {'OK' if model >= 1.3 * rules else 'MISSED'}")
    print(f"model_loose / rules (true value): {table.loc['model_loose', 'true_value'] / rules:6.2f}")
    rev = table["expected_revenue"]
    print(f"model / uniform (expected revenue): {rev['model'] / rev['uniform']:6.2f}; "
          f"model / rules (expected revenue): {rev['model'] / rev['rules']:6.2f}")


if __name__ == "__main__":
    main()
