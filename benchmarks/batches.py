"""Campaign batches through ``nbm serve``: decisions per second run by run, and health checks during a long batch.

The world of ``benchmarks/serve.py`` (built once under ``--world``, kept). Each run starts ``nbm serve`` on
127.0.0.1 with a fresh state store (a user decided before at the same time is mostly capped, and a capped
decision is cheap), sends one warm-up batch a client, then ``--batches`` batches of 500 new users (seeded,
at serve.py's batch time) ``--concurrency`` at a time, each on a new connection (``--keep-alive``: each
client on one connection, as a campaign engine's connection pool sends them), and prints the run's
decisions per second and every batch's latency (the warm-up's too). serve.py measures one such run per level; this script
repeats it (``--runs``), which is what a comparison needs on a machine whose noise is as large as most
changes. ``--readyz-during N`` instead sends one batch of N requests to a 1-worker service while polling
``/readyz`` every 50 ms, and prints the longest wait. ``--services S`` starts S services of ``--workers``
workers each on their own ports (one state store), ``--concurrency / S`` clients sending to each (a
share of 1/S of the batches): the workers balanced by the client, as a least-connections proxy in front of single-worker
services would balance them, against BentoML's shared listening socket with ``--services 1``.

To compare revisions, run it from outside the checkouts with ``PYTHONPATH`` naming one (the service is started
by ``python -m nbm.cli``, which puts the working directory first on ``sys.path``)::

    cd /tmp && PYTHONPATH=CHECKOUT /path/to/.venv/bin/python /path/to/benchmarks/batches.py --world DIR


    .venv/bin/python benchmarks/batches.py --world DIR [--workers 2] [--concurrency 2] [--batches 8] [--runs 3]
    .venv/bin/python benchmarks/batches.py --world DIR --services 2 --workers 1
    .venv/bin/python benchmarks/batches.py --world DIR --keep-alive
    .venv/bin/python benchmarks/batches.py --world DIR --readyz-during 10000
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from serve import BATCH_NOW, build_world, send
from serving.launch import free_port, start_service, stop_service

BATCH = 500
TIMEOUT = 600.0
"""Seconds after which a run stops sending (every batch of a run is meant to be sent)."""


def bodies(users, n: int, now: str = BATCH_NOW) -> list[bytes]:
    return [json.dumps({"requests": [{"user_id": next(users), "now": now} for _ in range(BATCH)]}).encode()
            for _ in range(n)]


def fresh_home(root: Path) -> Path:
    """A copy of the world's NBM_HOME (registry, compiled booster) without its state store."""
    home = Path(tempfile.mkdtemp()) / "home"
    shutil.copytree(root / "home", home, ignore=shutil.ignore_patterns("state.db*"))
    return home


