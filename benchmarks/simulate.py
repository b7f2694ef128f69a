"""Benchmark of ``nbm simulate``: 100k users × 60 days in ≤ 60 s and ≤ 4 GiB (issue 3).

Prints the time of each phase, the peak resident memory, and a raw floor measured in the same run: one
uniform draw per user-day (the least any per-user-day simulator must do) plus writing the same events
table to Parquet (the least any simulator that writes its log must do).

    .venv/bin/python benchmarks/simulate.py [--users 100000] [--days 60] [--seed 0]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from nbm.simulate import Environment, SimConfig, World, logging_policy

TARGET_SECONDS, TARGET_GIB = 60.0, 4.0


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = SimConfig(n_users=args.users, n_days=args.days, seed=args.seed)

    phases: dict[str, float] = {}
    began = time.perf_counter()
    world = World.build(config)
    phases["build world"] = time.perf_counter() - began
    t = time.perf_counter()
    env = Environment(world, seed=args.seed)
    daily = env.run(logging_policy(config))
    phases["play 60 days"] = time.perf_counter() - t
    t = time.perf_counter()
    events = env.log.to_frame(until=config.period_end.value)
    phases["events table"] = time.perf_counter() - t
    from nbm.io import write_table

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_table(events, Path(tmp), "events", "parquet")
        phases["write parquet"] = time.perf_counter() - t
        total = time.perf_counter() - began

        # The raw floor, in the same process and run.
        t = time.perf_counter()
        rng = np.random.default_rng(0)
        for _ in range(config.n_days):
            rng.random(config.n_users)
        events.to_parquet(Path(tmp) / "floor.parquet", index=False)
        floor = time.perf_counter() - t

    print(f"nbm simulate benchmark: {args.users:,} users × {args.days} days, seed {args.seed}")
    print(f"  events written        {len(events):>12,}  ({int(daily['sends'].sum()):,} sends)")
    for name, seconds in phases.items():
        print(f"  {name:<20}  {seconds:>10.2f} s")
    print(f"  total                 {total:>10.2f} s   target ≤ {TARGET_SECONDS:.0f} s   "
          f"{'OK' if total <= TARGET_SECONDS else 'MISSED'}")
    print(f"  peak memory           {peak_gib():>10.2f} GiB target ≤ {TARGET_GIB:.0f} GiB "
          f"{'OK' if peak_gib() <= TARGET_GIB else 'MISSED'}")
    print(f"  raw floor             {floor:>10.2f} s   (one draw per user-day + the same Parquet write)")
    print(f"  events per second     {len(events) / total:>12,.0f}")


if __name__ == "__main__":
    main()
