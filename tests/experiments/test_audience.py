"""The audience report against a naive per-user reference (plain loops over the rows) on a seeded simulated world.

Every figure checked here is recomputed from the definitions in :mod:`experiments.audience`'s docstring with
Python loops; the vectorised numbers must match exactly (counts) or to 1e-12 (sums of revenue).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from experiments.audience import ACTIVITY_STATES, FIGURE_COLUMNS, KPIS, WEEKDAYS, analyze
from experiments.audience_command import run_report
from nbm.config import LIFECYCLE_STAGES, LifecycleConfig, NbmConfig
from nbm.dataset import build_dataset
from nbm.errors import UsageError
from nbm.simulate import SimConfig, simulate
from nbm.simulate.manifest import write_world

DAY = pd.Timedelta(days=1)
SCRIPT = "<script>alert('x')</script>"


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    tables = simulate(SimConfig(n_users=400, n_days=38, seed=5)).tables
    users = tables["users"].copy()
    users["country"] = users["country"].where(users.index % 7 != 0, SCRIPT)  # a value to escape
    return {**tables, "users": users}


@pytest.fixture(scope="module")
def config() -> NbmConfig:
    # a smaller at-risk threshold so that every stage is populated in a 38-day world
    return NbmConfig(lifecycle=LifecycleConfig(new_days=30, at_risk_after_days=7, dormant_after_days=20))


@pytest.fixture(scope="module")
def loaded(tables, config):
    return build_dataset({k: v.copy() for k, v in tables.items()}, config)


@pytest.fixture(scope="module")
def report(loaded, config):
    dataset, quality = loaded
    return analyze(dataset, config, quality, by="country")


@pytest.fixture(scope="module")
def naive(loaded, report, config):
    return NaiveReference(loaded[0], report, config)


class NaiveReference:
    """Per-user state at each instant and per-week counts, by loops straight from the definitions."""

    def __init__(self, dataset, report, config: NbmConfig) -> None:
        self.config = config
        self.instants = [min(report.start + 7 * k * DAY, report.end) for k in range(len(report.weeks) + 1)]
        self.users = {u.user_id: u for u in dataset.users.itertuples()}
        self.visits = defaultdict(list)
        self.activity_times = defaultdict(list)  # the lifecycle's activity: visits, clicks and conversions
        self.events = []
        for e in dataset.events.itertuples():
            if e.user_id not in self.users:
                continue
            self.events.append(e)
            if e.event_type == "visit":
                self.visits[e.user_id].append(e.timestamp)
            if e.event_type in ("visit", "click", "convert"):
                self.activity_times[e.user_id].append(e.timestamp)

    def signed_up(self, user, instant) -> bool:
        return pd.isna(user.signup_at) or user.signup_at < instant

    def stage(self, user, instant) -> str:
        lc = self.config.lifecycle
        if not pd.isna(user.signup_at) and (instant - user.signup_at) / DAY < lc.new_days:
            return "new"
        before = [t for t in self.activity_times[user.user_id] if t < instant]
        if not before:
            return "dormant"
        days = (instant - max(before)) / DAY
        return "active" if days <= lc.at_risk_after_days else "at_risk" if days <= lc.dormant_after_days else "dormant"

    def activity(self, user, instant) -> str:
        ac = self.config.activity
        visits = sum(instant - 30 * DAY <= t < instant for t in self.visits[user.user_id])
        ratio = visits / (ac.ideal_visits_per_week * 30 / 7)
        for state, floor in (("power", ac.power_ratio), ("core", ac.core_ratio), ("casual", ac.casual_ratio)):
            if ratio >= floor:
                return state
        return "low"

    def week_of(self, t) -> int | None:
        for k in range(len(self.instants) - 1):
            if self.instants[k] <= t < self.instants[k + 1]:
                return k
        return None

    def per_user_week(self) -> dict[tuple[str, int], Counter]:
        counts: dict[tuple[str, int], Counter] = defaultdict(Counter)
        for e in self.events:
            k = self.week_of(e.timestamp)
            if k is not None:
                counts[e.user_id, k][e.event_type] += 1
                counts[e.user_id, k]["revenue"] += 0.0 if pd.isna(e.value) else e.value
                if e.event_type == "send":
                    counts[e.user_id, k]["send:" + e.channel] += 1
        return counts


def rows(report, section, **where) -> pd.DataFrame:
    frame = report.section(section)
    for column, value in where.items():
        frame = frame[frame[column] == value]
    return frame


def test_stage_and_state_counts_match_the_naive_reference(report, naive) -> None:
    for k, week in enumerate(report.weeks):
        instant = naive.instants[k + 1]
        alive = [u for u in naive.users.values() if naive.signed_up(u, instant)]
        stages = Counter(naive.stage(u, instant) for u in alive)
        states = Counter(naive.activity(u, instant) for u in alive)
        for section, names, expected in (("lifecycle", LIFECYCLE_STAGES[:4], stages),
                                         ("activity", ACTIVITY_STATES, states)):
            got = rows(report, section, period=week).set_index("segment_value")
            assert got["count"].to_dict() == {s: float(expected[s]) for s in names}, (section, week)
            assert (got["n"] == len(alive)).all()
    shares = rows(report, "lifecycle").groupby("period")["value"].sum()
    assert np.allclose(shares, 1.0)
    assert len(set(rows(report, "lifecycle", period=report.weeks[-1])["count"])) > 2  # the world is not degenerate


def test_transitions_match_the_naive_reference(report, naive) -> None:
    total = Counter()
    for k, week in enumerate(report.weeks):
        start, end = naive.instants[k], naive.instants[k + 1]
        pairs = Counter((naive.stage(u, start), naive.stage(u, end)) for u in naive.users.values()
                        if naive.signed_up(u, start))
        total += pairs
        got = rows(report, "transitions", period=week)
        assert {(r.segment_value, r.metric[3:]): r.count for r in got.itertuples() if r.count} == pairs
    got = rows(report, "transitions", period="all")
    for r in got.itertuples():
        n = sum(v for (a, _), v in total.items() if a == r.segment_value)
        assert r.n == n
        assert (math.isnan(r.value) and n == 0) or r.value == pytest.approx(total[r.segment_value, r.metric[3:]] / n)


def test_kpis_per_stage_and_state_match_the_naive_reference(report, naive) -> None:
    counts = naive.per_user_week()
    for k, week in enumerate(report.weeks):
        start, end = naive.instants[k], naive.instants[k + 1]
        for segment, label in (("lifecycle", naive.stage), ("activity", naive.activity), ("all", lambda u, t: "all"),
                               ("country", lambda u, t: u.country)):
            members = defaultdict(list)
            for u in naive.users.values():
                if naive.signed_up(u, end):
                    members[label(u, start)].append(u.user_id)
            got = rows(report, "kpi", period=week, segment=segment)
            for kpi in KPIS:
                mine = got[got["metric"] == kpi.name].set_index("segment_value")
                for value, r in mine.iterrows():
                    ids = members.get(value, [])
                    assert r["n"] == len(ids), (week, segment, value)
                    if kpi.summed:
                        expected = sum(counts[u, k]["revenue"] for u in ids)
                        assert r["count"] == pytest.approx(expected, rel=1e-12, abs=1e-9)
                    else:
                        assert r["count"] == sum(counts[u, k][kpi.event] > 0 for u in ids), (week, value, kpi.name)
    overall = rows(report, "kpi", period="all", segment="lifecycle", metric="reach")
    weekly = rows(report, "kpi", segment="lifecycle", metric="reach")
    weekly = weekly[weekly["period"] != "all"].groupby("segment_value")[["count", "n"]].sum()
    assert (overall.set_index("segment_value")[["count", "n"]] == weekly.reindex(overall["segment_value"])).all().all()


def test_contacts_caps_and_consent_match_the_naive_reference(report, naive, config) -> None:
    counts = naive.per_user_week()
    policy = config.contact_policy
    distribution = Counter()
    for k, week in enumerate(report.weeks):
        alive = [u.user_id for u in naive.users.values() if naive.signed_up(u, naive.instants[k + 1])]
        got = rows(report, "contacts", period=week)
        total = [counts[u, k]["send"] for u in alive]
        distribution.update(min(x, 10) for x in total)
        assert got[(got["segment"] == "all") & (got["metric"] == "share_above_total_cap")]["count"].item() == sum(
            x > policy.weekly_cap_total for x in total)
        assert got[(got["segment"] == "all") & (got["metric"] == "contacts_per_user")]["value"].item() == \
            pytest.approx(sum(total) / len(alive))
        for channel in config.channels:
            mine = got[got["segment_value"] == channel].set_index("metric")["count"]
            per_user = [counts[u, k]["send:" + channel] for u in alive]
            assert mine["contacts_per_user"] == sum(per_user)
            assert mine["share_above_channel_cap"] == sum(x > policy.weekly_cap_per_channel for x in per_user)
    got = rows(report, "contact_distribution")
    assert got["count"].tolist() == [distribution[i] for i in range(11)]
    consent = rows(report, "consent").set_index("segment_value")
    for channel in config.channels:
        assert consent.loc[channel, "count"] == sum(channel in u.consent for u in naive.users.values())
        assert consent.loc[channel, "n"] == len(naive.users)


def _naive_attribution(events: pd.DataFrame, hours: float) -> dict[int, int]:
    """Event index → the index of the send it belongs to, by loops from the definition: the first send with
    its ``decision_id``, else the latest send of the same message to the same user at most ``hours`` before."""
    sends = [e for e in events.itertuples() if e.event_type == "send"]
    first: dict[str, int] = {}
    for e in sends:
        if isinstance(e.decision_id, str):
            first.setdefault(e.decision_id, e.Index)
    out = {}
    for e in events.itertuples():
        if e.event_type not in ("open", "click", "bounce"):
            continue
        if isinstance(e.decision_id, str) and e.decision_id in first:
            out[e.Index] = first[e.decision_id]
            continue
        earlier = [(s.timestamp, s.Index) for s in sends if s.user_id == e.user_id and s.message_id == e.message_id
                   and s.timestamp <= e.timestamp and e.timestamp - s.timestamp <= pd.Timedelta(hours=hours)]
        if earlier:
            out[e.Index] = max(earlier)[1]
    return out


def test_messages_and_channel_engagement_match_the_naive_reference(report, naive, loaded, config) -> None:
    dataset = loaded[0]
    topic = dict(zip(dataset.messages["message_id"], dataset.messages["topic"]))
    owner = _naive_attribution(dataset.events, config.attribution.open_click_hours)
    outcomes: dict[int, set] = defaultdict(set)
    for e in dataset.events.itertuples():
        if e.Index in owner:
            outcomes[owner[e.Index]].add(e.event_type)
    expected: dict[tuple[str, str], Counter] = defaultdict(Counter)
    by_channel: dict[str, Counter] = defaultdict(Counter)
    for e in naive.events:
        if naive.week_of(e.timestamp) is None:
            continue
        if e.event_type == "send":
            expected[topic[e.message_id], e.channel]["send"] += 1
            for kind in outcomes[e.Index]:
                expected[topic[e.message_id], e.channel][kind] += 1      # a send opened twice counts once
        if isinstance(e.channel, str):
            by_channel[e.channel][e.event_type] += 1
    table = report.messages.set_index(["topic", "channel"])
    assert set(table.index) == set(expected)
    assert sum(c["open"] for c in expected.values()) > 50 and sum(c["bounce"] for c in expected.values()) > 0
    for key, c in expected.items():
        row = table.loc[key]
        assert (row["sends"], row["opened"], row["clicked"], row["bounced"]) == (c["send"], c["open"], c["click"],
                                                                                 c["bounce"])
        for kind in ("open", "click", "bounce"):
            assert 0 <= row[f"{kind}_rate"] <= 1
            low, high = proportion_confint(c[kind], c["send"], method="wilson")
            assert (row[f"{kind}_rate_ci_low"], row[f"{kind}_rate_ci_high"]) == pytest.approx((low, high), rel=1e-12)
    engagement = rows(report, "channel_engagement", period="all").set_index(["segment_value", "metric"])
    for channel, c in by_channel.items():
        assert engagement.loc[(channel, "sends"), "count"] == c["send"]
        assert engagement.loc[(channel, "opens_per_send"), "value"] == pytest.approx(c["open"] / c["send"])
        assert engagement.loc[(channel, "unsubscribes_per_send"), "count"] == c["unsubscribe"]


def test_local_time_heat_map_matches_the_naive_reference(report, naive) -> None:
    expected = Counter()
    for e in naive.events:
        if e.event_type in ("open", "click") and naive.week_of(e.timestamp) is not None:
            local = e.timestamp.astimezone(ZoneInfo(naive.users[e.user_id].timezone or "UTC"))
            expected[WEEKDAYS[local.weekday()], f"hour_{local.hour:02d}"] += 1
    got = rows(report, "engagement_hours")
    assert {(r.segment_value, r.metric): r.count for r in got.itertuples() if r.count} == expected
    assert got["value"].sum() == pytest.approx(1.0)
    assert len({z for z in (u.timezone for u in naive.users.values())}) > 1  # local time really matters


def test_identities_match_the_naive_reference(report, loaded, tables) -> None:
    dataset, _ = loaded
    links = tables["links"]
    ids_of = defaultdict(set)
    for a, b in zip(links["identifier_a"], links["identifier_b"]):  # the simulator links a user to devices
        ids_of[a].add(b)
    per_user = []
    for user in dataset.users["user_id"]:
        found, frontier = {user}, [user]
        while frontier:  # the component, by search over both directions
            node = frontier.pop()
            for other in ids_of[node] | {a for a, bs in ids_of.items() if node in bs}:
                if other not in found:
                    found.add(other)
                    frontier.append(other)
        per_user.append(len(found))
    got = rows(report, "identities", metric="identifiers_per_person").iloc[0]
    assert got["count"] == sum(per_user) and got["n"] == len(per_user)
    shares = rows(report, "identities", metric="share_of_people").set_index("segment_value")["count"]
    assert shares.tolist() == [sum(x == 1 for x in per_user), sum(x == 2 for x in per_user),
                               sum(x == 3 for x in per_user), sum(x >= 4 for x in per_user)]
    linked = sum(1 for e in dataset.events.itertuples() if e.user_id != e.source_user_id
                 and report.start <= e.timestamp < report.end)
    assert rows(report, "identities", metric="share_of_events_linked", period="all")["count"].item() == linked > 0


def test_lifecycle_boundaries_are_inclusive_as_configured() -> None:
    """A visit exactly 21 days before is active, exactly 60 at risk; signup exactly 30 days before is not new."""
    at = pd.Timestamp("2026-06-08T00:00:00Z")
    users = pd.DataFrame({"user_id": ["a", "b", "c", "d", "e"],
                          "signup_at": [at - 30 * DAY, at - 200 * DAY, at - 200 * DAY, at - 200 * DAY,
                                        at - 30 * DAY + pd.Timedelta(seconds=1)],
                          "timezone": "UTC", "consent": [[], [], [], [], []]})
    visits = {"a": [at - 21 * DAY], "b": [at - 60 * DAY], "c": [at - 60 * DAY - pd.Timedelta(seconds=1)], "d": []}
    events = pd.DataFrame([{"event_id": f"e{i}", "timestamp": t, "user_id": u, "event_type": "visit"}
                           for i, (u, ts) in enumerate((u, ts) for u, ts in visits.items()) for t in ts])
    messages = pd.DataFrame({"message_id": ["m"], "topic": ["t"], "channels": [["email"]]})
    dataset, _ = build_dataset({"users": users, "events": events, "messages": messages}, NbmConfig(),
                               pd.Timestamp("2026-12-01T00:00:00Z"))
    report = analyze(dataset, NbmConfig(), start=at - 7 * DAY, end=at)
    got = rows(report, "lifecycle").set_index("segment_value")["count"]
    assert got.to_dict() == {"new": 1.0, "active": 1.0, "at_risk": 1.0, "dormant": 2.0}


def test_a_send_opened_twice_counts_once_and_outcomes_find_their_send() -> None:
    """Messages table: two opens of one send are one opened send; an open too late for the window, or of
    another message, opens nothing; a bounce with the send's decision id bounces it."""
    at = pd.Timestamp("2026-06-01T00:00:00Z")
    hour = pd.Timedelta(hours=1)
    users = pd.DataFrame({"user_id": ["a", "b"], "signup_at": [at - 90 * DAY] * 2, "timezone": "UTC",
                          "consent": [["email"], ["email"]]})
    rows_ = [("s1", at, "a", "send", "m", "d1"), ("o1", at + hour, "a", "open", "m", None),
             ("o2", at + 2 * hour, "a", "open", "m", None), ("c1", at + 3 * hour, "a", "click", "m", None),
             ("s2", at + DAY, "b", "send", "m", "d2"), ("o3", at + DAY + 80 * hour, "b", "open", "m", None),
             ("o4", at + DAY + hour, "b", "open", "n", None), ("b1", at + DAY + 2 * hour, "b", "bounce", "m", "d2"),
             ("s3", at + 2 * DAY, "b", "send", "n", "d3")]
    events = pd.DataFrame([{"event_id": i, "timestamp": t, "user_id": u, "event_type": k, "message_id": m,
                            "channel": "email", "decision_id": d} for i, t, u, k, m, d in rows_])
    messages = pd.DataFrame({"message_id": ["m", "n"], "topic": ["t", "t"], "channels": [["email"], ["email"]]})
    dataset, _ = build_dataset({"users": users, "events": events, "messages": messages}, NbmConfig(),
                               pd.Timestamp("2026-12-01T00:00:00Z"))
    table = analyze(dataset, NbmConfig(), start=at - DAY, end=at + 6 * DAY).messages.set_index(["topic", "channel"])
    row = table.loc[("t", "email")]
    # o4 (message n, one hour after s2) comes before s3, the only send of n: it opens nothing.
    assert (row["sends"], row["opened"], row["clicked"], row["bounced"]) == (3, 1, 1, 1)
    assert row["open_rate"] == pytest.approx(1 / 3)


