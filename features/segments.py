"""User segments (``[features] segment_by``): the prior of a user's own rates when they have few sends.

A segment is one combination of the values of the configured user attribute columns (``country`` ×
``age_band``, say); a missing value is a value of its own. The segment's rate of a channel or topic, itself
shrunk toward the population's rate, is what a user's own user × channel and user × topic rates shrink
toward (features/compute.py): a user with no history gets the rate of people like them.

Segments are static: they come from the ``users`` table, which holds no history of its attributes. The
lifecycle stage is not offered as a segment column: it changes with time, so each send's segment would be
the stage at its time, and a user without history — the one a segment prior is for — is ``new`` (or
``dormant``) by definition; the stage is a feature of its own for the ranker to combine with the rates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nbm.errors import UsageError
from nbm.schema import TABLES


@dataclass(frozen=True)
class Segments:
    """The segment coding shared by every partition: the distinct values of each column, sorted.

    A user's code is the mixed-radix number of (value code + 1) per column, 0 standing for a missing value;
    ``-1`` is "no segment" (a user without a ``users`` row): their rates shrink toward the population's.
    """

    columns: tuple[str, ...] = ()
    levels: tuple[pd.Index, ...] = ()

    @classmethod
    def build(cls, users: pd.DataFrame, columns: tuple[str, ...]) -> Segments:
        """The segments of ``columns`` (``[features] segment_by``) over the ``users`` table.

        Raises
        ------
        UsageError
            When a column is not a user attribute of the table (named, with the attributes there are).
        """
        attributes = [c for c in users.columns if c not in TABLES["users"].column_names]
        unknown = [c for c in columns if c not in attributes]
        if unknown:
            raise UsageError(f"`features.segment_by`: {unknown} are not user attribute columns of the users table; "
                             f"its attributes are {attributes}")
        levels = []
        for column in columns:
            text, present = _as_text(users[column])
            levels.append(pd.Index(sorted(pd.unique(text[present])), dtype=object))
        return cls(tuple(columns), tuple(levels))

    @property
    def active(self) -> bool:
        return bool(self.columns)

    @property
    def n(self) -> int:
        """Number of segment codes (1 without columns: everybody in one)."""
        return int(np.prod([len(level) + 1 for level in self.levels], dtype=np.int64))

    def codes(self, users: pd.DataFrame) -> np.ndarray:
        """The segment code of each row of a ``users`` table (int64, in ``[0, n)``)."""
        code = np.zeros(len(users), dtype=np.int64)
        for column, level in zip(self.columns, self.levels):
            text, present = _as_text(users[column])
            found = np.where(present, level.get_indexer(text), -1)
            code = code * (len(level) + 1) + (found + 1)
        return code


def _as_text(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Values as strings (numbers too: a segment is a value, not a quantity), and which are present."""
    return (values.astype("string").to_numpy(dtype=object, na_value=""),
            values.notna().to_numpy())
