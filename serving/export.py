"""``nbm export-log``: the service's decision log and feedback as a data directory the rest of nbm reads.

Writes ``decisions`` (every answer, empty ones included, with its propensity, policy and arm) and ``events``
(the feedback received: the sends the campaign engine reported, with their decision ids and propensities,
and the outcomes) in the data contract, so that they can be appended to the next training's data and its
off-policy evaluation covers the choices to send nothing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nbm.io import write_table
from serving.state import StateStore


def export_log(state: StateStore, out: Path, since: pd.Timestamp | None = None, file_format: str = "parquet") -> dict[str, int]:
    """Write ``decisions`` and ``events`` (rows at or after ``since``) to ``out``; the row counts."""
    decisions = state.decision_log()
    events = state.feedback_events()
    if since is not None:
        decisions = decisions[decisions["timestamp"] >= since]
        events = events[events["timestamp"] >= since]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    contract = decisions[["decision_id", "timestamp", "user_id", "propensity", "policy", "arm", "experiment"]]
    write_table(contract.reset_index(drop=True), out, "decisions", file_format)
    write_table(events.reset_index(drop=True), out, "events", file_format)
    return {"decisions": len(contract), "events": len(events)}
