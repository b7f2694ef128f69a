"""The audience report as one self-contained HTML file: inline CSS, plots as base64 PNG, no script, no link out.

Every string from the data (segment values, topics, notes, problem reasons) goes through `html.escape`; an empty
segment shows "—" with its note, never NaN.
"""

from __future__ import annotations

import base64
import io
import math
import re

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from experiments.ab import ALL
from experiments.ab_report import STYLE, _e, _missing, _table
from experiments.audience import ACTIVE_WINDOWS, ACTIVITY_STATES, ENGAGEMENT_BINS, KPIS, WEEKDAYS, AudienceReport
from nbm.config import LIFECYCLE_STAGES, NbmConfig


def _text(value: object) -> str:
    """Escaped text with its `quoted names` set as code."""
    return re.sub(r"`([^`<>]+)`", r"<code>\1</code>", _e(value))

EMPTY = "—"
COLORS = {"new": "#42a5f5", "active": "#2e7d32", "at_risk": "#ef6c00", "dormant": "#9e9e9e", "loyal": "#6a1b9a",
          "power": "#1b5e20", "core": "#43a047", "casual": "#a5d6a7", "low": "#e0e0e0"}
MONEY = {"revenue_per_user", "contacts_per_user", "identifiers_per_person"}


def render_html(report: AudienceReport, config: NbmConfig) -> str:
    """The whole page; ``report`` from :func:`experiments.audience.analyze`."""
    lc, ac, cp = config.lifecycle, config.activity, config.contact_policy
    parts = ["<h1>Audience report</h1>",
             f'<p class="meta">{_e(f"{report.start:%Y-%m-%d}")} → {_e(f"{report.end:%Y-%m-%d}")} UTC · '
             f"{len(report.weeks)} weeks · new &lt; {lc.new_days:g} days after signup · at risk after "
             f"{lc.at_risk_after_days:g}, dormant after {lc.dormant_after_days:g} days without a visit · ideal "
             f"{ac.ideal_visits_per_week:g} visits a week · caps {cp.weekly_cap_per_channel} a channel"
             + "".join(f", {_e(name)} {cp.weekly_cap(name)}" for name in sorted(cp.channel_caps)) + ", "
             f"{cp.weekly_cap_total} in all a week</p>"]
    if report.notes:
        parts.append("<ul>" + "".join(f"<li>{_text(n)}</li>" for n in report.notes) + "</ul>")
    parts += [_lifecycle(report), _retention(report), _active_users(report, config), _engagement(report),
              _kpis(report), _channels(report, config), _messages(report), _identities(report), _quality(report),
              _methods()]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Audience report</title>"
            f"<style>{STYLE} td.empty {{ color: #999; }}</style></head><body>\n" + "\n".join(parts)
            + "\n</body></html>\n")


# ----------------------------------------------------------------------------------------------- sections


def _lifecycle(report: AudienceReport) -> str:
    parts = ["<h2>Lifecycle stages and activity states</h2>",
             "<p>At each week's end, among users signed up by then. Week: its first day.</p>",
             _img(_shares_png(report), "users by lifecycle stage and activity state per week")]
    stages = _stages(report)
    for section, names in (("lifecycle", stages), ("activity", ACTIVITY_STATES)):
        rows = report.section(section)
        table = [[_e(w)] + [_count_share(rows, w, s) for s in names] + [_total(rows, w)] for w in report.weeks]
        parts.append(f"<h3>by {_e(section)}</h3>" + _table(["week", *map(_e, names), "users"], table))
    parts += ["<h3>Week-over-week transitions</h3>",
              "<p>Share of the users in a stage at a week's start who are in each stage at its end, all weeks "
              "together (users signed up before the week's start).</p>",
              _img(_transitions_png(report), "transition shares between lifecycle stages")]
    rows = report.section("transitions")
    rows = rows[rows["period"] == ALL]
    table = []
    for s in stages:
        mine = rows[rows["segment_value"] == s].set_index("metric")
        table.append([_e(s)] + [_cell(mine.loc[f"to_{t}"], "share") for t in stages]
                     + [f"{int(mine['n'].iloc[0]):,}"])
    return "".join(parts) + _table(["from \\ to", *map(_e, stages), "user-weeks"], table)


