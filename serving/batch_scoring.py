"""``nbm recommend``: the decision of every user (or the listed ones) as of one time, without a server.

The same :func:`decision.decide.decide_many` as the service — candidates, contact policy, arms, explorer —
with the contact history taken from the events of the data directory (and, for Thompson sampling, the
explorer's statistics from its sends and their attributed outcomes). One JSON line per decision, in the
shape of the ``/recommend`` answer plus ``now`` (:meth:`decision.answer.Answer.batch_line`). Decision ids
are derived from (user, now, model version), so running the same campaign twice writes the same ids.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from decision.decide import HOLDOUT, decide_many
from decision.histories import SendIndex, lookback_ns
from features.pipeline import FeatureStore
from nbm.attribution import attribute
from nbm.config import AttributionConfig, NbmConfig
from nbm.dataset import Dataset
from nbm.errors import UnusableInputError
from nbm.policy.assign import assign
from nbm.policy.contact import SendHistories
from nbm.policy.explore import EXPLORERS, make_explorer

CHUNK = 20_000
NAMESPACE = uuid.UUID("6f1c1d1e-8a7b-4e0c-9a55-6e626d2d6e62")


@dataclass(frozen=True)
class BatchSummary:
    decisions: int
    with_items: int
    items: int
    reasons: dict[str, int]


def read_user_list(path: Path) -> np.ndarray:
    """User ids from a file: one per line, or a CSV/Parquet with a ``user_id`` column."""
    path = Path(path)
    if not path.is_file():
        raise UnusableInputError(f"`--users`: {str(path)!r} does not exist")
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pd.read_csv(path, dtype=str)
    else:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        return np.asarray(lines, dtype=object)
    if "user_id" not in frame.columns:
        raise UnusableInputError(f"`--users`: {str(path)!r} has no `user_id` column")
    return frame["user_id"].dropna().astype(str).to_numpy(dtype=object)


def history_statistics(events: pd.DataFrame, attribution: AttributionConfig, target: str, now: int
                       ) -> dict[tuple[str, str], tuple[int, int]]:
    """Thompson sampling's statistics from a data directory's events as of ``now`` (int64 ns), as the service
    keeps them from ``/feedback``: per (message, channel), its sends before ``now`` (impressions) and how
    many of them have an outcome of the model's ``target`` before ``now`` attributed to them (successes,
    by decision id or window, ``nbm.attribution``); (successes, impressions − successes)."""
    past = events[events["timestamp"].to_numpy(dtype="int64") < now]
    if not len(past):
        return {}
    position = attribute(past, attribution).to_numpy()
    kind = past["event_type"].to_numpy(dtype=object)
    success = np.zeros(len(past), dtype=bool)
    success[position[(kind == target) & (position >= 0)]] = True
    sends = kind == "send"
    frame = pd.DataFrame({"message": past["message_id"].to_numpy(dtype=object)[sends],
                          "channel": past["channel"].to_numpy(dtype=object)[sends], "success": success[sends]})
    counts = frame.groupby(["message", "channel"], sort=False)["success"].agg(["size", "sum"])
    return {(str(m), str(c)): (int(won), int(n - won)) for (m, c), n, won in
            zip(counts.index, counts["size"], counts["sum"])}


def recommend_all(dataset: Dataset, config: NbmConfig, artifact, model_version: str, now: pd.Timestamp,
                  out: Path, users: np.ndarray | None = None, k: int = 1, explorer: str = "greedy",
                  threshold: float = 0.0, seed: int = 0, progress=None) -> BatchSummary:
    """Decide for every user of ``dataset`` (or ``users``, resolved through links) as of ``now``; write JSONL."""
    if explorer not in EXPLORERS:
        raise UnusableInputError(f"unknown explorer {explorer!r}; expected one of {sorted(EXPLORERS)}")
    chooser = make_explorer(explorer, config.explorer)
    ids = dataset.users["user_id"].to_numpy(dtype=object) if users is None else \
        dataset.identity.apply(pd.Series(users, dtype=object)).to_numpy(dtype=object)
    asked = ids if users is None else np.asarray(users, dtype=object)
    t = pd.Timestamp(now).value
    store = FeatureStore.build(dataset, config, strengths=artifact.prior_strengths)   # the model's smoothing
    sends = SendIndex.of(dataset.events)
    lookback = lookback_ns(config.contact_policy)
    rng = np.random.default_rng(seed)
    statistics = history_statistics(dataset.events, config.attribution, artifact.target, t) \
        if explorer == "thompson" else None
    reasons: dict[str, int] = {}
    with_items = items = 0
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    experiment = config.experiment
    with out.open("w") as fh:
        for a in range(0, len(ids), CHUNK):
            chunk_ids = ids[a:a + CHUNK]
            lines: list[dict | None] = [None] * len(chunk_ids)
            arms = assign(chunk_ids, experiment)
            for arm in pd.unique(arms):
                members = np.flatnonzero(arms == arm)
                chunk = chunk_ids[members]
                nows = np.full(len(chunk), t, dtype=np.int64)
                histories = SendHistories.empty() if arm == HOLDOUT else sends.histories(chunk, nows, lookback)
                decided = decide_many(store, artifact, chunk, nows, histories, rng,
                                      arm=str(arm), explorer=chooser, k=k, threshold=threshold,
                                      statistics=statistics if arm == "model" else None)
                for j, (i, user) in enumerate(zip(members, chunk)):
                    lines[i] = decided.answer(j, str(uuid.uuid5(NAMESPACE, f"{user}|{t}|{model_version}")),
                                              str(asked[a + i]), model_version, t, str(arm),
                                              experiment.name or None).batch_line()
            for line in lines:
                if not line["items"]:
                    reasons[line["reason"]] = reasons.get(line["reason"], 0) + 1
                else:
                    with_items += 1
                    items += len(line["items"])
                fh.write(json.dumps(line) + "\n")
            if progress is not None:
                progress(min(a + CHUNK, len(ids)), len(ids))
    return BatchSummary(len(ids), with_items, items, reasons)
