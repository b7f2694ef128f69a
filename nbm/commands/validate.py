"""``nbm validate``: check a data directory against the data contract and print the report."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from rich.console import Console

from nbm.config import load_config
from nbm.errors import UsageError


def run_validate(args: argparse.Namespace) -> int:
    from nbm.dataset import load_dataset

    config = load_config(args.config)
    now = None
    if args.now:
        try:
            now = pd.Timestamp(args.now)
        except ValueError as exc:
            raise UsageError(f"`--now`: not an ISO-8601 time: {args.now!r}") from exc
        now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")
    console = Console()
    with console.status(f"validating {args.data}…"):
        _, report = load_dataset(Path(args.data), config, now=now)
    shown = config.validation.max_problems_shown if args.show is None else max(args.show, 0)
    report.render(console, shown)
    if args.json:
        Path(args.json).write_text(report.to_json(), encoding="utf-8")
    return report.exit_code
