"""The event history, indexed for point-in-time feature queries.

A :class:`History` holds the as-of indexes of one partition of users (any subset of users, with all of
their events); :class:`PopulationRates` holds the small global tables (per channel, topic, tag, message
and day) built once from all events. Features of a partition need only its own history and the global
tables, so partitions can be featurised apart (on Dask workers, later) and concatenated.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from features.asof import AsOfIndex
from nbm.attribution import attribute
from features.keys import KeyedIndex, pair
from features.segments import Segments
from nbm.config import LIFECYCLE_STAGES, NbmConfig
from nbm.dataset import Dataset
from nbm.lifecycle import activity_events
from nbm.schema import EVENT_TYPES, TABLES

DAY_NS = 86_400 * 10**9
RATE_WEIGHTS = ("sends", "opens", "clicks", "converts")


@dataclass(frozen=True)
class Vocabulary:
    """Integer codes shared by every partition: channels, topics, tags, messages."""

    channels: pd.Index
    topics: pd.Index
    tags: pd.Index
    messages: pd.Index
    message_topic: np.ndarray       # topic code per message code
    message_tags: pd.Series         # exploded: index = message code, values = tag code
    attributes: dict[str, pd.Index]  # categories of each text attribute of the users table
    segments: Segments = field(default_factory=Segments)   # `[features] segment_by` (none: everybody in one)
    slots: tuple[int, int, int] = (0, 0, 0)
    """(topics, tags, messages): the sizes pair keys are packed with (:func:`features.keys.pair`) — the catalog's
    own sizes plus spare codes (:func:`spare`), so that a message added to the catalog later (and its new topic or
    tags) takes the next code and every index built before stays valid (:meth:`extended`)."""

    @classmethod
    def build(cls, messages: pd.DataFrame, config: NbmConfig, users: pd.DataFrame | None = None) -> Vocabulary:
        ids = pd.Index(messages["message_id"].astype(str))
        topics = pd.Index(sorted(messages["topic"].astype(str).unique()))
        exploded = messages["tags"].explode().dropna().astype(str)
        tags = pd.Index(sorted(exploded.unique()))
        message_tags = pd.Series(tags.get_indexer(exploded.to_numpy()), index=exploded.index.to_numpy())
        attributes = {}
        if users is not None:
            for name in users.columns:
                if name not in TABLES["users"].column_names and not pd.api.types.is_numeric_dtype(users[name].dtype):
                    attributes[name] = pd.Index(sorted(users[name].dropna().astype(str).unique()))
        segments = Segments.build(users, config.features.segment_by) if users is not None else Segments()
        return cls(pd.Index(config.channels), topics, tags, ids,
                   topics.get_indexer(messages["topic"].astype(str)), message_tags, attributes, segments,
                   (spare(len(topics)), spare(len(tags)), spare(len(ids))))

    @property
    def topic_slots(self) -> int:
        return max(self.slots[0], len(self.topics))

    @property
    def tag_slots(self) -> int:
        return max(self.slots[1], len(self.tags))

    @property
    def message_slots(self) -> int:
        return max(self.slots[2], len(self.messages))

    def extended(self, messages: pd.DataFrame) -> Vocabulary | None:
        """This vocabulary with the messages of the catalog ``messages`` that it lacks appended (after its own, in
        the catalog's order), and their new topics and tags after its: every code keeps its meaning, so indexes
        built on it stay valid, and the new codes have no history. ``None`` when that cannot be: the catalog does
        not begin with this vocabulary's messages in order, a known message's topic or tags differ (its past
        events would count elsewhere), or the new codes pass the spare ones (:attr:`slots`)."""
        ids = pd.Index(messages["message_id"].astype(str))
        n = len(self.messages)
        if len(ids) < n or not ids[:n].equals(self.messages) or len(ids) > self.message_slots:
            return None
        topic = messages["topic"].astype(str).to_numpy()
        if (topic[:n] != np.asarray(self.topics, dtype=object)[self.message_topic]).any():
            return None
        tag_lists = [sorted(map(str, t)) if isinstance(t, (list, tuple, np.ndarray)) else [] for t in messages["tags"]]
        known = [[] for _ in range(n)]
        for m, tag in zip(self.message_tags.index.to_numpy(), self.message_tags.to_numpy()):
            known[m].append(str(self.tags[tag]))
        if [sorted(t) for t in known] != tag_lists[:n]:
            return None
        topics = self.topics.append(pd.Index(sorted(set(topic[n:]) - set(self.topics)), dtype=object))
        tags = self.tags.append(pd.Index(sorted({t for ts in tag_lists[n:] for t in ts} - set(self.tags)), dtype=object))
        if len(topics) > self.topic_slots or len(tags) > self.tag_slots:
            return None
        new = [(n + i, t) for i, ts in enumerate(tag_lists[n:]) for t in ts]
        message_tags = pd.concat([self.message_tags, pd.Series(
            tags.get_indexer([t for _, t in new]) if new else np.zeros(0, np.int64),
            index=np.asarray([m for m, _ in new], dtype=np.int64))]) if new else self.message_tags
        return replace(self, topics=topics, tags=tags, messages=ids, message_topic=topics.get_indexer(topic),
                       message_tags=message_tags, slots=(self.topic_slots, self.tag_slots, self.message_slots))


SPARE_CODES = 64
"""At least this many codes are kept free past a catalog's messages (and topics, tags) for additions."""


def spare(n: int) -> int:
    """The pair-key size for ``n`` codes: room for ``max(SPARE_CODES, n / 2)`` more (:attr:`Vocabulary.slots`)."""
    return n + max(SPARE_CODES, n // 2)


FEW_INSTANTS = 64
FEW_USERS = 256
"""Up to this many distinct ids, :meth:`History.user_codes` looks each up in the index's hash table."""


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=65536)
def _local_hour_weekday(seconds: int, timezone: str) -> tuple[int, int]:
    """Local hour and weekday of a UTC instant (whole seconds): the service asks for the same slots all day."""
    local = datetime.fromtimestamp(seconds, _zone(timezone))
    return local.hour, local.weekday()


def local_time(times: np.ndarray, timezones: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local hour (0–23) and weekday (0 = Monday) of UTC instants (ns) in per-row IANA time zones."""
    if len(times) <= FEW_INSTANTS:    # a few rows (a decision's distinct slots): one cached lookup each
        local = [_local_hour_weekday(t // 10**9, str(tz))
                 for t, tz in zip(np.asarray(times).tolist(), np.asarray(timezones).tolist())]
        return (np.array([h for h, _ in local], dtype=np.int64).reshape(len(times)),
                np.array([d for _, d in local], dtype=np.int64).reshape(len(times)))
    hour = np.zeros(len(times), dtype=np.int64)
    weekday = np.zeros(len(times), dtype=np.int64)
    for tz in pd.unique(timezones):  # a handful of time zones, each converted in one vectorised call
        here = timezones == tz
        rows = slice(None) if here.all() else np.flatnonzero(here)
        at = times[rows]
        # Candidates of one decision share a few slot times: convert each distinct instant once.
        distinct, inverse = np.unique(at, return_inverse=True)
        inverse = inverse.reshape(-1)
        if len(distinct) <= FEW_INSTANTS:   # the service's case: zoneinfo per instant beats a pandas round trip
            local = [_local_hour_weekday(t // 10**9, str(tz)) for t in distinct.tolist()]
            hour[rows] = np.array([h for h, _ in local], dtype=np.int64)[inverse]
            weekday[rows] = np.array([d for _, d in local], dtype=np.int64)[inverse]
            continue
        local = pd.DatetimeIndex(distinct.view("datetime64[ns]")).tz_localize("UTC").tz_convert(tz)
        hour[rows] = np.asarray(local.hour)[inverse]
        weekday[rows] = np.asarray(local.day_of_week)[inverse]
    return hour, weekday


def event_masks(events: pd.DataFrame) -> dict[str, np.ndarray]:
    """A boolean mask per event type (factorised once: comparing millions of strings is slow)."""
    codes, names = pd.factorize(events["event_type"])
    lookup = {name: i for i, name in enumerate(names)}
    return {name: codes == lookup[name] if name in lookup else np.zeros(len(codes), dtype=bool)
            for name in EVENT_TYPES}


def codes_in(values: pd.Series | np.ndarray, names: pd.Index) -> np.ndarray:
    """Code of each value in ``names`` (-1 for missing or unknown), factorising the column first."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object) if isinstance(values, np.ndarray) else values)
    lookup = names.get_indexer(np.asarray(uniques, dtype=object))
    return np.where(codes >= 0, np.append(lookup, -1)[codes], -1)


def _membership(lists: pd.Series, names: pd.Index) -> np.ndarray:
    """Bool (rows, names): which names each row's list holds (rows in order of ``lists``)."""
    exploded = lists.reset_index(drop=True).explode().dropna()
    column = names.get_indexer(exploded.astype(object).to_numpy())
    out = np.zeros((len(lists), len(names)), dtype=bool)
    ok = column >= 0
    out[exploded.index.to_numpy()[ok], column[ok]] = True
    return out


class PopulationRates:
    """Global daily counts of sends, opens, clicks and conversions, queried as of the start of a day.

    Queries at time ``t`` see only days before the day of ``t``: point-in-time and the same for every
    partition. With segments (``vocabulary.segments``) and the ``users`` table, also per segment × channel
    and segment × topic (sends, opens, clicks of the segment's users).
    """

    def __init__(self, events: pd.DataFrame, vocabulary: Vocabulary, base: int,
                 users: pd.DataFrame | None = None) -> None:
        self._build(*self.daily_counts(events, vocabulary, users), vocabulary, base)

    @classmethod
    def from_daily(cls, daily: pd.DataFrame, segments: dict[str, pd.DataFrame], vocabulary: Vocabulary,
                   base: int) -> PopulationRates:
        """The rates of several parts of a log from their :meth:`daily_counts` concatenated (summed again here):
        the same as those of the whole log (features/parts.py, out of core)."""
        out = cls.__new__(cls)
        daily = daily.groupby(["day", "message", "channel"], as_index=False, sort=False).sum()
        segments = {name: frame.groupby(["day", "key"], as_index=False, sort=False).sum()
                    for name, frame in segments.items()}
        out._build(daily, segments, vocabulary, base)
        return out

    @staticmethod
    def daily_counts(events: pd.DataFrame, vocabulary: Vocabulary, users: pd.DataFrame | None = None
                     ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
        """Daily sends, opens, clicks and conversions per (message, channel) of ``events``, and — with segments
        and the ``users`` table — daily sends, opens and clicks per segment × channel and segment × topic (events
        of users without a ``users`` row belong to no segment): what the rates are built from, and what parts of
        a log add up."""
        masks = event_masks(events)
        counted = masks["send"] | masks["open"] | masks["click"] | masks["convert"]
        day = events["timestamp"].to_numpy(dtype="int64")[counted] // DAY_NS * DAY_NS
        message = codes_in(events["message_id"], vocabulary.messages)[counted]
        channel = codes_in(events["channel"], vocabulary.channels)[counted]
        # Daily counts per (channel, message): the table every other grouping is summed from (small).
        daily = pd.DataFrame({"day": day, "message": message, "channel": channel,
                              **{w: masks[w[:-1]][counted].astype(np.float64) for w in RATE_WEIGHTS}})
        segments = {}
        if vocabulary.segments.active and users is not None:
            segments = PopulationRates._segment_counts(daily, events["user_id"][counted], vocabulary, users)
        return daily.groupby(["day", "message", "channel"], as_index=False, sort=False).sum(), segments

    def _build(self, daily: pd.DataFrame, segments: dict[str, pd.DataFrame], vocabulary: Vocabulary,
               base: int) -> None:
        self.base = base
        self.n_channels, self.n_topics = len(vocabulary.channels), vocabulary.topic_slots   # pair sizes
        self.segment_channel: AsOfIndex | None = None
        self.segment_topic: AsOfIndex | None = None
        for name, frame in segments.items():
            setattr(self, name, AsOfIndex(frame["key"].to_numpy(), frame["day"].to_numpy(),
                                          {w: frame[w].to_numpy() for w in ("sends", "opens", "clicks")}, base))
        self.daily = daily
        n = len(daily)
        self.overall = self._index(np.zeros(n, dtype=np.int64), np.ones(n, bool))
        self.channel = self._index(daily["channel"].to_numpy(), daily["channel"].to_numpy() >= 0)
        has_message = daily["message"].to_numpy() >= 0
        self.message = self._index(daily["message"].to_numpy(), has_message)
        topic = np.where(has_message, vocabulary.message_topic[np.maximum(daily["message"].to_numpy(), 0)], -1)
        self.topic = self._index(topic, topic >= 0)
        tags = vocabulary.message_tags
        per_tag = daily[has_message].merge(pd.DataFrame({"message": tags.index, "tag": tags.to_numpy()}), on="message")
        self.tag = AsOfIndex(per_tag["tag"].to_numpy(), per_tag["day"].to_numpy(),
                             {w: per_tag[w].to_numpy() for w in RATE_WEIGHTS}, base)

    @staticmethod
    def _segment_counts(counted: pd.DataFrame, user_id: pd.Series, vocabulary: Vocabulary,
                        users: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Daily sends, opens and clicks per segment × channel and segment × topic (see :meth:`daily_counts`)."""
        codes, names = pd.factorize(user_id)
        row = pd.Index(users["user_id"].astype(str)).get_indexer(np.asarray(names, dtype=object))
        of_user = vocabulary.segments.codes(users)
        segment = np.append(np.where(row >= 0, of_user[np.maximum(row, 0)], -1), -1)[codes]
        message = counted["message"].to_numpy()
        topic = np.where(message >= 0, vocabulary.message_topic[np.maximum(message, 0)], -1)
        weights = ("sends", "opens", "clicks")
        out = {}
        for name, code, size in (("segment_channel", counted["channel"].to_numpy(), len(vocabulary.channels)),
                                 ("segment_topic", topic, vocabulary.topic_slots)):
            keep = (segment >= 0) & (code >= 0)
            frame = pd.DataFrame({"day": counted["day"].to_numpy()[keep], "key": pair(segment[keep], code[keep], size),
                                  **{w: counted[w].to_numpy()[keep] for w in weights}})
            out[name] = frame.groupby(["day", "key"], as_index=False, sort=False).sum()
        return out

    def indexes(self) -> list[AsOfIndex]:
        return [self.overall, self.channel, self.message, self.topic, self.tag,
                *(i for i in (self.segment_channel, self.segment_topic) if i is not None)]

    def _index(self, keys: np.ndarray, keep: np.ndarray) -> AsOfIndex:
        rows = self.daily[keep]
        return AsOfIndex(keys[keep], rows["day"].to_numpy(), {w: rows[w].to_numpy() for w in RATE_WEIGHTS}, self.base)

    @staticmethod
    def day_start(times: np.ndarray) -> np.ndarray:
        return times // DAY_NS * DAY_NS

    def rate(self, index: AsOfIndex, keys: np.ndarray, times: np.ndarray, outcome: str,
             prior: np.ndarray, strength: float) -> np.ndarray:
        """Population ``outcome`` / sends of each key before the day of ``t``, smoothed toward ``prior``."""
        totals = index.totals(keys, self.day_start(times), ("sends", outcome))
        return (totals[outcome] + strength * prior) / (totals["sends"] + strength)

    def segment_rate(self, by: str, segment: np.ndarray, keys: np.ndarray, times: np.ndarray, outcome: str,
                     parent: np.ndarray, strength: float) -> np.ndarray:
        """The ``by`` (``"channel"`` or ``"topic"``) rate of each row's segment before the day of ``t``, smoothed
        toward ``parent`` (the population's rate of the key); ``parent`` itself for rows without a segment
        (``segment`` −1), and for every row when no segments are configured."""
        index = self.segment_channel if by == "channel" else self.segment_topic
        if index is None or not (segment >= 0).any():
            return parent
        size = self.n_channels if by == "channel" else self.n_topics
        rate = self.rate(index, pair(np.maximum(segment, 0), keys, size), times, outcome, parent, strength)
        return np.where(segment >= 0, rate, parent)


class History:
    """As-of indexes over the events of a set of users (one partition, or everybody)."""

    def __init__(self, dataset: Dataset, vocabulary: Vocabulary, config: NbmConfig, base: int,
                 catalog_from: History | None = None) -> None:
        """``catalog_from``: a history of the same catalog and vocabulary whose catalog arrays are shared, not
        computed again (a live store of a few users beside the snapshot's, features/live.py)."""
        self._catalog_from = catalog_from
        events, users = dataset.events, dataset.users
        self.config, self.vocabulary, self.base = config, vocabulary, base
        self.users = pd.Index(users["user_id"].astype(str))
        self.user_frame = users.reset_index(drop=True)
        # Factorise each string column once (in C); the per-event codes come from the small uniques.
        user_codes, user_names = pd.factorize(events["user_id"])
        known = self.users.get_indexer(np.asarray(user_names, dtype=object))
        # Events of people without a users row are indexed under extra codes after the known users.
        extra = pd.Index(np.asarray(user_names, dtype=object)[known < 0])
        self.all_users = self.users.append(extra)
        user = np.where(known >= 0, known, len(self.users) + np.cumsum(known < 0) - 1)[user_codes]
        times = events["timestamp"].to_numpy(dtype="int64")
        channel = codes_in(events["channel"], vocabulary.channels)
        message = codes_in(events["message_id"], vocabulary.messages)
        topic = np.where(message >= 0, vocabulary.message_topic[np.maximum(message, 0)], -1)
        is_ = event_masks(events)
        # Activity of the lifecycle stage (features and decisions alike): the types nbm.lifecycle names.
        activity = np.logical_or.reduce([is_[kind] for kind in activity_events(config.lifecycle)])
        revenue = np.where(is_["convert"], events["value"].fillna(0.0).to_numpy(), 0.0)
        self.timezone = self._timezones(user)
        self._profile_arrays(dataset)
        # Segment code of each users row (`[features] segment_by`); none without segments.
        self.segment = (vocabulary.segments.codes(self.user_frame) if vocabulary.segments.active
                        else np.zeros(0, dtype=np.int64))

        # Each visit's local hour as an angle on the 24-hour clock: sums of its cosine and sine give the hour a
        # person visits around (the circular mean) and how concentrated their visits are.
        visit_angle = 2 * np.pi * local_time(times, self.timezone[user])[0] / 24
        self.user = AsOfIndex(user, times, {
            "visits": is_["visit"], "activity": activity, "converts": is_["convert"], "revenue": revenue,
            "opens": is_["open"], "clicks": is_["click"], "sends": is_["send"],
            "visit_cos": np.where(is_["visit"], np.cos(visit_angle), 0.0),
            "visit_sin": np.where(is_["visit"], np.sin(visit_angle), 0.0),
        }, base)
        self.last = {k: KeyedIndex(user[m], times[m], {"n": np.ones(int(m.sum()), dtype=bool)}, base, keep_times=True)
                     for k, m in (("activity", activity), ("open", is_["open"]), ("click", is_["click"]),
                                  ("convert", is_["convert"]), ("send", is_["send"]))}
        n_ch = len(vocabulary.channels)
        c_rows = channel >= 0
        lost = is_["unsubscribe"] | is_["bounce"]
        self.user_channel = KeyedIndex(pair(user[c_rows], channel[c_rows], n_ch), times[c_rows], {
            "sends": is_["send"][c_rows], "opens": is_["open"][c_rows], "clicks": is_["click"][c_rows],
            "lost": lost[c_rows]}, base, keep_times=True)
        t_rows = topic >= 0
        self.user_topic = KeyedIndex(pair(user[t_rows], topic[t_rows], vocabulary.topic_slots), times[t_rows], {
            "sends": is_["send"][t_rows], "opens": is_["open"][t_rows], "clicks": is_["click"][t_rows]}, base,
            keep_times=True)           # last_time: outcome-based suppression by topic (decision/contact.py)
        tags = pd.DataFrame({"row": np.flatnonzero(message >= 0), "message": message[message >= 0]}).merge(
            pd.DataFrame({"message": vocabulary.message_tags.index, "tag": vocabulary.message_tags.to_numpy()}),
            on="message")
        r = tags["row"].to_numpy()
        self.user_tag = KeyedIndex(pair(user[r], tags["tag"].to_numpy(), vocabulary.tag_slots), times[r],
                                   {"sends": is_["send"][r], "clicks": is_["click"][r]}, base)
        m_rows = message >= 0
        self.user_message = KeyedIndex(pair(user[m_rows], message[m_rows], vocabulary.message_slots), times[m_rows], {
            "sends": is_["send"][m_rows], "engaged": (is_["open"] | is_["click"])[m_rows]}, base, keep_times=True)
        self._hour_indexes(events, user, times, is_)

    def windows(self) -> list[tuple[AsOfIndex, tuple[int, ...]]]:
        """Each as-of index with the windows (days) the features query it over (features/compute.py)."""
        ninety = (90,)
        return [(self.user, (7, 30, 90)), (self.user_channel.index, (1, 7, 30, 90)),
                (self.user_topic.index, ninety), (self.user_tag.index, ninety), (self.user_hour.index, ninety),
                (self.visit_hour.index, ninety), (self.visit_weekday.index, ninety),
                (self.user_message.index, ()), *((k.index, ()) for k in self.last.values())]

    def segment_of(self, user: np.ndarray) -> np.ndarray:
        """Segment code of each user (the history's codes); −1 without segments or without a users row."""
        if not len(self.segment):
            return np.full(len(user), -1, dtype=np.int64)
        known = user < len(self.segment)
        return np.where(known, self.segment[np.where(known, user, 0)], -1)

    def indexes(self) -> list[AsOfIndex]:
        """Every as-of index of this history."""
        return [index for index, _ in self.windows()]

    def with_catalog(self, messages: pd.DataFrame, vocabulary: Vocabulary | None = None) -> History:
        """This history with the catalog's arrays (live windows, channels, stages, values, weights) of
        ``messages`` — the same messages (the vocabulary's) with other fields, or, with ``vocabulary``
        (:meth:`Vocabulary.extended`), new messages after them: the indexes are shared, not built again (what
        ``POST /messages`` changes in place)."""
        import copy

        out = copy.copy(self)
        if vocabulary is not None:
            out.vocabulary = vocabulary
            out.__dict__.pop("_topic_match", None)        # (which attributes name topics: worked out again)
            out._tag_arrays()
        out._catalog(messages)
        return out

    def _catalog(self, catalog: pd.DataFrame) -> None:
        """Catalog arrays by message code: live windows, value, business weight, channels, stages."""
        messages = catalog.set_index(catalog["message_id"].astype(str)).reindex(self.vocabulary.messages)
        # In nanoseconds whatever unit the caller's frame holds (pandas 3 makes microseconds of many inputs).
        start = pd.to_datetime(messages["start_at"], utc=True).dt.as_unit("ns")
        end = pd.to_datetime(messages["end_at"], utc=True).dt.as_unit("ns")
        self.catalog_arrays = {
            "start_at": np.where(start.notna(), start.to_numpy(dtype="int64", na_value=0), np.nan),
            "value": messages["value"].to_numpy(dtype=float),
            # Business weights of the arbitration (1 unless configured), by message code.
            "weight": self.config.arbitration.weights(self.vocabulary.messages,
                                                      self.vocabulary.topics[self.vocabulary.message_topic]),
        }
        channels = self.vocabulary.channels
        self.catalog_arrays["start_ns"] = start.to_numpy(dtype="int64", na_value=np.iinfo(np.int64).min)
        self.catalog_arrays["end_ns"] = end.to_numpy(dtype="int64", na_value=np.iinfo(np.int64).max)
        self.message_channels = _membership(messages["channels"], channels)
        stages = _membership(messages["lifecycle_stages"], pd.Index(LIFECYCLE_STAGES))
        stages[~stages.any(axis=1)] = True  # no targeting: every stage
        self.message_stages = stages

    def _profile_arrays(self, dataset: Dataset) -> None:
        """Catalog arrays by message code, the consent matrix, and codes of text attributes."""
        shared = self._catalog_from
        if shared is not None:
            self.catalog_arrays, self.message_channels = shared.catalog_arrays, shared.message_channels
            self.message_stages = shared.message_stages
        else:
            self._catalog(dataset.messages)
        del self._catalog_from
        channels = self.vocabulary.channels
        consent = np.zeros((len(self.user_frame), len(channels)), dtype=bool)
        lists = self.user_frame["consent"].explode().dropna() if len(self.user_frame) else pd.Series(dtype=object)
        column = channels.get_indexer(lists.astype(object).to_numpy())
        ok = column >= 0
        consent[lists.index.to_numpy()[ok], column[ok]] = True
        self.consent_matrix = consent
        frame = self.user_frame
        self.signup = (np.where(frame["signup_at"].notna(), frame["signup_at"].to_numpy(dtype="int64", na_value=0), np.nan)
                       if len(frame) else np.zeros(0))
        attributes = [c for c in frame.columns if c not in TABLES["users"].column_names]
        self.completeness = (frame[attributes].notna().mean(axis=1).to_numpy() if attributes
                             else np.zeros(len(frame)))
        # Numeric attributes as float arrays; text attributes as codes into sorted categories.
        self.attributes: dict[str, tuple[np.ndarray, pd.Index | None]] = {}
        for name in attributes:
            if pd.api.types.is_numeric_dtype(frame[name].dtype):
                self.attributes[name] = (frame[name].to_numpy(dtype=float), None)
            else:
                # Categories are global (one coding for every partition); unseen values are missing.
                categories = self.vocabulary.attributes.get(name, pd.Index([], dtype=object))
                self.attributes[name] = (categories.get_indexer(frame[name].astype(object).to_numpy()), categories)
        self._tag_arrays()

    def _tag_arrays(self) -> None:
        """Tags of each message as flat arrays (CSR): tags of message m are tag_codes[tag_start[m]:tag_start[m + 1]]."""
        order = np.argsort(self.vocabulary.message_tags.index.to_numpy(), kind="stable")
        owners = self.vocabulary.message_tags.index.to_numpy()[order]
        self.tag_codes = self.vocabulary.message_tags.to_numpy()[order]
        self.tag_start = np.searchsorted(owners, np.arange(len(self.vocabulary.messages) + 1))

    def _timezones(self, user: np.ndarray) -> np.ndarray:
        zones = self.user_frame["timezone"].astype(str).to_numpy() if len(self.user_frame) else np.array([], dtype=object)
        return np.concatenate([zones, np.full(len(self.all_users) - len(self.users), "UTC", dtype=object)]).astype(object)

    def _hour_indexes(self, events: pd.DataFrame, user: np.ndarray, times: np.ndarray, is_: dict[str, np.ndarray]) -> None:
        """user × local hour (sends, opens attributed to the send's hour, visits) and user × weekday (visits)."""
        self.attributed = attribute(events, self.config.attribution)
        sent = self.attributed.to_numpy()
        hour, weekday = local_time(times, self.timezone[user])
        # An open counts at the local hour of the send it answers.
        open_rows = np.flatnonzero(is_["open"] & (sent >= 0))
        send_rows = np.flatnonzero(is_["send"])
        rows = np.concatenate([send_rows, open_rows])
        at_hour = np.concatenate([hour[send_rows], hour[sent[open_rows]]])
        self.user_hour = KeyedIndex(pair(user[rows], at_hour, 24), times[rows], {
            "sends": np.r_[np.ones(len(send_rows)), np.zeros(len(open_rows))],
            "opens": np.r_[np.zeros(len(send_rows)), np.ones(len(open_rows))]}, self.base)
        visits = np.flatnonzero(is_["visit"])
        self.visit_hour = KeyedIndex(pair(user[visits], hour[visits], 24), times[visits],
                                     {"n": np.ones(len(visits))}, self.base)
        self.visit_weekday = KeyedIndex(pair(user[visits], weekday[visits], 7), times[visits],
                                        {"n": np.ones(len(visits))}, self.base)

    def _code_of(self, user_id) -> int:
        """Code of one user id, −1 when unknown (the first row of a duplicated id)."""
        try:
            code = self.all_users.get_loc(user_id)
        except KeyError:
            return -1
        if not isinstance(code, (int, np.integer)):
            code = int(np.flatnonzero(np.asarray(code))[0]) if np.asarray(code).dtype == bool else int(code.start)
        return int(code)

    def user_codes(self, user_ids: np.ndarray) -> np.ndarray:
        """Code of each user id; ids without history get codes past the known ones (no events)."""
        if len(user_ids) and (len(user_ids) == 1 or (user_ids == user_ids[0]).all()):  # one decision's candidates
            code = self._code_of(user_ids[0])                        # one hash lookup
            return np.full(len(user_ids), len(self.all_users) if code < 0 else code, dtype=np.int64)
        factor, uniques = pd.factorize(user_ids)   # hash the (many) ids once, look up the (fewer) distinct ones
        if len(uniques) <= FEW_USERS:               # a few decisions' candidates: hash lookups beat get_indexer
            found = np.array([self._code_of(u) for u in uniques.tolist()] + [-1], dtype=np.int64)
        else:
            found = np.append(self.all_users.get_indexer(np.asarray(uniques, dtype=object)), -1)
        codes = found[factor]
        missing = codes < 0
        codes[missing] = len(self.all_users) + np.arange(int(missing.sum()))
        return codes
