"""Could an exact pair search be cheap? Upper bounds on a pair's best slot, against two-stage scoring's choice.

Two-stage scoring (``decision.scoring.model_decide``) scores every allowed (message, channel) pair at one
reference slot and only the best ``top_pairs`` at every allowed slot, so a pair outside the top whose best
slot beats the choice is missed. An exact search could skip every pair whose *upper bound* over its slots
is below the value found. This measures, on ``--decisions`` users decided as of one time, how many pairs
outside the top each of two bounds leaves to check:

* **free slot features**: each tree's largest leaf reachable when the send-time features
  (``features.compute.SLOT_FEATURES``) may take any value: a model of merged trees could compute it in one
  pass over the reference rows, as fast as stage 1.
* **the pair's own slots**: each tree's largest leaf over the pair's allowed slots (a mask of slots carried
  down the tree), summed over trees: tight, but it visits every slot of every pair in every tree, which is
  what full enumeration costs.

Both are bounds on the raw score, made probabilities by the sigmoid and the (non-decreasing) calibration,
times value × weight. The trees are walked from ``Booster.dump_model`` in numpy (a check prints the largest
difference from the booster's own raw scores on the reference rows).

    .venv/bin/python benchmarks/pair_bounds.py [--world DIR] [--decisions 60] [--top 8]
    NBM_HOME=HOME .venv/bin/python benchmarks/pair_bounds.py --data DIR      # another world (its champion)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def goes_left(node: dict, x: np.ndarray) -> np.ndarray:
    """Which values ``x`` a LightGBM split sends left (missing values as LightGBM routes them)."""
    nan = np.isnan(x)
    if node["decision_type"] == "==":
        categories = np.array([float(c) for c in str(node["threshold"]).split("||")])
        return ~nan & np.isin(x, categories)
    missing = node.get("missing_type", "None")
    if missing == "None":
        return np.where(nan, 0.0, x) <= node["threshold"]
    default = bool(node["default_left"])
    if missing == "Zero":
        return np.where(nan | (x == 0), default, x <= node["threshold"])
    return np.where(nan, default, x <= node["threshold"])


def tree_max(node: dict, x: np.ndarray, slots: np.ndarray | None, mask: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Per row of ``x`` (rows × features): the tree's largest leaf with the features ``free`` unknown —
    any value when ``slots`` is ``None``, else one of the row's slots (``slots``: rows × slots × features,
    ``mask``: rows × slots, those still possible)."""
    if "leaf_value" in node:
        return np.full(len(x), float(node["leaf_value"]))
    f = node["split_feature"]
    left_child, right_child = node["left_child"], node["right_child"]
    if free[f] and slots is None:
        return np.maximum(tree_max(left_child, x, None, mask, free), tree_max(right_child, x, None, mask, free))
    if free[f]:
        left = goes_left(node, slots[:, :, f])
        left_mask, right_mask = mask & left, mask & ~left
        out = np.full(len(x), -np.inf)
        for child, m in ((left_child, left_mask), (right_child, right_mask)):
            rows = np.flatnonzero(m.any(axis=1))
            if len(rows):
                out[rows] = np.maximum(out[rows], tree_max(child, x[rows], slots[rows], m[rows], free))
        return out
    left = goes_left(node, x[:, f])
    out = np.empty(len(x))
    for child, rows in ((left_child, np.flatnonzero(left)), (right_child, np.flatnonzero(~left))):
        if len(rows):
            out[rows] = tree_max(child, x[rows], None if slots is None else slots[rows], mask[rows], free)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, help="benchmarks/serve.py's world, built when missing (kept)")
    parser.add_argument("--data", type=Path, help="another data directory (NBM_HOME names its champion)")
    parser.add_argument("--decisions", type=int, default=60)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.data is None:
        from serve import prepared_world

        data = prepared_world(args.world) / "world"
    else:
        data = args.data
    from features.compute import SLOT_FEATURES
    from decision.contact import pair_contact
    from decision.pairs import expand_pairs
    from features.pipeline import FeatureStore
    from decision.histories import SendIndex, lookback_ns
    from decision.scoring import model_decide, reference_slots, score, top_per_group
    from nbm.artifact import TIE_BREAK
    from nbm.config import load_config
    from nbm.dataset import load_dataset
    from nbm.policy.explore import Greedy
    from serving.registry import load_model

    config = load_config()
    dataset, _ = load_dataset(data, config)
    store = FeatureStore.build(dataset, config)
    artifact = load_model("models:/nbm-ranker@champion", config).artifact
    dump = artifact.booster.dump_model()
    names = dump["feature_names"]
    if list(names) != list(artifact.features):
        raise SystemExit("the booster's features are not the artifact's, in order")
    free = np.isin(names, SLOT_FEATURES)
    binary = str(dump.get("objective", "")).startswith("binary")
    now = dataset.events["timestamp"].max()
    users = np.random.default_rng(args.seed).permutation(dataset.users["user_id"].to_numpy(dtype=object))
    users = users[: args.decisions]
    t = np.full(len(users), now.value, dtype=np.int64)
    pairs = expand_pairs(store, users, t)
    hist = SendIndex.of(store.dataset.events).histories(users, t, lookback_ns(store.config.contact_policy))
    contact = pair_contact(store, pairs, hist)
    weight = store.history.catalog_arrays["weight"]

    # Two-stage scoring's greedy choice, and full enumeration's best, per decision.
    md = model_decide(store, artifact, pairs, hist, Greedy(), np.random.default_rng(0), top_pairs=args.top,
                      contact=contact)
    chosen = np.flatnonzero(md.batch.chosen >= 0)
    row = md.batch.chosen[chosen]
    found = np.full(pairs.n_groups, np.inf)            # no choice: nothing to beat is checked
    found[chosen] = md.probability[row] * md.scored.value[row] * weight[md.scored.rows.message_code[row]]
    p, s = np.nonzero(contact.allowed)
    every = score(store, artifact, pairs.rows(p, s).rows) * pairs.value[p] * weight[pairs.message_code[p]]
    best = np.full(pairs.n_groups, -np.inf)
    np.maximum.at(best, pairs.group[p], every)

    # Reference rows (stage 1) and every allowed slot's features, per live pair.
    live, ref_slot = reference_slots(contact.allowed, pairs.n_slots[pairs.group] // 2)
    x = artifact.matrix(store.featurise_columns(pairs.rows(live, ref_slot).rows)).astype(np.float64)
    width = contact.allowed.shape[1]
    at = np.searchsorted(live, p)
    slots = np.full((len(live), width, x.shape[1]), np.nan)
    slots[at, s] = artifact.matrix(store.featurise_columns(pairs.rows(p, s).rows))
    mask = np.zeros((len(live), width), dtype=bool)
    mask[at, s] = True

    def probability(raw_sum: np.ndarray) -> np.ndarray:
        raw = 1.0 / (1.0 + np.exp(-raw_sum)) if binary else raw_sum
        return np.clip(artifact.calibrator(raw) + TIE_BREAK, 0.0, 1.0)     # the tie term is at most TIE_BREAK

    no_free = np.zeros_like(free)
    plain = sum(tree_max(tree["tree_structure"], x, None, mask, no_free) for tree in dump["tree_info"])
    check = np.abs((1.0 / (1.0 + np.exp(-plain)) if binary else plain) - artifact.booster.predict(x)).max()
    worth = pairs.value[live] * weight[pairs.message_code[live]]
    group = pairs.group[live]
    reference = artifact.score(store.featurise_columns(pairs.rows(live, ref_slot).rows)) * worth
    top = top_per_group(group, reference, max(args.top, 4))
    n = len(users)
    print(f"{n} decisions as of {now}: {len(live) / n:.0f} allowed pairs a decision, two-stage (top {args.top}) "
          f"found the best in {np.isclose(found[chosen], best[chosen], rtol=1e-6).mean():.1%} of "
          f"{len(chosen)} decisions; tree walk against Booster.predict: {check:.1e}")
    print(f"{'bound':>22s} {'median bound / reference':>25s} {'pairs to check':>15s} {'outside the top':>16s}")
    for name, own in (("free slot features", None), ("the pair's own slots", slots)):
        raw_sum = sum(tree_max(tree["tree_structure"], x, own, mask, free) for tree in dump["tree_info"])
        bound = probability(raw_sum) * worth
        check_pair = bound >= found[group] * (1 - 1e-9)
        ratio = np.median(bound / np.maximum(reference, 1e-300))
        print(f"{name:>22s} {ratio:25.2f} {check_pair.sum() / n:15.1f} {(check_pair & ~top).sum() / n:16.2f}")


if __name__ == "__main__":
    main()
