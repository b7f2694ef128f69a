"""Keep-alive connections over two workers: how they split, and the p50 / p99 at concurrency 8, run by run.

The world of ``benchmarks/serve.py`` (built once under ``--world``, kept). Each trial starts ``nbm serve``
with 2 workers on 127.0.0.1 (a fresh state store), sends serve.py's warm-up (20 requests, 2 at a time) and
its concurrency-1 level, then ``--requests`` requests on 8 keep-alive connections (serve.py's concurrency-8
level), and prints how the connections open 0.3 s into that level split over the worker processes (``ss``,
from iproute2) and the level's p50, p99 and answers per second. serve.py measures one such level a run;
this script repeats it (``--trials``), which is what a comparison needs on a machine whose runs spread as
much as most changes. Compare revisions from outside the checkouts (``python -m nbm.cli`` puts the working
directory first on ``sys.path``)::

    cd /tmp && PYTHONPATH=CHECKOUT /path/to/.venv/bin/python /path/to/benchmarks/keepalive.py --world DIR

    .venv/bin/python benchmarks/keepalive.py --world DIR [--trials 2] [--requests 600] [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from batches import fresh_home
from serve import NOW, build_world, load
from serving.launch import free_port, start_service, stop_service

SECONDS = 10.0
"""Most seconds a level runs (serve.py's default)."""


def split(port: int) -> list[int]:
    """Established connections to ``port`` per server process, most first."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"sport = :{port}"], capture_output=True,
                         text=True, check=True).stdout
    return sorted(collections.Counter(re.findall(r"pid=(\d+)", out)).values(), reverse=True)


def trial(root: Path, users, requests: int) -> tuple[list[int], dict[str, float]]:
    bodies = lambda n: [json.dumps({"user_id": next(users), "now": NOW}).encode() for _ in range(n)]  # noqa: E731
    home = fresh_home(root)
    port = free_port()
    process = start_service(root / "world", home, port, 2)
    try:
        load(port, "/recommend", bodies(20), 2, SECONDS)
        load(port, "/recommend", bodies(300), 1, SECONDS)
        seen: list[list[int]] = []

        def watch() -> None:
            time.sleep(0.3)
            seen.append(split(port))

        watcher = threading.Thread(target=watch)
        watcher.start()
        result = load(port, "/recommend", bodies(requests), 8, SECONDS)
        watcher.join()
        return seen[0], result
    finally:
        stop_service(process)
        shutil.rmtree(home.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True, help="built here by serve.py's build_world if absent")
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--requests", type=int, default=600, help="requests of the concurrency-8 level")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = args.world
    if not (root / "world" / "events.parquet").exists():
        root.mkdir(parents=True, exist_ok=True)
        build_world(root)
    everyone = pd.read_parquet(root / "world" / "users.parquet")["user_id"].to_numpy(dtype=object)
    needed = args.trials * (320 + args.requests)
    if needed > len(everyone):
        raise SystemExit(f"{args.trials} trials need {needed:,} users; the world has {len(everyone):,}")
    users = iter(np.random.default_rng(args.seed).permutation(everyone).tolist())   # a fresh user each request
    for k in range(args.trials):
        connections, r = trial(root, users, args.requests)
        print(f"trial {k + 1}: connections per worker {':'.join(map(str, connections))}; concurrency 8: "
              f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, {r['per_s']:.0f}/s", flush=True)


if __name__ == "__main__":
    main()