def _retention(report: AudienceReport) -> str:
    rows = report.section("retention")
    if not len(rows):
        return "<h2>Retention by signup cohort</h2><p>No user signed up in the period.</p>"
    cohorts = list(dict.fromkeys(rows["period"]))
    offsets = sorted(set(rows["metric"]), key=lambda m: int(m.split("_")[1]))
    table = []
    for cohort in cohorts:
        mine = rows[rows["period"] == cohort].set_index("metric")
        size = int(mine["n"].max())
        table.append([_e(cohort), f"{size:,}"] + [_count_share_row(mine.loc[m]) if m in mine.index else EMPTY
                                                  for m in offsets])
    return ("<h2>Retention by signup cohort</h2><p>Of the users who signed up in a week (the cohort), the share "
            "with an activity event (<code>[lifecycle] activity_events</code>) in their own week <i>j</i> after "
            "signup (week 0: their first 7 days); a week not yet over at the period's end is not shown.</p>"
            + _img(_retention_png(report), "retention curves by signup cohort")
            + _table(["cohort (signup week)", "users", *(f"week {m.split('_')[1]}" for m in offsets)], table))


def _active_users(report: AudienceReport, config: NbmConfig) -> str:
    rows = report.section("active_users")
    daily = rows[rows["period"] != ALL]
    if not len(daily):
        return "<h2>Active users</h2><p>No whole day in the period.</p>"
    pivot = daily.pivot(index="period", columns="metric", values="count")
    table = []
    for week, first in zip(report.weeks, report.weeks[1:] + ("9999",)):
        days = pivot[(pivot.index >= week) & (pivot.index < first)]
        if not len(days):
            continue
        stick = days["dau"].sum() / days["mau"].sum() if days["mau"].sum() else math.nan
        table.append([_e(week), f"{days['dau'].mean():,.1f}", f"{int(days['wau'].iloc[-1]):,}",
                      f"{int(days['mau'].iloc[-1]):,}", EMPTY if math.isnan(stick) else f"{stick:.1%}"])
    overall = rows[(rows["period"] == ALL) & (rows["metric"] == "stickiness")].iloc[0]
    events = ", ".join(config.lifecycle.activity_events)
    return ("<h2>Active users</h2><p>Distinct users with an activity event (" + _e(events) + ") on a UTC day (DAU), "
            "in the 7 days ending with it (WAU), in the 30 days ending with it (MAU); stickiness = DAU ÷ MAU. "
            f"Over the period: stickiness {_cell(overall, 'share')} (mean DAU ÷ mean MAU).</p>"
            + _img(_active_png(report), "daily, weekly and monthly active users and stickiness per day")
            + _table(["week", "DAU (mean of its days)", "WAU (its last day)", "MAU (its last day)",
                      "stickiness (Σ DAU ÷ Σ MAU)"], table))


def _engagement(report: AudienceReport) -> str:
    rows = report.section("engagement")
    if not len(rows):
        return "<h2>Engagement score by stage</h2><p>Not computed (no featuriser was given).</p>"
    table = []
    for stage in _stages(report):
        mine = rows[rows["segment_value"] == stage].set_index("metric")
        table.append([_e(stage), _users(mine["n"].iloc[0])]
                     + [_cell(mine.loc[m], "score") for m in ("mean_score", "mean_explicit", "mean_implicit")])
    return ("<h2>Engagement score by stage</h2><p>The model's engagement score at the period's end "
            f"({_e(rows['period'].iloc[0])}), 0 to 1: 0.3 × explicit (profile completeness, consent breadth) + 0.7 × "
            "implicit (visits, opens, clicks, conversions in 30 days), by lifecycle stage then.</p>"
            + _img(_engagement_png(report), "distribution of the engagement score by lifecycle stage")
            + _table(["stage", "users", "mean score", "mean explicit part", "mean implicit part"], table))


def _stages(report: AudienceReport) -> tuple[str, ...]:
    """The lifecycle stages the report counts (``loyal`` only where the configuration has the stage)."""
    present = set(report.section("lifecycle")["segment_value"])
    return tuple(s for s in LIFECYCLE_STAGES if s in present)


