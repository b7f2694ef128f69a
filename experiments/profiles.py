"""``nbm profiles``: one row per customer — the "know your customer" view a CRM team exports to other tools.

Every number is read from the features (docs/features.md) as of ``now``, never defined again here:

* ``lifecycle_stage`` — ``user_lifecycle_stage``, the one definition of :mod:`nbm.lifecycle` (``[lifecycle]``);
* ``activity_state`` — ``user_activity_state`` (visits in 30 days against ``[activity]``);
* ``engagement_score`` and its parts ``engagement_explicit`` (profile completeness, consent breadth) and
  ``engagement_implicit`` (visits, opens, clicks, conversions in 30 days) — the model's features;
* ``preferred_channel`` — among the channels the person consented to and did not unsubscribe from or bounce
  on, the one of highest ``uc_click_rate`` (clicks per send in 90 days, shrunk toward the channel's
  population rate by empirical Bayes, :mod:`nbm.shrinkage`), with that rate and ``uc_open_rate``;
* ``preferred_hour`` — the local hour of highest ``uh_open_rate_near`` (opens per send at that hour ± 2 h,
  shrunk toward the person's own open rate); missing without an open in the 90 days (every hour would then
  be the prior alone);
* ``top_topic_k`` — the :data:`TOP_TOPICS` topics of highest ``ut_click_affinity`` (clicks per send of the
  topic in 90 days, shrunk toward the topic's population rate): with no history of their own a person
  gets the population's order;
* ``last_contact_at`` / ``last_contact_channel`` — the last ``send`` before ``now``; ``consent`` as in the
  ``users`` table, ``lost_channels`` those unsubscribed from or bounced on before ``now``.

The ``experiments`` package may not import ``features`` (DESIGN.md, "Layout"): the featuriser is handed in
(:class:`Featuriser`; ``nbm/cli.py`` wires ``features.pipeline.FeatureStore``), so the profile is built by
the very code the ranker is trained and served with.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from rich.console import Console

from nbm.config import LIFECYCLE_STAGES, NbmConfig
from nbm.dataset import Dataset, load_dataset
from nbm.errors import UnusableInputError, UsageError

__all__ = ["COLUMNS", "TOP_TOPICS", "Featuriser", "build_profiles", "default_now", "run_profiles", "write_profiles"]

DAY_NS, HOUR_NS = 86_400 * 10**9, 3_600 * 10**9
TOP_TOPICS = 3
"""Topics listed per person, best first."""
ACTIVITY_STATES = ("power", "core", "casual", "low")
"""Names of ``user_activity_state``'s codes (``features.declarations.ACTIVITY_CODES``)."""
SUFFIXES = {".parquet": "Parquet", ".csv": "CSV"}

COLUMNS: tuple[str, ...] = (
    "user_id", "as_of", "lifecycle_stage", "days_since_signup", "days_since_activity", "activity_state",
    "visits_30d", "engagement_score", "engagement_explicit", "engagement_implicit", "consent", "lost_channels",
    "preferred_channel", "preferred_channel_click_rate", "preferred_channel_open_rate", "preferred_hour",
    "preferred_hour_open_rate",
    *(f"top_topic_{k}{part}" for k in range(1, TOP_TOPICS + 1) for part in ("", "_click_rate")),
    "last_contact_at", "last_contact_channel",
)
"""The profile's columns, in order (docs/report.md, "Customer profiles")."""


class Featuriser(Protocol):
    """The feature frame (docs/features.md's columns) of candidates given as aligned arrays: one row each, in
    order; times int64 ns UTC. ``features.pipeline.FeatureStore.featurise`` of ``Candidates(...)``."""

    def __call__(self, user_id: np.ndarray, message_id: np.ndarray, channel: np.ndarray, as_of: np.ndarray,
                 send_at: np.ndarray) -> pd.DataFrame: ...


def default_now(dataset: Dataset) -> pd.Timestamp:
    """Just after the last event (1 ns): the features count events strictly before their time, so the last
    event counts too. Not the wall clock: a profile describes the data, however old."""
    if not len(dataset.events):
        raise UnusableInputError("the data has no events: give `--now` for the profiles' time")
    return dataset.events["timestamp"].max() + pd.Timedelta(1, "ns")