def test_an_empty_stage_is_an_explicit_empty_value(report) -> None:
    empty = report.figures[report.figures["n"] == 0]
    assert len(empty) and empty["value"].isna().all() and (empty["note"] == "no users").all()
    assert report.figures.loc[report.figures["n"] > 0, "value"].notna().all()


def test_invalid_arguments_get_a_usage_error(loaded, config) -> None:
    dataset, _ = loaded
    with pytest.raises(UsageError, match="`--by`: 'nope'"):
        analyze(dataset, config, by="nope")
    with pytest.raises(UsageError, match="must be before"):
        analyze(dataset, config, start=pd.Timestamp("2026-10-20", tz="UTC"), end=pd.Timestamp("2026-10-10", tz="UTC"))


def test_run_report_writes_the_page_and_every_figure(tables, config, tmp_path) -> None:
    data = tmp_path / "data"
    write_world(tables, data, "parquet")
    out = tmp_path / "out" / "report.html"
    code = run_report(data, out, config, start=pd.Timestamp("2026-09-30", tz="UTC"),
                      end=pd.Timestamp("2026-10-28", tz="UTC"), by="country")
    assert code == 0
    page = out.read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page) and "<script" not in page.lower()
    assert SCRIPT not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert not re.search(r"\bnan\b", page, re.IGNORECASE) and "—" in page
    # stages + states, retention, active users, transitions, KPIs, contacts, local time (no featuriser: no engagement)
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) == 7
    figures = pd.read_csv(out.with_suffix(".csv"))
    assert tuple(figures.columns) == FIGURE_COLUMNS and len(figures) > 1000
    assert sorted(figures.loc[figures["section"] == "lifecycle", "period"].unique()) == [
        "2026-09-30", "2026-10-07", "2026-10-14", "2026-10-21"]
    records = json.loads(out.with_suffix(".json").read_text())
    assert len(records) == len(figures) and any(r["value"] is None for r in records)


