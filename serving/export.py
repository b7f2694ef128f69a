"""``nbm export-log``: the service's decision log and feedback as a data directory the rest of nbm reads.

Writes ``decisions`` (every answer, empty ones included, with its propensity, policy, arm, model version,
explorer and items) and ``events`` (the feedback received: the sends the campaign engine reported, with
their decision ids and propensities, and the outcomes) in the data contract, so that they can be appended
to the next training's data and its off-policy evaluation covers the choices to send nothing. A reported
``send`` that names its decision but no propensity gets the one the service answered for that item: the
campaign engine need not echo it for the log to be evaluated.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pandas as pd

from nbm.io import write_table
from serving.state import StateStore


def export_log(state: StateStore, out: Path, since: pd.Timestamp | None = None, file_format: str = "parquet") -> dict[str, int]:
    """Write ``decisions`` and ``events`` (rows at or after ``since``) to ``out``; the row counts."""
    log = state.decision_log()
    decisions = log
    events = state.feedback_events()
    if since is not None:
        decisions = decisions[decisions["timestamp"] >= since]
        events = events[events["timestamp"] >= since]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    contract = decisions[["decision_id", "timestamp", "user_id", "propensity", "policy", "arm", "experiment",
                          "model_version", "explorer", "items"]]
    events, filled = answered_propensities(events, log)     # a send may name a decision taken before `since`
    write_table(contract.reset_index(drop=True), out, "decisions", file_format)
    write_table(events.reset_index(drop=True), out, "events", file_format)
    return {"decisions": len(contract), "events": len(events), "propensities_filled": filled}


def answered_propensities(events: pd.DataFrame, decisions: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``events`` with each ``send`` that names a logged decision but carries no propensity given the
    propensity the decision's answer gave its (message, channel) item; how many were filled. A send whose
    item is not among its decision's items keeps no propensity (it was not what the service chose)."""
    need = ((events["event_type"] == "send") & events["decision_id"].notna() & events["propensity"].isna()).to_numpy()
    if not need.any():
        return events, 0
    wanted = set(events.loc[need, "decision_id"])
    answered: dict[tuple[str, str, str], float] = {}
    for decision, items in zip(decisions["decision_id"], decisions["items"]):
        if decision in wanted and items:
            for item in orjson.loads(items):
                answered[(decision, item["message_id"], item["channel"])] = float(item["propensity"])
    rows = events.loc[need, ["decision_id", "message_id", "channel"]]
    found = pd.Series([answered.get(key, float("nan")) for key in rows.itertuples(index=False, name=None)],
                      index=rows.index, dtype=float)
    events = events.copy()
    events.loc[need, "propensity"] = found
    return events, int(found.notna().sum())
