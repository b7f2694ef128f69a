"""The A/B report as one self-contained HTML file: inline CSS, plots as base64 PNG, no script, no link out.

It opens with one verdict per metric (`verdicts`): which arm wins against the control, the lift with its
interval, how certain that is, and whether the SRM check passed. Every string that comes from the data (arm,
experiment, segment values, notes) goes through `html.escape`; the page is readable offline and safe to mail
around.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from experiments.ab import ALL, METRIC_BY_NAME, METRICS, AbResult, Metric

Certainty = Literal["significant", "significant_at_end_only", "not_significant", "untestable"]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 78em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.meta { color: #555; }
.banner { padding: 0.8em 1em; margin: 1em 0; border-radius: 4px; font-weight: 600; }
.banner.srm { background: #c62828; color: #fff; font-size: 1.1em; }
.banner.problems { background: #fff3cd; border: 1px solid #e0b000; }
.banner.guardrail { background: #fde0dc; border: 1px solid #c62828; }
ul.verdicts li { margin: 0.3em 0; } ul.verdicts li.win { font-weight: 600; }
ul.verdicts li.untrusted { color: #c62828; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.55em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
tr.control td { color: #666; } tr.breach td { background: #fde0dc; }
td.note { text-align: left; color: #666; font-size: 0.9em; max-width: 28em; }
img { max-width: 100%; }
"""