def _kpis(report: AudienceReport) -> str:
    parts = ["<h2>KPIs by segment</h2>", "<p>Per week, users segmented by their stage and state at the week's "
             "start (signups of the week are new and low); all weeks: per user-week.</p>",
             _img(_kpi_png(report), "KPIs by lifecycle stage per week")]
    rows = report.section("kpi")
    overall = rows[rows["period"] == ALL]
    for segment in (ALL, *report.segments):
        mine = overall[overall["segment"] == segment]
        values = list(dict.fromkeys(mine["segment_value"]))
        table = []
        for value in values:
            cells = mine[mine["segment_value"] == value].set_index("metric")
            table.append([_e(value), _users(cells["n"].iloc[0])] + [_cell(cells.loc[k.name], k.name) for k in KPIS])
        parts.append(f"<h3>{'all users' if segment == ALL else 'by ' + _e(segment)}, all weeks</h3>"
                     + _table([_e(segment), "user-weeks", *(_e(k.name) for k in KPIS)], table))
    weekly = rows[(rows["segment"] == "lifecycle") & (rows["period"] != ALL)]
    table = []
    for (week, value), cells in weekly.groupby(["period", "segment_value"], sort=False):
        cells = cells.set_index("metric")
        table.append([_e(week), _e(value), _users(cells["n"].iloc[0])] + [_cell(cells.loc[k.name], k.name)
                                                                           for k in KPIS])
    table.sort(key=lambda r: r[0])
    return "".join(parts) + "<h3>by lifecycle stage, per week</h3>" + _table(
        ["week", "stage", "users", *(_e(k.name) for k in KPIS)], table)


def _channels(report: AudienceReport, config: NbmConfig) -> str:
    consent = report.section("consent").set_index("segment_value")
    contacts = report.section("contacts")
    engagement = report.section("channel_engagement")
    engagement = engagement[engagement["period"] == ALL]
    table = []
    for c in config.channels:
        mine = contacts[contacts["segment_value"] == c]
        eng = engagement[engagement["segment_value"] == c].set_index("metric")
        table.append([_e(c), _cell(consent.loc[c], "share"), _mean_over_weeks(mine, "contacts_per_user"),
                      _mean_over_weeks(mine, "share_above_channel_cap", share=True),
                      f"{int(eng.loc['sends', 'count']):,}"] + [_cell(eng.loc[f"{k}s_per_send"], "share")
                                                                for k in ("open", "click", "bounce", "unsubscribe")])
    total = contacts[contacts["segment"] == ALL]
    per_metric = engagement[engagement["segment_value"].isin(list(config.channels))].groupby("metric")["count"].sum()
    sends = per_metric.get("sends", 0)
    ratios = [f"{per_metric.get(f'{k}s_per_send', 0) / sends:.1%}" if sends else "—"
              for k in ("open", "click", "bounce", "unsubscribe")]
    table.append(["all", "—", _mean_over_weeks(total, "contacts_per_user"),
                  _mean_over_weeks(total, "share_above_total_cap", share=True), f"{int(sends):,}", *ratios])
    cp = config.contact_policy
    return ("<h2>Channels</h2><p>Consent: share of all users. Contacts: sends per user-week (users signed up by "
            f"the week's end); above cap: share of user-weeks with more than {cp.weekly_cap_per_channel} sends on "
            f"the channel (all: more than {cp.weekly_cap_total} in all). Engagement: events per send.</p>"
            + _table(["channel", "consent", "contacts per user-week", "above weekly cap", "sends", "opens / send",
                      "clicks / send", "bounces / send", "unsubscribes / send"], table)
            + _img(_contacts_png(report, cp.weekly_cap_total), "distribution of contacts per user-week"))


def _messages(report: AudienceReport) -> str:
    rows = []
    for r in report.messages.sort_values(["sends"], ascending=False).itertuples():
        rows.append([_e(r.topic), _e(r.channel), f"{r.sends:,}"]
                    + [_interval(getattr(r, f"{k}_rate"), getattr(r, f"{k}_rate_ci_low"),
                                 getattr(r, f"{k}_rate_ci_high")) for k in ("open", "click", "bounce")])
    table = _table(["topic", "channel", "sends", "sends opened [95 % Wilson]", "sends clicked [95 % Wilson]",
                    "sends bounced [95 % Wilson]"], rows) if rows else "<p>No sends in the period.</p>"
    return ("<h2>Messages</h2><p>Share of the period's sends with at least one open (click, bounce) attributed to "
            "them, as the ranker's labels are: by the send's <code>decision_id</code>, else the latest send of the "
            "message to the user within the attribution window.</p>" + table + "<h3>Engagement by local time</h3><p>Opens and clicks by the user's "
            "local weekday and hour (<code>timezone</code>), share of all of them in the period.</p>"
            + _img(_hours_png(report), "engagement heat map by local hour and weekday"))


