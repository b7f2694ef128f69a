"""The validation report: every problem row with its table, row, key, column, value and reason.

A report is long-format (one row per problem) plus counts per table; ``exit_code`` follows the CLI
contract: 0 when there is no problem (duplicates and late rows are not problems: ingesting an event twice
is a no-op, and order does not matter), 1 when there are problems but the data is usable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd
from rich.console import Console
from rich.table import Table

PROBLEM_COLUMNS = ("table", "row", "key", "column", "value", "reason", "message", "dropped")


def problems_frame(
    table: str,
    rows: pd.Index | list[int],
    key: pd.Series | None,
    column: str,
    value: pd.Series | str,
    reason: str,
    message: pd.Series | str,
    dropped: bool = True,
) -> pd.DataFrame:
    """Problem rows for the positions ``rows`` of ``table``; ``key``/``value``/``message`` are aligned by position."""
    rows = pd.Index(rows)
    n = len(rows)

    def pick(x: pd.Series | str | None) -> object:
        if x is None:
            return [None] * n
        if isinstance(x, str):
            return [x] * n
        return x.reindex(rows).astype(object).where(lambda s: s.notna(), None).to_numpy()

    values = pick(value)
    return pd.DataFrame({
        "table": table, "row": rows.to_numpy(dtype="int64"), "key": pick(key), "column": column,
        "value": pd.Series(values, dtype=object).fillna("").astype(str).to_numpy(),
        "reason": reason, "message": pick(message), "dropped": dropped,
    }, columns=list(PROBLEM_COLUMNS))


def empty_problems() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "row" else bool if c == "dropped" else object)
                         for c in PROBLEM_COLUMNS})


@dataclass
class ValidationReport:
    """What loading a data directory found. Build it with :func:`nbm.dataset.load_dataset`."""

    problems: pd.DataFrame = field(default_factory=empty_problems)
    rows_read: dict[str, int] = field(default_factory=dict)
    rows_kept: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    late_rows: int = 0
    notes: list[str] = field(default_factory=list)
    info: dict[str, int] = field(default_factory=dict)

    def add(self, frames: list[pd.DataFrame]) -> None:
        frames = [f for f in frames if len(f)]
        if frames:
            self.problems = pd.concat([self.problems, *frames], ignore_index=True)

    @property
    def exit_code(self) -> int:
        return 1 if len(self.problems) else 0

    @property
    def dropped_rows(self) -> int:
        """Problem rows the loader dropped (a problem that is only reported keeps its row)."""
        return int(self.problems["dropped"].sum())

    def counts(self) -> pd.DataFrame:
        """Problem rows per (table, column, reason), long format."""
        if not len(self.problems):
            return pd.DataFrame({"table": [], "column": [], "reason": [], "rows": []}).astype({"rows": "int64"})
        grouped = self.problems.groupby(["table", "column", "reason"], sort=True).size()
        return grouped.rename("rows").reset_index()

    def summary(self) -> pd.DataFrame:
        """Per table: rows read, kept, with a problem, duplicates dropped."""
        per_table = self.problems.groupby("table")["row"].nunique() if len(self.problems) else pd.Series(dtype=int)
        names = list(self.rows_read)
        return pd.DataFrame({
            "table": names,
            "rows_read": [self.rows_read[t] for t in names],
            "rows_kept": [self.rows_kept.get(t, 0) for t in names],
            "rows_with_problems": [int(per_table.get(t, 0)) for t in names],
            "duplicates": [self.duplicates.get(t, 0) for t in names],
        })

    def to_frame(self) -> pd.DataFrame:
        return self.problems.copy()

    def to_json(self) -> str:
        """The whole report as JSON (problems as records)."""
        return json.dumps({
            "exit_code": self.exit_code,
            "summary": self.summary().to_dict(orient="records"),
            "counts": self.counts().to_dict(orient="records"),
            "duplicates": self.duplicates,
            "late_rows": self.late_rows,
            "notes": self.notes,
            "info": self.info,
            "problems": self.problems.to_dict(orient="records"),
        }, indent=2, default=str)

    def render(self, console: Console, max_rows: int = 20) -> None:
        """Print the summary, the counts by reason and the first ``max_rows`` problems."""
        summary = Table(title="data check")
        for column in ("table", "rows read", "rows kept", "with problems", "duplicates"):
            summary.add_column(column, justify="left" if column == "table" else "right")
        for row in self.summary().itertuples(index=False):
            summary.add_row(row.table, f"{row.rows_read:,}", f"{row.rows_kept:,}", f"{row.rows_with_problems:,}",
                            f"{row.duplicates:,}")
        console.print(summary)
        extras = [f"late rows (out of time order, kept): {self.late_rows:,}"]
        extras += [f"{k.replace('_', ' ')}: {v:,}" for k, v in self.info.items()]
        for line in extras + self.notes:
            console.print(f"  {line}")
        if not len(self.problems):
            console.print("[green]no problems[/green]")
            return
        counts = Table(title="problems by reason")
        for column in ("table", "column", "reason", "rows"):
            counts.add_column(column, justify="right" if column == "rows" else "left")
        for row in self.counts().itertuples(index=False):
            counts.add_row(row.table, row.column, row.reason, f"{row.rows:,}")
        console.print(counts)
        if max_rows > 0:
            detail = Table(title=f"first {min(max_rows, len(self.problems))} of {len(self.problems):,} problems")
            for column in ("table", "row", "key", "column", "value", "problem"):
                detail.add_column(column, overflow="fold")
            for row in self.problems.head(max_rows).itertuples(index=False):
                detail.add_row(row.table, str(row.row), "" if row.key is None else str(row.key), row.column,
                               repr(row.value), row.message)
            console.print(detail)
        kept = "" if self.problems["dropped"].all() else " (rows marked kept by configuration stay in)"
        console.print(f"[yellow]{len(self.problems):,} problems; bad rows were dropped, valid rows kept{kept}[/yellow]")
