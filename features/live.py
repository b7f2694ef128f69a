"""Features that follow the feedback stream: a store of a few users' histories, the snapshot's plus what came since.

The service's snapshot (:class:`features.pipeline.FeatureStore`) is built once per worker from the data
directory. When ``/feedback`` reports a user's events, or ``/users`` (or a request's ``context``) changes a
user's facts (consent, time zone, sign-up time, attributes), that user's features must be what offline
featurisation of the data *plus* those events would give. Because every feature of a candidate is a
function of its own user's events and row and of the shared global tables (the partition property that
:func:`features.pipeline.partition` relies on and a test pins), a store built from those users' events
and rows alone, with the snapshot's :class:`~features.pipeline.Globals`, featurises them exactly as the
whole data plus the new events would (population rates and smoothing strengths stay the snapshot's: they
move with the next ``nbm train`` and the model reload, not with each event).

:class:`LiveRows` finds one user's snapshot events quickly; :func:`live_store` builds the store.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from features.pipeline import FeatureStore

EVENT_COLUMNS = ("event_id", "timestamp", "user_id", "event_type", "message_id", "channel", "decision_id",
                 "propensity", "value")


class LiveRows:
    """The snapshot's events and users rows of given users (positions by user, built once)."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        events = store.dataset.events
        codes, names = pd.factorize(events["user_id"], sort=False)
        order = np.argsort(codes, kind="stable")                   # by user, each user's events in time order
        bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
        self._order, self._bounds = order, bounds
        self._event_user = pd.Index(np.asarray(names, dtype=object))
        self._user_row = pd.Index(store.dataset.users["user_id"].astype(str))

    def events(self, users: list[str]) -> pd.DataFrame:
        found = self._event_user.get_indexer(users)
        parts = [self._order[self._bounds[i]:self._bounds[i + 1]] for i in found if i >= 0]
        rows = np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
        return self.store.dataset.events.iloc[rows]

    def users(self, users: list[str]) -> pd.DataFrame:
        found = self._user_row.get_indexer(users)
        return self.store.dataset.users.iloc[found[found >= 0]]


def live_users_frame(base: pd.DataFrame, users: list[str], facts: dict[str, dict]) -> pd.DataFrame:
    """Users rows of ``users``: the snapshot's (``base``, the data contract's columns and the attributes), a new
    row for a user the snapshot lacks (no consent, UTC, no sign-up time, missing attributes), each with its
    stored ``facts`` applied (:func:`serving.state.contract.merge_facts`'s form). Attributes the snapshot's
    users table has no column for are not features of this model and are left out."""
    known = set(base["user_id"].astype(str))
    new = [u for u in users if u not in known]
    frame = base.reset_index(drop=True)
    if new:
        extra = pd.DataFrame({c: pd.Series([None] * len(new), dtype=frame[c].dtype) for c in frame.columns})
        extra["user_id"] = pd.Series(new, dtype=frame["user_id"].dtype)
        extra["timezone"] = pd.Series(["UTC"] * len(new), dtype=frame["timezone"].dtype)
        extra["consent"] = pd.Series([[] for _ in new], dtype=object)
        frame = pd.concat([frame, extra], ignore_index=True)
    frame = frame.copy()
    position = {u: i for i, u in enumerate(frame["user_id"].astype(str))}
    for user in users:
        fact = facts.get(user)
        if not fact:
            continue
        i = position[user]
        if fact.get("consent") is not None:
            frame.at[i, "consent"] = list(fact["consent"])
        if fact.get("timezone") is not None:
            frame.at[i, "timezone"] = fact["timezone"]
        if fact.get("signup_at") is not None:
            frame.at[i, "signup_at"] = pd.Timestamp(int(fact["signup_at"]), tz="UTC")
        for name, value in (fact.get("attributes") or {}).items():
            if name not in frame.columns or name in ("user_id", "signup_at", "timezone", "consent"):
                continue
            if pd.api.types.is_numeric_dtype(frame[name].dtype):
                frame.at[i, name] = np.nan if value is None or isinstance(value, str) else float(value)
            else:
                frame.at[i, name] = None if value is None else str(value)
    return frame


