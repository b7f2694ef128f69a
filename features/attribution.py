"""Attribution of outcomes to the sends that caused them (DESIGN.md, events table).

An outcome (open, click, convert) that carries the ``decision_id`` of a send belongs to that send. One
without it belongs to the latest earlier send of the same message to the same user within the
configured window (``attribution.open_click_hours`` for opens and clicks, ``convert_days`` for
conversions). Vectorised with ``pd.merge_asof``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nbm.config import AttributionConfig

GRADE = {"open": 1, "click": 2, "convert": 3}
"""Graded label of each outcome: 0 nothing, 1 open, 2 click, 3 convert."""


def attribute(events: pd.DataFrame, attribution: AttributionConfig) -> pd.Series:
    """Position (in ``events``) of the send each event is attributed to; -1 when none.

    ``events`` is a clean events table (canonical ``user_id``); non-outcome rows get -1, except sends,
    which point to themselves.
    """
    n = len(events)
    out = np.full(n, -1, dtype=np.int64)
    kind = events["event_type"].to_numpy()
    is_send = kind == "send"
    out[is_send] = np.flatnonzero(is_send)
    sends = pd.DataFrame({
        "position": np.flatnonzero(is_send),
        "timestamp": events["timestamp"].to_numpy()[is_send],
        "user_id": events["user_id"].to_numpy()[is_send],
        "message_id": events["message_id"].to_numpy()[is_send],
        "decision_id": events["decision_id"].to_numpy()[is_send],
    })
    outcome = np.isin(kind, list(GRADE))
    decision = events["decision_id"].to_numpy()[outcome]
    positions = np.flatnonzero(outcome)
    by_decision = sends.dropna(subset=["decision_id"]).drop_duplicates("decision_id").set_index("decision_id")["position"]
    direct = pd.Series(decision).map(by_decision).to_numpy()
    has_direct = ~pd.isna(direct)
    out[positions[has_direct]] = direct[has_direct].astype(np.int64)

    rest = positions[~has_direct]
    if len(rest) and len(sends):
        sends_sorted = sends.dropna(subset=["message_id"]).sort_values("timestamp", kind="stable")
        for kinds, window in ((("open", "click"), pd.Timedelta(hours=attribution.open_click_hours)),
                              (("convert",), pd.Timedelta(days=attribution.convert_days))):
            chosen = rest[np.isin(kind[rest], kinds)]
            query = pd.DataFrame({
                "row": chosen, "timestamp": events["timestamp"].to_numpy()[chosen],
                "user_id": events["user_id"].to_numpy()[chosen], "message_id": events["message_id"].to_numpy()[chosen],
            }).dropna(subset=["message_id"]).sort_values("timestamp", kind="stable")
            if not len(query):
                continue
            matched = pd.merge_asof(query, sends_sorted[["timestamp", "user_id", "message_id", "position"]],
                                    on="timestamp", by=["user_id", "message_id"], direction="backward",
                                    tolerance=window, allow_exact_matches=True)
            found = matched["position"].notna().to_numpy()
            out[matched["row"].to_numpy()[found]] = matched["position"].to_numpy()[found].astype(np.int64)
    return pd.Series(out, index=events.index, name="send_position")


def send_outcomes(events: pd.DataFrame, attributed: pd.Series) -> pd.DataFrame:
    """Per send (indexed by its position in ``events``): graded ``label`` and ``revenue``."""
    kind = events["event_type"].to_numpy()
    is_send = kind == "send"
    grade = pd.Series(kind).map(GRADE).fillna(0).to_numpy()
    target = attributed.to_numpy()
    outcome = (grade > 0) & (target >= 0)
    frame = pd.DataFrame({"send": target[outcome], "grade": grade[outcome],
                          "revenue": np.where(kind[outcome] == "convert",
                                              events["value"].fillna(0).to_numpy()[outcome], 0.0)})
    grouped = frame.groupby("send").agg(label=("grade", "max"), revenue=("revenue", "sum"))
    result = pd.DataFrame(index=pd.Index(np.flatnonzero(is_send), name="send"))
    result = result.join(grouped).fillna({"label": 0, "revenue": 0.0})
    result["label"] = result["label"].astype(np.int8)
    return result
