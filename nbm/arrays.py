"""Small array helpers shared by the core and the feature pipeline."""

from __future__ import annotations

import numpy as np
import pandas as pd


def distinct_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the code of its key among the distinct ``keys`` (int64, first-seen order); per distinct key,
    the index of one row that has it. A hash of ``keys``, not a sort."""
    codes, distinct = pd.factorize(keys)
    first = np.empty(len(distinct), dtype=np.int64)
    first[codes] = np.arange(len(keys))
    return codes.astype(np.int64), first
