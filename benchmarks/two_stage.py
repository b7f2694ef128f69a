"""How often two-stage scoring finds the (message, channel, slot) that full enumeration finds, and at what cost.

The greedy decision of ``decision.scoring.model_decide`` (every allowed pair at its reference slot, then
every allowed slot of the best ``top_pairs`` pairs) against full enumeration (every allowed
(message, channel, slot) scored, the best expected value taken), on ``--decisions`` users decided as of
one time. Printed per ``top_pairs``: the share of decisions whose choice has the best expected value, the
share of the best expected value attained (summed over decisions), the worst decision's ratio, the scored
rows each decision chose among, and the seconds of the decision batch beside full enumeration's (scoring
every row from scratch, same run).

    .venv/bin/python benchmarks/two_stage.py [--world DIR] [--decisions 500] [--top 4 8 16]
    NBM_HOME=HOME .venv/bin/python benchmarks/two_stage.py --data DIR     # another world (its champion)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, help="benchmarks/serve.py's world, built when missing (kept)")
    parser.add_argument("--data", type=Path, help="another data directory (NBM_HOME names its champion)")
    parser.add_argument("--now", help="decision time (default: the data's last event)")
    parser.add_argument("--decisions", type=int, default=500)
    parser.add_argument("--top", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.data is None:
        from serve import prepared_world

        data = prepared_world(args.world) / "world"
    else:
        data = args.data
    from decision.contact import pair_contact
    from decision.pairs import expand_pairs
    from features.pipeline import FeatureStore
    from decision.histories import SendIndex, lookback_ns
    from decision.scoring import model_decide, score
    from nbm.config import load_config
    from nbm.dataset import load_dataset
    from nbm.policy.explore import Greedy
    from serving.registry import load_model

    config = load_config()
    dataset, _ = load_dataset(data, config)
    store = FeatureStore.build(dataset, config)
    artifact = load_model("models:/nbm-ranker@champion", config).artifact
    now = pd.Timestamp(args.now) if args.now else dataset.events["timestamp"].max()
    everyone = dataset.users["user_id"].to_numpy(dtype=object)
    users = np.random.default_rng(args.seed).permutation(everyone)[: args.decisions]
    t = np.full(len(users), now.value, dtype=np.int64)
    pairs = expand_pairs(store, users, t)
    hist = SendIndex.of(store.dataset.events).histories(users, t, lookback_ns(store.config.contact_policy))
    contact = pair_contact(store, pairs, hist)
    weight = store.history.catalog_arrays["weight"]                   # per message code

    start = time.perf_counter()
    p, s = np.nonzero(contact.allowed)                 # sorted by pair, so by decision
    expected = score(store, artifact, pairs.rows(p, s).rows) * pairs.value[p] * weight[pairs.message_code[p]]
    full_seconds = time.perf_counter() - start
    group = pairs.group[p]
    decided = np.unique(group)
    starts = np.searchsorted(group, decided)
    best = np.maximum.reduceat(expected, starts)
    print(f"{len(users):,} decisions as of {now}, {len(decided):,} with an allowed candidate; "
          f"{len(p) / max(len(decided), 1):.0f} allowed (pair, slot) rows and "
          f"{np.unique(p).size / max(len(decided), 1):.0f} allowed pairs a decision")
    print(f"full enumeration: {full_seconds:.3f} s ({full_seconds / len(users) * 1e3:.2f} ms a decision)")
    print(f"{'top_pairs':>9s} {'best found':>10s} {'value kept':>10s} {'worst':>7s} {'rows seen':>9s} {'seconds':>8s} "
          f"{'ms/decision':>11s}")
    for top in args.top:
        start = time.perf_counter()
        md = model_decide(store, artifact, pairs, hist, Greedy(), np.random.default_rng(0), top_pairs=top,
                          contact=contact)
        seconds = time.perf_counter() - start
        b = md.batch
        rows = np.maximum(b.chosen[decided], 0)
        got = np.where(b.chosen[decided] >= 0, md.probability[rows] * md.scored.value[rows]
                       * weight[md.scored.rows.message_code[rows]], 0.0)
        found = np.isclose(got, best, rtol=1e-6, atol=0.0)
        ratio = np.divide(got, best, out=np.ones_like(best), where=best > 0)
        seen = len(md.scored.group) / len(users)          # scored rows the decision chose among, a decision
        print(f"{top:9d} {found.mean():10.1%} {got.sum() / best.sum():10.2%} {ratio.min():7.3f} {seen:9.0f} {seconds:8.3f} "
              f"{seconds / len(users) * 1e3:11.2f}")


if __name__ == "__main__":
    main()
