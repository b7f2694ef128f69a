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
EXTRA = -1
"""Grade code of the events named in ``attribute(also=…)`` (attributed, never a label)."""


def attribute(events: pd.DataFrame, attribution: AttributionConfig, also: tuple[str, ...] = ()) -> pd.Series:
    """Position (in ``events``) of the send each event is attributed to; -1 when none.

    ``events`` is a clean events table (canonical ``user_id``); non-outcome rows get -1, except sends,
    which point to themselves. ``also`` names other message events attributed the same way, with the
    open/click window (the audience report attributes ``bounce`` to the send that bounced).
    """
    n = len(events)
    out = np.full(n, -1, dtype=np.int64)
    if not n:                   # a person without events (a user the service first hears of)
        return pd.Series(out, index=events.index, name="send_position")
    kind_codes, kind_names = pd.factorize(events["event_type"])
    code_of = {name: i for i, name in enumerate(kind_names)}
    stamps = events["timestamp"].to_numpy(dtype="int64")  # int64 ns: object Timestamps are 100× slower
    # Integer codes: merge_asof and lookups on them are far faster than on strings.
    user = pd.factorize(events["user_id"])[0]
    message = pd.factorize(events["message_id"])[0]
    decision = pd.factorize(events["decision_id"])[0]
    is_send = kind_codes == code_of.get("send", -2)
    send_rows = np.flatnonzero(is_send)
    out[send_rows] = send_rows
    grade_of_code = np.array([GRADE.get(name, 0) for name in kind_names] + [0])  # a handful of types
    grade = grade_of_code[kind_codes]
    extra = np.isin(kind_codes, [code_of[k] for k in also if k in code_of])
    grade = np.where(extra, EXTRA, grade)
    outcome_rows = np.flatnonzero(grade != 0)

    # 1. By decision id: the first send carrying it.
    first_send = np.full(decision.max() + 2, -1, dtype=np.int64)
    with_id = send_rows[decision[send_rows] >= 0][::-1]
    first_send[decision[with_id]] = with_id
    direct = np.where(decision[outcome_rows] >= 0, first_send[decision[outcome_rows]], -1)
    out[outcome_rows] = direct

    # 2. By window: the latest send of the same message to the same user.
    rest = outcome_rows[direct < 0]
    rest = rest[message[rest] >= 0]
    sends = pd.DataFrame({"timestamp": stamps[send_rows], "user": user[send_rows], "message": message[send_rows],
                          "position": send_rows}).sort_values("timestamp", kind="stable")
    for grades, window in (((GRADE["open"], GRADE["click"], EXTRA), int(attribution.open_click_hours * 3_600 * 10**9)),
                           ((GRADE["convert"],), int(attribution.convert_days * 86_400 * 10**9))):
        chosen = rest[np.isin(grade[rest], grades)]
        if not len(chosen) or not len(sends):
            continue
        query = pd.DataFrame({"timestamp": stamps[chosen], "user": user[chosen], "message": message[chosen],
                              "row": chosen}).sort_values("timestamp", kind="stable")
        matched = pd.merge_asof(query, sends, on="timestamp", by=["user", "message"], direction="backward",
                                tolerance=window, allow_exact_matches=True)
        found = matched["position"].notna().to_numpy()
        out[matched["row"].to_numpy()[found]] = matched["position"].to_numpy()[found].astype(np.int64)
    return pd.Series(out, index=events.index, name="send_position")


def send_outcomes(events: pd.DataFrame, attributed: pd.Series) -> pd.DataFrame:
    """Per send (indexed by its position in ``events``): graded ``label`` and ``revenue``."""
    kind_codes, kind_names = pd.factorize(events["event_type"])
    names = list(kind_names)
    is_send = kind_codes == (names.index("send") if "send" in names else -2)
    is_convert = kind_codes == (names.index("convert") if "convert" in names else -2)
    grade = np.array([GRADE.get(name, 0) for name in names] + [0])[kind_codes]
    target = attributed.to_numpy()
    outcome = (grade > 0) & (target >= 0)
    frame = pd.DataFrame({"send": target[outcome], "grade": grade[outcome],
                          "revenue": np.where(is_convert[outcome],
                                              events["value"].fillna(0).to_numpy()[outcome], 0.0)})
    grouped = frame.groupby("send").agg(label=("grade", "max"), revenue=("revenue", "sum"))
    result = pd.DataFrame(index=pd.Index(np.flatnonzero(is_send), name="send"))
    result = result.join(grouped).fillna({"label": 0, "revenue": 0.0})
    result["label"] = result["label"].astype(np.int8)
    return result