def send_spread(ports: list[int], batches: list[bytes], concurrency: int,
                keep_alive: bool = False) -> tuple[np.ndarray, float]:
    """:func:`serve.send` of ``batches`` by ``concurrency`` clients, ``concurrency / len(ports)`` of them on
    each port (each port's share of the batches): every batch's milliseconds, and the wall seconds of all.
    Each batch on a new connection, or each client on one keep-alive connection."""
    k = len(ports)
    if k == 1:
        return send(ports[0], "/recommend_batch", batches, concurrency, TIMEOUT, fresh=not keep_alive)
    out: list[np.ndarray] = [np.zeros(0)] * k

    def service(j: int) -> None:
        out[j] = send(ports[j], "/recommend_batch", batches[j::k], concurrency // k, TIMEOUT, fresh=not keep_alive)[0]

    began = time.perf_counter()
    threads = [threading.Thread(target=service, args=(j,)) for j in range(k)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return np.concatenate(out), time.perf_counter() - began


def rate_run(root: Path, users, workers: int, concurrency: int, batches: int,
             services: int = 1, keep_alive: bool = False) -> tuple[float, np.ndarray, np.ndarray]:
    """One run: decisions per second, and the milliseconds of the warm-up's and of the measured batches."""
    home = fresh_home(root)
    ports, processes = [], []
    try:
        for _ in range(services):
            ports.append(free_port())
            processes.append(start_service(root / "world", home, ports[-1], workers))
        warm, _ = send_spread(ports, bodies(users, concurrency), concurrency, keep_alive)
        ms, seconds = send_spread(ports, bodies(users, batches), concurrency, keep_alive)
        return len(ms) * BATCH / seconds, warm, ms
    finally:
        for process in processes:
            stop_service(process)
        shutil.rmtree(home.parent, ignore_errors=True)


def readyz_during(root: Path, users, n: int) -> None:
    """One batch of ``n`` requests on a 1-worker service while ``/readyz`` is polled every 50 ms."""
    home = fresh_home(root)
    port = free_port()
    process = start_service(root / "world", home, port, 1)
    try:
        send(port, "/recommend_batch", bodies(users, 1), 1, TIMEOUT)          # warm-up
        body = json.dumps({"requests": [{"user_id": next(users), "now": BATCH_NOW} for _ in range(n)]}).encode()
        waits: list[float] = []
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                t = time.perf_counter()
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=60) as response:
                    response.read()
                waits.append(time.perf_counter() - t)
                time.sleep(0.05)

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(0.3)
        seconds = send(port, "/recommend_batch", [body], 1, TIMEOUT)[1]
        done.set()
        poller.join()
        print(f"one batch of {n:,} requests, 1 worker: {seconds:.2f} s; /readyz polled {len(waits)} times, "
              f"longest wait {max(waits) * 1e3:.0f} ms, median {np.median(waits) * 1e3:.1f} ms")
    finally:
        stop_service(process)
        shutil.rmtree(home.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True, help="built here by serve.py's build_world if absent")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--batches", type=int, default=8, help="batches of 500 a run (after the warm-up)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--services", type=int, default=1,
                        help="services on their own ports, concurrency / S clients on each")
    parser.add_argument("--keep-alive", action="store_true",
                        help="each client on one keep-alive connection (default: a new connection a batch)")
    parser.add_argument("--readyz-during", type=int, metavar="N", help="one batch of N requests, /readyz polled")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = args.world
    if not (root / "world" / "events.parquet").exists():
        root.mkdir(parents=True, exist_ok=True)
        build_world(root)
    everyone = pd.read_parquet(root / "world" / "users.parquet")["user_id"].to_numpy(dtype=object)
    rng = np.random.default_rng(args.seed)
    if args.readyz_during:
        if args.readyz_during > len(everyone):
            raise SystemExit(f"the world has {len(everyone):,} users, fewer than {args.readyz_during:,}")
        readyz_during(root, iter(rng.permutation(everyone).tolist()), args.readyz_during)
        return
    if args.concurrency % args.services:
        raise SystemExit(f"--concurrency {args.concurrency} is not a multiple of --services {args.services}")
    needed = (args.concurrency + args.batches) * BATCH
    if needed > len(everyone):
        raise SystemExit(f"a run needs {needed:,} users; the world has {len(everyone):,}")
    for run in range(args.runs):
        # Every run starts on a fresh state store, so its users may repeat those of the runs before.
        rate, warm, latencies = rate_run(root, iter(rng.permutation(everyone).tolist()), args.workers,
                                         args.concurrency, args.batches, args.services, args.keep_alive)
        ms = lambda values: " ".join(f"{v:.0f}" for v in values)  # noqa: E731
        where = f"{args.services} services of {args.workers} workers" if args.services > 1 else f"{args.workers} workers"
        where += ", keep-alive" if args.keep_alive else ""
        print(f"run {run + 1}: {rate:,.0f} decisions/s ({where}, {args.concurrency} at a time); "
              f"warm-up {ms(warm)} ms, batches {ms(latencies)} ms", flush=True)


if __name__ == "__main__":
    main()
