"""Benchmark of ``nbm report``: 10M events in ≤ 2 minutes (load + report) on a 2-core machine.

The world is a simulated one (``--users`` × ``--days``) copied ``--copies`` times under new ids (users, events,
links, decisions get a ``-cN`` suffix), so its shape is the simulator's at any size. Written once as Parquet to
``--dir`` (reused when present). Printed beside the target: the raw floor measured in the same run — reading the
events Parquet file alone.

    .venv/bin/python benchmarks/report.py [--users 20000] [--days 90] [--copies 10] [--dir /tmp/nbm-report-bench]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from experiments.audience import analyze
from experiments.audience_command import write_outputs
from experiments.audience_report import render_html
from nbm.config import NbmConfig
from nbm.dataset import load_dataset
from nbm.simulate import SimConfig, simulate
from nbm.simulate.manifest import write_world

TARGET_SECONDS = 120.0
ID_COLUMNS = {"users": ("user_id",), "events": ("event_id", "user_id", "decision_id"),
              "links": ("identifier_a", "identifier_b"), "decisions": ("decision_id", "user_id")}


def make_world(directory: Path, n_users: int, n_days: int, copies: int) -> None:
    """Simulate once, copy ``copies`` times under suffixed ids, write as Parquet."""
    tables = simulate(SimConfig(n_users=n_users, n_days=n_days, seed=0)).tables
    big = {}
    for name, frame in tables.items():
        if name not in ID_COLUMNS:
            big[name] = frame
            continue
        parts = []
        for c in range(copies):
            part = frame.copy()
            for column in ID_COLUMNS[name]:
                part[column] = part[column].where(part[column].isna(), part[column] + f"-c{c}")
            parts.append(part)
        big[name] = pd.concat(parts, ignore_index=True)
    write_world(big, directory, "parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/nbm-report-bench"))
    args = parser.parse_args()
    directory = args.dir / f"u{args.users}-d{args.days}-c{args.copies}"
    if not (directory / "events.parquet").is_file():
        began = time.perf_counter()
        make_world(directory, args.users, args.days, args.copies)
        print(f"world written in {time.perf_counter() - began:.1f} s to {directory}")
    config = NbmConfig()

    began = time.perf_counter()
    events = pq.read_table(directory / "events.parquet").to_pandas()
    floor = time.perf_counter() - began
    n_events = len(events)
    del events

    began = time.perf_counter()
    dataset, quality = load_dataset(directory, config)
    load = time.perf_counter() - began
    began = time.perf_counter()
    report = analyze(dataset, config, quality)
    figures = time.perf_counter() - began
    began = time.perf_counter()
    page = render_html(report, config)
    write_outputs(report, page, args.dir / "report.html")
    render = time.perf_counter() - began

    total = load + figures + render
    per_10m = total * 10_000_000 / n_events
    print(f"report benchmark: {n_events:,} events, {len(dataset.users):,} users, {len(report.weeks)} weeks, "
          f"{len(report.figures):,} figures")
    print(f"  raw floor: read events.parquet   {floor:7.2f} s")
    print(f"  load_dataset (validate, resolve) {load:7.2f} s")
    print(f"  analyze (every figure)           {figures:7.2f} s")
    print(f"  render + write html/csv/json     {render:7.2f} s")
    print(f"  total                            {total:7.2f} s   linear to 10M events: {per_10m:6.1f} s   "
          f"target ≤ {TARGET_SECONDS:.0f} s  {'OK' if per_10m <= TARGET_SECONDS else 'MISSED'}")


if __name__ == "__main__":
    main()
