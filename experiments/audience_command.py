"""``nbm report``: load a data directory, compute the audience report, write it and its figures.

Writes ``report.html`` (default ``./report.html``) and beside it ``report.csv`` and ``report.json``: every figure
of the page, one row per period × segment × metric. A progress display runs on stderr. Exit code 0, or 1 when
the loader dropped bad input rows (the report is still written, and its data-quality section says why).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from experiments.audience import AudienceReport, analyze
from experiments.audience_report import render_html
from experiments.profiles import Featuriser
from nbm.commands.options import results_console
from nbm.config import NbmConfig
from nbm.dataset import Dataset, load_dataset
from nbm.errors import UsageError
from nbm.lifecycle import stage_mix

DEFAULT_OUT = Path("report.html")


def run_report(data: Path, out: Path | None, config: NbmConfig, start: pd.Timestamp | None = None,
               end: pd.Timestamp | None = None, by: str | None = None,
               featuriser_for: Callable[[Dataset, NbmConfig], Featuriser] | None = None) -> int:
    """Run ``nbm report`` and return its exit code (0 fine, 1 bad input rows were dropped). ``featuriser_for``
    builds the features' featuriser of the loaded data (the CLI wires ``features.pipeline.FeatureStore``): the
    engagement score's section needs it, and is left out without it."""
    out = DEFAULT_OUT if out is None else Path(out)
    if out.is_dir():
        raise UsageError(f"`--out`: {str(out)!r} is a directory; name the HTML file (e.g. {str(out / 'report.html')!r})")
    console = Console(stderr=True)
    steps = ("loading and validating", "computing figures", "drawing the report", "writing")
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(f"{steps[0]} {data}", total=len(steps))
        dataset, quality = load_dataset(Path(data), config)
        progress.update(task, advance=1, description=steps[1])
        featurise = None if featuriser_for is None else featuriser_for(dataset, config)
        report = analyze(dataset, config, quality, start=start, end=end, by=by, featurise=featurise)
        progress.update(task, advance=1, description=steps[2])
        page = render_html(report, config)
        progress.update(task, advance=1, description=steps[3])
        written = write_outputs(report, page, out)
        progress.update(task, advance=1)
    dropped = quality.dropped_rows
    console = results_console()         # the summary and the paths written: results, on stdout
    console.print(f"audience report {report.start:%Y-%m-%d} → {report.end:%Y-%m-%d}: {len(report.weeks)} weeks, "
                  f"{len(dataset.users):,} users, {len(report.figures):,} figures", highlight=False)
    if dropped:
        console.print(f"  [yellow]problem[/yellow]: {dropped:,} bad input rows were dropped by the loader "
                      "(see the data-quality section, or `nbm validate`)", highlight=False)
    for line in stage_mix(dataset.events, dataset.users, config.lifecycle, report.end.value).lines():
        console.print(f"  {line}", markup=False, highlight=False)
    for note in report.notes:
        console.print(f"  note: {note}", markup=False, highlight=False)
    console.print(f"  written: {', '.join(str(p) for p in written)}", markup=False, highlight=False)
    return 1 if dropped else 0


def write_outputs(report: AudienceReport, page: str, out: Path) -> list[Path]:
    """The HTML at ``out``; ``report.csv`` / ``report.json`` (records, NaN as null) beside it, named after it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out, out.with_suffix(".csv"), out.with_suffix(".json")]
    paths[0].write_text(page, encoding="utf-8")
    report.figures.to_csv(paths[1], index=False)
    report.figures.to_json(paths[2], orient="records", indent=1, double_precision=15)
    return paths