def _identities(report: AudienceReport) -> str:
    rows = report.section("identities")
    per = rows[rows["metric"] == "identifiers_per_person"].iloc[0]
    dist = rows[rows["metric"] == "share_of_people"]
    linked = rows[rows["metric"] == "share_of_events_linked"]
    table = [[_e(r["segment_value"]), _count_share_row(r)] for _, r in dist.iterrows()]
    weekly = [[_e(r["period"]), _count_share_row(r)] for _, r in linked.iterrows()]
    return ("<h2>Identities</h2>"
            f"<p>Identifiers per person (users table): {_cell(per, 'identifiers_per_person')} on average.</p>"
            + _table(["identifiers", "people"], table)
            + "<p>Events logged under an identifier other than the person's canonical id (resolved by a link):</p>"
            + _table(["week", "events needing a link"], weekly))


def _quality(report: AudienceReport) -> str:
    summary = report.quality.summary()
    rows = [[_e(r.table), f"{r.rows_read:,}", f"{r.rows_kept:,}", f"{r.rows_with_problems:,}", f"{r.duplicates:,}"]
            for r in summary.itertuples()]
    counts = report.quality.counts()
    reasons = [[_e(r.table), _e(r.column), _e(r.reason), f"{r.rows:,}"] for r in counts.itertuples()]
    extras = [f"late rows (out of time order, kept): {report.quality.late_rows:,}"]
    extras += [f"{k.replace('_', ' ')}: {v:,}" for k, v in report.quality.info.items()]
    return ("<h2>Data quality</h2>" + (_table(["table", "rows read", "rows kept", "rows with problems", "duplicates"],
                                              rows) if rows else "<p>No validation report.</p>")
            + (_table(["table", "column", "reason", "rows"], reasons) if reasons else "<p>No problem rows.</p>")
            + "<ul>" + "".join(f"<li>{_text(x)}</li>" for x in extras + report.quality.notes) + "</ul>")


def _methods() -> str:
    items = "".join(f"<li><b>{_e(k.name)}</b>: {_text(k.description)}</li>" for k in KPIS)
    return ("<h2>Definitions</h2><ul>" + items + "</ul><p>Stages and states are evaluated from the visits strictly "
            "before the instant; see docs/report.md for every definition. Every number is in report.csv / "
            "report.json, one row per period × segment × metric.</p>")


# -------------------------------------------------------------------------------------------------- plots


def _shares_png(report: AudienceReport) -> bytes:
    figure = Figure(figsize=(10, 3.6), dpi=90)
    for axes, (section, names) in zip(figure.subplots(1, 2), (("lifecycle", _stages(report)),
                                                               ("activity", ACTIVITY_STATES))):
        rows = report.section(section)
        x = np.arange(len(report.weeks))
        bottom = np.zeros(len(x))
        for name in names:
            mine = rows[rows["segment_value"] == name].set_index("period").reindex(list(report.weeks))
            share = mine["value"].fillna(0).to_numpy()
            axes.bar(x, share, bottom=bottom, color=COLORS[name], label=name)
            bottom += share
        _week_ticks(axes, report.weeks)
        axes.set_ylim(0, 1)
        _percent(axes)
        axes.set_ylabel("share of users signed up (%)", fontsize=8)
        axes.set_title(f"users by {section} at the week's end", fontsize=9)
        _legend_outside(axes)
    figure.tight_layout()
    return _png(figure)


def _transitions_png(report: AudienceReport) -> bytes:
    rows = report.section("transitions")
    rows = rows[rows["period"] == ALL]
    stages = _stages(report)
    s = len(stages)
    share = rows["value"].to_numpy(dtype=float).reshape(s, s)
    figure = Figure(figsize=(4.6, 3.8), dpi=90)
    axes = figure.subplots()
    image = axes.imshow(np.nan_to_num(share), cmap="Blues", vmin=0, vmax=1)
    for i in range(s):
        for j in range(s):
            text = EMPTY if math.isnan(share[i, j]) else f"{share[i, j]:.0%}"
            axes.text(j, i, text, ha="center", va="center", fontsize=8,
                      color="white" if np.nan_to_num(share[i, j]) > 0.6 else "black")
    axes.set_xticks(range(s), stages, fontsize=8)
    axes.set_yticks(range(s), stages, fontsize=8)
    axes.set_xlabel("stage at the week's end")
    axes.set_ylabel("stage at the week's start")
    figure.colorbar(image, ax=axes, shrink=0.8, format=PercentFormatter(1.0, decimals=0),
                    label="share of the start stage's users (%)")
    figure.tight_layout()
    return _png(figure)


