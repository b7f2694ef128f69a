"""The audience report's numbers: lifecycle and activity per week, their KPIs, channels, messages, identities.

Weeks run from ``start`` in steps of 7 days; the last one ends at ``end`` (it may be shorter). Instant ``k`` is
the start of week ``k`` (instant ``W`` is ``end``). At each instant every user has a lifecycle stage and an
activity state, from the events strictly before it (the history before ``start`` counts):

* stage (:mod:`nbm.lifecycle`, the features' and the decisions' definition): days since signup < ``new_days``
  → ``new``; else days since the last activity — a visit, click or conversion — ≤ ``at_risk_after_days``
  → ``active``; ≤ ``dormant_after_days`` → ``at_risk``; else, or no activity, ``dormant``;
* activity state (visits only): visits in the 30 days before the instant ÷ (``ideal_visits_per_week`` × 30/7)
  ≥ ``power_ratio`` → ``power``, ≥ ``core_ratio`` → ``core``, ≥ ``casual_ratio`` → ``casual``, else ``low``.

Stage and state counts are taken at each week's end among users signed up before it; transitions go from a
week's start to its end among users signed up before its start. KPIs of week ``k`` segment its users (signed up
before the week's end) by their stage and state at the week's *start* — the segment is fixed before the outcomes
it is compared with; a user who signs up during the week is ``new`` and ``low``.

Also: retention by signup cohort (activity in each user's own weeks after signup), DAU / WAU / MAU and
stickiness per day — both counting the operator's ``[lifecycle] activity_events`` — and, given the features'
featuriser, the engagement score's distribution by stage at the period's end (docs/report.md has each definition).

Every figure is one row of a long frame (:data:`FIGURE_COLUMNS`): ``value = count / n`` for shares, rates and
means, so a reader (and a test) can recompute it. An empty segment has ``n = 0`` and ``value`` NaN with a note.
Everything is computed with ``np.bincount`` over per-user × per-week cells. Pure: no files, no printing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from experiments.ab import ALL, DAY_NS, MISSING, NAT, NO_CHANNEL, _attribute, _check_by, _ns, preferred_channel
from experiments.profiles import Featuriser
from nbm.attribution import attribute
from nbm.config import NbmConfig
from nbm.dataset import Dataset
from nbm.errors import UnusableInputError, UsageError
from nbm.lifecycle import activity_events, stages_at, stages_in_use
from nbm.validation_report import ValidationReport
from nbm.schema import EVENT_TYPES

WEEK_NS = 7 * DAY_NS
ACTIVITY_WINDOW_DAYS = 30
ACTIVITY_STATES = ("power", "core", "casual", "low")
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MAX_CONTACTS_SHOWN = 10
"""The contact distribution's last bin is ``10+``."""
NO_USERS = "no users"

FIGURE_COLUMNS = ("section", "period", "segment", "segment_value", "metric", "value", "count", "n", "ci_low",
                  "ci_high", "note")


@dataclass(frozen=True)
class Kpi:
    """A per-user KPI of one week: the share of users with ≥ 1 ``event`` (``value`` empty), or ``value``'s sum."""

    name: str
    event: str
    description: str
    summed: bool = False


KPIS: tuple[Kpi, ...] = (
    Kpi("reach", "send", "share of users sent at least one message in the week"),
    Kpi("open_rate", "open", "share of users with at least one open in the week"),
    Kpi("click_rate", "click", "share of users with at least one click in the week"),
    Kpi("convert_rate", "convert", "share of users with at least one conversion in the week"),
    Kpi("revenue_per_user", "convert", "conversion revenue (`value`) in the week per user, zeros included", True),
    Kpi("unsubscribe_rate", "unsubscribe", "share of users who unsubscribed in the week"),
    Kpi("bounce_rate", "bounce", "share of users with at least one bounce in the week"),
)
ENGAGEMENT = ("open", "click", "bounce", "unsubscribe")
"""Events counted per send of a channel (``opens_per_send`` …)."""


@dataclass(frozen=True)
class AudienceReport:
    """The report's figures. ``figures`` is long format (:data:`FIGURE_COLUMNS`), one row per period × segment ×
    metric, ``period`` the week's start date (``YYYY-MM-DD``) or ``all``. ``messages``: one row per topic ×
    channel with sends, the sends opened, clicked and bounced, and Wilson intervals. ``quality``: the validation report."""

    start: pd.Timestamp
    end: pd.Timestamp
    weeks: tuple[str, ...]
    figures: pd.DataFrame
    messages: pd.DataFrame
    quality: ValidationReport
    segments: tuple[str, ...]
    notes: tuple[str, ...]

    def section(self, name: str) -> pd.DataFrame:
        """The rows of one section (e.g. ``"lifecycle"``, ``"kpi"``)."""
        return self.figures[self.figures["section"] == name]


