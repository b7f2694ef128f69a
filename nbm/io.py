"""Reading and writing the tables of the data contract, as Parquet or CSV.

Reading keeps the raw values: CSV cells arrive as strings (an empty cell is missing) and Parquet keeps its
types. Turning raw values into typed, valid rows is :mod:`nbm.validate`'s job.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nbm.errors import UnusableInputError
from nbm.schema import TABLES

FileFormat = Literal["parquet", "csv"]
FORMATS: tuple[FileFormat, ...] = ("parquet", "csv")
LIST_SEPARATOR = ";"


def find_table(directory: Path, name: str) -> Path | None:
    """The file of table ``name`` in ``directory`` (``NAME.parquet`` or ``NAME.csv``), or ``None``.

    Raises
    ------
    UnusableInputError
        When both files exist: which one is meant is ambiguous.
    """
    found = [directory / f"{name}.{ext}" for ext in FORMATS if (directory / f"{name}.{ext}").is_file()]
    if len(found) > 1:
        raise UnusableInputError(
            f"table `{name}`: both {found[0].name} and {found[1].name} exist in {directory}; keep one"
        )
    return found[0] if found else None


def read_raw_table(path: Path) -> pd.DataFrame:
    """Read one table file with its raw values and a 0-based positional index (the row number).

    CSV: every column as strings, empty cells missing. Parquet: the file's own types; list columns
    as lists.
    """
    try:
        seen = _BAD_SEEN[0]
        if path.suffix == ".csv":
            # Bytes that are not UTF-8 are kept as private-use characters U+F00NN, so that one bad byte costs
            # its row (reported with its line: undecodable_rows), not the whole table.
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8",
                                encoding_errors=BAD_BYTES)
        else:
            frame = pq.read_table(path).to_pandas()
    except (OSError, ValueError, pa.ArrowException, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UnusableInputError(f"cannot read {path}: {exc}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    frame = frame.reset_index(drop=True)
    frame.attrs["format"] = path.suffix.lstrip(".")
    frame.attrs["undecodable"] = _BAD_SEEN[0] > seen       # rows to find and report: undecodable_rows
    return frame


BAD_BYTES = "nbm-bad-bytes"
"""The decoding error handler CSVs are read with: a byte that is not UTF-8 becomes U+F0000 + its value."""
_BAD_SEEN = [0]      # bytes the handler has replaced, in this process


BASE = 0xF0000
"""Bad byte ``b`` reads as ``chr(BASE + b)``: supplementary private use (plane 15), which text data does not
hold (lone surrogates, which valid UTF-8 never decodes to, cannot pass pandas' parser)."""


def _bad_bytes(error: UnicodeDecodeError) -> tuple[str, int]:
    _BAD_SEEN[0] += error.end - error.start
    return "".join(chr(BASE + b) for b in error.object[error.start:error.end]), error.end


codecs.register_error(BAD_BYTES, _bad_bytes)
UNDECODABLE = re.compile("[\U000f0000-\U000f00ff]")
"""Where a CSV held a byte that is not UTF-8."""


def undecodable_rows(frame: pd.DataFrame) -> dict[int, tuple[str, str]]:
    """Rows of a CSV-read ``frame`` with bytes that are not UTF-8: row → (first such column, its value with
    the bytes shown as ``\\xNN``)."""
    found: dict[int, tuple[str, str]] = {}
    for column in frame.columns:
        values = frame[column]
        if not (values.dtype == object or pd.api.types.is_string_dtype(values)):
            continue
        hit = values.astype(object).map(lambda v: isinstance(v, str) and UNDECODABLE.search(v) is not None)
        for row in hit.index[hit.to_numpy(dtype=bool)]:
            shown = UNDECODABLE.sub(lambda m: f"\\x{ord(m.group()) - BASE:02x}", values[row])
            found.setdefault(int(row), (column, shown))
    return found


def write_table(frame: pd.DataFrame, directory: Path, name: str, file_format: FileFormat = "parquet") -> Path:
    """Write ``frame`` as table ``name`` in the data contract's file form; returns the path.

    In CSV, list columns are ``;``-joined and timestamps are ISO-8601 with ``Z``. Vectorised: fit for
    millions of rows.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.{file_format}"
    if file_format == "parquet":
        frame.to_parquet(path, index=False)
        return path
    out = frame.copy()
    table = TABLES.get(name)
    for column in out.columns:
        series = out[column]
        declared = table.column(column).kind if table and column in table.column_names else None
        if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(series.dtype):
            out[column] = _iso(series)
        elif declared == "string_list" or (series.dtype == object and _holds_lists(series)):
            out[column] = series.map(_join, na_action="ignore")
    out.to_csv(path, index=False)
    return path


def _iso(series: pd.Series) -> pd.Series:
    """ISO-8601 UTC text with a ``Z`` (microseconds), missing stays missing."""
    utc = series.dt.tz_convert("UTC") if isinstance(series.dtype, pd.DatetimeTZDtype) else series
    naive = utc.dt.tz_localize(None) if isinstance(series.dtype, pd.DatetimeTZDtype) else utc
    text = np.datetime_as_string(naive.to_numpy(dtype="datetime64[us]"), unit="us").astype(object)
    text = np.char.add(text.astype(str), "Z").astype(object)
    text[naive.isna().to_numpy()] = None
    return pd.Series(text, index=series.index, dtype=object)


def _holds_lists(series: pd.Series) -> bool:
    first = series.dropna()
    return len(first) > 0 and isinstance(first.iloc[0], (list, tuple, np.ndarray))


def _join(value: object) -> str:
    return LIST_SEPARATOR.join(str(v) for v in value) if isinstance(value, (list, tuple, np.ndarray)) else str(value)