def test_weeks_with_too_little_history_are_flagged(report, loaded, config) -> None:
    """A week whose thresholds reach before the first event says so (dormant and low are overstated)."""
    dataset, quality = loaded
    assert any("for lack of history" in n for n in report.notes)
    assert any("activity states count" in n for n in report.notes)
    first = dataset.events["timestamp"].min()
    later = analyze(dataset, config, quality, start=(first + 31 * DAY).floor("D"))
    assert not any("for lack of history" in n or "activity states count" in n for n in later.notes)


# ------------------------------------------------ retention, active users, engagement: a tiny world by hand

TINY_START = pd.Timestamp("2026-06-01T00:00:00Z")
NOON = pd.Timedelta(hours=12)


def _tiny(activity_events: tuple[str, ...] | None = None, featurise=None):
    """Five users over two weeks (2026-06-01 → 06-15). ``a`` and ``b`` sign up in week 0, ``c`` in week 1, ``d``
    long before, ``e`` at an unknown time. Activity (visit/click) at noon: d 05-20, d 06-01, a 06-02, d 06-05,
    a 06-09 (a click), c 06-10, e 06-14; opens (no activity by default): b 06-03, c 06-09."""
    day = lambda k: TINY_START + (k - 1) * DAY + NOON      # noqa: E731 — day k of June at noon
    users = pd.DataFrame({"user_id": ["a", "b", "c", "d", "e"],
                          "signup_at": [TINY_START, TINY_START + DAY, TINY_START + 7 * DAY,
                                        pd.Timestamp("2026-01-01T00:00:00Z"), pd.NaT],
                          "timezone": "UTC", "consent": [["email"]] * 5})
    rows_ = [("d", TINY_START - 12 * DAY + NOON, "visit"), ("d", day(1), "visit"), ("a", day(2), "visit"),
             ("b", day(3), "open"), ("d", day(5), "visit"), ("a", day(9), "click"), ("c", day(9), "open"),
             ("c", day(10), "visit"), ("e", day(14), "visit")]
    events = pd.DataFrame([{"event_id": f"e{i}", "timestamp": t, "user_id": u, "event_type": k,
                            "message_id": "m" if k in ("open", "click") else None,
                            "channel": "email" if k in ("open", "click") else None}
                           for i, (u, t, k) in enumerate(rows_)])
    messages = pd.DataFrame({"message_id": ["m"], "topic": ["t"], "channels": [["email"]]})
    config = NbmConfig() if activity_events is None else NbmConfig(
        lifecycle=LifecycleConfig(activity_events=activity_events))
    dataset, _ = build_dataset({"users": users, "events": events, "messages": messages}, config,
                               pd.Timestamp("2026-12-01T00:00:00Z"))
    return analyze(dataset, config, start=TINY_START, end=TINY_START + 14 * DAY, featurise=featurise)