def analyze(dataset: Dataset, config: NbmConfig, quality: ValidationReport | None = None,
            start: pd.Timestamp | None = None, end: pd.Timestamp | None = None,
            by: str | None = None, featurise: Featuriser | None = None) -> AudienceReport:
    """All figures of the audience report over ``[start, end)`` (default: the days the events cover).

    ``featurise`` (the features' featuriser, :class:`experiments.profiles.Featuriser`, handed in by the CLI:
    ``experiments`` may not import ``features``) gives the engagement score's distribution by stage at the
    period's end; without it that section is left out.

    Raises
    ------
    UsageError
        ``start`` not before ``end``; ``by`` not a user attribute.
    UnusableInputError
        No events and no period given.
    """
    _check_by(dataset.users, by)
    events = dataset.events
    if not len(events) and (start is None or end is None):
        raise UnusableInputError("`nbm report`: the data has no events; give --from and --to for a period")
    t_all = _ns(events["timestamp"])
    t0 = int(start.value) if start is not None else int(t_all.min() - t_all.min() % DAY_NS)
    t1 = int(end.value) if end is not None else int(t_all.max() - t_all.max() % DAY_NS + DAY_NS)
    if t1 <= t0:
        raise UsageError(f"`--from` ({pd.Timestamp(t0, tz='UTC')}) must be before `--to` ({pd.Timestamp(t1, tz='UTC')})")
    n_weeks = -(-(t1 - t0) // WEEK_NS)
    instants = np.minimum(t0 + WEEK_NS * np.arange(n_weeks + 1), t1)
    weeks = tuple(f"{pd.Timestamp(t, tz='UTC'):%Y-%m-%d}" for t in instants[:-1])
    notes = []
    if (t1 - t0) % WEEK_NS:
        notes.append(f"the last week ({weeks[-1]}) is shorter: {((t1 - t0) % WEEK_NS) / DAY_NS:g} days")
    notes += _history_notes(int(t_all.min()) if len(t_all) else t0, t0, t1, config)

    users = dataset.users.reset_index(drop=True)
    index = pd.Index(users["user_id"])
    pos = index.get_indexer(events["user_id"])
    kind = pd.Categorical(events["event_type"], categories=EVENT_TYPES).codes
    unknown = int((pos < 0).sum())
    if unknown:
        notes.append(f"{unknown:,} events of users not in the `users` table are left out")
    cells = _Cells(pos, kind, t_all, events, instants, len(users), config.channels)
    stage, activity = states_at(events, users, cells, instants, config)
    signup = _ns(users["signup_at"])
    signed_up = (signup == NAT)[:, None] | (signup[:, None] < instants[None, :])

    stages = stages_in_use(config.lifecycle)
    segments = {"lifecycle": (stage[:, :-1], stages), "activity": (activity[:, :-1], ACTIVITY_STATES)}
    channel, channels = preferred_channel(users, config)
    segments["channel"] = (np.repeat(channel[:, None], n_weeks, axis=1), channels)
    if by is not None:
        name, values, order = _attribute(users.set_index("user_id"), by, notes)
        codes = pd.Index(order).get_indexer(values)
        segments[name] = (np.repeat(codes[:, None], n_weeks, axis=1), tuple(order))
    in_week = signed_up[:, 1:]
    frames = [
        _state_counts("lifecycle", stage[:, 1:], stages, signed_up[:, 1:], weeks),
        _state_counts("activity", activity[:, 1:], ACTIVITY_STATES, signed_up[:, 1:], weeks),
        _transitions(stage, stages, signed_up, weeks),
        _kpis(cells, segments, in_week, weeks),
        _consent(users, config),
        _contacts(cells, in_week, weeks, config),
        _channel_engagement(cells, weeks, config),
        _hours(cells, users),
        _identities(dataset, cells, weeks),
        _retention(cells, signup, instants, weeks, config),
        _active_users(cells, t0, t1, config),
    ]
    if featurise is not None:
        frames.append(_engagement(users, stage[:, -1], signed_up[:, -1], stages, t1, featurise))
    messages = _messages(dataset, cells, config)
    frames.append(_message_rows(messages))
    if quality is not None:
        frames.append(_quality(quality))
    figures = pd.concat([f for f in frames if len(f)], ignore_index=True)
    empty = figures["n"] == 0
    figures.loc[empty, "value"] = np.nan
    figures.loc[empty & (figures["note"] == ""), "note"] = NO_USERS
    return AudienceReport(pd.Timestamp(t0, tz="UTC"), pd.Timestamp(t1, tz="UTC"), weeks,
                          figures[list(FIGURE_COLUMNS)], messages, quality or ValidationReport(),
                          tuple(segments), tuple(notes))


def _activity_mask(cells: _Cells, config: NbmConfig) -> np.ndarray:
    """The events that count as activity: the operator's ``[lifecycle] activity_events`` (:mod:`nbm.lifecycle`)."""
    return np.isin(cells.kind, [EVENT_TYPES.index(e) for e in activity_events(config.lifecycle)])


def _history_notes(first_event: int, t0: int, t1: int, config: NbmConfig) -> list[str]:
    """Warnings for weeks that see less history than the thresholds need: a user without activity since the
    events begin counts as dormant, and activity states count the visits of the 30 days before."""
    notes = []
    day = lambda t: f"{pd.Timestamp(t, tz='UTC'):%Y-%m-%d}"   # noqa: E731
    dormant_from = first_event + int(config.lifecycle.dormant_after_days * DAY_NS)
    if t0 < dormant_from:
        notes.append(f"the events begin on {day(first_event)}: until {day(min(dormant_from, t1))} a user with no "
                     f"activity in the data is `dormant` for lack of history (the threshold is "
                     f"{config.lifecycle.dormant_after_days:g} days), so the dormant share is overstated there")
    activity_from = first_event + 30 * DAY_NS
    if t0 < activity_from:
        notes.append(f"activity states count the visits of the 30 days before each week's end: until "
                     f"{day(min(activity_from, t1))} that window reaches before the events begin, so `low` is "
                     f"overstated there")
    return notes


# --------------------------------------------------------------------------------------------- the cells


class _Cells:
    """The events of known users as positions, kinds, times and week indices (``-1``: outside the period)."""

    def __init__(self, pos: np.ndarray, kind: np.ndarray, t: np.ndarray, events: pd.DataFrame,
                 instants: np.ndarray, n_users: int, channels: tuple[str, ...]) -> None:
        known = pos >= 0
        self.n_users, self.n_weeks = n_users, len(instants) - 1
        self.rows = np.flatnonzero(known)
        week = np.searchsorted(instants, t, side="right") - 1
        self.week_of_all = np.where(week < self.n_weeks, week, -1)
        """Week of every event, known user or not."""
        self.pos, self.kind, self.t, self.week = pos[known], kind[known], t[known], self.week_of_all[known]
        self.value = events["value"].to_numpy(dtype=float, na_value=0.0)[known]
        self.channel = pd.Categorical(events["channel"], categories=channels).codes[known]
        """Code into the configured channels; ``-1`` for none."""

    def of(self, event: str, in_period: bool = True) -> np.ndarray:
        """Boolean mask of the events of type ``event`` (within the period's weeks when ``in_period``)."""
        mask = self.kind == EVENT_TYPES.index(event)
        return mask & (self.week >= 0) if in_period else mask

    def per_user_week(self, mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """``(n_users, n_weeks)``: count (or sum of ``weights``) of the ``mask`` events per user and week."""
        flat = self.pos[mask] * self.n_weeks + self.week[mask]
        return np.bincount(flat, weights=None if weights is None else weights[mask],
                           minlength=self.n_users * self.n_weeks).reshape(self.n_users, self.n_weeks)


def states_at(events: pd.DataFrame, users: pd.DataFrame, cells: _Cells, instants: np.ndarray,
              config: NbmConfig) -> tuple[np.ndarray, np.ndarray]:
    """Lifecycle stage and activity state codes, ``(n_users, len(instants))``, from the events strictly before
    each instant.

    Codes index :data:`LIFECYCLE_STAGES` and :data:`ACTIVITY_STATES`. The stage is :func:`nbm.lifecycle.stages_at`
    — the definition of the features and the decisions: days since the last activity (a visit, click or
    conversion), taken in int64 nanoseconds, so that a visit exactly ``at_risk_after_days`` before is still
    ``active``. The activity state counts visits alone (:func:`activity_states_at`).
    """
    n, k = cells.n_users, len(instants)
    ids = np.repeat(users["user_id"].to_numpy(dtype=object), k)
    stage = stages_at(events, users, ids, np.tile(instants, n), config.lifecycle).reshape(n, k)
    return stage, activity_states_at(cells, instants, config)


def activity_states_at(cells: _Cells, instants: np.ndarray, config: NbmConfig) -> np.ndarray:
    """Activity state codes (into :data:`ACTIVITY_STATES`), ``(n_users, len(instants))``: the *visits* of the 30
    days before each instant against ``[activity]``'s ideal frequency — visits alone, unlike the activity
    (visit, click or conversion) of the lifecycle stage."""
    n, k = cells.n_users, len(instants)
    visit = cells.of("visit", in_period=False)
    pos, t = cells.pos[visit], cells.t[visit]
    # visits in [instant − 30 d, instant): counts below each of the 2k sorted thresholds, in one bincount
    thresholds = np.r_[instants - ACTIVITY_WINDOW_DAYS * DAY_NS, instants]
    order = np.argsort(thresholds, kind="stable")
    slot = np.searchsorted(thresholds[order], t, side="right")
    below = np.cumsum(np.bincount(pos * (2 * k + 1) + slot, minlength=n * (2 * k + 1)).reshape(n, 2 * k + 1),
                      axis=1)
    rank = np.empty(2 * k, dtype=np.int64)
    rank[order] = np.arange(2 * k)
    visits = below[:, rank[k:]] - below[:, rank[:k]]
    ratio = visits / (config.activity.ideal_visits_per_week * ACTIVITY_WINDOW_DAYS / 7)
    ac = config.activity
    return np.select([ratio >= ac.power_ratio, ratio >= ac.core_ratio, ratio >= ac.casual_ratio], [0, 1, 2],
                     3).astype(np.int8)


# ---------------------------------------------------------------------------------------------- sections


def _rows(section: str, period, segment: str, segment_value, metric, count, n, note="") -> pd.DataFrame:
    """A block of figure rows; arrays broadcast. ``value = count / n`` (NaN where ``n`` is 0)."""
    count, n = np.asarray(count, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(n > 0, count / np.where(n > 0, n, 1), np.nan)
    frame = pd.DataFrame({"period": period, "segment": segment, "segment_value": segment_value, "metric": metric,
                          "value": value, "count": count, "n": n, "note": note},
                         index=range(np.broadcast(np.asarray(period, dtype=object), value).size))
    frame.insert(0, "section", section)
    frame["ci_low"], frame["ci_high"] = np.nan, np.nan
    return frame


def _by_code(codes: np.ndarray, n_codes: int, mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``(n_codes, n_weeks)`` sums of ``weights`` (or counts) over the user × week cells in ``mask``."""
    n_weeks = codes.shape[1]
    flat = (codes * n_weeks + np.arange(n_weeks)[None, :])[mask]
    w = None if weights is None else weights[mask]
    return np.bincount(flat, weights=w, minlength=n_codes * n_weeks).reshape(n_codes, n_weeks)


def _state_counts(section: str, codes: np.ndarray, names: tuple[str, ...], alive: np.ndarray,
                  weeks: tuple[str, ...]) -> pd.DataFrame:
    """Users per stage (state) at each week's end and their share of the users signed up by then."""
    counts = _by_code(codes.astype(np.int64), len(names), alive)
    total = alive.sum(axis=0)
    grid = np.broadcast_to(np.array(weeks, dtype=object)[None, :], counts.shape)
    name = np.broadcast_to(np.array(names, dtype=object)[:, None], counts.shape)
    return _rows(section, grid.ravel(), section, name.ravel(), "share_of_users", counts.ravel(),
                 np.broadcast_to(total, counts.shape).ravel())


def _transitions(stage: np.ndarray, stages: tuple[str, ...], signed_up: np.ndarray,
                 weeks: tuple[str, ...]) -> pd.DataFrame:
    """Week ``k``: users by (stage at its start, stage at its end) among those signed up before its start
    (``stages``: the names of the codes in use).

    ``value`` is the share of the ``from`` stage's users who end in ``to``; period ``all`` sums the weeks."""
    s = len(stages)
    pair = stage[:, :-1].astype(np.int64) * s + stage[:, 1:]
    counts = _by_code(pair, s * s, signed_up[:, :-1]).reshape(s, s, len(weeks))
    frames = []
    for period, block in [*zip(weeks, np.moveaxis(counts, 2, 0)), (ALL, counts.sum(axis=2))]:
        frm = np.repeat(np.array(stages, dtype=object), s)
        to = np.tile(np.array([f"to_{x}" for x in stages], dtype=object), s)
        frames.append(_rows("transitions", period, "from_stage", frm, to, block.ravel(),
                            np.repeat(block.sum(axis=1), s)))
    return pd.concat(frames, ignore_index=True)


def _kpis(cells: _Cells, segments: dict[str, tuple[np.ndarray, tuple[str, ...]]], in_week: np.ndarray,
          weeks: tuple[str, ...]) -> pd.DataFrame:
    """Every KPI per week × segment value, and over all weeks per user-week (period ``all``)."""
    per_cell = {}
    for kpi in KPIS:
        mask = cells.of(kpi.event)
        per_cell[kpi.name] = (cells.per_user_week(mask, cells.value) if kpi.summed
                              else (cells.per_user_week(mask) > 0).astype(float))
    everyone = np.zeros(in_week.shape, dtype=np.int64)
    frames = []
    for segment, (codes, names) in {ALL: (everyone, (ALL,)), **segments}.items():
        valid = in_week & (codes >= 0)
        codes = np.where(codes >= 0, codes, 0).astype(np.int64)
        n = _by_code(codes, len(names), valid)
        for kpi in KPIS:
            count = _by_code(codes, len(names), valid, per_cell[kpi.name])
            for period, c, m in [*zip(weeks, count.T, n.T), (ALL, count.sum(axis=1), n.sum(axis=1))]:
                frames.append(_rows("kpi", period, segment, np.array(names, dtype=object), kpi.name, c, m))
    return pd.concat(frames, ignore_index=True)


def _consent(users: pd.DataFrame, config: NbmConfig) -> pd.DataFrame:
    """Share of the ``users`` table consenting to each configured channel."""
    consent = users["consent"].explode().dropna()
    counts = consent.groupby(consent.index).unique().explode().value_counts()
    return _rows("consent", ALL, "channel", np.array(config.channels, dtype=object), "consent_share",
                 counts.reindex(list(config.channels), fill_value=0).to_numpy(), len(users))


def _contacts(cells: _Cells, in_week: np.ndarray, weeks: tuple[str, ...], config: NbmConfig) -> pd.DataFrame:
    """Sends per user-week: mean per channel and in all, share above the weekly caps, and their distribution.

    Users are those signed up before the week's end; weeks are the report's weeks (not rolling windows)."""
    send = cells.of("send")
    channel = cells.channel
    policy = config.contact_policy
    frames, total = [], np.zeros(in_week.shape)
    users = in_week.sum(axis=0)
    for code, name in enumerate(config.channels):
        sends = cells.per_user_week(send & (channel == code)) * in_week
        total += sends
        frames += [_rows("contacts", list(weeks), "channel", name, "contacts_per_user", sends.sum(axis=0), users),
                   _rows("contacts", list(weeks), "channel", name, "share_above_channel_cap",
                         (sends > policy.weekly_cap(name)).sum(axis=0), users)]
    frames += [_rows("contacts", list(weeks), ALL, ALL, "contacts_per_user", total.sum(axis=0), users),
               _rows("contacts", list(weeks), ALL, ALL, "share_above_total_cap",
                     (total > policy.weekly_cap_total).sum(axis=0), users)]
    binned = np.minimum(total[in_week], MAX_CONTACTS_SHOWN).astype(np.int64)
    labels = [str(i) for i in range(MAX_CONTACTS_SHOWN)] + [f"{MAX_CONTACTS_SHOWN}+"]
    frames.append(_rows("contact_distribution", ALL, "contacts_in_week", np.array(labels, dtype=object),
                        "share_of_user_weeks", np.bincount(binned, minlength=len(labels)), in_week.sum()))
    return pd.concat(frames, ignore_index=True)


def _channel_engagement(cells: _Cells, weeks: tuple[str, ...], config: NbmConfig) -> pd.DataFrame:
    """Per week × channel: sends, and opens, clicks, bounces, unsubscribes per send (event counts)."""
    channel = cells.channel
    c = len(config.channels)

    def per_week(event: str) -> np.ndarray:
        mask = cells.of(event) & (channel >= 0)
        return np.bincount(channel[mask] * cells.n_weeks + cells.week[mask],
                           minlength=c * cells.n_weeks).reshape(c, cells.n_weeks)

    sends = per_week("send")
    names = np.array(config.channels, dtype=object)
    frames = [_rows("channel_engagement", period, "channel", names, "sends", s, np.where(s > 0, 1, 0))
              for period, s in [*zip(weeks, sends.T), (ALL, sends.sum(axis=1))]]
    for event in ENGAGEMENT:
        counts = per_week(event)
        frames += [_rows("channel_engagement", period, "channel", names, f"{event}s_per_send", x, s)
                   for period, x, s in [*zip(weeks, counts.T, sends.T), (ALL, counts.sum(axis=1), sends.sum(axis=1))]]
    frame = pd.concat(frames, ignore_index=True)
    sent = frame["metric"] == "sends"
    frame.loc[sent, "value"], frame.loc[sent, "n"] = frame.loc[sent, "count"], np.nan
    return frame


def _hours(cells: _Cells, users: pd.DataFrame) -> pd.DataFrame:
    """Opens and clicks by the user's local weekday × hour: each cell's share of all of them in the period."""
    mask = cells.of("open") | cells.of("click")
    zone_code, zones = pd.factorize(users["timezone"].fillna("UTC"))
    zone = zone_code[cells.pos[mask]]
    t = cells.t[mask]
    hour, weekday = np.zeros(len(t), dtype=np.int64), np.zeros(len(t), dtype=np.int64)
    for i, name in enumerate(zones):
        inside = zone == i
        local = pd.DatetimeIndex(pd.to_datetime(t[inside], utc=True)).tz_convert(name)
        hour[inside], weekday[inside] = local.hour, local.day_of_week
    counts = np.bincount(weekday * 24 + hour, minlength=7 * 24)
    return _rows("engagement_hours", ALL, "weekday", np.repeat(np.array(WEEKDAYS, dtype=object), 24),
                 np.tile(np.array([f"hour_{h:02d}" for h in range(24)], dtype=object), 7), counts, counts.sum())


def _identities(dataset: Dataset, cells: _Cells, weeks: tuple[str, ...]) -> pd.DataFrame:
    """Identifiers per person of the ``users`` table (1 when in no link), and events logged under a linked one."""
    per_person = dataset.identity.identifiers_per_person
    ids = per_person.reindex(dataset.users["user_id"]).fillna(1).to_numpy(dtype=np.int64)
    labels = ["1", "2", "3", "4+"]
    binned = np.bincount(np.minimum(ids, 4) - 1, minlength=4)
    frames = [_rows("identities", ALL, "people", ALL, "identifiers_per_person", ids.sum(), len(ids)),
              _rows("identities", ALL, "identifiers", np.array(labels, dtype=object), "share_of_people", binned,
                    len(ids))]
    events = dataset.events
    linked = (events["user_id"] != events["source_user_id"]).to_numpy()
    week = cells.week_of_all
    inside = week >= 0
    n = np.bincount(week[inside], minlength=len(weeks))
    k = np.bincount(week[inside], weights=linked[inside], minlength=len(weeks))
    frames += [_rows("identities", list(weeks), ALL, ALL, "share_of_events_linked", k, n),
               _rows("identities", ALL, ALL, ALL, "share_of_events_linked", k.sum(), n.sum())]
    return pd.concat(frames, ignore_index=True)


def _messages(dataset: Dataset, cells: _Cells, config: NbmConfig) -> pd.DataFrame:
    """Per topic × channel over the period: sends, and the sends opened, clicked and bounced (each open, click
    or bounce attributed to its send as the training labels are: ``nbm.attribution``), with the rates of
    those among the sends and their Wilson 95 % intervals. A send opened twice counts once: a rate is ≤ 1."""
    events = dataset.events
    catalog = dataset.messages
    target = attribute(events, config.attribution, also=("bounce",)).to_numpy()
    kinds = ("open", "click", "bounce")
    flags = {}
    for k in kinds:
        hit = np.zeros(len(events), dtype=bool)
        rows = np.flatnonzero((events["event_type"] == k).to_numpy() & (target >= 0))
        hit[target[rows]] = True
        flags[k] = hit[cells.rows]
    sends = cells.of("send")
    message = pd.Categorical(events["message_id"], categories=catalog["message_id"]).codes[cells.rows][sends]
    channels = np.array([*config.channels, NO_CHANNEL], dtype=object)
    topic_code, topic_names = pd.factorize(catalog["topic"], sort=True)
    topic = np.r_[topic_code, len(topic_names)][message]   # a message not in the catalog: code -1 → last
    n_topics, n_channels = len(topic_names) + 1, len(channels)
    # one bincount over (topic, channel) codes: grouping millions of strings would dominate the report
    cell = topic * n_channels + cells.channel[sends] % n_channels
    table = pd.DataFrame({"sends": np.bincount(cell, minlength=n_topics * n_channels)})
    for k in kinds:
        table[SENDS_WITH[k]] = np.bincount(cell, weights=flags[k][sends], minlength=n_topics * n_channels).astype(np.int64)
    table.insert(0, "channel", np.tile(channels, n_topics))
    table.insert(0, "topic", np.repeat(np.r_[np.asarray(topic_names, dtype=object), [MISSING]], n_channels))
    table = table[table["sends"] > 0].reset_index(drop=True)
    for k in kinds:
        count, rate = table[SENDS_WITH[k]].to_numpy(), f"{k}_rate"
        table[rate] = count / table["sends"]
        low, high = proportion_confint(count, table["sends"].to_numpy(), alpha=0.05, method="wilson")
        table[rate + "_ci_low"], table[rate + "_ci_high"] = low, high
    return table


SENDS_WITH = {"open": "opened", "click": "clicked", "bounce": "bounced"}
"""Column of the messages table counting the sends with that outcome."""


def _message_rows(messages: pd.DataFrame) -> pd.DataFrame:
    frames = []
    value = (messages["topic"] + " · " + messages["channel"]).to_numpy(dtype=object)
    frames.append(_rows("messages", ALL, "topic_channel", value, "sends", messages["sends"], 1))
    for k in ("open", "click", "bounce"):
        rows = _rows("messages", ALL, "topic_channel", value, f"{k}_rate", messages[SENDS_WITH[k]], messages["sends"])
        rows["ci_low"], rows["ci_high"] = messages[f"{k}_rate_ci_low"].to_numpy(), messages[f"{k}_rate_ci_high"].to_numpy()
        frames.append(rows)
    frame = pd.concat(frames, ignore_index=True)
    sent = frame["metric"] == "sends"
    frame.loc[sent, "n"] = np.nan
    return frame


def _quality(report: ValidationReport) -> pd.DataFrame:
    """The validation report's counts: rows read / kept / with problems / duplicates per table, rows per reason."""
    summary = report.summary()
    frames = [_rows("data_quality", ALL, "table", summary["table"].to_numpy(dtype=object), metric,
                    summary[metric].to_numpy(), np.nan) for metric in
              ("rows_read", "rows_kept", "rows_with_problems", "duplicates")]
    counts = report.counts()
    if len(counts):
        frames.append(_rows("data_quality", ALL, "table", counts["table"].to_numpy(dtype=object),
                            ("problem: " + counts["column"] + " " + counts["reason"]).to_numpy(dtype=object),
                            counts["rows"].to_numpy(), np.nan))
    extras = {"late_rows": report.late_rows, **report.info}
    frames.append(_rows("data_quality", ALL, "events", "events", np.array(list(extras), dtype=object),
                        np.array(list(extras.values())), np.nan))
    frame = pd.concat(frames, ignore_index=True)
    frame["value"] = frame["count"]
    return frame


# ------------------------------------------------------------------------ retention, active users, engagement


ENGAGEMENT_BINS = 10
"""The engagement score's distribution: shares of a stage's users in ``[0, 0.1)``, … ``[0.9, 1]``."""


def _retention(cells: _Cells, signup: np.ndarray, instants: np.ndarray, weeks: tuple[str, ...],
               config: NbmConfig) -> pd.DataFrame:
    """Retention by signup cohort: of the users who signed up in report week ``c`` (the cohort), the share with
    an activity event in their own week ``j`` after signup (``[signup + 7j d, signup + 7(j+1) d)``; ``week_0``
    is the first 7 days). ``n`` counts only the cohort's users whose week ``j`` ends by the period's end (a
    later one is not yet observed); cohort ``all`` pools the cohorts. Users with no ``signup_at``, or who
    signed up before the period, belong to no cohort."""
    t0, t1, n_weeks = int(instants[0]), int(instants[-1]), len(weeks)
    cohort = np.where((signup != NAT) & (signup >= t0) & (signup < t1), (signup - t0) // WEEK_NS, -1)
    active = _activity_mask(cells, config)
    pos, t = cells.pos[active], cells.t[active]
    mine = (cohort[pos] >= 0) & (t >= signup[pos])
    pos, offset = pos[mine], (t[mine] - signup[pos[mine]]) // WEEK_NS
    observed = signup[pos] + WEEK_NS * (offset + 1) <= t1          # the user's week has ended: they are in its n
    cell = np.unique(pos[observed] * n_weeks + offset[observed])     # a user once per week of theirs
    user, j = cell // n_weeks, cell % n_weeks
    count = np.bincount(cohort[user] * n_weeks + j, minlength=n_weeks * n_weeks).reshape(n_weeks, n_weeks)
    member = cohort >= 0
    ended = signup[member][:, None] + WEEK_NS * (np.arange(n_weeks) + 1)[None, :] <= t1
    n = np.bincount(np.repeat(cohort[member], n_weeks) * n_weeks + np.tile(np.arange(n_weeks), int(member.sum())),
                    weights=ended.ravel(), minlength=n_weeks * n_weeks).reshape(n_weeks, n_weeks)
    frames = []
    labels = np.array([f"week_{k}" for k in range(n_weeks)], dtype=object)
    for name, c, m in [*zip(weeks, count, n), (ALL, count.sum(axis=0), n.sum(axis=0))]:
        observed = m > 0
        if observed.any():
            frames.append(_rows("retention", name, "signup_cohort", name, labels[observed], c[observed], m[observed]))
    return pd.concat(frames, ignore_index=True) if frames else _rows("retention", [], "signup_cohort", [], [], [], [])


ACTIVE_WINDOWS = {"dau": 1, "wau": 7, "mau": 30}
"""Days of the window ending with a day (that day included) in which a user's activity counts."""


def _active_users(cells: _Cells, t0: int, t1: int, config: NbmConfig) -> pd.DataFrame:
    """Per whole day ``d`` of the period (UTC days from its start): DAU, WAU, MAU — the distinct users with an
    activity event (``[lifecycle] activity_events``) on ``d``, in the 7 days ending with ``d``, in the 30 days
    ending with ``d`` (the history before the period counts) — and stickiness = DAU ÷ MAU. Period ``all``:
    stickiness as Σ DAU ÷ Σ MAU over the days (the mean DAU over the mean MAU)."""
    n_days = (t1 - t0) // DAY_NS
    if n_days <= 0:
        return _rows("active_users", [], ALL, ALL, [], [], [])
    reach = max(ACTIVE_WINDOWS.values()) - 1
    active = _activity_mask(cells, config)
    day = (cells.t[active] - t0) // DAY_NS + reach                 # day index, the window's lead-in first
    keep = (day >= 0) & (day < n_days + reach)
    span = n_days + reach
    cell = np.unique(cells.pos[active][keep] * span + day[keep])   # (user, day) with activity, sorted
    user, d = cell // span, cell % span
    following = np.r_[np.where(user[1:] == user[:-1], d[1:], span), span]   # the user's next active day
    days = [f"{pd.Timestamp(t0 + k * DAY_NS, tz='UTC'):%Y-%m-%d}" for k in range(n_days)]
    frames, counts = [], {}
    for metric, width in ACTIVE_WINDOWS.items():
        # an active day counts for the `width` days from it, until the user's next active day takes over
        until = np.minimum(d + width, following)
        delta = np.bincount(d, minlength=span + 1) - np.bincount(until, minlength=span + 1)
        counts[metric] = np.cumsum(delta)[reach:span]
        frame = _rows("active_users", days, ALL, ALL, metric, counts[metric], np.nan)
        frame["value"] = frame["count"]
        frames.append(frame)
    frames += [_rows("active_users", days, ALL, ALL, "stickiness", counts["dau"], counts["mau"]),
               _rows("active_users", ALL, ALL, ALL, "stickiness", counts["dau"].sum(), counts["mau"].sum())]
    return pd.concat(frames, ignore_index=True)


def _engagement(users: pd.DataFrame, stage: np.ndarray, alive: np.ndarray, stages: tuple[str, ...], t1: int,
                featurise: Featuriser) -> pd.DataFrame:
    """The engagement score (``user_engagement_score``, the features': 0.3 explicit + 0.7 implicit, in [0, 1])
    of the users signed up by the period's end, at its end, by their lifecycle stage then: the share of a
    stage's users in each tenth of the score (``score_0.0-0.1`` … ``score_0.9-1.0``, the last one closed), and
    the stage's mean score and mean explicit and implicit parts."""
    ids = users["user_id"].to_numpy(dtype=object)[alive]
    none = np.full(len(ids), None, dtype=object)
    at = np.full(len(ids), t1, dtype=np.int64)
    frame = featurise(ids, none, none, at, at)
    code = stage[alive].astype(np.int64)
    names = np.array(stages, dtype=object)
    n = np.bincount(code, minlength=len(stages))
    score = frame["user_engagement_score"].to_numpy(dtype=np.float64)
    bin_of = np.minimum((score * ENGAGEMENT_BINS).astype(np.int64), ENGAGEMENT_BINS - 1)
    in_bin = np.bincount(code * ENGAGEMENT_BINS + bin_of, minlength=len(stages) * ENGAGEMENT_BINS)
    in_bin = in_bin.reshape(len(stages), ENGAGEMENT_BINS)
    period = f"{pd.Timestamp(t1, tz='UTC'):%Y-%m-%d}"
    frames = [_rows("engagement", period, "lifecycle", names,
                    f"score_{b / ENGAGEMENT_BINS:.1f}-{(b + 1) / ENGAGEMENT_BINS:.1f}", in_bin[:, b], n)
              for b in range(ENGAGEMENT_BINS)]
    for part, column in (("mean_score", "user_engagement_score"), ("mean_explicit", "user_engagement_explicit"),
                         ("mean_implicit", "user_engagement_implicit")):
        total = np.bincount(code, weights=frame[column].to_numpy(dtype=np.float64), minlength=len(stages))
        frames.append(_rows("engagement", period, "lifecycle", names, part, total, n))
    return pd.concat(frames, ignore_index=True)
