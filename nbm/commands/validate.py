"""``nbm validate``: check a data directory against the data contract and print the report."""

from __future__ import annotations

import argparse
from pathlib import Path

from nbm.commands.options import parse_time, results_console
from nbm.config import load_config


def run_validate(args: argparse.Namespace, validate_parts=None) -> int:
    """``validate_parts``: for a data directory whose events are parts, the function that validates them
    (``features.parts.validate_parts``, handed over by the CLI: the composition root)."""
    from nbm.dataset import load_dataset, unusable, unusable_parts
    from nbm.lifecycle import stage_mix

    config = load_config(args.config)
    now = parse_time(args.now, "--now")
    console = results_console()
    if validate_parts is not None:
        with console.status(f"validating {args.data} (the small tables, then every event part)…"):
            tables, report = validate_parts(Path(args.data), config, now)
        report.render(console, config.validation.max_problems_shown if args.show is None else max(args.show, 0))
        console.print("  the lifecycle mix is not computed on a log in parts", markup=False, highlight=False)
        if args.json:
            Path(args.json).write_text(report.to_json(), encoding="utf-8")
        kept = sum(n for table, n in report.rows_kept.items() if table.startswith("events/"))
        reason = unusable_parts(len(tables.messages), kept, report, args.data)
        if reason:
            console.print(f"nbm validate: {reason}", style="bold red", markup=False, highlight=False)
            return 2
        return report.exit_code
    with console.status(f"validating {args.data}…"):
        dataset, report = load_dataset(Path(args.data), config, now=now)
    shown = config.validation.max_problems_shown if args.show is None else max(args.show, 0)
    report.render(console, shown)
    if len(dataset.users):     # the operator's lifecycle on this data: one stage holding nearly everyone is a smell
        mix = stage_mix(dataset.events, dataset.users, config.lifecycle)
        for line in mix.lines():
            # The lines name settings in brackets ([lifecycle]): printed as text, not as rich markup.
            console.print(line, style="yellow" if line.startswith("warning") else None, markup=False, highlight=False)
    if args.json:
        Path(args.json).write_text(report.to_json(), encoding="utf-8")
    reason = unusable(dataset, report, args.data)
    if reason:          # what `nbm train` would refuse: the same words, the same exit code
        console.print(f"nbm validate: {reason}", style="bold red", markup=False, highlight=False)
        return 2
    return report.exit_code
