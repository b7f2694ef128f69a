"""The decision engine behind the service: model, feature snapshot, state store and ``decide()``.

Built once per worker process: it loads the data directory (validated, identities resolved), builds the
feature indexes (the online snapshot: every user's history as of the load), loads the model by registry
alias, and opens the state store. Each ``/recommend`` then costs one candidate expansion, one
featurisation and one LightGBM call on a float32 matrix, one ``decide()``, and two short SQLite
transactions. Sends known only to the state store (reported by ``/feedback`` or planned by earlier
answers) count for the contact policy at once, and patch the contact-recency features of the snapshot.
"""

from __future__ import annotations

import gc
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.candidates import expand
from features.pipeline import FeatureStore
from nbm.config import NbmConfig
from nbm.dataset import load_dataset
from nbm.errors import UsageError
from nbm.policy.contact import SendHistory
from nbm.policy.decide import ScoredCandidates, decide
from nbm.policy.explore import EXPLORERS, Arms, Greedy
from serving.schemas import event_errors
from serving.registry import LoadedModel, load_model, resolve_version
from serving.state import SQLiteState

DAY_NS, HOUR_NS = 86_400 * 10**9, 3_600 * 10**9
RESERVE_ATTEMPTS = 5


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
        self.explorer = EXPLORERS[settings.explorer]()
        self.greedy = Greedy()
        self.dataset, _ = load_dataset(settings.data, config)
        self.store = FeatureStore.build(self.dataset, config)
        self.model: LoadedModel = load_model(settings.model, config)
        self.state = SQLiteState.from_url(config.state_url)
        self.channels = frozenset(config.channels)
        self.messages = frozenset(self.dataset.messages["message_id"].astype(str))
        self.values = self.dataset.messages.set_index(self.dataset.messages["message_id"].astype(str))["value"]
        self.lookback_ns = int((max(7.0, config.contact_policy.message_cooldown_days) + 1.0) * DAY_NS)
        self._snapshot_sends()
        self._rng = np.random.default_rng(settings.seed)
        self._rng_lock = threading.Lock()
        self._checked = time.monotonic()
        self._reload_lock = threading.Lock()
        # Everything loaded so far lives as long as the process: keep it out of the collector's scans
        # (full collections over millions of long-lived objects were the p99 pauses).
        gc.collect()
        gc.freeze()

    # -- set-up ------------------------------------------------------------------------------------
    def _snapshot_sends(self) -> None:
        events = self.dataset.events
        sends = events[events["event_type"].to_numpy(dtype=object) == "send"]
        users = sends["user_id"].to_numpy(dtype=object)
        order = np.lexsort((sends["timestamp"].to_numpy(dtype="int64"), pd.factorize(users)[0]))
        self._s_users = users[order]
        self._s_times = sends["timestamp"].to_numpy(dtype="int64")[order]
        self._s_channels = sends["channel"].to_numpy(dtype=object)[order]
        self._s_messages = sends["message_id"].to_numpy(dtype=object)[order]
        # The sends are grouped by user: each user's run starts at its first index and has its count.
        unique, first, count = (np.unique(self._s_users.astype(str), return_index=True, return_counts=True)
                                if len(order) else (np.zeros(0, str), np.zeros(0, int), np.zeros(0, int)))
        self._s_index = dict(zip(unique.tolist(), first.tolist()))
        self._s_count = dict(zip(unique.tolist(), count.tolist()))
        self._canonical = self.dataset.identity.canonical.to_dict() if len(self.dataset.identity.canonical) else {}

    def canonical(self, user_id: str) -> str:
        return self._canonical.get(user_id, user_id)

    # -- model reload ------------------------------------------------------------------------------
    def maybe_reload(self) -> None:
        """Pick up a new version when the registry alias moved (checked at most every ``reload_seconds``)."""
        if time.monotonic() - self._checked < self.settings.reload_seconds:
            return
        if not self._reload_lock.acquire(blocking=False):
            return
        try:
            self._checked = time.monotonic()
            version = resolve_version(self.settings.model, self.config)
            if version is not None and version != self.model.version:
                self.model = load_model(self.settings.model, self.config)   # one reference swap: atomic
        except Exception:  # noqa: BLE001 — a registry hiccup must not fail requests; retry next interval
            pass
        finally:
            self._reload_lock.release()

    # -- requests ----------------------------------------------------------------------------------
    def validate(self, channels: list[str] | None, candidates: list[str] | None) -> None:
        unknown = sorted(set(channels or ()) - self.channels)
        if unknown:
            raise BadRequest("channels", f"unknown channel(s) {unknown}; configured: {sorted(self.channels)}")
        if candidates is not None and not candidates:
            raise BadRequest("candidates", "is empty; leave it out to consider every message")

    def recommend(self, user_id: str, k: int = 1, channels: list[str] | None = None,
                  candidates: list[str] | None = None, now: pd.Timestamp | None = None, explore: bool = True,
                  arm: str | None = None) -> dict:
        """One decision, logged and reserved in the state store; the ``/recommend`` answer."""
        self.validate(channels, candidates)
        self.maybe_reload()
        model = self.model
        t = time.time_ns() if now is None else int(pd.Timestamp(now).value)
        user = self.canonical(user_id)
        rows = expand(self.store, user, pd.Timestamp(t, tz="UTC"), channels, candidates)
        decision_id = uuid.uuid4().hex
        if not len(rows):
            answer = self._answer(decision_id, user_id, model.version, t, [], [], "no_eligible_candidate", explore, arm)
            self.state.log_decisions([(answer, 1.0)])
            return _public(answer)
        frame = self.store.featurise_columns(rows)
        base = ScoredCandidates(rows.message_id, rows.channel, rows.send_at, np.zeros(len(rows)),
                                self.values.reindex(rows.message_id).fillna(1.0).to_numpy(dtype=float))
        timezone = self._timezone(user)
        explorer = self.explorer if explore else self.greedy
        arms = self._arms(rows) if explorer.name == "thompson" else None
        for _ in range(RESERVE_ATTEMPTS):
            contacts = self.state.contacts(user, t, self.lookback_ns)
            self._patch(frame, rows, contacts, t)
            probability = model.artifact.score(frame)
            scored = ScoredCandidates(base.message_id, base.channel, base.send_at, probability, base.value)
            with self._rng_lock:
                rng = np.random.default_rng(self._rng.integers(2**63))
            d = decide(scored, self._history(user, contacts), timezone, self.config.contact_policy, explorer, rng,
                       self.settings.threshold, arms, k)
            items = [{"message_id": i.message_id, "channel": i.channel, "send_at": _iso(i.send_at.value),
                      "score": round(i.score, 6), "propensity": round(i.propensity, 6)} for i in d.items]
            suppressed = [{"message_id": s.message_id, "channel": s.channel, "reason": s.reason} for s in d.suppressed]
            answer = self._answer(decision_id, user_id, model.version, t, items, suppressed, d.reason, explore, arm)
            propensity = float(np.prod([i.propensity for i in d.items])) if d.items else 1.0
            planned = [(i.send_at.value, i.channel, i.message_id) for i in d.items]
            if self.state.reserve(user, contacts.version, answer, planned, propensity):
                return _public(answer)
        raise RuntimeError(f"could not reserve a decision for user {user_id!r} after {RESERVE_ATTEMPTS} attempts")

    def _answer(self, decision_id, user_id, version, t, items, suppressed, reason, explore, arm) -> dict:
        answer = {"decision_id": decision_id, "user_id": user_id, "model_version": version, "items": items,
                  "suppressed": suppressed, "_now": t, "_explorer": self.explorer.name if explore else "greedy",
                  "_policy": f"nbm-ranker/{version}", "_arm": arm}
        if not items:
            answer["reason"] = reason
        return answer

    def _timezone(self, user: str) -> str:
        history = self.store.history
        row = history.users.get_indexer([user])[0]
        return str(history.user_frame["timezone"].iloc[row]) if row >= 0 else "UTC"

    def _history(self, user: str, contacts) -> SendHistory:
        start = self._s_index.get(user)
        if start is None:
            return SendHistory.of(contacts.times, contacts.channels, contacts.messages)
        end = start + self._s_count[user]
        return SendHistory.of(np.concatenate([self._s_times[start:end], contacts.times]),
                              np.concatenate([self._s_channels[start:end], contacts.channels]),
                              np.concatenate([self._s_messages[start:end], contacts.messages]))

    def _arms(self, rows) -> Arms:
        stats = self.state.arms()
        pairs = [stats.get((m, c), (0, 0)) for m, c in zip(rows.message_id, rows.channel)]
        s, f = zip(*pairs) if pairs else ((), ())
        return Arms(np.asarray(s, float), np.asarray(f, float))

    @staticmethod
    def _patch(frame: dict[str, np.ndarray], rows, contacts, t: int) -> None:
        """Contact-recency features from sends the snapshot does not have (feedback, planned items)."""
        past = contacts.times < t
        if not past.any():
            return
        times, channels, messages = contacts.times[past], contacts.channels[past], contacts.messages[past]
        f32 = np.float32
        frame["time_hours_since_contact"] = np.fmin(frame["time_hours_since_contact"], (t - times.max()) / HOUR_NS).astype(f32)
        frame["user_contacts_7d"] = (frame["user_contacts_7d"] + (times >= t - 7 * DAY_NS).sum()).astype(f32)
        cand_channel = np.asarray(rows.channel, dtype=object)
        cand_message = np.asarray(rows.message_id, dtype=object)
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
        kind = e.get("event_type")
        from nbm.schema import CHANNEL_EVENT_TYPES, EVENT_TYPES, MESSAGE_EVENT_TYPES

        if kind not in EVENT_TYPES:
            return f"`event_type`: unknown {kind!r} (expected one of {', '.join(EVENT_TYPES)})"
        if kind in MESSAGE_EVENT_TYPES and not e.get("message_id"):
            return f"`message_id`: required for event_type {kind}"
        if kind in CHANNEL_EVENT_TYPES and not e.get("channel"):
            return f"`channel`: required for event_type {kind}"
        if e.get("channel") is not None and e["channel"] not in self.channels:
            return f"`channel`: unknown {e['channel']!r}; configured: {sorted(self.channels)}"
        if e.get("message_id") is not None and e["message_id"] not in self.messages:
            return f"`message_id`: {e['message_id']!r} is not in the catalog"
        return ""


def _iso(ns: int) -> str:
    return pd.Timestamp(int(ns), tz="UTC").isoformat().replace("+00:00", "Z")


def _public(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if not k.startswith("_")}