def build_profiles(dataset: Dataset, config: NbmConfig, now: pd.Timestamp, featurise: Featuriser) -> pd.DataFrame:
    """One row per user of ``dataset.users`` signed up by ``now`` (or of unknown signup), columns
    :data:`COLUMNS`; rates are shares in [0, 1], hours local hours 0–23, days floats."""
    users = dataset.users
    signup = users["signup_at"]
    users = users[signup.isna() | (signup < now)].reset_index(drop=True)
    ids = users["user_id"].to_numpy(dtype=object)
    n, t = len(ids), int(now.value)
    channels = tuple(config.channels)
    topic_of = dataset.messages.drop_duplicates("topic").sort_values("topic")
    topics, topic_message = topic_of["topic"].to_numpy(dtype=object), topic_of["message_id"].to_numpy(dtype=object)
    # Each user's candidates, in blocks: every configured channel, one message per topic, 24 send hours (one of
    # each local hour whatever the time zone). The user features are the same on every row.
    blocks = (len(channels), len(topics), 24)
    per_user = sum(blocks)
    hour_send = t + HOUR_NS * np.arange(24)
    user_id = np.repeat(ids, per_user)
    message = np.concatenate([np.full((n, blocks[0]), None, dtype=object),
                              np.broadcast_to(topic_message, (n, blocks[1])),
                              np.full((n, 24), None, dtype=object)], axis=1).ravel()
    channel = np.concatenate([np.broadcast_to(np.array(channels, dtype=object), (n, blocks[0])),
                              np.full((n, blocks[1] + 24), channels[0], dtype=object)], axis=1).ravel()
    send_at = np.concatenate([np.full((n, blocks[0] + blocks[1]), t, dtype=np.int64),
                              np.broadcast_to(hour_send, (n, 24))], axis=1).ravel()
    frame = featurise(user_id, message, channel, np.full(len(user_id), t, dtype=np.int64), send_at)

    def block(k: int, column: str) -> np.ndarray:
        """(users × candidates of block ``k``) values of feature ``column``."""
        start = sum(blocks[:k])
        values = frame[column].to_numpy(dtype=np.float64).reshape(n, per_user)
        return values[:, start:start + blocks[k]]

    user = frame.iloc[::per_user].reset_index(drop=True) if n else frame
    out = pd.DataFrame({"user_id": ids, "as_of": pd.Series(np.full(n, now), dtype="datetime64[ns, UTC]")})
    out["lifecycle_stage"] = np.asarray(LIFECYCLE_STAGES, dtype=object)[user["user_lifecycle_stage"].to_numpy(np.int64)]
    out["days_since_signup"] = user["user_days_since_signup"].to_numpy(np.float64)
    out["days_since_activity"] = user["user_days_since_visit"].to_numpy(np.float64)
    out["activity_state"] = np.asarray(ACTIVITY_STATES, dtype=object)[user["user_activity_state"].to_numpy(np.int64)]
    out["visits_30d"] = user["user_visits_30d"].to_numpy(np.float64).round().astype(np.int64)
    for part in ("score", "explicit", "implicit"):
        out[f"engagement_{part}"] = user[f"user_engagement_{part}"].to_numpy(np.float64)

    consent, lost = _channel_matrix(users["consent"], channels), _lost_channels(dataset.events, ids, channels, t)
    out["consent"], out["lost_channels"] = _joined(consent, channels), _joined(lost, channels)
    clicks, opens = block(0, "uc_click_rate"), block(0, "uc_open_rate")
    reachable = consent & ~lost
    best = np.argmax(np.where(reachable, clicks, -np.inf), axis=1)
    has = reachable.any(axis=1)
    rows = np.arange(n)
    out["preferred_channel"] = np.where(has, np.asarray(channels, dtype=object)[best], None)
    out["preferred_channel_click_rate"] = np.where(has, clicks[rows, best], np.nan)
    out["preferred_channel_open_rate"] = np.where(has, opens[rows, best], np.nan)

    hour_rate, local_hour = block(2, "uh_open_rate_near"), block(2, "time_local_hour").astype(np.int64)
    peak = np.argmax(hour_rate, axis=1)
    opened = _opens_in_90_days(dataset.events, ids, t) > 0
    out["preferred_hour"] = pd.Series(local_hour[rows, peak], dtype="Int64").mask(~opened)
    out["preferred_hour_open_rate"] = np.where(opened, hour_rate[rows, peak], np.nan)

    affinity = block(1, "ut_click_affinity")
    order = np.argsort(-affinity, axis=1, kind="stable")
    for k in range(TOP_TOPICS):
        have = k < len(topics)
        out[f"top_topic_{k + 1}"] = topics[order[:, k]] if have else None
        out[f"top_topic_{k + 1}_click_rate"] = affinity[rows, order[:, k]] if have else np.nan

    out["last_contact_at"], out["last_contact_channel"] = _last_contact(dataset.events, ids, t)
    return out[list(COLUMNS)]


def _channel_matrix(lists: pd.Series, channels: tuple[str, ...]) -> np.ndarray:
    """(rows × channels) bool: which ``channels`` each row's list holds."""
    exploded = lists.reset_index(drop=True).explode().dropna()
    column = pd.Index(channels).get_indexer(exploded.astype(object).to_numpy())
    out = np.zeros((len(lists), len(channels)), dtype=bool)
    out[exploded.index.to_numpy()[column >= 0], column[column >= 0]] = True
    return out


