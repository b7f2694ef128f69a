"""Column parsers: raw CSV text or Parquet values → the canonical dtypes of the clean tables.

Each parser is vectorised and returns the parsed column plus a boolean mask of the cells that were
given but could not be parsed; a missing cell (empty text, null) is not a parse failure.

Canonical dtypes: strings → pandas ``str`` (missing as NA); timestamps → ``datetime64[ns, UTC]``
(ISO-8601, a naive time is UTC); floats → ``float64``; lists → object column of Python lists of str.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nbm.io import LIST_SEPARATOR


def parse_strings(raw: pd.Series) -> pd.Series:
    """Text with surrounding blanks stripped; empty text is missing."""
    text = raw.astype("str").str.strip()
    return text.mask(text == "")


def parse_timestamps(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``datetime64[ns, UTC]`` and the mask of unparseable cells."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_convert("UTC").astype("datetime64[ns, UTC]"), pd.Series(False, index=raw.index)
    if pd.api.types.is_datetime64_dtype(raw.dtype):
        return raw.dt.tz_localize("UTC").astype("datetime64[ns, UTC]"), pd.Series(False, index=raw.index)
    text = parse_strings(raw)
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    parsed = parsed.astype("datetime64[ns, UTC]")
    return parsed, text.notna() & parsed.isna()


def parse_floats(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``float64`` and the mask of cells that are not finite numbers."""
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        values = raw.astype("float64")
        return values.where(np.isfinite(values)), pd.Series(np.isinf(values.to_numpy()), index=raw.index)
    text = parse_strings(raw)
    values = pd.to_numeric(text, errors="coerce").astype("float64")
    bad = text.notna() & ~np.isfinite(values)
    return values.where(~bad), bad


def parse_lists(raw: pd.Series) -> pd.Series:
    """Object column of lists of stripped, non-empty strings; missing is an empty list."""
    given = raw.dropna()
    if raw.dtype == object and len(given) and isinstance(given.iloc[0], (list, tuple, np.ndarray)):
        # Parquet list column: cells are arrays (or None).
        exploded = raw.explode()
        text = parse_strings(exploded.astype(object).where(exploded.notna(), None))
    else:
        text = parse_strings(raw).str.split(LIST_SEPARATOR).explode()
        text = parse_strings(text.astype(object).where(text.notna(), None))
    kept = text.dropna()
    cells = np.empty(len(raw), dtype=object)
    cells[:] = [[] for _ in range(len(raw))]
    if len(kept):
        # Items grouped by their cell with one stable sort and one split (a groupby-agg(list) runs in Python
        # per group: seconds for a users table of 100k rows).
        position = raw.index.get_indexer(kept.index)
        order = np.argsort(position, kind="stable")
        position, values = position[order], kept.to_numpy(dtype=object)[order]
        starts = np.flatnonzero(np.r_[True, position[1:] != position[:-1]])
        cells[position[starts]] = [part.tolist() for part in np.split(values, starts[1:])]
    return pd.Series(cells, index=raw.index, dtype=object)


def numeric_or_text(raw: pd.Series) -> pd.Series:
    """A user attribute: ``float64`` when every given cell is a number, else ``str``."""
    values, bad = parse_floats(raw)
    if not bad.any() and (values.notna() | parse_strings(raw.astype(object)).isna()).all():
        return values
    return parse_strings(raw)