def render_html(result: AbResult) -> str:
    """The whole report; ``result`` from :func:`experiments.ab.analyze`."""
    overall = result.results[result.results["segment"] == ALL]
    parts = [f"<h1>A/B test {_e(result.experiment)}</h1>",
             f'<p class="meta">window {_e(f"{result.window_start:%Y-%m-%d %H:%M}")} → '
             f'{_e(f"{result.window_end:%Y-%m-%d %H:%M}")} UTC · control <b>{_e(result.control)}</b> · '
             f"primary metric <b>{_e(result.primary_metric)}</b> · α = {result.alpha:g} · the unit is the user</p>"]
    if result.srm.mismatch:
        parts.append(f'<div class="banner srm">Sample ratio mismatch (χ² = {result.srm.chi2:.1f}, '
                     f"p = {_p(result.srm.p_value)} &lt; {result.srm.threshold:g}): the users per arm do not match "
                     "the design. Assignment or logging is broken; the differences below are not trustworthy.</div>")
    parts.append(_verdicts(result))
    others = [p for p in result.problems if not p.startswith("sample ratio mismatch")]
    if others:
        parts.append('<div class="banner problems">Problems in the data:<ul>'
                     + "".join(f"<li>{_e(p)}</li>" for p in others) + "</ul></div>")
    breaches = overall[overall["guardrail_breach"]]
    if len(breaches):
        parts.append('<div class="banner guardrail">Guardrail breach: '
                     + "; ".join(f"{_e(r.metric)} rose significantly in arm {_e(r.arm)} "
                                 f"({_diff(r.metric, r.difference)}, p = {_p(r.p_value)})"
                                 for r in breaches.itertuples()) + "</div>")
    if result.notes:
        parts.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in result.notes) + "</ul>")
    parts += [_arms(result), _headline(result, overall), _overall(overall), _daily(result), _segments(result),
              _methods(result)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>A/B test {_e(result.experiment)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


@dataclass(frozen=True)
class Verdict:
    """The answer on one metric over all users: which arm beats the control, by how much, how surely.

    ``winner`` is the treatment arm that beats the control at ``alpha`` (higher; lower for a guardrail), the
    one with the largest difference when several do, and "" when none does. ``arm`` is the arm the numbers are
    about: the arm of a guardrail breach if there is one (the largest rise), else the winner, else the treatment
    arm with the smallest p-value ("" with no treatment arm).
    ``relative`` is ``arm`` / control − 1 with its log-ratio interval, ``difference`` arm − control with its
    interval. ``certainty``: ``significant`` (p < alpha, and the always-valid p too where there is one),
    ``significant_at_end_only`` (p < alpha but not the always-valid p: valid only at the planned end),
    ``not_significant`` or ``untestable``. ``srm_passed`` is False when the SRM check found a mismatch, and
    then no verdict is to be trusted. ``sentence`` says it all in plain text.
    """

    metric: str
    control: str
    winner: str
    arm: str
    relative: float
    relative_ci_low: float
    relative_ci_high: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    sequential_p_value: float
    certainty: Certainty
    srm_passed: bool
    sentence: str


def verdicts(result: AbResult) -> tuple[Verdict, ...]:
    """One `Verdict` per metric, in the order of :data:`experiments.ab.METRICS`."""
    rows = result.results[(result.results["segment"] == ALL) & (result.results["arm"] != result.control)]
    return tuple(_verdict(metric, rows[rows["metric"] == metric.name], result) for metric in METRICS)


def _verdict(metric: Metric, rows: pd.DataFrame, result: AbResult) -> Verdict:
    better = -1.0 if metric.guardrail else 1.0  # a guardrail wins by falling
    significant = (rows["p_value"] < result.alpha).to_numpy()  # False for NaN
    gain = better * rows["difference"].to_numpy(dtype=float)
    winners = rows[significant & (gain > 0)]
    tested = rows[rows["p_value"].notna()]
    breaches = rows[rows["guardrail_breach"].astype(bool)]
    if len(breaches):  # a guardrail's rise comes first, whichever arm lowers it
        chosen = breaches["difference"].idxmax()
    elif len(winners):
        chosen = (better * winners["difference"]).idxmax()
    elif len(tested):
        chosen = tested["p_value"].idxmin()
    else:
        chosen = rows.index[0] if len(rows) else None
    lead = None if chosen is None else next(rows.loc[[chosen]].itertuples())
    srm = result.srm
    srm_text = (f"SRM check failed ({_p_text(srm.p_value)}): the assignment or the logging is broken, do not "
                "trust this" if srm.mismatch else f"SRM check passed ({_p_text(srm.p_value)})"
                if not math.isnan(srm.p_value) else f"SRM not tested ({srm.note})")
    name = metric.name + (" (guardrail, lower is better)" if metric.guardrail else "")
    if lead is None:
        return Verdict(metric.name, result.control, "", "", *[math.nan] * 8, "untestable", not srm.mismatch,
                       f"{name}: no treatment arm to compare with {result.control}. {srm_text}.")
    certainty = _certainty(lead.p_value, lead.sequential_p_value, result.alpha)
    winner = str(winners.loc[(better * winners["difference"]).idxmax(), "arm"]) if len(winners) else ""
    if len(breaches):
        head = f"guardrail breach, {lead.arm} raises it against {result.control}"
    elif winner:
        head = f"{winner} wins against {result.control}"
    elif certainty == "significant" or certainty == "significant_at_end_only":
        head = f"no arm beats {result.control}; {lead.arm} does worse"
    elif certainty == "not_significant":
        head = f"no winner; {lead.arm} against {result.control}"
    else:
        head = f"no test of {lead.arm} against {result.control}"
    others = [f"{r.arm} {_lift(metric.name, r)} ({_p_text(r.p_value)})" if not _missing(r.p_value)
              else f"{r.arm} not tested" for r in rows.itertuples() if r.arm != lead.arm]
    sentence = (f"{name}: {head}, {_lift(metric.name, lead)} ({_value(metric.name, lead.value)} against "
                f"{_value(metric.name, lead.control_value)}); {_certainty_text(certainty, lead, result.alpha)}"
                + (f"; other arms: {', '.join(others)}" if others else "") + f". {srm_text}.")
    return Verdict(metric.name, result.control, winner, str(lead.arm), float(lead.relative),
                   float(lead.relative_ci_low), float(lead.relative_ci_high), float(lead.difference),
                   float(lead.ci_low), float(lead.ci_high), float(lead.p_value), float(lead.sequential_p_value),
                   certainty, not srm.mismatch, sentence)


def _certainty(p_value: float, sequential_p_value: float, alpha: float) -> Certainty:
    if _missing(p_value):
        return "untestable"
    if p_value >= alpha:
        return "not_significant"
    if _missing(sequential_p_value) or sequential_p_value < alpha:
        return "significant"
    return "significant_at_end_only"


def _certainty_text(certainty: Certainty, row, alpha: float) -> str:
    sequential = "" if _missing(row.sequential_p_value) else f"always-valid {_p_text(row.sequential_p_value)}"
    if certainty == "significant":
        return (f"significant at α = {alpha:g} ({_p_text(row.p_value)}"
                + (f"; {sequential}: it holds however often one looked" if sequential else "") + ")")
    if certainty == "significant_at_end_only":
        return (f"significant at α = {alpha:g} only if this is the planned end ({_p_text(row.p_value)}; "
                f"{sequential} ≥ α: not enough to stop early on)")
    if certainty == "not_significant":
        return f"not significant at α = {alpha:g} ({_p_text(row.p_value)})"
    return "no test" + (f": {row.note}" if row.note else "")


def _lift(metric: str, row) -> str:
    """The relative lift with its interval, or the difference where there is no relative one."""
    difference = _interval(metric, row.difference, row.ci_low, row.ci_high)
    if _missing(row.relative):
        return difference
    if _missing(row.relative_ci_low) and not _missing(row.ci_low):
        return f"{_percent(row.relative)}, {difference}"
    return _relative(row.relative, row.relative_ci_low, row.relative_ci_high)


def _p_text(value: float) -> str:
    """``p = …`` in plain text."""
    if _missing(value):
        return "p not available"
    return (f"p = {value:.3f}" if value >= 0.001 else f"p = {value:.1e}" if value > 0
            else f"p < {np.finfo(float).tiny:.0e}")


def cumulative_lift_png(result: AbResult, metric: str | None = None) -> bytes | None:
    """PNG of each treatment arm's cumulative difference from the control per day, with its 95 % bands."""
    metric = metric or result.primary_metric
    daily = result.daily[result.daily["metric"] == metric]
    if not len(daily):
        return None
    scale = 100.0 if METRIC_BY_NAME[metric].kind == "rate" else 1.0
    figure = Figure(figsize=(9, 4.2), dpi=100)
    axes = figure.subplots()
    colors = iter(("#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f"))
    for arm, series in daily.groupby("arm", sort=False):
        color = next(colors, "#444")
        days = series["day"].dt.tz_convert(None).to_numpy()
        axes.fill_between(days, series["sequential_ci_low"] * scale, series["sequential_ci_high"] * scale,
                          color=color, alpha=0.15, linewidth=0, label=f"{arm}: always-valid 95 %")
        axes.plot(days, series["ci_low"] * scale, color=color, linestyle=":", linewidth=1)
        axes.plot(days, series["ci_high"] * scale, color=color, linestyle=":", linewidth=1,
                  label=f"{arm}: fixed-horizon 95 %")
        axes.plot(days, series["difference"] * scale, color=color, marker="o", markersize=3,
                  label=f"{arm} − {result.control}")
    axes.axhline(0, color="#888", linewidth=0.8)
    axes.set_ylabel(f"{metric} difference" + (" (percentage points)" if scale != 1 else ""))
    axes.set_title(f"cumulative {metric}: treatment − {result.control}, by day")
    axes.legend(fontsize=7, ncol=2, loc="best")
    figure.autofmt_xdate()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------- sections


def _verdicts(result: AbResult) -> str:
    items = "".join(
        f'<li class="{"untrusted" if not v.srm_passed else "win" if v.winner else "none"}">{_e(v.sentence)}</li>'
        for v in verdicts(result))
    return ('<h2 id="verdict">Verdict</h2><p>Each metric over all users, treatment against the control at '
            f"α = {result.alpha:g}; relative lifts with their 95 % log-ratio interval.</p>"
            f'<ul class="verdicts">{items}</ul>')


def _arms(result: AbResult) -> str:
    rows = [[_e(r.arm) + (" (control)" if r.is_control else ""), f"{r.expected_share:.1%}", f"{r.users:,}",
             f"{r.expected_users:,.0f}", f"{r.decisions:,}", f"{r.sends:,}"] for r in result.arms.itertuples()]
    srm = result.srm
    verdict = (f"SRM χ² = {srm.chi2:.2f}, df = {srm.df}, p = {_p(srm.p_value)}: "
               + ("mismatch" if srm.mismatch else "no mismatch") + f" (threshold {srm.threshold:g})"
               if not math.isnan(srm.chi2) else f"SRM: {_e(srm.note)}")
    return ("<h2>Arms</h2>" + _table(["arm", "expected share", "users", "expected users", "decisions", "sends"], rows)
            + f"<p>{verdict}. Users in two arms: {result.users_in_several_arms:,} (left out).</p>")


def _headline(result: AbResult, overall: pd.DataFrame) -> str:
    png = cumulative_lift_png(result)
    image = (f'<img alt="cumulative lift of {_e(result.primary_metric)}" '
             f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">' if png else
             "<p>No treatment arm: no lift to plot.</p>")
    return (f"<h2>Primary metric: {_e(result.primary_metric)}</h2>"
            "<p>Each day on the data up to that day's end. Shaded: the always-valid (mSPRT) 95 % interval, safe to "
            "read every day; dotted: the fixed-horizon interval, valid only at the planned end.</p>" + image)


def _overall(overall: pd.DataFrame) -> str:
    return "<h2>All users</h2>" + _results_table(overall, with_segment=False, adjusted=False)


def _daily(result: AbResult) -> str:
    daily = result.daily[result.daily["metric"] == result.primary_metric]
    rows = [[_e(f"{r.day:%Y-%m-%d}"), _e(r.arm), f"{r.n_users:,}", f"{r.n_control_users:,}",
             _value(r.metric, r.value), _value(r.metric, r.control_value), _interval(r.metric, r.difference, r.ci_low,
             r.ci_high), _p(r.p_value), _p(r.sequential_p_value)] for r in daily.itertuples()]
    return (f"<h2>Day by day: {_e(result.primary_metric)}</h2><p>The fixed-horizon p-value is shown to make the "
            "point: read daily it dips below α by chance far more often than α. Decide on the sequential p-value."
            "</p>" + _table(["day", "arm", "users", "control users", "value", "control", "difference [95 % CI]",
                             "fixed-horizon p", "sequential p"], rows))


def _segments(result: AbResult) -> str:
    parts = ["<h2>Segments</h2><p>p adj.: Benjamini–Hochberg over every segment test of this report "
             f"({int(result.results['p_adjusted'].notna().sum())} tests).</p>"]
    for segment in result.segments:
        rows = result.results[result.results["segment"] == segment]
        if segment == ALL or not len(rows):
            continue
        parts.append(f"<h3>by {_e(segment)}</h3>" + _results_table(rows, with_segment=True, adjusted=True))
    return "".join(parts)


def _methods(result: AbResult) -> str:
    items = "".join(f"<li><b>{_e(m.name)}</b> ({_e(m.test)}): {_e(m.description)}</li>" for m in METRICS)
    return ("<h2>Method</h2><ul>" + items + "</ul><p>Rates: pooled two-proportion z-test, Wald interval. Means: "
            "Welch's t. Ratios: delta method (z). Relative differences: log-ratio interval (the delta method on "
            "log(treatment / control), exponentiated), which stays above −100 %. CUPED: the same metric over each "
            "user's pre-period of equal length, just before their window. SRM: Pearson χ² of users per arm "
            "against the designed shares (scipy.stats.chisquare). Segments: Benjamini–Hochberg "
            "(statsmodels.stats.multitest). Sequential: mixture SPRT (always valid).</p>")


# -------------------------------------------------------------------------------------------- formatting


def _results_table(rows: pd.DataFrame, with_segment: bool, adjusted: bool) -> str:
    headers = (["segment"] if with_segment else []) + [
        "metric", "arm", "users", "value", "control", "difference [95 % CI]", "relative [95 % CI]", "test", "p"]
    headers += (["p adj."] if adjusted else ["CUPED difference [95 % CI]", "variance removed", "sequential p"])
    body = []
    for r in rows.itertuples():
        control = r.arm == r.control
        cells = ([_e(r.segment_value)] if with_segment else []) + [
            _e(r.metric), _e(r.arm) + (" (control)" if control else ""), f"{r.n_users:,}", _value(r.metric, r.value),
            _value(r.metric, r.control_value), _interval(r.metric, r.difference, r.ci_low, r.ci_high),
            _relative(r.relative, r.relative_ci_low, r.relative_ci_high), _e(r.test), _p(r.p_value)]
        if adjusted:
            cells.append(_p(r.p_adjusted))
        else:
            cells += [_interval(r.metric, r.cuped_difference, r.cuped_ci_low, r.cuped_ci_high),
                      "" if _missing(r.variance_reduction) else f"{r.variance_reduction:.1%}", _p(r.sequential_p_value)]
        note = ("guardrail breach; " if r.guardrail_breach else "") + r.note
        body.append((cells + [f'<td class="note">{_e(note)}</td>'],
                     "breach" if r.guardrail_breach else "control" if control else ""))
    return _table(headers + ["note"], body)


def _table(headers: list[str], rows: list) -> str:
    """``rows``: lists of escaped cells (a cell starting with ``<td`` is taken whole), or (cells, class) pairs."""
    out = ["<table><tr>" + "".join(f'<th class="text">{h}</th>' if i < 2 else f"<th>{h}</th>"
                                   for i, h in enumerate(headers)) + "</tr>"]
    for row in rows:
        cells, cls = row if isinstance(row, tuple) else (row, "")
        tds = "".join(c if c.startswith("<td") else f'<td class="text">{c}</td>' if i < 2 else f"<td>{c}</td>"
                      for i, c in enumerate(cells))
        out.append(f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>")
    return "".join(out) + "</table>"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _value(metric: str, value: float) -> str:
    if _missing(value):
        return "–"
    kind = METRIC_BY_NAME[metric].kind
    return f"{value:.2%}" if kind == "rate" else f"{value:,.2f}" if kind == "mean" else f"{value:.4f}"


def _diff(metric: str, value: float) -> str:
    if _missing(value):
        return "–"
    kind = METRIC_BY_NAME[metric].kind
    return f"{value * 100:+.2f} pp" if kind == "rate" else f"{value:+,.2f}" if kind == "mean" else f"{value:+.4f}"


def _interval(metric: str, value: float, low: float, high: float) -> str:
    if _missing(value):
        return "–"
    if _missing(low):
        return _diff(metric, value)
    return f"{_diff(metric, value)} [{_diff(metric, low)}, {_diff(metric, high)}]"


def _relative(value: float, low: float, high: float) -> str:
    if _missing(value):
        return "–"
    return _percent(value) + ("" if _missing(low) else f" [{_percent(low)}, {_percent(high)}]")


def _percent(value: float) -> str:
    """``+12.3%``; near −100 % with as many decimals as it takes not to print −100.0 % for a bound above it."""
    for decimals in range(1, 8):
        text = f"{value:+.{decimals}%}"
        if value == -1 or not text.startswith("-100.0"):
            return text
    return text


def _p(value: float) -> str:
    if _missing(value):
        return "–"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}" if value > 0 else f"&lt;{np.finfo(float).tiny:.0e}"