def live_events_frame(base: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
    """The snapshot's events of some users (``base``) with their feedback appended — events whose id the
    snapshot has are the snapshot's — in the dataset's order, (timestamp, event_id), and dtypes."""
    if not len(feedback):
        return base.reset_index(drop=True)
    extra = feedback.loc[~feedback["event_id"].isin(base["event_id"]), list(EVENT_COLUMNS)].copy()
    extra["source_user_id"] = extra["user_id"]
    extra = extra[list(base.columns)]
    for column in base.columns:
        extra[column] = extra[column].astype(base[column].dtype)
    joined = pd.concat([base, extra], ignore_index=True)
    return joined.sort_values(["timestamp", "event_id"], kind="stable").reset_index(drop=True)


def live_store(base: FeatureStore, rows: LiveRows, users: list[str], feedback: pd.DataFrame,
               facts: dict[str, dict], aliases: dict[str, str] | None = None) -> FeatureStore:
    """A store of ``users`` alone — their snapshot events plus ``feedback`` (their events from ``/feedback``),
    their rows with ``facts`` applied — featurising with ``base``'s globals: see the module docstring.
    ``aliases`` (identifier → one of ``users``): other identifiers of the same people (``/users`` links) whose
    snapshot events and feedback are theirs (as identity resolution makes them offline)."""
    aliases = {a: u for a, u in (aliases or {}).items() if a not in set(users)}
    events = rows.events([*users, *aliases])
    if aliases:
        events = events.assign(user_id=events["user_id"].astype(object).map(lambda x: aliases.get(x, x)).astype(
            events["user_id"].dtype))
        if len(feedback):
            feedback = feedback.assign(user_id=feedback["user_id"].map(lambda x: aliases.get(x, x)))
        events = events.sort_values(["timestamp", "event_id"], kind="stable")
    dataset = replace(base.dataset, events=live_events_frame(events, feedback),
                      users=live_users_frame(_own_rows(rows, users, aliases), users, facts), decisions=None)
    return FeatureStore.build(dataset, base.config, base.globals, catalog_from=base.history)


def _own_rows(rows: LiveRows, users: list[str], aliases: dict[str, str]) -> pd.DataFrame:
    """The snapshot's users rows of ``users``; a user without one takes that of a linked identifier (the first,
    by id, that has one), renamed: offline, an identifier with a users row is the canonical one
    (:func:`nbm.identity.resolve_identities`), so the person's row is that identifier's."""
    own = rows.users(users)
    missing = set(users) - set(own["user_id"].astype(str))
    borrowed = []
    for user in sorted(missing):
        for identifier in sorted(a for a, u in aliases.items() if u == user):
            row = rows.users([identifier])
            if len(row):
                borrowed.append(row.iloc[:1].assign(user_id=pd.Series([user], index=row.index[:1]).astype(
                    own["user_id"].dtype)))
                break
    return pd.concat([own, *borrowed], ignore_index=True) if borrowed else own


def live_catalog(base: pd.DataFrame, stored: dict[str, dict]) -> pd.DataFrame:
    """The catalog ``base`` (the data directory's messages) with the stored upserts of ``POST /messages`` applied
    (``stored``: message id → its fields, times as int ns): known messages' fields replaced, new ones appended
    in id order, in ``base``'s columns and dtypes."""
    frame = base.reset_index(drop=True).copy()
    position = {m: i for i, m in enumerate(frame["message_id"].astype(str))}
    new = sorted(m for m in stored if m not in position)
    if new:
        extra = pd.DataFrame({c: pd.Series([None] * len(new), dtype=frame[c].dtype) for c in frame.columns})
        extra["message_id"] = pd.Series(new, dtype=frame["message_id"].dtype)
        for column, empty in (("tags", []), ("lifecycle_stages", []), ("channels", [])):
            extra[column] = pd.Series([list(empty) for _ in new], dtype=object)
        extra["value"] = 1.0
        frame = pd.concat([frame, extra], ignore_index=True)
        position.update({m: len(frame) - len(new) + i for i, m in enumerate(new)})
    for message, fields in stored.items():
        i = position[message]
        for name, value in fields.items():
            if name not in frame.columns or value is None:
                continue
            if name in ("start_at", "end_at"):
                frame.at[i, name] = pd.Timestamp(int(value), tz="UTC")
            elif name in ("tags", "channels", "lifecycle_stages"):
                frame.at[i, name] = list(value)
            elif name == "value":
                frame.at[i, name] = float(value)
            else:
                frame.at[i, name] = value
    return frame


def in_store_order(catalog: pd.DataFrame, store: FeatureStore) -> pd.DataFrame:
    """``catalog`` with the messages ``store`` knows first, in the order of its codes, then the others in their
    order: what the store's vocabulary can be extended by (:func:`extended_vocabulary`), whatever order the
    messages were added in."""
    known = store.globals.vocabulary.messages.get_indexer(catalog["message_id"].astype(str))
    order = np.lexsort((np.arange(len(known)), np.where(known >= 0, known, len(store.globals.vocabulary.messages))))
    return catalog.iloc[order].reset_index(drop=True)


def same_vocabulary(old: pd.DataFrame, new: pd.DataFrame) -> bool:
    """Whether two catalogs hold the same messages with the same topics and tags (codes of the store stay
    valid: only the catalog's arrays change, :meth:`features.history.History.with_catalog`)."""
    if len(old) != len(new) or (old["message_id"].astype(str).to_numpy() != new["message_id"].astype(str).to_numpy()).any():
        return False
    if (old["topic"].astype(str).to_numpy() != new["topic"].astype(str).to_numpy()).any():
        return False
    tags = lambda frame: [sorted(map(str, t)) if isinstance(t, (list, tuple, np.ndarray)) else [] for t in frame["tags"]]  # noqa: E731
    return tags(old) == tags(new)


def with_catalog(store: FeatureStore, catalog: pd.DataFrame) -> FeatureStore:
    """``store`` deciding by ``catalog`` (the same vocabulary: :func:`same_vocabulary`, or the one
    :func:`extended_vocabulary` gives), its indexes shared."""
    vocabulary = store.globals.vocabulary
    if len(catalog) == len(vocabulary.messages):
        return replace(store, dataset=replace(store.dataset, messages=catalog), history=store.history.with_catalog(catalog))
    vocabulary = vocabulary.extended(catalog)
    if vocabulary is None:
        raise ValueError("the catalog does not extend the store's vocabulary (a new store must be built)")
    config = store.config
    if config.contact_policy.needs_topics():         # topic caps, suppression, mandatory topics: the new topics
        topic_of = dict(zip(catalog["message_id"].astype(str), catalog["topic"].astype(str)))
        config = config.model_copy(update={"contact_policy": config.contact_policy.with_topics(topic_of)})
    return replace(store, dataset=replace(store.dataset, messages=catalog), config=config,
                   globals=replace(store.globals, vocabulary=vocabulary),
                   history=store.history.with_catalog(catalog, vocabulary))


def extended_vocabulary(store: FeatureStore, catalog: pd.DataFrame) -> bool:
    """Whether ``catalog`` only adds messages to ``store``'s (with topics and tags new or not), so that every index
    stays valid and the store can take it in place (:func:`with_catalog`): its known messages keep their topics and
    tags, the spare codes suffice (:attr:`features.history.Vocabulary.slots`), and no event of the store names a
    new message (events of messages outside the catalog, kept by ``[validation] keep_unknown_messages``, would
    count for it in a store built anew)."""
    vocabulary = store.globals.vocabulary
    if len(catalog) <= len(vocabulary.messages) or vocabulary.extended(catalog) is None:
        return False
    new = catalog["message_id"].astype(str).to_numpy()[len(vocabulary.messages):]
    if not store.config.validation.keep_unknown_messages:
        return True
    return not store.dataset.events["message_id"].astype(object).isin(set(new)).any()