def _by(report, section: str, *keys: str) -> dict:
    frame = report.section(section)
    return {tuple(r[k] for k in keys): (r["count"], r["n"]) for _, r in frame.iterrows()}


def test_retention_by_signup_cohort_by_hand() -> None:
    # Cohort 06-01 (a, b): week 0 — a visited (06-02), b only opened: 1 of 2; week 1 [signup + 7 d, + 14 d) has
    # ended by 06-15 for a (signed up 06-01) alone, who clicked on 06-09: 1 of 1. Cohort 06-08 (c): week 0 ends
    # 06-15: visited 06-10, 1 of 1. d (before the period) and e (no signup) are in no cohort.
    assert _by(_tiny(), "retention", "period", "metric") == {
        ("2026-06-01", "week_0"): (1, 2), ("2026-06-01", "week_1"): (1, 1), ("2026-06-08", "week_0"): (1, 1),
        ("all", "week_0"): (2, 3), ("all", "week_1"): (1, 1)}
    # The operator's activity: with opens counted, b's open makes b retained in week 0; with clicks only, a's
    # visit and c's visit no longer count (a's click of 06-09 still does).
    with_opens = _by(_tiny(("visit", "click", "convert", "open")), "retention", "period", "metric")
    assert with_opens[("2026-06-01", "week_0")] == (2, 2) and with_opens[("all", "week_0")] == (3, 3)
    clicks = _by(_tiny(("click",)), "retention", "period", "metric")
    assert clicks[("all", "week_0")] == (0, 3) and clicks[("all", "week_1")] == (1, 1)


