"""The state store on Redis (``state_url = "redis://HOST:PORT/DB"``): one store shared by services on many machines.

The same interface and the same semantics as :class:`serving.state.sqlite.SQLiteState` (what each part of the
state is for: :mod:`serving.state.contract`); the tests run one contract against both. Every change is one Lua
script, which Redis runs atomically, so the rules that SQLite enforces with ``BEGIN IMMEDIATE`` hold here
across any number of worker processes and machines:

* ``{prefix}sends:{user}`` — a sorted set of the user's sends and planned items, scored by send time (the
  exact int64 time rides in the member, since a score is a double); ``{prefix}ver:{user}`` — the user's
  contact version, incremented by every write to that user's sends. :meth:`RedisState.reserve` plans the
  items only if the version is still the one the decision read.
* ``{prefix}events`` — feedback by ``event_id`` (``HSETNX``: a second delivery is a duplicate);
  ``{prefix}dsend:{decision}`` — a decision's planned items and first item, so that a ``send`` replaces
  its planned item and an outcome without message or channel is credited to the decision's item.
* ``{prefix}lost:{user}`` — per channel, the earliest ``unsubscribe`` or ``bounce`` reported for the user
  (the channel is not eligible from then on).
* ``{prefix}arms:impressions`` / ``{prefix}arms:successes`` — the explorer's statistics per (message, channel).
* ``{prefix}decisions`` — the decision log by ``decision_id``.
* ``{prefix}user:{user}`` — a user's facts (one field per fact, ``attr:NAME`` per attribute, ``link:ID`` per
  identifier linked to the user: ``HSET`` merges);
  ``{prefix}users`` the set of users with facts; ``{prefix}uev:{user}`` the user's accepted feedback rows;
  ``{prefix}changes`` — a list of the users changed, one entry per accepted event or upsert: its index is
  the change number the workers' live refreshers read from.
* ``{prefix}msg:{message}`` — a catalog entry posted to ``/messages`` (one JSON field per column);
  ``{prefix}msgs`` the set of their ids; ``{prefix}catalog:ver`` the catalog version.

Durability: ``/feedback`` is durable before it answers only if the Redis server persists every write before
it replies — ``appendonly yes`` with ``appendfsync always``. The store checks this when it opens and logs a
warning when the server says otherwise (or does not say). The URL may carry ``?prefix=NAME:`` (default
``nbm:``) to keep several deployments apart in one database. Redis Cluster is not supported (one script
touches keys of several users).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
import logging
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import pandas as pd

from decision.answer import Answer
from nbm.errors import UsageError
from serving.state.contract import FACTS, LOSS_TYPES, MESSAGE_FACTS, PLANNED_GRACE_NS, Contacts, items_json

log = logging.getLogger(__name__)

# KEYS: ver, sends, decisions, seq, dsend.  ARGV: version, decision_id, decision row, n, then n × (at, channel, message).
_RESERVE = """
local n = tonumber(ARGV[4])
if n > 0 and tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[1]) then return 0 end
for i = 0, n - 1 do
  local at, ch, msg = ARGV[5 + 3 * i], ARGV[6 + 3 * i], ARGV[7 + 3 * i]
  local member = cjson.encode({tostring(redis.call('INCR', KEYS[4])), at, ch, msg, ARGV[2], '1'})
  redis.call('ZADD', KEYS[2], at, member)
  redis.call('HSET', KEYS[5], cjson.encode({'planned', msg, ch}), member)
  redis.call('HSETNX', KEYS[5], 'first', cjson.encode({msg, ch}))
end
if n > 0 then redis.call('INCR', KEYS[1]) end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return 1
"""

# Exact ``a < b`` of two times (int64 ns as Python writes them: decimal, no leading zeros). Lua's numbers are
# doubles, which tell apart only times ~256 ns apart; SQLite keeps the exact earliest loss, and so must this.
_BEFORE = """
local function before(a, b)
  local na, nb = a:sub(1, 1) == '-', b:sub(1, 1) == '-'
  if na ~= nb then return na end
  if na then a, b = b:sub(2), a:sub(2) end
  if #a ~= #b then return #a < #b end
  for i = 1, #a do      -- byte by byte: Lua's string < follows the server's collation locale
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then return x < y end
  end
  return false
