"""The decision engine behind the service: model, feature snapshot, state store, and the one decision path.

Built once per worker process: it loads the data directory (validated, identities resolved), builds the
feature indexes (the online snapshot: every user's history as of the load) and the index of its sends,
loads the model by registry alias, and opens the state store. Each ``/recommend`` then costs one read of
the state store, one :func:`decision.decide.decide_many` (candidate expansion, contact verdicts, two-stage
scoring, the arm's choice: what offline replay evaluates) and one write; ``/recommend_batch`` does the same
for all its requests at once. What is the service's own stays here: sends known only to the state store
(reported by ``/feedback`` or planned by earlier answers) count for the contact policy at once and patch
the contact-recency features of the snapshot; unsubscribes and bounces reported by feedback take the
channel away (``keep``) and patch the channel-loss features; answers are reserved, retried, or refused.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from decision.answer import Answer
from decision.decide import HOLDOUT, Decisions, decide_many
from decision.histories import SendIndex, lookback_ns
from features.asof import MS
from features.pipeline import FeatureStore
from nbm.config import NbmConfig
from nbm.dataset import load_dataset
from nbm.errors import UsageError
from nbm.policy.assign import assign
from nbm.policy.explore import EXPLORERS, Greedy, make_explorer
from nbm.schema import CHANNEL_EVENT_TYPES, EVENT_TYPES, MESSAGE_EVENT_TYPES
from serving.guard import clip
from serving.registry import LoadedModel, load_model, resolve_version
from serving.live import LiveUsers, merge_contacts, unseen_sends
from serving.schemas import event_errors, user_errors
from serving.state import open_state

log = logging.getLogger(__name__)
DAY_NS, HOUR_NS = 86_400 * 10**9, 3_600 * 10**9
RESERVE_ATTEMPTS = 5
PATCHED = ("time_hours_since_contact", "user_contacts_7d", "uc_hours_since_contact", "uc_contacts_24h", "uc_contacts_7d",
           "um_received", "um_days_since_received")
"""Features that sends unknown to the snapshot (feedback, planned items) change at once."""
LOSS_PATCHED = ("user_unsubscribed_channels", "user_consented_channels")
"""Features that unsubscribes and bounces unknown to the snapshot (feedback) change at once."""
NO_MESSAGE = "\x00no message"
"""A candidate no catalog holds: a triggered request whose candidates leave none of the trigger's messages."""
BASELINE_EXPLORERS = {"rules": "greedy", "random": "uniform", "holdout": "none"}
"""What the decision log's ``explorer`` says for the arms other than ``model``."""


UNRESERVED = "could not reserve the decision: the user's contacts kept changing (retry)"


def unreserved(user_id: str) -> dict:
    """The answer to a request whose reservation lost ``RESERVE_ATTEMPTS + 1`` times to other writers for its
    user: ``{"user_id", "error"}``, nothing decided, logged or planned (503 on ``/recommend``; in a
    ``/recommend_batch``'s results in its place)."""
    return {"user_id": user_id, "error": UNRESERVED}


def _rounds(users: list[str]) -> list[list[int]]:
    """Request positions in rounds, each user at most once a round, a user's n-th request in round n."""
    seen: dict[str, int] = {}
    rounds: list[list[int]] = []
    for i, u in enumerate(users):
        n = seen[u] = seen.get(u, -1) + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(i)
    return rounds