def test_daily_weekly_monthly_active_users_and_stickiness_by_hand() -> None:
    report = _tiny()
    frame = report.section("active_users")
    daily = frame[frame["period"] != "all"]
    assert list(dict.fromkeys(daily["period"])) == [f"2026-06-{k:02d}" for k in range(1, 15)]
    got = {m: daily.loc[daily["metric"] == m, "count"].astype(int).tolist() for m in ("dau", "wau", "mau")}
    # active user-days: d 05-20, d 06-01, a 06-02, d 06-05, a 06-09, c 06-10, e 06-14
    assert got["dau"] == [1, 1, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1]
    assert got["wau"] == [1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 2, 2, 3]     # e.g. 06-14: a (06-09), c, e
    assert got["mau"] == [1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 4]     # d's 05-20 visit counts until 06-18
    sticky = daily[daily["metric"] == "stickiness"]
    np.testing.assert_allclose(sticky["value"], np.array(got["dau"]) / np.array(got["mau"]))
    overall = frame[(frame["period"] == "all") & (frame["metric"] == "stickiness")].iloc[0]
    assert (overall["count"], overall["n"]) == (6, 33) and overall["value"] == pytest.approx(6 / 33)
    # opens count when the operator says so: b (06-03) and c (06-09) join
    with_opens = _tiny(("visit", "click", "convert", "open")).section("active_users")
    dau = with_opens.loc[(with_opens["metric"] == "dau") & (with_opens["period"] != "all"), "count"].astype(int)
    assert dau.tolist() == [1, 1, 1, 0, 1, 0, 0, 0, 2, 1, 0, 0, 0, 1]