end
"""

# KEYS: events, impressions, successes, seq, changes, then per event (sends, ver, dsend, lost, uev).
# ARGV: target, then per event (event_id, row, event_type, at, channel, message, decision_id, user_id).
_FEEDBACK = _BEFORE + """
local accepted, duplicates = 0, 0
local n = (#ARGV - 1) / 8
for i = 0, n - 1 do
  local a, k = 2 + 8 * i, 6 + 5 * i
  local kind, at, ch, msg, dec = ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
  if redis.call('HSETNX', KEYS[1], ARGV[a], ARGV[a + 1]) == 0 then
    duplicates = duplicates + 1
  else
    accepted = accepted + 1
    redis.call('RPUSH', KEYS[k + 4], ARGV[a + 1])
    redis.call('RPUSH', KEYS[5], ARGV[a + 7])
    if kind == 'send' then
      if dec ~= '' then
        local field = cjson.encode({'planned', msg, ch})
        local planned = redis.call('HGET', KEYS[k + 2], field)
        if planned then
          redis.call('ZREM', KEYS[k], planned)
          redis.call('HDEL', KEYS[k + 2], field)
        end
        redis.call('HSETNX', KEYS[k + 2], 'sent', cjson.encode({msg, ch}))
      end
      local member = cjson.encode({tostring(redis.call('INCR', KEYS[4])), at, ch, msg, dec, '0'})
      redis.call('ZADD', KEYS[k], at, member)
      redis.call('INCR', KEYS[k + 1])
      redis.call('HINCRBY', KEYS[2], cjson.encode({msg, ch}), 1)
    elseif (kind == 'unsubscribe' or kind == 'bounce') and ch ~= '' then
      local old = redis.call('HGET', KEYS[k + 3], ch)
      if (not old) or before(at, old) then redis.call('HSET', KEYS[k + 3], ch, at) end
    elseif kind == ARGV[1] then
      if (msg == '' or ch == '') and dec ~= '' then
        local item = redis.call('HGET', KEYS[k + 2], 'sent') or redis.call('HGET', KEYS[k + 2], 'first')
        if item then
          local pair = cjson.decode(item)
          msg, ch = pair[1], pair[2]
        end
      end
      if msg ~= '' and ch ~= '' then redis.call('HINCRBY', KEYS[3], cjson.encode({msg, ch}), 1) end
    end
  end
end
return {accepted, duplicates}
"""

# KEYS: lost.  ARGV: channel, at — the earliest loss per channel (the rule _FEEDBACK applies), for the backfill.
_LOST_EARLIEST = _BEFORE + """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if (not old) or before(ARGV[2], old) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
"""

_DECISION_COLUMNS = ["decision_id", "timestamp", "user_id", "propensity", "policy", "arm", "model_version",
                     "explorer", "items", "reason", "experiment", "trigger"]
_EVENT_COLUMNS = ["event_id", "timestamp", "user_id", "event_type", "message_id", "channel", "decision_id",
                  "propensity", "value"]


class RedisState:
    """The state store on one Redis database (see the module docstring). Safe across threads and processes."""

    def __init__(self, url: str) -> None:
        import redis

        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        self.prefix = query.pop("prefix", "nbm:")
        self.url = url
        self._redis = redis.Redis.from_url(urlunsplit(parts._replace(query=urlencode(query))))
        try:
            self._redis.ping()
        except redis.RedisError as error:
            raise UsageError(f"`state_url`: cannot reach the state store at {_redact(url)}: {error}") from error
        self._reserve = self._redis.register_script(_RESERVE)
        self._feedback = self._redis.register_script(_FEEDBACK)
        self.durable = self._check_durability()
        self._backfill_losses()
        self._backfill_live()

    def _backfill_live(self) -> None:
        """Once per database (``{prefix}live:ready``): the per-user feedback lists and the change log of feedback
        stored before live users existed (an event stored twice meanwhile is read once: :meth:`user_events`)."""
        if self._redis.exists(self._key("live", "ready")):
            return
        by_user: dict[str, list[tuple[int, str, bytes | str]]] = {}
        for _, row in self._redis.hscan_iter(self._key("events"), count=1000):
            e = json.loads(row)
            by_user.setdefault(str(e["user_id"]), []).append((int(e["timestamp"]), str(e["event_id"]), row))
        if by_user:
            pipe = self._redis.pipeline(transaction=False)
            for user, rows in sorted(by_user.items()):
                pipe.rpush(self._key("uev", user), *[r for _, _, r in sorted(rows)])
                pipe.rpush(self._key("changes"), user)
            pipe.execute()
        # Marked done only now: a crash part-way backfills again at the next open (an event pushed twice is read
        # once, user_events).
        self._redis.set(self._key("live", "ready"), "1")

    def _backfill_losses(self) -> None:
        """Once per database (``{prefix}lost:ready``): the losses among feedback stored before losses were kept
        (a store written by an older nbm), as SQLite finds them when it opens an older file."""
        if not self._redis.set(self._key("lost", "ready"), "1", nx=True):
            return
        earliest: dict[tuple[str, str], int] = {}
        for _, row in self._redis.hscan_iter(self._key("events"), count=1000):
            e = json.loads(row)
            if e.get("event_type") in LOSS_TYPES and e.get("channel"):
                key = (str(e["user_id"]), str(e["channel"]))
                earliest[key] = min(int(e["timestamp"]), earliest.get(key, int(e["timestamp"])))
        if earliest:
            script = self._redis.register_script(_LOST_EARLIEST)
            pipe = self._redis.pipeline(transaction=False)
            for (user, channel), at in earliest.items():
                script(keys=[self._key("lost", user)], args=[channel, str(at)], client=pipe)
            pipe.execute()

    @classmethod
    def from_url(cls, url: str) -> RedisState:
        return cls(url)

    def _check_durability(self) -> bool:
        import redis

        try:
            config = {**self._redis.config_get("appendonly"), **self._redis.config_get("appendfsync")}
        except redis.RedisError as error:   # managed servers may forbid CONFIG
            log.warning("state store %s: cannot read its persistence settings (%s); /feedback is durable only if "
                        "the server runs with appendonly yes and appendfsync always", _redact(self.url), error)
            return False
        durable = config.get("appendonly") == "yes" and config.get("appendfsync") == "always"
        if not durable:
            log.warning("state store %s runs with appendonly %s, appendfsync %s: feedback acknowledged by /feedback "
                        "can be lost in a crash; set appendonly yes and appendfsync always", _redact(self.url),
                        config.get("appendonly"), config.get("appendfsync"))
        return durable

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # -- contact history ---------------------------------------------------------------------------
    def contacts(self, user_id: str, now: int, lookback_ns: int) -> Contacts:
        """The user's sends in ``[now − lookback, ∞)`` (planned ones while they count), and the version."""
        return self.contacts_many([user_id], [now], lookback_ns)[0]

    def contacts_many(self, users, now, lookback_ns: int) -> list[Contacts]:
        """:meth:`contacts` for several users in one round trip (one ``MULTI``: each user's sends and version agree)."""
        pipe = self._redis.pipeline(transaction=True)
        for user, t in zip(users, now):
            # Scores are doubles (±256 ns at these magnitudes): take a margin, then filter on the exact time.
            pipe.zrangebyscore(self._key("sends", str(user)), int(t) - lookback_ns - 10**6, "+inf")
            pipe.get(self._key("ver", str(user)))
            pipe.hgetall(self._key("lost", str(user)))
        replies = pipe.execute()
        out = []
        for i, t in enumerate(now):
            start, grace = int(t) - lookback_ns, int(t) - PLANNED_GRACE_NS
            rows = []
            for member in replies[3 * i]:
                _, at, channel, message, _, planned = json.loads(member)
                at = int(at)
                if at >= start and (planned == "0" or at >= grace):
                    rows.append((at, channel, message))
            rows.sort(key=lambda r: r[0])
            version = int(replies[3 * i + 1] or 0)
            lost = {_text(channel): int(at) for channel, at in replies[3 * i + 2].items()}
            if not rows:
                out.append(Contacts(np.zeros(0, np.int64), np.zeros(0, object), np.zeros(0, object), version, lost))
                continue
            at, channel, message = zip(*rows)
            out.append(Contacts(np.asarray(at, np.int64), np.asarray(channel, object), np.asarray(message, object),
                                version, lost))
        return out

    def reserve(self, user_id: str, version: int, decision: Answer) -> bool:
        """Log ``decision`` and plan its items (``decision.planned``) if the user's contact version is still
        ``version`` (else ``False``)."""
        keys, args = self._reserve_call(user_id, version, decision)
        return bool(self._reserve(keys=keys, args=args))

    def _reserve_call(self, user_id: str, version: int, decision: Answer) -> tuple[list, list]:
        args: list = [version, decision.decision_id, _decision_row(decision), len(decision.planned)]
        for at, channel, message in decision.planned:
            args += [str(int(at)), channel, message]
        keys = [self._key("ver", user_id), self._key("sends", user_id), self._key("decisions"), self._key("seq"),
                self._key("dsend", decision.decision_id)]
        return keys, args

    def reserve_many(self, reservations) -> list[bool]:
        """:meth:`reserve` for several decisions in one round trip (each script atomic, run in order)."""
        pipe = self._redis.pipeline(transaction=False)
        for user_id, version, decision in reservations:
            keys, args = self._reserve_call(user_id, version, decision)
            self._reserve(keys=keys, args=args, client=pipe)
        return [bool(r) for r in pipe.execute()]

    def log_decisions(self, decisions: Sequence[Answer]) -> None:
        """Log decisions without items in one round trip."""
        if decisions:
            self._redis.hset(self._key("decisions"),
                             mapping={d.decision_id: _decision_row(d) for d in decisions})

    # -- feedback ----------------------------------------------------------------------------------
    def feedback(self, events: list[dict], target: str = "convert") -> tuple[int, int]:
        """Store events (idempotent by ``event_id``) and apply them, in one atomic script. (accepted, duplicates)."""
        if not events:
            return 0, 0
        keys = [self._key("events"), self._key("arms", "impressions"), self._key("arms", "successes"), self._key("seq"),
                self._key("changes")]
        args: list = [target]
        now = time.time_ns()
        for e in events:
            decision = e.get("decision_id") or ""
            keys += [self._key("sends", e["user_id"]), self._key("ver", e["user_id"]),
                     self._key("dsend", decision or "-"), self._key("lost", e["user_id"]), self._key("uev", e["user_id"])]
            row = {c: e.get(c) for c in _EVENT_COLUMNS}
            row["received_at"] = now
            args += [e["event_id"], json.dumps(row), e["event_type"], str(int(e["timestamp"])), e.get("channel") or "",
                     e.get("message_id") or "", decision, e["user_id"]]
        accepted, duplicates = self._feedback(keys=keys, args=args)
        return int(accepted), int(duplicates)

    def explorer_statistics(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(message, channel) → (successes, failures) for Thompson sampling."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hgetall(self._key("arms", "impressions"))
        pipe.hgetall(self._key("arms", "successes"))
        impressions, successes = pipe.execute()
        out = {}
        for field in set(impressions) | set(successes):
            i, s = int(impressions.get(field, 0)), int(successes.get(field, 0))
            out[tuple(json.loads(field))] = (s, max(i - s, 0))
        return out

    # -- live users ----------------------------------------------------------------------------------
    def upsert_users(self, rows: Sequence[dict]) -> int:
        """Merge each row's facts into the stored ones (:func:`~serving.state.contract.merge_facts`): a hash per
        user, one field per fact and per attribute, so that ``HSET`` is the merge; the user's change is logged in
        the same ``MULTI``. Rows stored."""
        if not rows:
            return 0
        pipe = self._redis.pipeline(transaction=True)
        for row in rows:
            user = str(row["user_id"])
            fields = {key: json.dumps(list(row[key]) if key == "consent" else row[key])
                      for key in FACTS if row.get(key) is not None}
            fields.update({f"attr:{name}": json.dumps(value) for name, value in (row.get("attributes") or {}).items()})
            fields.update({f"link:{identifier}": "1" for identifier in row.get("links") or ()})
            if fields:
                pipe.hset(self._key("user", user), mapping=fields)
            pipe.sadd(self._key("users"), user)
            pipe.rpush(self._key("changes"), user)
        pipe.execute()
        return len(rows)

    def user_facts(self, users: Sequence[str]) -> dict[str, dict]:
        """The stored facts of each of ``users`` that has any."""
        users = sorted({str(u) for u in users})
        pipe = self._redis.pipeline(transaction=False)
        for user in users:
            pipe.hgetall(self._key("user", user))
        out = {}
        for user, fields in zip(users, pipe.execute()):
            if fields:
                out[user] = _facts(fields)
        return out

    def users_table(self) -> dict[str, dict]:
        """Every user's stored facts (``{}`` for a user posted without any, as SQLite keeps it)."""
        users = sorted(_text(u) for u in self._redis.smembers(self._key("users")))
        facts = self.user_facts(users)
        return {u: facts.get(u, {}) for u in users}

    def user_events(self, users: Sequence[str]) -> pd.DataFrame:
        """The feedback of ``users``, as :meth:`feedback_events` (the data contract's ``events``)."""
        pipe = self._redis.pipeline(transaction=False)
        for user in sorted({str(u) for u in users}):
            pipe.lrange(self._key("uev", user), 0, -1)
        rows = [json.loads(r) for reply in pipe.execute() for r in reply]
        return _frame(rows, _EVENT_COLUMNS, "event_id", ("propensity", "value")).drop_duplicates(
            "event_id", ignore_index=True)

    def changes_since(self, after: int) -> tuple[int, list[str]]:
        """The users whose feedback or facts changed after change number ``after``, and the last number."""
        users = self._redis.lrange(self._key("changes"), int(after), -1)
        return int(after) + len(users), list(dict.fromkeys(_text(u) for u in users))

    # -- live catalog --------------------------------------------------------------------------------
    def upsert_messages(self, rows: Sequence[dict]) -> int:
        """Merge each row's fields into the stored message: a hash per message, one JSON field per column (``HSET``
        merges), and the catalog version raised, in one ``MULTI``. Rows stored."""
        if not rows:
            return 0
        pipe = self._redis.pipeline(transaction=True)
        for row in rows:
            message = str(row["message_id"])
            fields = {key: json.dumps(row[key]) for key in MESSAGE_FACTS if row.get(key) is not None}
            if fields:
                pipe.hset(self._key("msg", message), mapping=fields)
            pipe.sadd(self._key("msgs"), message)
            pipe.incr(self._key("catalog", "ver"))
        pipe.execute()
        return len(rows)

    def messages_table(self) -> tuple[int, dict[str, dict]]:
        """(catalog version, every stored message's fields), read together (``WATCH``: retried if an upsert
        lands between)."""
        import redis

        while True:
            with self._redis.pipeline() as pipe:
                try:
                    pipe.watch(self._key("catalog", "ver"))
                    version = int(pipe.get(self._key("catalog", "ver")) or 0)
                    ids = sorted(_text(m) for m in pipe.smembers(self._key("msgs")))
                    pipe.multi()
                    for message in ids:
                        pipe.hgetall(self._key("msg", message))
                    replies = pipe.execute()
                except redis.WatchError:
                    continue
            return version, {m: {_text(k): json.loads(v) for k, v in fields.items()} for m, fields in zip(ids, replies)}

    def catalog_version(self) -> int:
        """Raised by every ``/messages`` upsert (0: none yet)."""
        return int(self._redis.get(self._key("catalog", "ver")) or 0)

    # -- reading back ------------------------------------------------------------------------------
    def decision_log(self) -> pd.DataFrame:
        """The decision log as the data contract's ``decisions`` table (plus ``model_version``, ``items``, ...)."""
        return self._table("decisions", _DECISION_COLUMNS, "decision_id", ("propensity",))

    def feedback_events(self) -> pd.DataFrame:
        """The feedback received, as the data contract's ``events`` table."""
        return self._table("events", _EVENT_COLUMNS, "event_id", ("propensity", "value"))

    def _table(self, key: str, columns: list[str], tie: str, floats: tuple[str, ...]) -> pd.DataFrame:
        """The JSON rows of hash ``key`` as a frame sorted by (timestamp, ``tie``), times as UTC timestamps."""
        rows = [json.loads(v) for _, v in self._redis.hscan_iter(self._key(key), count=1000)]
        return _frame(rows, columns, tie, floats)


def _frame(rows: list[dict], columns: list[str], tie: str, floats: tuple[str, ...]) -> pd.DataFrame:
    """JSON rows as a frame sorted by (timestamp, ``tie``), times as UTC timestamps."""
    frame = pd.DataFrame(rows, columns=columns)
    frame = frame.sort_values(["timestamp", tie], kind="stable").reset_index(drop=True)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"].astype("int64"), utc=True)
    for column in floats:
        frame[column] = frame[column].astype(float)
    return frame


def _facts(fields: dict) -> dict:
    """A user's hash (fact → JSON, ``attr:NAME`` → JSON) as facts."""
    out: dict = {}
    for key, value in fields.items():
        key, value = _text(key), json.loads(value)
        if key.startswith("attr:"):
            out.setdefault("attributes", {})[key[5:]] = value
        elif key.startswith("link:"):
            out.setdefault("links", []).append(key[5:])
        else:
            out[key] = value
    if "links" in out:
        out["links"] = sorted(out["links"])
    return out


def _decision_row(d: Answer) -> str:
    return json.dumps({"decision_id": d.decision_id, "timestamp": d.now, "user_id": d.user_id,
                       "propensity": d.propensity, "policy": d.policy, "arm": d.arm, "model_version": d.model_version,
                       "explorer": d.explorer, "items": items_json(d.items), "reason": d.reason,
                       "experiment": d.experiment, "trigger": d.trigger})


def _text(value: bytes | str) -> str:
    """A reply as text (bytes unless the URL asks for ``decode_responses``)."""
    return value.decode() if isinstance(value, bytes) else value


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
