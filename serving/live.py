"""Live users: each worker's view of the users whose feedback or facts changed since its snapshot was built.

The state store numbers every change (an accepted ``/feedback`` event, a ``/users`` upsert, a request's
``context`` that changed a fact: :meth:`~serving.state.contract.StateStore.changes_since`). Each worker keeps
a watermark and a thread that, every ``[service] live_refresh_seconds``, reads the users changed after it and
builds one store of their histories (:func:`features.live.live_store`: the snapshot's events plus their
feedback, their rows with their facts), so that their next decisions are featurised as offline
featurisation of the data plus those events would be, and are eligible by their new consent and stage.
A decision never waits for that build, except for a request whose own ``context`` changed its user's facts
(the decision uses them at once, :meth:`LiveUsers.ensure`); that build runs beside the refresher's, never
behind it (a refresh, or the rebuild of every live store after a new catalog, can take a while).

Every build is numbered when it starts reading the state store (its *generation*): a user's store is replaced
only by one of a later generation, which read the state later and so holds at least as much, whichever
build ends first.

Every user keeps the newest store built for them; when more than :data:`MAX_STORES` stores are referenced,
the smaller half of them is built again as one (compaction: what a merge costs is bounded by the small
stores' users, not by every live user). A store also records, per user,
the feedback sends it holds: the engine's patch of contact features counts only the sends the store lacks
(planned items, and sends reported after it was built), never one twice.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from features.live import LiveRows, live_store
from features.pipeline import FeatureStore

log = logging.getLogger(__name__)

MAX_STORES = 16
"""Distinct live stores past which a refresh builds the smaller half of them again as one."""
BUSY_SHARE = 0.2
"""Most of a worker's time its refresher takes: after a turn that built for ``b`` seconds it waits at least
``b / BUSY_SHARE − b`` (and ``live_refresh_seconds``), so that a heavy feedback stream slows the refresh rather
than the decisions (benchmarks/serve.py --live)."""


@dataclass(frozen=True)
class LiveStore:
    """A store of some live users, the feedback sends (time ns, channel, message) it holds per user (their
    linked identifiers' included), their facts, the build's generation, and each user's other identifiers (the
    ``/users`` links and the snapshot's persons of those: whose sends count toward the user's caps)."""

    store: FeatureStore
    sends: dict[str, frozenset] = field(default_factory=dict)
    facts: dict[str, dict] = field(default_factory=dict)
    generation: int = 0
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)


class LiveUsers:
    """See the module docstring. Thread-safe: the refresher thread and request threads share it."""

    def __init__(self, base: FeatureStore, state, refresh_seconds: float = 0.25, hook=None, resolve=None) -> None:
        self.base = base
        self.resolve = resolve or (lambda identifier: identifier)   # the snapshot's identity resolution
        self.links: dict[str, str] = {}         # identifier → user, from the users' posted links
        self.hook = hook            # called each turn before the users (the engine's catalog check)
        self.state = state
        self.refresh_seconds = float(refresh_seconds)
        self._rows: LiveRows | None = None
        self._of: dict[str, LiveStore] = {}
        self.watermark = 0
        self._lock = threading.Lock()          # one refresher build (or rebase) at a time
        self._map_lock = threading.Lock()      # held only to read the base or install stores: never for a build
        self._generation = 0                   # the last build's number (under the map lock)
        self._rebased = 0                      # the generation of the last rebase: older builds are of another base
        self._thread: threading.Thread | None = None
        self.refreshed_at = 0.0

    # -- reading -----------------------------------------------------------------------------------
    def of(self, user: str) -> LiveStore | None:
        """The live store of ``user`` (``None``: the snapshot's user, unchanged since)."""
        return self._of.get(user)

    def __len__(self) -> int:
        return len(self._of)

    def facts(self, user: str) -> dict:
        """``user``'s stored facts as this worker knows them (empty: none beyond the snapshot's row)."""
        live = self._of.get(user)
        return live.facts.get(user, {}) if live is not None else {}

    # -- building ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Catch up with every change stored so far, then start the refresher thread (once per process)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self.refresh()
        if self.refresh_seconds > 0:
            self._thread = threading.Thread(target=self._run, name="nbm-live-refresh", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        pause = self.refresh_seconds
        while True:
            time.sleep(pause)
            began = time.perf_counter()
            try:
                if self.hook is not None:
                    self.hook()
                self.refresh()
            except Exception:  # noqa: BLE001 — a state-store hiccup must not end the thread; the next turn retries
                log.exception("live users: refresh failed")
            spent = time.perf_counter() - began
            pause = max(self.refresh_seconds, spent / BUSY_SHARE - spent)

    def refresh(self) -> int:
        """Build the stores of the users changed since the watermark; how many users."""
        with self._lock:
            seq, users = self.state.changes_since(self.watermark)
            if users:
                # A change stored under a linked identifier (by a worker that did not know the link yet) is
                # its person's: the person's store holds the identifier's events.
                self._build(sorted({self.links.get(u, u) for u in users}))
                self._compact()
            self.watermark = seq
            self.refreshed_at = time.monotonic()
            return len(users)

    def rebase(self, base: FeatureStore, catalog: pd.DataFrame | None = None) -> None:
        """A new snapshot store: ``catalog`` given (the same vocabulary, or one with messages added), every live
        store keeps its indexes and takes the catalog (:func:`features.live.with_catalog`); else every live user's
        store is built again on ``base``."""
        from features.live import with_catalog

        with self._lock:
            if catalog is not None:
                new = set(base.globals.vocabulary.messages) - set(self.base.globals.vocabulary.messages)
                with self._map_lock:
                    self.base = base
                    self._generation += 1
                    self._rebased = self._generation
                    moved: dict[int, LiveStore] = {}
                    stale: list[str] = []
                    for user, live in list(self._of.items()):
                        if id(live) not in moved:
                            moved[id(live)] = replace(live, store=with_catalog(live.store, catalog))
                        self._of[user] = moved[id(live)]
                        if new and live.store.dataset.events["message_id"].isin(new).any():
                            stale.append(user)
                # Feedback on a message this worker did not know yet (another worker had it) was coded as no
                # message in those stores: they are built again, now that it has a code.
                if stale:
                    self._build(sorted(stale))
                return
            with self._map_lock:
                self.base, self._rows = base, None
                self._generation += 1
                self._rebased = rebased = self._generation
                users = sorted(self._of)
            fresh: dict[str, LiveStore] = {}
            try:
                if users:
                    self._build(users, fresh)
            except Exception:  # noqa: BLE001 — keep deciding on the stores there are; the next refresh builds all
                log.exception("live users: building the live stores on the new snapshot failed")
                self.watermark = 0
                return
            with self._map_lock:
                # Stores built on the new base meanwhile (a request's context: :meth:`ensure`) are newer: kept.
                for user, live in self._of.items():
                    if live.generation > rebased and (user not in fresh or live.generation > fresh[user].generation):
                        fresh[user] = live
                self._of = fresh      # one assignment: requests never see a live user without its store

    def _compact(self) -> None:
        """Past :data:`MAX_STORES` stores, the smaller half (by users) built again as one: the cost of a merge is
        that of the small stores' users, never of every live user (a store whose users all moved to newer ones
        is gone already)."""
        members: dict[int, list[str]] = {}
        with self._map_lock:                   # (a request's build may add a user meanwhile)
            items = list(self._of.items())
        for user, live in items:
            members.setdefault(id(live), []).append(user)
        if len(members) <= MAX_STORES:
            return
        smallest = sorted(members.values(), key=len)[: len(members) // 2]
        self._build(sorted(u for group in smallest for u in group))

    def ensure(self, users: list[str]) -> None:
        """Build the stores of ``users`` now (their facts just changed by a request's context), beside any
        refresher build rather than after it; on a base that changed meanwhile, build again on the new one."""
        users = sorted(set(users))
        if not self._build(users, rebuilt_ok=False):
            with self._lock:
                self._build(users)

    def _build(self, users: list[str], into: dict[str, LiveStore] | None = None, rebuilt_ok: bool = True) -> bool:
        """One store of ``users`` (their snapshot events, feedback and facts, and their linked identifiers'),
        put in ``into`` (default: the live map) for each user whose store there is of an earlier generation.
        ``rebuilt_ok=False``: installs nothing, and answers ``False``, when a rebase happened while it built."""
        with self._map_lock:
            base, rows = self.base, self._rows
            self._generation += 1
            generation = self._generation
        if rows is None or rows.store.dataset.events is not base.dataset.events \
                or rows.store.dataset.users is not base.dataset.users:
            rows = LiveRows(base)             # (once per snapshot: finding users' snapshot events)
            with self._map_lock:
                if self.base is base:
                    self._rows = rows
        facts = self.state.user_facts(users)
        aliases: dict[str, str] = {}
        for user in users:
            for identifier in facts.get(user, {}).get("links", ()):
                self.links[identifier] = user
                aliases[identifier] = user
                aliases.setdefault(self.resolve(identifier), user)     # the snapshot's person of that identifier
        aliases.pop("", None)
        # Each identifier is one person's: a user of this build linked to another is no person of its own (its
        # events are the other's), and a person is nobody's alias (a link both ways is left as two people).
        aliases = {a: u for a, u in aliases.items() if a != u and u not in aliases}
        users = [u for u in users if u not in aliases]
        if not users:
            return True
        feedback = self.state.user_events([*users, *aliases])
        store = live_store(base, rows, users, feedback, facts, aliases)
        sent = feedback[feedback["event_type"] == "send"]
        person = sent["user_id"].astype(object).map(lambda x: aliases.get(str(x), str(x)))   # the alias's sends too
        sends = {u: frozenset() for u in users}
        for u, group in sent.groupby(person.to_numpy(), sort=False):
            sends[str(u)] = frozenset(zip(group["timestamp"].to_numpy(dtype="datetime64[ns]").astype(np.int64).tolist(),
                                          group["channel"].astype(object).tolist(),
                                          group["message_id"].astype(object).tolist()))
        others: dict[str, list[str]] = {}
        for identifier, user in aliases.items():
            others.setdefault(user, []).append(identifier)
        live = LiveStore(store, sends, {u: facts.get(u, {}) for u in users}, generation,
                         {u: tuple(sorted(ids)) for u, ids in others.items()})
        with self._map_lock:
            if not rebuilt_ok and self._rebased > generation:
                return False
            target = self._of if into is None else into
            for u in users:
                if u not in target or target[u].generation < generation:
                    target[u] = live
            for u in aliases:                 # an identifier of a person built here: no store of its own
                if u in target and target[u].generation < generation:
                    del target[u]
        return True


def unseen_sends(contacts, held: frozenset) -> object:
    """``contacts`` less the sends a live store holds (``held``: (time ns, channel, message))."""
    if not held or not len(contacts.times):
        return contacts
    keep = np.fromiter(((int(t), str(c), str(m)) not in held for t, c, m in
                        zip(contacts.times, contacts.channels, contacts.messages)), dtype=bool, count=len(contacts.times))
    if keep.all():
        return contacts
    from dataclasses import replace

    return replace(contacts, times=contacts.times[keep], channels=contacts.channels[keep],
                   messages=contacts.messages[keep])


def merge_contacts(own, others: list) -> object:
    """``own`` (a :class:`~serving.state.contract.Contacts`) with the sends and losses of ``others`` (the same
    person's other identifiers'), sends in time order; ``own``'s version (the one its reservation checks)."""
    from dataclasses import replace

    parts = [own, *others]
    times = np.concatenate([c.times for c in parts]).astype(np.int64)
    order = np.argsort(times, kind="stable")
    lost = dict(own.lost)
    for c in others:
        for channel, at in c.lost.items():
            lost[channel] = min(at, lost.get(channel, at))
    return replace(own, times=times[order], channels=np.concatenate([c.channels for c in parts]).astype(object)[order],
                   messages=np.concatenate([c.messages for c in parts]).astype(object)[order], lost=lost)


def as_ns(value) -> int:
    """A time (ISO text, datetime or int ns) as int ns UTC."""
    stamp = pd.Timestamp(value)
    return int((stamp if stamp.tzinfo is not None else stamp.tz_localize("UTC")).value)