def _joined(matrix: np.ndarray, channels: tuple[str, ...]) -> np.ndarray:
    """Each row's channels, ``;``-joined as the data contract writes lists in CSV (``""``: none)."""
    names = np.array(channels, dtype=object)
    return np.array([";".join(names[row]) for row in matrix], dtype=object)


def _user_events(events: pd.DataFrame, ids: np.ndarray, t: int, types: tuple[str, ...],
                 since: int | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """The events of ``types`` in ``[since, t)`` (all before ``t`` when ``since`` is None), and each one's row in
    ``ids`` (events of other users left out)."""
    stamps = events["timestamp"].to_numpy(dtype="datetime64[ns]").view("int64")
    keep = events["event_type"].isin(types).to_numpy() & (stamps < t) & (stamps >= (since or np.iinfo(np.int64).min))
    chosen = events[keep]
    row = pd.Index(ids).get_indexer(chosen["user_id"].to_numpy(dtype=object))
    return chosen[row >= 0], row[row >= 0]


def _lost_channels(events: pd.DataFrame, ids: np.ndarray, channels: tuple[str, ...], t: int) -> np.ndarray:
    """(users × channels) bool: an unsubscribe or a bounce on the channel before ``t`` (the features' ``lost``)."""
    chosen, row = _user_events(events, ids, t, ("unsubscribe", "bounce"))
    column = pd.Index(channels).get_indexer(chosen["channel"].to_numpy(dtype=object))
    out = np.zeros((len(ids), len(channels)), dtype=bool)
    out[row[column >= 0], column[column >= 0]] = True
    return out


def _opens_in_90_days(events: pd.DataFrame, ids: np.ndarray, t: int) -> np.ndarray:
    """Opens per user in the 90 days before ``t`` (the hour features' window)."""
    _, row = _user_events(events, ids, t, ("open",), since=t - 90 * DAY_NS)
    return np.bincount(row, minlength=len(ids))


def _last_contact(events: pd.DataFrame, ids: np.ndarray, t: int) -> tuple[pd.Series, np.ndarray]:
    """Time (UTC; NaT: never) and channel of each user's last send before ``t``."""
    chosen, row = _user_events(events, ids, t, ("send",))
    # events are sorted by (timestamp, event_id): the last row of each user is their last send
    last = pd.Series(np.arange(len(row))).groupby(row).last()
    at = pd.Series(pd.NaT, index=range(len(ids)), dtype="datetime64[ns, UTC]")
    channel = np.full(len(ids), None, dtype=object)
    at.iloc[last.index.to_numpy()] = chosen["timestamp"].to_numpy()[last.to_numpy()]
    channel[last.index.to_numpy()] = chosen["channel"].to_numpy(dtype=object)[last.to_numpy()]
    return at, channel


def check_out(out: Path) -> None:
    """``out`` names a Parquet or CSV file (by its suffix), not a directory."""
    if Path(out).is_dir():
        raise UsageError(f"`--out`: {str(out)!r} is a directory; name the file (e.g. {str(Path(out) / 'profiles.parquet')!r})")
    if Path(out).suffix.lower() not in SUFFIXES:
        raise UsageError(f"`--out`: the file's suffix says its format, one of {', '.join(SUFFIXES)}; got {str(out)!r}")


def write_profiles(profiles: pd.DataFrame, out: Path) -> Path:
    """Write ``profiles`` to ``out``, Parquet or CSV by its suffix (CSV: times ISO-8601, missing values empty)."""
    out = Path(out)
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        profiles.to_csv(out, index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ", float_format="%.6g")
    else:
        profiles.to_parquet(out, index=False)
    return out


def run_profiles(data: Path, out: Path, config: NbmConfig, now: pd.Timestamp | None,
                 featuriser_for: Callable[[Dataset, NbmConfig], Featuriser]) -> int:
    """Run ``nbm profiles``: the written path on stdout, a summary on stderr; exit code 0, or 1 when the loader
    dropped bad input rows (the profiles are still written)."""
    check_out(out)
    console = Console(stderr=True)
    with console.status(f"loading {data}…"):
        dataset, quality = load_dataset(Path(data), config)
    now = default_now(dataset) if now is None else now
    with console.status("computing the profiles…"):
        profiles = build_profiles(dataset, config, now, featuriser_for(dataset, config))
        written = write_profiles(profiles, out)
    stages = profiles["lifecycle_stage"].value_counts()
    mix = ", ".join(f"{s} {stages.get(s, 0):,}" for s in LIFECYCLE_STAGES if stages.get(s, 0))
    console.print(f"{len(profiles):,} profiles as of {now.isoformat()} ({mix or 'no users'})", highlight=False)
    later = len(dataset.users) - len(profiles)
    if later:
        console.print(f"  note: {later:,} users signed up after that time are left out", highlight=False)
    if quality.dropped_rows:
        console.print(f"  problem: {quality.dropped_rows:,} bad input rows were dropped by the loader "
                      "(`nbm validate` names them)", highlight=False)
    print(written)
    return 1 if quality.dropped_rows else 0
