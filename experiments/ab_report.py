"""The A/B report as one self-contained HTML file: inline CSS, plots as base64 PNG, no script, no link out.

Every string that comes from the data (arm, experiment, segment values, notes) goes through `html.escape`;
the page is readable offline and safe to mail around.
"""

from __future__ import annotations

import base64
import html
import io
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from experiments.ab import ALL, METRIC_BY_NAME, METRICS, AbResult

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 78em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.meta { color: #555; }
.banner { padding: 0.8em 1em; margin: 1em 0; border-radius: 4px; font-weight: 600; }
.banner.srm { background: #c62828; color: #fff; font-size: 1.1em; }
.banner.problems { background: #fff3cd; border: 1px solid #e0b000; }
.banner.guardrail { background: #fde0dc; border: 1px solid #c62828; }
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
        if segment == ALL:
            continue
        rows = result.results[result.results["segment"] == segment]
        parts.append(f"<h3>by {_e(segment)}</h3>" + _results_table(rows, with_segment=True, adjusted=True))
    return "".join(parts)


def _methods(result: AbResult) -> str:
    items = "".join(f"<li><b>{_e(m.name)}</b> ({_e(m.test)}): {_e(m.description)}</li>" for m in METRICS)
    return ("<h2>Method</h2><ul>" + items + "</ul><p>Rates: pooled two-proportion z-test, Wald interval. Means: "
            "Welch's t. Ratios: delta method (z). Relative differences: delta-method normal interval. CUPED: the "
            "same metric over each user's pre-period of equal length, just before their window. SRM: Pearson χ² "
            "of users per arm against the designed shares. Sequential: mixture SPRT (always valid).</p>")


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
    return f"{value:+.1%}" + ("" if _missing(low) else f" [{low:+.1%}, {high:+.1%}]")


def _p(value: float) -> str:
    if _missing(value):
        return "–"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}" if value > 0 else f"&lt;{np.finfo(float).tiny:.0e}"
