"""``nbm export-log``: the service's decision log and feedback as a data directory the rest of nbm reads.

Writes ``decisions`` (every answer, empty ones included, with its propensity, policy, arm, model version,
explorer and items) and ``events`` (the feedback received: the sends the campaign engine reported, with
their decision ids and propensities, and the outcomes) in the data contract, so that they can be appended
to the next training's data and its off-policy evaluation covers the choices to send nothing. A reported
``send`` that names its decision but no propensity gets the one the service answered for that item: the
campaign engine need not echo it for the log to be evaluated.

``users`` holds what ``/users`` and requests' ``context`` told the service (consent, time zone, sign-up time,
attributes). Given the data directory's users table (``nbm export-log --data DIR``) it is that table with
those facts merged in — every user, ready to replace it; otherwise one row per user the service was told
about, with the facts it was told (a fact never told is missing there: merge by ``user_id``). ``messages``
likewise holds the catalog as ``/messages`` changed it (``--data``: the data directory's catalog with the
changes applied), and ``links`` the identifiers ``/users`` linked to each person (``--data``: after the data
directory's own links).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pandas as pd

from nbm.io import write_table
from serving.state import StateStore


def export_log(state: StateStore, out: Path, since: pd.Timestamp | None = None, file_format: str = "parquet",
               users: pd.DataFrame | None = None, messages: pd.DataFrame | None = None,
               links: pd.DataFrame | None = None) -> dict[str, int]:
    """Write ``decisions`` and ``events`` (rows at or after ``since``) and ``users`` (see the module docstring;
    ``users``: the data directory's table to merge into) to ``out``; the row counts."""
    log = state.decision_log()
    decisions = log
    events = state.feedback_events()
    if since is not None:
        decisions = decisions[decisions["timestamp"] >= since]
        events = events[events["timestamp"] >= since]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    contract = decisions[["decision_id", "timestamp", "user_id", "propensity", "policy", "arm", "experiment",
                          "model_version", "explorer", "items", "trigger"]]
    events, filled = answered_propensities(events, log)     # a send may name a decision taken before `since`
    write_table(contract.reset_index(drop=True), out, "decisions", file_format)
    write_table(events.reset_index(drop=True), out, "events", file_format)
    facts = state.users_table()
    table = users_table(facts, users)
    if len(table) or users is not None:
        write_table(table, out, "users", file_format)
    posted = pd.DataFrame([(u, x) for u, f in sorted(facts.items()) for x in f.get("links", ())],
                          columns=["identifier_a", "identifier_b"], dtype=object)
    if len(posted) or (links is not None and len(links)):
        joined = posted if links is None else pd.concat([links[["identifier_a", "identifier_b"]].astype(object), posted],
                                                        ignore_index=True).drop_duplicates(ignore_index=True)
        write_table(joined, out, "links", file_format)
    _, catalog = state.messages_table()
    if catalog or messages is not None:
        write_table(messages_table(catalog, messages), out, "messages", file_format)
    return {"decisions": len(contract), "events": len(events), "propensities_filled": filled, "users": len(facts),
            "messages": len(catalog)}


def messages_table(stored: dict[str, dict], base: pd.DataFrame | None = None) -> pd.DataFrame:
    """The messages table of the catalog entries posted to ``/messages``: ``base`` (the data directory's) with
    them applied, or those entries alone (a field never posted is missing there: merge by ``message_id``)."""
    from features.live import live_catalog

    if base is None:            # the posted fields only: a field never posted stays missing
        rows = [{"message_id": m, **{k: f.get(k) for k in ("topic", "tags", "channels", "lifecycle_stages", "value")},
                 "start_at": pd.NaT if f.get("start_at") is None else pd.Timestamp(int(f["start_at"]), tz="UTC"),
                 "end_at": pd.NaT if f.get("end_at") is None else pd.Timestamp(int(f["end_at"]), tz="UTC")}
                for m, f in sorted(stored.items())]
        frame = pd.DataFrame(rows, columns=["message_id", "topic", "tags", "channels", "lifecycle_stages", "value",
                                            "start_at", "end_at"])
        for name in ("start_at", "end_at"):
            frame[name] = pd.to_datetime(frame[name], utc=True)
        frame["value"] = frame["value"].astype(float)
        return frame
    return live_catalog(base, stored)


def users_table(facts: dict[str, dict], base: pd.DataFrame | None = None) -> pd.DataFrame:
    """The users table of ``facts`` (user → stored facts): ``base`` with them merged in (attributes that are
    not among its columns are added), or the told facts alone."""
    from features.live import live_users_frame

    names = sorted({a for f in facts.values() for a in (f.get("attributes") or {})})
    if base is None:
        rows = []
        for user, f in sorted(facts.items()):
            stamp = f.get("signup_at")
            rows.append({"user_id": user, "signup_at": pd.NaT if stamp is None else pd.Timestamp(int(stamp), tz="UTC"),
                         "timezone": f.get("timezone"), "consent": f.get("consent"),
                         **{a: (f.get("attributes") or {}).get(a) for a in names}})
        frame = pd.DataFrame(rows, columns=["user_id", "signup_at", "timezone", "consent", *names])
        frame["signup_at"] = pd.to_datetime(frame["signup_at"], utc=True)
        return frame
    base = base.copy()
    for name in names:
        if name not in base.columns:
            told = [v for f in facts.values() for k, v in (f.get("attributes") or {}).items() if k == name and v is not None]
            numeric = bool(told) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in told)
            base[name] = pd.Series(float("nan") if numeric else None, index=base.index, dtype=float if numeric else object)
    users = list(facts)
    changed = live_users_frame(base[base["user_id"].astype(str).isin(users)], users, facts)
    return pd.concat([base[~base["user_id"].astype(str).isin(users)], changed], ignore_index=True)


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