def test_engagement_distribution_by_stage_by_hand() -> None:
    """With a stub featuriser of known scores: a, b, c are new at 06-15 (signed up < 30 days before), d (last
    visit 06-05) and e (06-14) active. A score of exactly 1 falls in the last tenth, which is closed."""
    scores = {"a": (0.05, 0.1, 0.0), "b": (0.15, 0.5, 0.0), "c": (0.95, 1.0, 0.9), "d": (1.0, 1.0, 1.0),
              "e": (0.5, 0.0, 0.7)}
    asked = []

    def featurise(user_id, message_id, channel, as_of, send_at):
        asked.append(set(as_of))
        s, x, i = zip(*(scores[u] for u in user_id))
        return pd.DataFrame({"user_engagement_score": s, "user_engagement_explicit": x,
                             "user_engagement_implicit": i})

    report = _tiny(featurise=featurise)
    assert asked == [{(TINY_START + 14 * DAY).value}]          # at the period's end
    got = _by(report, "engagement", "segment_value", "metric")
    assert got[("new", "score_0.0-0.1")] == (1, 3) and got[("new", "score_0.1-0.2")] == (1, 3)
    assert got[("new", "score_0.9-1.0")] == (1, 3) and got[("new", "score_0.5-0.6")] == (0, 3)
    assert got[("active", "score_0.9-1.0")] == (1, 2) and got[("active", "score_0.5-0.6")] == (1, 2)
    assert got[("at_risk", "score_0.0-0.1")] == (0, 0)
    assert got[("new", "mean_score")][0] == pytest.approx(0.05 + 0.15 + 0.95)
    assert got[("active", "mean_implicit")] == (pytest.approx(1.7), 2)
    engagement = report.section("engagement").set_index(["segment_value", "metric"])
    assert engagement.loc[("new", "mean_explicit"), "value"] == pytest.approx(1.6 / 3)
    assert engagement.loc[("dormant", "mean_score"), "note"] == "no users"
