"""``nbm simulate``: write a simulated world in the data contract and print its summary."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from nbm.commands.options import parse_time
from nbm.simulate import MessyRates, SimulatedData, simulate
from nbm.simulate.manifest import MANIFEST, NBM_TOML_EXAMPLE, WORLD, world_manifest, write_world
from nbm.simulate.messy import inject
from nbm.simulate.presets import PRESETS, world_config


def run_simulate(args: argparse.Namespace) -> int:
    start = parse_time(args.start, "--start")
    config = world_config(
        args.preset, n_users=args.users, n_days=args.days, seed=args.seed, start=start, epsilon=args.epsilon,
        messy=MessyRates() if args.messy else None,
    )
    console = Console(stderr=False)
    began = time.perf_counter()
    with console.status(f"simulating {config.n_users:,} users over {config.n_days} days…"):
        data = simulate(config)
        tables, manifest = data.tables, None
        if config.messy is not None:
            messy_seed = np.random.SeedSequence(config.seed).spawn(4)[3]
            tables, manifest = inject(tables, config.messy, np.random.default_rng(messy_seed))
        written = write_world(tables, args.out, args.format)
        if manifest is not None:
            (Path(args.out) / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
        (Path(args.out) / WORLD).write_text(json.dumps(world_manifest(config), indent=2) + "\n")
        if config.preset is not None:
            (Path(args.out) / NBM_TOML_EXAMPLE).write_text(PRESETS[config.preset].nbm_toml)
    print_summary(console, data, written, time.perf_counter() - began, manifest)
    if config.preset is not None:
        print_preset(console, config.preset, Path(args.out) / NBM_TOML_EXAMPLE)
    return 0


def print_preset(console: Console, name: str, example: Path) -> None:
    """What differs in a preset world, why it matters, and the nbm configuration an operator would set."""
    preset = PRESETS[name]
    lines = [f"preset `{name}`: {preset.differs}", f"why it matters: {preset.matters}",
             f"recommended nbm configuration (also in {example}):", "", preset.nbm_toml]
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def print_summary(console: Console, data: SimulatedData, written: list[Path], seconds: float, manifest) -> None:
    """What a person wants to see after a simulation: the world, the log, the files."""
    config, events = data.world.config, data.tables["events"]
    counts = events["event_type"].value_counts()
    sends = max(int(counts.get("send", 0)), 1)
    users = data.tables["users"]
    new_users = int((users["signup_at"] >= config.period_start).sum())

    table = Table(title=f"simulated world (seed {config.seed})", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    if config.preset is not None:
        table.add_row("preset", config.preset)
    table.add_row("period", f"{config.period_start:%Y-%m-%d} → {config.period_end:%Y-%m-%d} ({config.n_days} days)")
    table.add_row("users", f"{len(users):,} ({new_users:,} signed up during the period)")
    table.add_row("identity links", f"{len(data.tables['links']):,}")
    msgs = data.world.catalog
    table.add_row("messages", f"{msgs.n} ({int((msgs.start_at >= config.period_start.value).sum())} new during the period)")
    table.add_row("logging policy", data.logging_policy.name)
    for kind in ("send", "open", "click", "convert", "unsubscribe", "bounce", "visit"):
        share = f" ({counts.get(kind, 0) / sends:.2%} of sends)" if kind not in ("send", "visit") else ""
        table.add_row(f"events: {kind}", f"{int(counts.get(kind, 0)):,}{share}")
    daily = data.daily
    table.add_row("true value of the log", f"{daily['true_value'].sum():,.0f} ({daily['true_value'].sum() / sends:.3f} per send)")
    table.add_row("revenue: messages / organic", f"{daily['realised_revenue'].sum():,.0f} / {daily['organic_revenue'].sum():,.0f}")
    if manifest is not None:
        injected = sum(manifest.problems.values())
        table.add_row("injected (messy)", f"{injected:,} bad rows, {manifest.duplicates:,} duplicates, "
                                          f"{manifest.late_rows:,} late rows")
    table.add_row("written", ", ".join(p.name for p in written) + f" in {written[0].parent}" if written else "-")
    table.add_row("took", f"{seconds:.1f} s")
    console.print(table)