class BadRequest(ValueError):
    """A request that is well-formed JSON but names something the service does not know (→ 400)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"`{field}`: {message}")
        self.field = field
        self.detail = message


@dataclass(frozen=True)
class EngineSettings:
    data: Path
    model: str = "models:/nbm-ranker@champion"
    explorer: str = "epsilon_greedy"
    threshold: float = 0.0
    reload_seconds: float = 60.0
    seed: int | None = None


class Engine:
    """See the module docstring. Thread-safe for concurrent requests (the model swap is atomic)."""

    def __init__(self, config: NbmConfig, settings: EngineSettings) -> None:
        if settings.explorer not in EXPLORERS:
            raise UsageError(f"unknown explorer {settings.explorer!r}; expected one of {sorted(EXPLORERS)}")
        self.config = config
        self.settings = settings
        self.explorer = make_explorer(settings.explorer, config.explorer)
        self.greedy = Greedy()
        self.dataset, _ = load_dataset(settings.data, config)
        model = load_model(settings.model, config)
        # The features smooth with the strengths the model was trained with (not learned again on this snapshot).
        self.store = FeatureStore.build(self.dataset, config, strengths=model.artifact.prior_strengths).freeze()
        self._live: tuple[LoadedModel, FeatureStore] = (model, self.store)
        self.state = open_state(config.state_url)
        self.channels = frozenset(config.channels)
        self._channel_codes = {str(c): i for i, c in enumerate(self.store.globals.vocabulary.channels)}
        self.messages = frozenset(self.dataset.messages["message_id"].astype(str))
        self.lookback_ns = lookback_ns(config.contact_policy)
        self.sends = SendIndex.of(self.dataset.events)           # the snapshot's sends, by (user, time)
        self._canonical = self.dataset.identity.canonical.to_dict() if len(self.dataset.identity.canonical) else {}
        # The catalog as ``/messages`` changed it (checked by the live refresher's thread, and here once).
        self._base_messages = self.dataset.messages
        self._catalog_version = 0
        self._swap_lock = threading.Lock()
        self._rebuilding: threading.Thread | None = None
        self.check_catalog(wait=True)
        # Users whose feedback or facts changed since the snapshot: their own stores, refreshed by a thread.
        self.live_users = LiveUsers(self.store, self.state, config.service.live_refresh_seconds, hook=self.check_catalog,
                                    resolve=lambda identifier: self._canonical.get(identifier, identifier))
        self.live_users.start()
        self._rng = np.random.default_rng(settings.seed)
        self._rng_lock = threading.Lock()
        self._checked = time.monotonic()
        self._reload_lock = threading.Lock()
        # Everything loaded so far lives as long as the process: keep it out of the collector's scans
        # (full collections over millions of long-lived objects were the p99 pauses).
        gc.collect()
        gc.freeze()

    def canonical(self, user_id: str) -> str:
        """The person an identifier names: by the links posted to ``/users`` (the newest knowledge), else by the
        data directory's identity resolution, else itself."""
        live = getattr(self, "live_users", None)
        if live is not None and live.links:
            linked = live.links.get(user_id)
            if linked is not None:
                return linked
        return self._canonical.get(user_id, user_id)

    # -- model reload ------------------------------------------------------------------------------
    def maybe_reload(self) -> None:
        """Check the registry alias in the background when ``reload_seconds`` have passed since the last check.

        Loading (and compiling) a new version takes seconds: it runs on a thread of its own, and requests go
        on with the current model until one reference swap puts the new one in place.
        """
        if time.monotonic() - self._checked < self.settings.reload_seconds:
            return
        if not self._reload_lock.acquire(blocking=False):
            return
        self._checked = time.monotonic()
        threading.Thread(target=self._reload, name="nbm-model-reload", daemon=True).start()

    def _reload(self) -> None:
        try:
            version = resolve_version(self.settings.model, self.config)
            if version is not None and version != self.model.version:
                model = load_model(self.settings.model, self.config)
                # The model and the store featurising with its strengths, in one reference swap: atomic.
                with self._swap_lock:
                    self._live = (model, self.store.with_strengths(model.artifact.prior_strengths))
        except Exception:  # noqa: BLE001 — a registry hiccup must not fail requests; retry next interval
            pass
        finally:
            self._checked = time.monotonic()
            self._reload_lock.release()

    @property
    def model(self) -> LoadedModel:
        """The model serving now."""
        return self._live[0]

    # -- requests ----------------------------------------------------------------------------------
    def check_batch(self, n: int) -> None:
        """A ``/recommend_batch`` of ``n`` requests against ``[service] max_batch_requests``."""
        most = self.config.service.max_batch_requests
        if n > most:
            raise BadRequest("requests", f"{n:,} requests; at most {most:,} in one batch ([service] max_batch_requests)")

    def validate(self, channels: list[str] | None, candidates: list[str] | None, user_id: str | None = None,
                 context: dict | None = None) -> None:
        """A request's names against the configuration, and its sizes against ``[service]``'s limits."""
        limits = self.config.service
        if (context or {}).get("trigger"):
            self._triggered(context["trigger"], candidates)
        consent = (context or {}).get("consent")
        if consent is not None:
            unknown = sorted(set(consent) - self.channels)
            if unknown:
                raise BadRequest("context.consent", f"unknown channel(s) {clip(unknown)}; configured: "
                                                    f"{sorted(self.channels)}")
        if user_id is not None and len(user_id) > limits.max_id_length:
            raise BadRequest("user_id", f"has {len(user_id):,} characters; at most {limits.max_id_length} "
                                        "([service] max_id_length)")
        if candidates is not None and len(candidates) > limits.max_candidates:
            raise BadRequest("candidates", f"holds {len(candidates):,} messages; at most {limits.max_candidates:,} "
                                           "([service] max_candidates)")
        unknown = sorted(set(channels or ()) - self.channels)
        if unknown:
            raise BadRequest("channels", f"unknown channel(s) {clip(unknown)}; configured: {sorted(self.channels)}")
        if channels is not None and not channels:
            raise BadRequest("channels", "is empty; leave it out to consider every channel")
        if candidates is not None and not candidates:
            raise BadRequest("candidates", "is empty; leave it out to consider every message")

    def recommend(self, user_id: str, k: int = 1, channels: list[str] | None = None,
                  candidates: list[str] | None = None, now: pd.Timestamp | None = None, explore: bool = True,
                  arm: str | None = None) -> dict:
        """One decision, logged and reserved in the state store; the ``/recommend`` answer."""
        return self.recommend_many([dict(user_id=user_id, k=k, channels=channels, candidates=candidates, now=now,
                                         explore=explore, arm=arm)])[0]

    def recommend_many(self, requests: list[dict]) -> list[dict]:
        """Decisions for many requests at once (vectorised), each logged and reserved; in request order.

        A user asked for more than once is decided once per round, in request order: its second request
        after its first is reserved, on the contacts the first planned (all of one round's decisions read
        the state store before any is reserved, so two of one user in a round would always lose one). A
        decision whose reservation fails (another worker wrote for the same user meanwhile) is taken again
        on the fresh contacts, up to ``RESERVE_ATTEMPTS`` times; one still unreserved then is answered
        :func:`unreserved` (→ 503 on ``/recommend``), nothing of it logged or planned.
        """
        for r in requests:
            self.validate(r.get("channels"), r.get("candidates"), r.get("user_id"), r.get("context"))
        self.maybe_reload()
        requests = self._with_triggers(requests)
        self._apply_context(requests)
        requests = self._with_arms(requests)
        answers: list[dict | None] = [None] * len(requests)
        for members in _rounds([self.canonical(r["user_id"]) for r in requests]):
            for i, answer in zip(members, self._reserved([requests[j] for j in members])):
                answers[i] = answer
        return answers  # type: ignore[return-value]

    def _reserved(self, requests: list[dict]) -> list[dict]:
        """Answers to requests of distinct users, each reserved, retried or :func:`unreserved`."""
        answers: list[dict | None] = [None] * len(requests)
        pending = list(range(len(requests)))
        for _ in range(RESERVE_ATTEMPTS + 1):
            groups: dict[tuple[int, bool, str], list[int]] = {}
            for i in pending:
                r = requests[i]
                groups.setdefault((int(r.get("k") or 1), bool(r.get("explore", True)), r["_kind"]), []).append(i)
            retry: list[int] = []
            for (k, explore, kind), members in groups.items():
                for i, answer in zip(members, self._decide([requests[j] for j in members], k, explore, kind)):
                    if answer is None:
                        retry.append(i)
                    else:
                        answers[i] = answer
            pending = retry
            if not pending:
                break
        for i in pending:
            answers[i] = unreserved(requests[i]["user_id"])
        return answers  # type: ignore[return-value]

    # -- the live catalog (POST /messages) ------------------------------------------------------------
    def upsert_messages(self, rows: list) -> dict:
        """Validate and store catalog entries (durable before returning); the ``/messages`` answer. Every worker
        decides by them within ``[service] live_refresh_seconds`` when they change known messages' channels,
        stages, value or live window or add messages; a known message's new topic or tags within the time a new
        snapshot store takes to build (:meth:`check_catalog`; docs/serving.md, "POST /messages")."""
        from serving.schemas import message_errors

        from features.live import live_catalog

        good, rejected = [], []
        # Checked against the catalog as stored (the data directory's with every upsert), not the one this worker
        # has applied so far: a message added a moment ago may be changed or ended at once.
        stored = live_catalog(self._base_messages, self.state.messages_table()[1])
        current = stored.set_index(stored["message_id"].astype(str))
        for index, raw in enumerate(rows):
            row, error = message_errors(raw)
            error = error or self._message_error(row, current, {r["message_id"]: r for r in good})
            if error:
                rejected.append({"index": index, "error": error})
            else:
                good.append(row)
        accepted = self.state.upsert_messages(good) if good else 0
        return {"accepted": accepted, "rejected": rejected}

    def _message_error(self, row: dict, current: pd.DataFrame, earlier: dict) -> str:
        known = row["message_id"] in current.index or row["message_id"] in earlier
        if not known:
            missing = [f for f in ("topic", "channels") if row.get(f) is None]
            if missing:
                return f"`{missing[0]}`: required for a new message ({clip(row['message_id'])} is not in the catalog)"
        unknown = sorted(set(row.get("channels") or ()) - self.channels)
        if unknown:
            return f"`channels`: unknown channel(s) {clip(unknown)}; configured: {sorted(self.channels)}"
        from nbm.config import LIFECYCLE_STAGES

        stages = sorted(set(row.get("lifecycle_stages") or ()) - set(LIFECYCLE_STAGES))
        if stages:
            return f"`lifecycle_stages`: unknown stage(s) {clip(stages)}; stages: {list(LIFECYCLE_STAGES)}"
        def stamp(name):
            if row.get(name) is not None:
                return row[name]
            before = earlier.get(row["message_id"], {}).get(name)
            if before is not None:
                return before
            if row["message_id"] in current.index:
                value = current.at[row["message_id"], name]
                return None if pd.isna(value) else int(pd.Timestamp(value).value)
            return None
        start, end = stamp("start_at"), stamp("end_at")
        if start is not None and end is not None and end < start:
            return "`end_at`: before the message's `start_at`"
        return ""

    def check_catalog(self, wait: bool = False) -> None:
        """Apply the catalog's upserts stored since the last check: in place when they change known messages'
        fields or add messages (every store keeps its indexes; new messages, topics and tags take spare codes:
        :meth:`features.history.Vocabulary.extended`), else — a known message's topic or tags changed, or the spare
        codes ran out — by a new snapshot store built on a thread of its own (``wait``: on this one) and swapped in
        when ready, its live users built again."""
        if self._rebuilding is not None and self._rebuilding.is_alive():
            return
        if self.state.catalog_version() == self._catalog_version:
            return
        from features.live import extended_vocabulary, in_store_order, live_catalog, same_vocabulary, with_catalog

        version, stored = self.state.messages_table()
        catalog = in_store_order(live_catalog(self._base_messages, stored), self.store)
        if same_vocabulary(self.store.dataset.messages, catalog) or extended_vocabulary(self.store, catalog):
            self._swap(with_catalog(self.store, catalog), catalog, version, in_place=True)
            return

        def rebuild() -> None:
            try:
                model = self._live[0]
                store = FeatureStore.build(replace(self.dataset, messages=catalog), self.config,
                                           strengths=model.artifact.prior_strengths).freeze()
            except Exception:  # noqa: BLE001 — keep serving the catalog that works; say why, once per version
                log.exception("the catalog of version %s could not be built; serving the previous one", version)
                self._catalog_version = version
                return
            self._swap(store, catalog, version, in_place=False)

        if wait:
            rebuild()
        else:
            self._rebuilding = threading.Thread(target=rebuild, name="nbm-catalog-rebuild", daemon=True)
            self._rebuilding.start()

    def _swap(self, store: FeatureStore, catalog: pd.DataFrame, version: int, in_place: bool) -> None:
        with self._swap_lock:
            model = self._live[0]
            self.store = store
            self.dataset = replace(self.dataset, messages=catalog)
            self.messages = frozenset(catalog["message_id"].astype(str))
            self._live = (model, store.with_strengths(model.artifact.prior_strengths))
            self._catalog_version = version
        live = getattr(self, "live_users", None)
        if live is not None:
            live.rebase(store, catalog if in_place else None)

    # -- triggers ------------------------------------------------------------------------------------
    def trigger_messages(self, trigger: dict) -> list[str]:
        """The messages a triggered request may answer with: those ``[triggers.EVENT]`` names (ids, topics, tags)
        and those tagged ``trigger:EVENT`` in the catalog; narrowed to the trigger's ``topic`` when some are of it.
        Empty when the trigger has none. (Cached per catalog, event and topic.)"""
        catalog = self.dataset.messages
        key = (self._catalog_version, trigger["event_type"], trigger.get("topic"))
        cache = self.__dict__.setdefault("_trigger_cache", {})
        if key not in cache:
            if len(cache) > 4096:
                cache.clear()
            cache[key] = self._trigger_messages(catalog, trigger)
        return cache[key]

    def _trigger_messages(self, catalog: pd.DataFrame, trigger: dict) -> list[str]:
        event = trigger["event_type"]
        configured = self.config.triggers.get(event)
        ids = catalog["message_id"].astype(str)
        tags = catalog["tags"].map(lambda t: set(t) if isinstance(t, (list, tuple, np.ndarray)) else set())
        chosen = np.array(tags.map(lambda t: f"trigger:{event}" in t).to_numpy(dtype=bool))     # a writable copy
        if configured is not None:
            chosen |= ids.isin(configured.messages).to_numpy()
            chosen |= catalog["topic"].astype(str).isin(configured.topics).to_numpy()
            chosen |= np.asarray(tags.map(lambda t: bool(t & set(configured.tags))).to_numpy(dtype=bool))
        if trigger.get("topic"):
            narrow = chosen & (catalog["topic"].astype(str) == trigger["topic"]).to_numpy()
            if narrow.any():
                chosen = narrow
        return ids[chosen].tolist()

    def _triggered(self, trigger: dict, candidates: list[str] | None) -> list[str]:
        """The trigger's messages among ``candidates`` (all when ``None``; none left: the decision has no eligible
        candidate, as with ``candidates`` alone); a 400 when the trigger has no message at all."""
        allowed = self.trigger_messages(trigger)
        if not allowed:
            event = clip(trigger["event_type"])
            raise BadRequest("context.trigger.event_type",
                             f"no message is configured ([triggers.{event}]) or tagged `trigger:{event}` for this "
                             "trigger")
        if candidates:
            asked = set(candidates)
            allowed = [m for m in allowed if m in asked]
        return allowed

    def _with_triggers(self, requests: list[dict]) -> list[dict]:
        """Requests with a ``context.trigger``: their candidates restricted to the trigger's messages (and to their
        own ``candidates``, when given), and the trigger recorded for the decision log."""
        if not any((r.get("context") or {}).get("trigger") for r in requests):
            return requests
        out = []
        for i, r in enumerate(requests):
            trigger = (r.get("context") or {}).get("trigger")
            if not trigger:
                out.append(r)
                continue
            allowed = self._triggered(trigger, r.get("candidates"))
            record = {k: trigger.get(k) for k in ("event_type", "message_id", "topic")} | {"messages": allowed}
            # (No message left: a name no catalog holds, so that the filter keeps nothing.)
            out.append({**r, "candidates": allowed or [NO_MESSAGE], "_trigger": orjson.dumps(record).decode()})
        return out

    # -- live users ----------------------------------------------------------------------------------
    def _apply_context(self, requests: list[dict]) -> None:
        """Store the facts of requests' ``context`` that change what nbm knows of their users, and build those
        users' live stores now, so that this decision uses them (the others' decisions are unchanged)."""
        changed: dict[str, dict] = {}
        for r in requests:
            context = r.get("context")
            if not context:
                continue
            user = self.canonical(r["user_id"])
            row = {"user_id": user, **{k: context.get(k) for k in ("consent", "timezone", "attributes")}}
            if self._changes_facts(user, row):
                changed[user] = row
        if changed:
            self.state.upsert_users(list(changed.values()))
            self.live_users.ensure(list(changed))

    def _user_row(self, user: str) -> pd.Series | None:
        """The users row nbm decides ``user`` by now (the live store's, else the snapshot's; ``None``: none)."""
        live = self.live_users.of(user)
        history = (live.store if live is not None else self.store).history
        i = history.users.get_indexer([user])[0]
        return history.user_frame.iloc[i] if i >= 0 else None

    def _changes_facts(self, user: str, row: dict) -> bool:
        """Whether ``row``'s facts differ from the users row ``user`` is decided by."""
        current = self._user_row(user)
        if current is None:
            return any(row.get(k) is not None for k in ("consent", "timezone", "attributes"))
        if row.get("consent") is not None and set(row["consent"]) != set(current["consent"] or ()):
            return True
        if row.get("timezone") is not None and row["timezone"] != str(current["timezone"]):
            return True
        told = self.live_users.facts(user).get("attributes", {})
        for name, value in (row.get("attributes") or {}).items():
            if name not in current.index or name in ("user_id", "signup_at", "timezone", "consent"):
                if told.get(name, object()) != value:
                    return True                # not a feature of this model, but a fact to store (and export)
                continue
            old = current[name]
            if isinstance(value, str) and pd.api.types.is_number(old):
                continue                       # text for a numeric column: it would be stored as missing anyway
            if value is None or old is None or (isinstance(old, float) and np.isnan(old)):
                if (value is None) != (old is None or (isinstance(old, float) and np.isnan(old))):
                    return True
            elif isinstance(old, (float, np.floating, int, np.integer)) and not isinstance(value, str):
                if float(value) != float(old):
                    return True
            elif str(value) != str(old):
                return True
        return False

    def upsert_users(self, rows: list) -> dict:
        """Validate and store users' facts (durable before returning); the ``/users`` answer. Every worker
        decides by them within ``[service] live_refresh_seconds`` (:mod:`serving.live`)."""
        good, rejected = [], []
        for index, raw in enumerate(rows):
            row, error = user_errors(raw)
            if not error:
                error = self._user_error(row)
            if error:
                rejected.append({"index": index, "error": error})
                continue
            good.append({**row, "user_id": self.canonical(row["user_id"])})
        accepted = self.state.upsert_users(good) if good else 0
        return {"accepted": accepted, "rejected": rejected}

    def _user_error(self, row: dict) -> str:
        if len(row["user_id"]) > self.config.service.max_id_length:
            return (f"`user_id`: has {len(row['user_id']):,} characters; at most {self.config.service.max_id_length} "
                    "([service] max_id_length)")
        unknown = sorted(set(row.get("consent") or ()) - self.channels)
        if unknown:
            return f"`consent`: unknown channel(s) {clip(unknown)}; configured: {sorted(self.channels)}"
        return ""

    def feature_rows(self, user_id: str, now: pd.Timestamp) -> pd.DataFrame:
        """The features of every eligible candidate of ``user_id`` at ``now`` as the next decision sees them
        (its live store or the snapshot, patched with the sends and losses the store lacks), after the candidate's
        ``candidate_message_id``, ``candidate_channel`` and ``candidate_send_at`` (int ns)."""
        from decision.candidates import expand

        user, t = self.canonical(user_id), int(pd.Timestamp(now).value)
        live = self.live_users.of(user)
        model, store = self._live
        if live is not None:
            store = live.store.with_strengths(model.artifact.prior_strengths)
        candidates = expand(store, user, pd.Timestamp(now))
        frame = store.featurise(candidates)
        contacts = self._contacts([user], [t], live)[0][0]
        if live is not None:
            contacts = unseen_sends(contacts, live.sends.get(user, frozenset()))
        sends = len(contacts.times) and (contacts.times < t).any()
        lost = self._counted_losses({"now": now}, contacts, t)
        columns = {name: frame[name].to_numpy() for name in frame.columns}
        if sends or lost:
            self._patch_many(columns, candidates, {(user, t): (contacts if sends else None, lost)}, store)
        out = pd.DataFrame(columns)
        out.insert(0, "candidate_send_at", candidates.send_at)
        out.insert(0, "candidate_channel", candidates.channel)
        out.insert(0, "candidate_message_id", candidates.message_id)
        return out

    def _with_arms(self, requests: list[dict]) -> list[dict]:
        """Each request with its arm: assigned by the running experiment (``experiment`` in the configuration),
        which overrides a request's own ``arm``; without one, the model decides and a request's ``arm`` is
        only a label for the log."""
        if all("_kind" in r for r in requests):
            return requests
        if not self.config.experiment.name:
            return [{**r, "_kind": "model"} for r in requests]
        arms = assign([self.canonical(r["user_id"]) for r in requests], self.config.experiment)
        return [{**r, "_kind": arm, "arm": arm} for r, arm in zip(requests, arms)]

    def _decide(self, requests: list[dict], k: int, explore: bool, kind: str = "model") -> list[dict | None]:
        """One group of requests (distinct users, one ``k``, explore flag and arm) decided by
        :func:`~decision.decide.decide_many`, then reserved (the holdout: logged); ``None`` for a request whose
        reservation lost to another writer (retried by :meth:`_reserved`). Users with a live store
        (:mod:`serving.live`) are decided on it, one call per store."""
        model, store = self._live
        by_store: dict[int, list[int]] = {}
        lives = [self.live_users.of(self.canonical(r["user_id"])) for r in requests]
        for i, live in enumerate(lives):
            by_store.setdefault(id(live), []).append(i)
        if len(by_store) == 1:
            live = lives[0]
            return self._decide_on(live.store.with_strengths(model.artifact.prior_strengths) if live else store,
                                   live, requests, k, explore, kind, model)
        answers: list[dict | None] = [None] * len(requests)
        for members in by_store.values():
            live = lives[members[0]]
            on = live.store.with_strengths(model.artifact.prior_strengths) if live else store
            for i, answer in zip(members, self._decide_on(on, live, [requests[j] for j in members], k, explore, kind,
                                                           model)):
                answers[i] = answer
        return answers

    def _decide_on(self, store: FeatureStore, live, requests: list[dict], k: int, explore: bool,
                   kind: str, model: LoadedModel) -> list[dict | None]:
        """:meth:`_decide` for requests whose users are all on ``store`` (``live``: the live store it is, or ``None``),
        scored by ``model`` (the one whose smoothing strengths ``store`` featurises with)."""
        n = len(requests)
        users = np.array([self.canonical(r["user_id"]) for r in requests], dtype=object)
        clock = time.time_ns()
        t = np.array([clock if r.get("now") is None else int(pd.Timestamp(r["now"]).value) for r in requests],
                     dtype=np.int64)
        explorer = self.explorer if explore else self.greedy
        if kind == HOLDOUT:                   # nothing is sent, and the decision is logged (propensity 1)
            decided = Decisions.nothing(n, HOLDOUT)
            answers = self._answers(decided, requests, t, explore, kind)
            self.state.log_decisions(answers)
            return [a.public() for a in answers]
        contacts, extra = self._contacts([str(u) for u in users], [int(ti) for ti in t], live)
        histories = self.sends.histories(users, t, self.lookback_ns, extra=extra)
        statistics = self.state.explorer_statistics() if explorer.name == "thompson" and kind == "model" else None
        with self._rng_lock:
            rng = np.random.default_rng(self._rng.integers(2**63))
        # What the snapshot lacks, by (user, time): sends before the time, and channels lost by feedback.
        # A live store holds the user's reported sends already: only the others patch its features.
        known = {}
        for r, u, c, ti in zip(requests, users, contacts, t):
            if live is not None:
                c = unseen_sends(c, live.sends.get(str(u), frozenset()))
            sends = len(c.times) and (c.times < ti).any()
            lost = self._counted_losses(r, c, int(ti))
            if sends or lost:
                known[str(u), int(ti)] = (c if sends else None, lost)
        patch = (lambda columns, rows: self._patch_many(columns, rows, known, store)) if known else None
        keep = lambda pairs: self._keep(requests, pairs, contacts, t, store)      # noqa: E731
        decided = decide_many(store, model.artifact, users, t, histories, rng, arm=kind, explorer=explorer, k=k,
                              threshold=self.settings.threshold, keep=keep, statistics=statistics, patch=patch)
        answers = self._answers(decided, requests, t, explore, kind)
        # One transaction (SQLite) or round trip (Redis) for the whole group.
        reserved = self.state.reserve_many([(str(u), c.version, a) for u, c, a in zip(users, contacts, answers)])
        return [a.public() if ok else None for a, ok in zip(answers, reserved)]

    def _contacts(self, users: list[str], t: list[int], live) -> tuple[list, list[tuple]]:
        """Each user's contacts in the state store (read with the version its reservation checks), and the sends
        that count toward its caps beyond the snapshot's own: those contacts', and for a user with linked
        identifiers (``live``'s aliases, from ``/users`` links) theirs too — the identifiers' contacts (merged
        into the user's: planned items and reported sends, patched into features like the user's own) and
        their snapshot sends in the lookback (already in the live store's features, so only counted)."""
        contacts = self.state.contacts_many(users, t, self.lookback_ns)
        extra = [(c.times, c.channels, c.messages) for c in contacts]
        if live is None or not live.aliases:
            return contacts, extra
        for i, (user, at) in enumerate(zip(users, t)):
            others = live.aliases.get(user)
            if not others:
                continue
            contacts[i] = merge_contacts(contacts[i], self.state.contacts_many(list(others), [at] * len(others),
                                                                               self.lookback_ns))
            old = self.sends.histories(np.asarray(others, dtype=object), np.full(len(others), at, np.int64),
                                       self.lookback_ns)
            extra[i] = tuple(np.concatenate([a, b]) for a, b in zip(
                (contacts[i].times, contacts[i].channels, contacts[i].messages), (old.times, old.channels, old.messages)))
        return contacts, extra

    def _answers(self, decided: Decisions, requests: list[dict], t: np.ndarray, explore: bool,
                 kind: str) -> list[Answer]:
        """The answers of ``decided``, named (random decision ids) and labelled for the decision log."""
        version = self.model.version
        if kind == "model":
            explorer, policy = (self.explorer.name if explore else "greedy"), f"nbm-ranker/{version}"
        else:
            explorer, policy = BASELINE_EXPLORERS[kind], kind
        experiment = self.config.experiment.name or None
        answers = [decided.answer(i, decision_id, r["user_id"], version, int(t[i]), r.get("arm"), experiment, explorer,
                                  policy) for i, (r, decision_id) in enumerate(zip(requests, decision_ids(len(requests))))]
        return [replace(a, trigger=r["_trigger"]) if r.get("_trigger") else a for a, r in zip(answers, requests)]

    def _keep(self, requests: list[dict], pairs, contacts: list, t: np.ndarray,
              store: FeatureStore | None = None) -> np.ndarray | None:
        """Which candidate pairs stay: a request's ``channels`` and ``candidates`` filters, less the channels
        lost by feedback (``None``: all)."""
        keep = self._requested(requests, pairs, store) if any(r.get("channels") or r.get("candidates") for r in requests) \
            else None
        if any(c.lost for c in contacts):
            kept = ~self._lost(requests, pairs, contacts, t)
            keep = kept if keep is None else keep & kept
        return keep

    def _requested(self, requests: list[dict], pairs, store: FeatureStore | None = None) -> np.ndarray:
        """Which candidate pairs each request's ``channels`` and ``candidates`` filters keep (one table lookup
        per pair: a (request × channel) and a (request × message) table of what is asked for), by the codes of
        ``store`` (the one the pairs come from)."""
        voc = (store or self.store).globals.vocabulary
        keep = np.ones(len(pairs), dtype=bool)
        for field, index, codes in (("channels", voc.channels, pairs.channel_code),
                                    ("candidates", voc.messages, pairs.message_code)):
            asked = [i for i, r in enumerate(requests) if r.get(field)]
            if not asked:
                continue
            table = np.ones((len(requests), len(index) + 1), dtype=bool)    # a last column for unknown codes
            for i in asked:
                table[i] = False
                found = index.get_indexer(list(requests[i][field]))
                table[i, found[found >= 0]] = True
            keep &= table[pairs.group, np.where(codes >= 0, codes, len(index))]
        return keep

    def _lost(self, requests: list[dict], pairs, contacts: list, t: np.ndarray) -> np.ndarray:
        """Which candidate pairs are on a channel their user unsubscribed from or bounced on by feedback (the
        state store's ``lost``; the snapshot's own are not candidates at all). A request with ``now`` counts
        the losses strictly before its time, as the snapshot and replay do; one decided at the server's clock counts every loss the
        service knows of, whatever its timestamp (a campaign engine's clock may run ahead of the server's)."""
        n_channels = len(self._channel_codes)
        table = np.zeros((len(requests), n_channels + 1), dtype=bool)      # a last column for unknown codes
        for i, (r, c) in enumerate(zip(requests, contacts)):
            table[i, self._counted_losses(r, c, int(t[i]))] = True
        codes = pairs.channel_code
        return table[pairs.group, np.where(codes >= 0, codes, n_channels)]

    def _counted_losses(self, request: dict, contacts, t: int) -> list[int]:
        """The codes of the channels the state store's losses count for a decision at ``t`` (see :meth:`_lost`)."""
        base = self.store.history.base
        return [code for channel, at in contacts.lost.items()
                if (code := self._channel_codes.get(channel, -1)) >= 0
                and (request.get("now") is None or (at - base) // MS < (t - base) // MS)]
        # (Whole milliseconds, as the snapshot compares, but not clipped to its indexes' span: a loss before a
        # `now` earlier than the snapshot's base, or ~17 years after it, still counts.)

    def _patch_many(self, columns: dict[str, np.ndarray], rows, known: dict, store: FeatureStore | None = None) -> None:
        """The features of the candidates of every decision that the state store knows more of (``known``:
        (user, time) → (contacts with sends before the time or ``None``, codes of channels lost by
        feedback)): :meth:`_patch` for the sends, the channel-loss features for the losses (by ``store``'s
        history: the one that featurised ``rows``). One pass over rows."""
        store = store or self.store
        user, users = pd.factorize(np.asarray(rows.user_id, dtype=object))
        at, times = pd.factorize(np.asarray(rows.as_of, dtype=np.int64))
        codes, uniques = pd.factorize(user.astype(np.int64) * len(times) + at)     # (user, time), three hashes of ints
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
        position = {(str(users[u // len(times)]), int(times[u % len(times)])): i for i, u in enumerate(uniques)}
        names = PATCHED + (LOSS_PATCHED if any(lost for _, lost in known.values()) else ())
        patched = {name: np.array(columns[name], dtype=np.float32) for name in names}   # writable copies, once
        channels, messages = np.asarray(rows.channel, dtype=object), np.asarray(rows.message_id, dtype=object)
        for key, (contacts, lost) in known.items():
            i = position.get(key)
            if i is None:
                continue
            idx = order[bounds[i]:bounds[i + 1]]
            if contacts is not None:
                sub = {name: patched[name][idx] for name in PATCHED}
                self._patch(sub, channels[idx], messages[idx], contacts, key[1])
                for name, values in sub.items():
                    patched[name][idx] = values
            if lost:
                code = rows.user_code[idx[:1]] if rows.user_code is not None else \
                    store.history.user_codes(np.array([key[0]], dtype=object))
                consent, lost_before = store.channel_losses(code, np.array([key[1]], dtype=np.int64))
                lost_before[0, lost] = True
                for name, value in store.loss_features(consent, lost_before).items():
                    patched[name][idx] = value[0]
        columns.update(patched)

    @staticmethod
    def _patch(frame: dict[str, np.ndarray], cand_channel: np.ndarray, cand_message: np.ndarray, contacts,
               t: int) -> None:
        """Contact-recency features of candidates (``frame``, their channels and messages) from sends the
        snapshot does not have (feedback, planned items)."""
        past = contacts.times < t
        if not past.any():
            return
        times, channels, messages = contacts.times[past], contacts.channels[past], contacts.messages[past]
        f32 = np.float32
        frame["time_hours_since_contact"] = np.fmin(frame["time_hours_since_contact"], (t - times.max()) / HOUR_NS).astype(f32)
        frame["user_contacts_7d"] = (frame["user_contacts_7d"] + (times >= t - 7 * DAY_NS).sum()).astype(f32)
        since, day, week = (frame[k].copy() for k in ("uc_hours_since_contact", "uc_contacts_24h", "uc_contacts_7d"))
        for channel in pd.unique(channels):
            on = channels == channel
            mask = cand_channel == channel
            since[mask] = np.fmin(since[mask], (t - times[on].max()) / HOUR_NS)
            day[mask] += (times[on] >= t - DAY_NS).sum()
            week[mask] += (times[on] >= t - 7 * DAY_NS).sum()
        frame["uc_hours_since_contact"], frame["uc_contacts_24h"], frame["uc_contacts_7d"] = since, day, week
        received, days = frame["um_received"].astype(f32).copy(), frame["um_days_since_received"].copy()
        for message in pd.unique(messages):
            mask = cand_message == message
            if mask.any():
                got = messages == message
                received[mask] += got.sum()
                days[mask] = np.fmin(days[mask], (t - times[got].max()) / DAY_NS)
        frame["um_received"], frame["um_days_since_received"] = received, days

    # -- feedback ----------------------------------------------------------------------------------
    def feedback(self, events: list[dict]) -> dict:
        """Validate and store events (durable before returning); the ``/feedback`` answer."""
        good, rejected = [], []
        for index, raw in enumerate(events):
            e, error = event_errors(raw) if isinstance(raw, dict) else (None, "`event`: not a JSON object")
            error = error or self._event_error(e)
            if error:
                rejected.append({"index": index, "error": error})
                continue
            good.append({**e, "user_id": self.canonical(e["user_id"]), "timestamp": int(pd.Timestamp(e["timestamp"]).value)})
        accepted, duplicates = self.state.feedback(good, self.model.artifact.target) if good else (0, 0)
        return {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}

    def _event_error(self, e: dict) -> str:
        longest = self.config.service.max_id_length
        for name in ("user_id", "event_id"):
            if len(e[name]) > longest:
                return f"`{name}`: has {len(e[name]):,} characters; at most {longest} ([service] max_id_length)"
        kind = e.get("event_type")
        if kind not in EVENT_TYPES:
            return f"`event_type`: unknown {clip(kind)} (expected one of {', '.join(EVENT_TYPES)})"
        if kind in MESSAGE_EVENT_TYPES and not e.get("message_id"):
            return f"`message_id`: required for event_type {kind}"
        if kind in CHANNEL_EVENT_TYPES and not e.get("channel"):
            return f"`channel`: required for event_type {kind}"
        if e.get("channel") is not None and e["channel"] not in self.channels:
            return f"`channel`: unknown {clip(e['channel'])}; configured: {sorted(self.channels)}"
        if e.get("message_id") is not None and e["message_id"] not in self.messages:
            return f"`message_id`: {clip(e['message_id'])} is not in the catalog"
        return ""


def decision_ids(n: int) -> list[str]:
    """``n`` random version-4 UUIDs as 32 hex digits (``uuid.uuid4().hex``), from one read of the system's
    random source."""
    raw = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40       # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80       # RFC 4122 variant
    text = raw.tobytes().hex()
    return [text[32 * i: 32 * i + 32] for i in range(n)]

