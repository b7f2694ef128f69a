"""``nbm ab``: load a data directory, analyse one experiment, write the report and the long-format results.

Writes ``report.html``, ``results.csv`` and ``results.json`` under ``--out`` (default ``./ab-NAME/``) and prints
a short summary on stderr. Exit code 0, or 1 when the analysis finished but found problems (sample ratio
mismatch, users in two arms, decisions without an arm, bad input rows dropped by the loader).
"""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from experiments.ab import ALL, METRIC_BY_NAME, AbResult, analyze
from experiments.ab_report import render_html, verdicts
from nbm.commands.options import results_console
from nbm.config import NbmConfig
from nbm.dataset import load_dataset
from nbm.errors import UsageError

REPORT, RESULTS_CSV, RESULTS_JSON = "report.html", "results.csv", "results.json"


def run_ab(data: Path, experiment: str, out: Path | None, config: NbmConfig, by: str | None = None,
           control: str | None = None) -> int:
    """Run the analysis of ``nbm ab`` and return its exit code (0 fine, 1 problems found)."""
    if not experiment.strip():
        raise UsageError("`--experiment`: give the name of the experiment to analyse")
    console = Console(stderr=True)
    with console.status(f"analysing experiment {experiment!r} in {data}…"):
        dataset, report = load_dataset(Path(data), config)
        result = analyze(dataset, experiment, config, by=by, control=control)
        out = default_out(experiment) if out is None else Path(out)
        written = write_outputs(result, out)
    dropped = report.dropped_rows
    input_problems = [f"{dropped:,} bad input rows were dropped by the loader (see `nbm validate`)"] if dropped else []
    print_summary(results_console(), result, written, input_problems)     # results on stdout, progress on stderr
    return 1 if result.problems or input_problems else 0


def default_out(experiment: str) -> Path:
    """``./ab-NAME`` with the name made safe for a path."""
    return Path(f"ab-{re.sub(r'[^A-Za-z0-9._-]+', '_', experiment.strip())}")


def write_outputs(result: AbResult, out: Path) -> list[Path]:
    """``report.html``, ``results.csv`` and ``results.json`` (records; NaN as null) in ``out``."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"`--out`: {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / REPORT, out / RESULTS_CSV, out / RESULTS_JSON]
    paths[0].write_text(render_html(result), encoding="utf-8")
    result.results.to_csv(paths[1], index=False)
    result.results.to_json(paths[2], orient="records", indent=2, double_precision=15)
    return paths


def print_summary(console: Console, result: AbResult, written: list[Path], input_problems: list[str]) -> None:
    """The verdict per metric; users per arm and the primary metric against the control; problems, breaches."""
    for verdict in verdicts(result):
        console.print(f"  verdict: {verdict.sentence}", markup=False, highlight=False, soft_wrap=True)
    metric = result.primary_metric
    rows = result.results[(result.results["segment"] == ALL) & (result.results["metric"] == metric)]
    table = Table(title=escape(f"experiment {result.experiment}: {metric} against {result.control}"))
    for column in ("arm", "users", metric, "difference [95 % CI]", "p", "sequential p"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    rate = METRIC_BY_NAME[metric].kind == "rate"
    for r in rows.itertuples():
        value = "-" if r.value != r.value else f"{r.value:.2%}" if rate else f"{r.value:,.2f}"
        interval = ("-" if r.difference != r.difference or r.arm == r.control
                    else f"{_diff(r.difference, rate)} [{_diff(r.ci_low, rate)}, {_diff(r.ci_high, rate)}]")
        table.add_row(escape(r.arm) + (" (control)" if r.arm == r.control else ""), f"{r.n_users:,}", value, interval,
                      _p(r.p_value), _p(r.sequential_p_value))
    console.print(table)
    srm = result.srm
    console.print(f"  SRM χ² p = {_p(srm.p_value)}" + (" [bold red]MISMATCH[/bold red]" if srm.mismatch else ""))
    breaches = result.results[(result.results["segment"] == ALL) & result.results["guardrail_breach"]]
    for r in breaches.itertuples():
        console.print(f"  [red]guardrail breach[/red]: {r.metric} up in {escape(r.arm)} (p = {_p(r.p_value)})",
                      highlight=False)
    for line in (*result.problems, *input_problems):
        console.print(f"  [yellow]problem[/yellow]: {escape(line)}", highlight=False)
    for line in result.notes:
        console.print(f"  note: {line}", markup=False, highlight=False)
    console.print(f"  written: {', '.join(p.name for p in written)} in {written[0].parent}", highlight=False)


def _diff(value: float, rate: bool) -> str:
    return "-" if value != value else f"{value * 100:+.2f} pp" if rate else f"{value:+,.2f}"


def _p(value: float) -> str:
    return "-" if value != value else f"{value:.3g}"
