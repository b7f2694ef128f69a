"""Benchmark of out-of-core scale-out (issue 42): the training set of a ~50M-event log built on a LocalCluster of
2 workers with every process's memory together at most 8 GiB, then 1M users decided (``nbm recommend``'s batch
scoring) on the same cluster, each part's decisions written by its worker as a partition of ``ROOT/decisions/``;
the in-process figures of one part beside them.

The log is simulated: one world of ``--users`` users over ``--days`` days (``nbm simulate``; its model trained
on it, ``nbm train``), then written ``--copies`` times as event parts (``--splits`` parts a copy, by a hash of the
user), each copy's users (and event and decision ids) renamed — ``u000123`` of copy 7 is ``u000123-c07`` — so that the log has ``--copies`` × the users and events
of the world, every part holding every event of its users (the out-of-core layout, features/parts.py). The
copies are the same people's histories: it measures what a log of that size costs, not what nbm learns from it.

Memory is the resident set of this process and of every process it started (the cluster's scheduler, nannies
and workers), summed, sampled every 0.2 s; the peak is printed per stage, against the target of 8 GiB.

    .venv/bin/python benchmarks/scale.py [--users 50000] [--days 60] [--copies 32] [--score-users 1000000]
                                         [--splits 2] [--root DIR] [--workers 2] [--format jsonl|parquet]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import psutil

GIB = 2**30
TARGET_GIB = 8.0
NOW = "2026-11-01T00:00:00Z"


class MemoryPeak:
    """The largest summed resident set of this process and its descendants, sampled on a thread."""

    def __init__(self, every: float = 0.2) -> None:
        self.every, self.peak, self._stop = every, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.every)

    def __enter__(self) -> MemoryPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def stage(name: str, figures: dict):
    """Time and peak memory of a block, printed and kept in ``figures[name]``."""
    started = time.perf_counter()
    with MemoryPeak() as memory:
        yield
    seconds = time.perf_counter() - started
    figures[name] = (seconds, memory.peak / GIB)
    print(f"  {name}: {seconds:,.1f} s, peak memory {memory.peak / GIB:.2f} GiB", flush=True)


def nbm(*args: str, home: Path) -> None:
    env = {**os.environ, "NBM_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"}
    subprocess.run([sys.executable, "-m", "nbm.cli", *args], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def build_world(root: Path, users: int, days: int) -> tuple[Path, Path]:
    """The simulated world and its model (built once per root)."""
    world, home = root / "world", root / "home"
    if not (world / "events.parquet").exists():
        nbm("simulate", "--out", str(world), "--users", str(users), "--days", str(days), "--seed", "42", home=home)
    if not (home / "mlflow.db").exists():
        nbm("train", "--data", str(world), "--no-policy-eval", "--no-compare", home=home)
    return world, home


def write_copies(world: Path, big: Path, copies: int, splits: int) -> int:
    """``copies`` renamed copies of the world's events as parts of ``big`` (each copy ``splits`` parts, by a hash of
    the user), and its users, messages, links; the events written."""
    from features.pipeline import partition_of
    from nbm.identity import resolve_identities

    if (big / "done").exists() and (big / "done").read_text().split()[1:] == [str(copies), str(splits)]:
        return int((big / "done").read_text().split()[0])
    (big / "events").mkdir(parents=True, exist_ok=True)
    events = pd.read_parquet(world / "events.parquet")
    users = pd.read_parquet(world / "users.parquet")
    links = pd.read_parquet(world / "links.parquet") if (world / "links.parquet").exists() else None
    identity = resolve_identities(links if links is not None else pd.DataFrame(
        {"identifier_a": pd.Series(dtype=str), "identifier_b": pd.Series(dtype=str)}), users["user_id"].astype(str))
    split = partition_of(identity.apply(events["user_id"].astype(str)), splits)   # by person: linked ids together
    rename = lambda column, c: column.astype(str) + f"-c{c:02d}"    # noqa: E731
    for c in range(copies):
        part = events.assign(user_id=rename(events["user_id"], c), event_id=rename(events["event_id"], c),
                             decision_id=events["decision_id"].where(events["decision_id"].isna(),
                                                                     rename(events["decision_id"], c)))
        for s in range(splits):
            part[split == s].to_parquet(big / "events" / f"part-{c * splits + s:05d}.parquet", index=False)
    pd.concat([users.assign(user_id=rename(users["user_id"], c)) for c in range(copies)],
              ignore_index=True).to_parquet(big / "users.parquet", index=False)
    pd.read_parquet(world / "messages.parquet").to_parquet(big / "messages.parquet", index=False)
    if links is not None:
        pd.concat([links.assign(identifier_a=rename(links["identifier_a"], c),
                                identifier_b=rename(links["identifier_b"], c)) for c in range(copies)],
                  ignore_index=True).to_parquet(big / "links.parquet", index=False)
    written = len(events) * copies
    (big / "done").write_text(f"{written} {copies} {splits}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--copies", type=int, default=32)
    parser.add_argument("--score-users", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--root", type=Path, default=None, help="keep the generated data here (default: a temporary "
                        "directory); a second run reuses it")
    parser.add_argument("--splits", type=int, default=2, help="parts per copy (by a hash of the user)")
    parser.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl",
                        help="the decisions' partitions, written by the workers under ROOT/decisions/")
    parser.add_argument("--in-process", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.in_process is not None:           # the in-process stage, in a process of its own: its rows printed
        from features.pipeline import build_training_set
        from nbm.config import load_config
        from nbm.dataset import load_dataset

        config = load_config()
        print(len(build_training_set(load_dataset(args.in_process, config)[0], config)))
        return 0
    root = args.root or Path(tempfile.mkdtemp(prefix="nbm-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    figures: dict[str, tuple[float, float]] = {}
    print(f"data under {root}", flush=True)
    with stage("simulate and train the world", figures):
        world, home = build_world(root, args.users, args.days)
    big = root / "big"
    with stage(f"write {args.copies} renamed copies as {args.copies * args.splits} event parts", figures):
        events = write_copies(world, big, args.copies, args.splits)
    os.environ.update(NBM_HOME=str(home), MLFLOW_DISABLE_TELEMETRY="true")
    from features.parts import Tables, shared_of_parts, training_set_of_parts
    from nbm.cluster import dask_client
    from nbm.config import load_config
    from serving.batch_output import BatchOutput
    from serving.batch_scoring import recommend_parts
    from serving.registry import load_model

    config = load_config()
    print(f"log: {events:,} events in {args.copies * args.splits} parts, {args.copies * args.users:,} users", flush=True)

    # In process, one copy (what fits; the whole log is `copies` times it), in a process of its own: what it leaves
    # allocated must not count against the out-of-core stages.
    with stage("in process: the training set of one copy (the world itself), its own process", figures):
        one_rows = int(subprocess.run([sys.executable, __file__, "--in-process", str(world)], check=True,
                                      capture_output=True, text=True).stdout.split()[-1])

    model = load_model("models:/nbm-ranker@champion", config)
    with dask_client("local", workers=args.workers) as client:
        with stage("out of core: the shared tables (summaries of every part, the strengths' sample)", figures):
            tables = Tables.read(big, config)
            plan = shared_of_parts(client, big, tables, config)
        with stage("out of core: the training set of every part, written as Parquet", figures):
            files = training_set_of_parts(client, plan, tables, config, root / "training-set")
        rows = sum(pd.read_parquet(f, columns=["event_id"]).shape[0] for f in files)
        scored = min(args.score_users, len(tables.users))
        output = BatchOutput(root / "decisions", args.format, partitioned=True)
        with stage(f"out of core: nbm recommend for {scored:,} users, {args.format} partitions written by the workers",
                   figures):
            users = tables.users["user_id"].to_numpy(dtype=object)[:scored]
            summary = recommend_parts(client, big, tables, config, model.artifact, model.version,
                                      pd.Timestamp(NOW), output, users=users)
    print()
    print(f"training set: {rows:,} rows from {events:,} events ({one_rows:,} rows from one part in process)")
    print(f"decisions: {summary.decisions:,}, with items {summary.with_items:,}, in "
          f"{len(list(output.path.glob('part-*')))} partitions under {output.path}")
    peak = max(figures[name][1] for name in figures if name.startswith("out of core"))
    print(f"peak memory out of core, every process: {peak:.2f} GiB (target <= {TARGET_GIB:g} GiB: "
          f"{'met' if peak <= TARGET_GIB else 'MISSED'})")
    print(f"{'stage':<80} {'seconds':>9} {'peak GiB':>9}")
    for name, (seconds, gib) in figures.items():
        print(f"{name:<80} {seconds:>9.1f} {gib:>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
