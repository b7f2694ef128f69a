"""Benchmark of identity resolution: 1M links in ≤ 5 s (issue 3).

The graph is shaped like a real one: most people have one second identifier (a device), some a chain
(device → cookie), a few are hubs (a shared device linking several cookies), over ~1.5M identifiers.
Printed beside the target: the raw floor measured in the same run — ``connected_components`` alone on
the prebuilt sparse matrix, and ``pd.factorize`` alone on the same strings.

    .venv/bin/python benchmarks/identity.py [--links 1000000] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from nbm.identity import resolve_identities

TARGET_SECONDS = 5.0


def make_links(n_links: int, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.Series]:
    """User → device links (70 %), device → cookie chains (25 %), hub devices (5 %)."""
    n_users = int(n_links * 0.75)
    users = pd.Series(np.char.add("u", np.arange(n_users).astype(str)), dtype="str")
    n_dev, n_chain = int(n_links * 0.70), int(n_links * 0.25)
    n_hub = n_links - n_dev - n_chain
    owner = rng.choice(n_users, n_dev, replace=False)
    devices = np.char.add("dev-", np.arange(n_dev).astype(str))
    a = [users.to_numpy()[owner], devices[rng.integers(0, n_dev, n_chain)], devices[rng.integers(0, 5000, n_hub)]]
    b = [devices, np.char.add("ck-", np.arange(n_chain).astype(str)),
         np.char.add("ck-hub-", rng.integers(0, n_hub, n_hub).astype(str))]
    links = pd.DataFrame({"identifier_a": pd.array(np.concatenate(a).astype(object), dtype="str"),
                          "identifier_b": pd.array(np.concatenate(b).astype(object), dtype="str")})
    return links.sample(frac=1.0, random_state=int(rng.integers(2**31))).reset_index(drop=True), users


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    links, users = make_links(args.links, np.random.default_rng(args.seed))

    times = []
    for _ in range(3):
        began = time.perf_counter()
        result = resolve_identities(links, users)
        times.append(time.perf_counter() - began)

    ends = pd.concat([links["identifier_a"], links["identifier_b"]], ignore_index=True)
    began = time.perf_counter()
    codes, names = pd.factorize(ends, sort=True)
    factorize = time.perf_counter() - began
    m = len(links)
    graph = coo_matrix((np.ones(m, dtype=np.int8), (codes[:m], codes[m:])), shape=(len(names), len(names)))
    began = time.perf_counter()
    connected_components(graph, directed=False)
    components = time.perf_counter() - began

    best = min(times)
    print(f"identity resolution benchmark: {len(links):,} links over {len(result.canonical):,} identifiers, "
          f"{result.n_components:,} people, {len(users):,} users rows")
    print(f"  resolve_identities   best {best:6.2f} s  median {np.median(times):6.2f} s   "
          f"target ≤ {TARGET_SECONDS:.0f} s  {'OK' if best <= TARGET_SECONDS else 'MISSED'}")
    print(f"  raw floor            factorize {factorize:6.2f} s + connected_components {components:6.2f} s "
          f"= {factorize + components:6.2f} s")


if __name__ == "__main__":
    main()