def _kpi_png(report: AudienceReport) -> bytes:
    rows = report.section("kpi")
    rows = rows[(rows["segment"] == "lifecycle") & (rows["period"] != ALL)]
    figure = Figure(figsize=(10, 3.4), dpi=90)
    x = np.arange(len(report.weeks))
    for axes, metric in zip(figure.subplots(1, 3), ("reach", "open_rate", "convert_rate")):
        for stage in _stages(report):
            mine = rows[(rows["metric"] == metric) & (rows["segment_value"] == stage)]
            mine = mine.set_index("period").reindex(list(report.weeks))
            axes.plot(x, mine["value"].to_numpy(dtype=float), marker="o", markersize=3, color=COLORS[stage],
                      label=stage)
        _week_ticks(axes, report.weeks)
        axes.set_ylim(bottom=0)
        _percent(axes)
        axes.set_ylabel(f"{metric.replace('_', ' ')} (% of users)", fontsize=8)
        axes.set_title(metric, fontsize=9)
    _legend_outside(figure.axes[-1], "stage at the week's start")
    figure.tight_layout()
    return _png(figure)


def _contacts_png(report: AudienceReport, cap: int) -> bytes:
    rows = report.section("contact_distribution")
    figure = Figure(figsize=(6, 2.8), dpi=90)
    axes = figure.subplots()
    labels = rows["segment_value"].tolist()
    colors = ["#c62828" if (lab.rstrip("+").isdigit() and int(lab.rstrip("+")) > cap) else "#1565c0"
              for lab in labels]
    axes.bar(range(len(labels)), rows["value"].fillna(0).to_numpy(), color=colors)
    axes.set_xticks(range(len(labels)), labels, fontsize=8)
    axes.set_xlabel(f"sends to a user in a week (red: above the total cap of {cap})")
    axes.set_ylabel("share of user-weeks (%)")
    _percent(axes)
    figure.tight_layout()
    return _png(figure)


def _hours_png(report: AudienceReport) -> bytes:
    rows = report.section("engagement_hours")
    share = rows["value"].fillna(0).to_numpy(dtype=float).reshape(7, 24)
    figure = Figure(figsize=(10, 3.0), dpi=90)
    axes = figure.subplots()
    image = axes.imshow(share, aspect="auto", cmap="viridis")
    axes.set_yticks(range(7), WEEKDAYS, fontsize=8)
    axes.set_xticks(range(24), [str(h) for h in range(24)], fontsize=7)
    axes.set_xlabel("local hour (0–23, the user's time zone)")
    axes.set_ylabel("local weekday")
    figure.colorbar(image, ax=axes, label="share of opens + clicks (%)", format=PercentFormatter(1.0, decimals=1))
    figure.tight_layout()
    return _png(figure)


def _percent(axes, axis: str = "y") -> None:
    """Shares on ``axis`` shown as percentages."""
    (axes.yaxis if axis == "y" else axes.xaxis).set_major_formatter(PercentFormatter(1.0, decimals=0))


def _legend_outside(axes, title: str | None = None) -> None:
    """The legend right of the plot, off the data."""
    axes.legend(fontsize=7, title=title, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                frameon=False)


def _week_ticks(axes, weeks: tuple[str, ...]) -> None:
    axes.set_xticks(np.arange(len(weeks)), [w[5:] for w in weeks], rotation=45, fontsize=7)
    axes.set_xlabel("week starting (month-day, UTC)", fontsize=8)


def _retention_png(report: AudienceReport) -> bytes:
    rows = report.section("retention")
    figure = Figure(figsize=(8, 3.4), dpi=90)
    axes = figure.subplots()
    for cohort in dict.fromkeys(rows["period"]):
        mine = rows[rows["period"] == cohort]
        weeks = mine["metric"].str.split("_").str[1].astype(int).to_numpy()
        pooled = cohort == ALL
        axes.plot(weeks, mine["value"].to_numpy(dtype=float), marker="o", markersize=3,
                  linewidth=2.5 if pooled else 1, color="black" if pooled else None,
                  label="all cohorts" if pooled else f"{cohort} ({int(mine['n'].max()):,} users)")
    axes.set_xlabel("weeks since signup", fontsize=8)
    axes.set_ylabel("users active in the week (%)", fontsize=8)
    axes.set_ylim(0, 1.02)
    _percent(axes)
    axes.xaxis.get_major_locator().set_params(integer=True)
    _legend_outside(axes, "signup week")
    figure.tight_layout()
    return _png(figure)


