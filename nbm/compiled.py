"""The booster compiled to machine code: the same predictions as ``Booster.predict``, 5–8× faster.

``Booster.predict`` walks each tree node by node through LightGBM's generic predictor, ~2 µs a row for the
default ranker (80 trees, 56 features) on one thread; a decision scores ~330 rows, a campaign batch
hundreds of thousands. lleaves compiles the model text with LLVM into one function whose branches are
the trees' splits (categorical splits as bitsets, missing values routed as LightGBM routes them), ~0.3 µs
a row. Its predictions (the objective's transform included, as ``Booster.predict`` applies it) equal the
booster's to rounding (a test compares them on every kind of split, NaN and unseen categories included).

Compiling takes a few seconds for a model of a hundred trees, so the object code is cached under
``cache_dir`` by a hash of the model text, the compiler's version and the host CPU: a service restart, a
second worker or a later ``nbm recommend`` loads it in milliseconds. Writes are atomic (a temporary file
renamed into place), so two workers starting together never read a half-written file.

When lleaves or llvmlite cannot be imported or compiling fails, :func:`compile_booster` returns ``None``
and says why in :data:`LAST_FAILURE`; scoring then goes through ``Booster.predict`` (slower, same scores).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np

from nbm.arrays import Spread

LAST_FAILURE: list[str] = []
"""Why the last :func:`compile_booster` returned ``None`` (empty when it did not)."""

_LOCK = threading.Lock()
_BUFFERS = threading.local()
CHUNK_ROWS = 2048
"""Rows scored at a time by :meth:`CompiledForest.predict_columns` (2048 × 56 features × 12 bytes ≈ 1.4 MB)."""


@dataclass(frozen=True, eq=False)
class CompiledForest:
    """A compiled booster: ``predict(matrix)`` → what ``Booster.predict(matrix)`` returns."""

    model: object            # lleaves.Model, compiled
    n_features: int
    path: Path               # the cached object code

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Predictions for ``matrix`` (n, n_features), float32 or float64; float64 (n,). One thread."""
        if matrix.ndim != 2 or matrix.shape[1] != self.n_features:
            raise ValueError(f"`matrix` must have shape (n, {self.n_features}), got {matrix.shape}")
        if not len(matrix):
            return np.zeros(0, dtype=np.float64)
        # float32 → float64 is exact: the thresholds see what Booster.predict sees.
        data = np.ascontiguousarray(matrix, dtype=np.float64)
        return self.model.predict(data, n_jobs=1)

    def predict_columns(self, n: int, columns: list) -> np.ndarray:
        """:meth:`predict` of the matrix whose columns are ``columns`` (arrays of ``n``, scalars, or
        :class:`~nbm.arrays.Spread` columns), built ``CHUNK_ROWS`` rows at a time in buffers that stay in
        cache: no (n × features) matrix is allocated, which for a campaign batch costs more in page faults
        and copies than the prediction itself. Spread columns that share an index are gathered together
        (:func:`_layout`), one ``np.take`` a chunk from a small table of their distinct values. Each value is rounded through
        float32 first, as :meth:`ScoringArtifact.matrix` does for ``Booster.predict``."""
        if len(columns) != self.n_features:
            raise ValueError(f"expected {self.n_features} columns, got {len(columns)}")
        out = np.empty(n, dtype=np.float64)
        if not n:
            return out
        buffers = getattr(_BUFFERS, "pair", None)
        if buffers is None or buffers[0].shape[1] != self.n_features:
            buffers = (np.empty((CHUNK_ROWS, self.n_features), np.float32),
                       np.empty((CHUNK_ROWS, self.n_features), np.float64))
            _BUFFERS.pair = buffers
        single, double = buffers
        plain, scalars, spread = _layout(columns)
        for j, value in scalars:
            single[:, j] = value
        for lo in range(0, n, CHUNK_ROWS):
            hi = min(lo + CHUNK_ROWS, n)
            m = hi - lo
            for j, values in plain:
                single[:m, j] = values[lo:hi]
            for runs, table, index in spread:
                rows = np.take(table, index[lo:hi], axis=0)    # np.take: faster than fancy indexing
                for a, b, c in runs:              # a run of adjacent features: one slab copy
                    single[:m, a:b] = rows[:, c:c + b - a]
            double[:m] = single[:m]
            out[lo:hi] = self.model.predict(double[:m], n_jobs=1)
        return out


def _layout(columns: list) -> tuple[list, list, list]:
    """``columns`` sorted for filling row buffers: (position, array) of plain columns, (position, scalar)
    of constant ones, and per group of spread columns sharing an index: its runs of adjacent positions
    (first, end, first column in the table), a float32 table of the group's distinct values and the index.
    A group is gathered once a chunk and copied run by run (slab copies, not a scatter to scattered
    positions); its members come in position order, so the runs are the declaration's blocks of features."""
    plain, scalars, groups = [], [], {}
    for j, values in enumerate(columns):
        if isinstance(values, Spread):
            groups.setdefault(id(values.index), (values.index, []))[1].append((j, values.values))
        elif np.ndim(values) == 0:
            scalars.append((j, values))
        else:
            plain.append((j, values))
    spread = []
    for index, members in groups.values():
        table = np.empty((len(members[0][1]), len(members)), np.float32)
        runs: list[list[int]] = []
        for c, (j, values) in enumerate(members):
            table[:, c] = values
            if runs and runs[-1][1] == j:
                runs[-1][1] += 1
            else:
                runs.append([j, j + 1, c])
        spread.append(([tuple(r) for r in runs], table, index))
    return plain, scalars, spread


def cache_key(model_text: str) -> str:
    """Hash of what the object code depends on: the model, the compiler and the CPU it was built for."""
    import llvmlite
    import llvmlite.binding as llvm
    from importlib.metadata import version

    parts = ("transformed", model_text, version("lleaves"), llvmlite.__version__, llvm.get_host_cpu_name(),
             llvm.get_host_cpu_features().flatten())
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def compile_booster(booster: lgb.Booster, cache_dir: str | Path) -> CompiledForest | None:
    """``booster`` compiled (or loaded from ``cache_dir``), or ``None`` when that is not possible here."""
    LAST_FAILURE.clear()
    try:
        import lleaves
    except ImportError as exc:  # an optional speed-up: scoring falls back to Booster.predict
        LAST_FAILURE.append(f"lleaves unavailable ({exc})")
        return None
    cache_dir = Path(cache_dir)
    text = booster.model_to_string()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        path = cache_dir / f"forest-{cache_key(text)}.o"
        with _LOCK, tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            model_file = Path(tmp) / "model.txt"
            model_file.write_text(text, encoding="utf-8")
            model = lleaves.Model(model_file=str(model_file))
            if path.exists():
                model.compile(cache=str(path), raw_score=False)
            else:
                partial = Path(tmp) / "forest.o"
                model.compile(cache=str(partial), raw_score=False)
                os.replace(partial, path)
    except Exception as exc:  # noqa: BLE001 — any compiler failure: fall back, and say why
        LAST_FAILURE.append(f"compiling the booster failed: {type(exc).__name__}: {exc}")
        return None
    return CompiledForest(model, booster.num_feature(), path)