def _active_png(report: AudienceReport) -> bytes:
    rows = report.section("active_users")
    daily = rows[rows["period"] != ALL]
    figure = Figure(figsize=(10, 3.4), dpi=90)
    counts, ratio = figure.subplots(1, 2)
    days = list(dict.fromkeys(daily["period"]))
    x = np.arange(len(days))
    for metric in ACTIVE_WINDOWS:
        mine = daily[daily["metric"] == metric].set_index("period").reindex(days)
        counts.plot(x, mine["count"].to_numpy(dtype=float), label=metric.upper())
    mine = daily[daily["metric"] == "stickiness"].set_index("period").reindex(days)
    ratio.plot(x, mine["value"].to_numpy(dtype=float), color="#6a1b9a")
    step = max(1, len(days) // 10)
    for axes in (counts, ratio):
        axes.set_xticks(x[::step], [d[5:] for d in days[::step]], rotation=45, fontsize=7)
        axes.set_xlabel("day (month-day, UTC)", fontsize=8)
    counts.set_ylabel("active users (people)", fontsize=8)
    counts.set_ylim(bottom=0)
    ratio.set_ylabel("stickiness: DAU ÷ MAU (%)", fontsize=8)
    ratio.set_ylim(bottom=0)
    _percent(ratio)
    _legend_outside(counts)
    figure.tight_layout()
    return _png(figure)


def _engagement_png(report: AudienceReport) -> bytes:
    rows = report.section("engagement")
    figure = Figure(figsize=(8, 3.4), dpi=90)
    axes = figure.subplots()
    centers = (np.arange(ENGAGEMENT_BINS) + 0.5) / ENGAGEMENT_BINS
    for stage in _stages(report):
        mine = rows[(rows["segment_value"] == stage) & rows["metric"].str.startswith("score_")]
        if not mine["n"].iloc[0]:
            continue
        axes.plot(centers, mine["value"].to_numpy(dtype=float), marker="o", markersize=3, color=COLORS[stage],
                  label=f"{stage} ({int(mine['n'].iloc[0]):,} users)")
    axes.set_xlim(0, 1)
    axes.set_xticks(np.linspace(0, 1, ENGAGEMENT_BINS + 1))
    axes.set_xlabel("engagement score (0–1, in tenths)", fontsize=8)
    axes.set_ylabel("share of the stage's users (%)", fontsize=8)
    axes.set_ylim(bottom=0)
    _percent(axes)
    _legend_outside(axes, "stage at the period's end")
    figure.tight_layout()
    return _png(figure)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


# -------------------------------------------------------------------------------------------- formatting




def _cell(row: pd.Series, metric: str) -> str:
    """One figure as text; an empty segment as "—"."""
    value = row["value"]
    if _missing(value):
        return f'<td class="empty" title="{_e(row["note"] or "no users")}">{EMPTY}</td>'
    if metric in MONEY:
        return f"{value:,.2f}"
    if metric == "score":            # a score in [0, 1], not a share
        return f"{value:.3f}"
    return f"{value:.1%}" if metric == "share" or value >= 0.1 else f"{value:.2%}"


def _users(n: float) -> str:
    return f"{int(n):,}" if n else f'<td class="empty" title="no users">0</td>'


def _count_share(rows: pd.DataFrame, week: str, value: str) -> str:
    row = rows[(rows["period"] == week) & (rows["segment_value"] == value)].iloc[0]
    return f'<td class="empty">{EMPTY}</td>' if _missing(row["value"]) else f"{int(row['count']):,} ({row['value']:.1%})"


def _count_share_row(row: pd.Series) -> str:
    return EMPTY if _missing(row["value"]) else f"{int(row['count']):,} ({row['value']:.2%})"


def _total(rows: pd.DataFrame, week: str) -> str:
    return f"{int(rows.loc[rows['period'] == week, 'n'].iloc[0]):,}"


def _mean_over_weeks(rows: pd.DataFrame, metric: str, share: bool = False) -> str:
    mine = rows[rows["metric"] == metric]
    n = mine["n"].sum()
    if not n:
        return f'<td class="empty">{EMPTY}</td>'
    value = mine["count"].sum() / n
    return f"{value:.1%}" if share else f"{value:.2f}"


def _interval(value: float, low: float, high: float) -> str:
    if _missing(value):
        return EMPTY
    return f"{value:.1%} [{low:.1%}, {high:.1%}]"
