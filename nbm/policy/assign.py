"""Experiment assignment: each user's arm, a deterministic salted hash of the canonical user id.

``unit(user) = first 8 bytes of SHA-256(salt ␀ experiment ␀ user) / 2⁶⁴`` is uniform on [0, 1) and the same in
every process, worker and restart (no state to share); the arms take consecutive intervals of it in the
fixed order of :data:`nbm.config.ARMS`, each as wide as its share. Changing the salt or the experiment's
name reshuffles everyone; changing the shares moves only the users whose unit crosses a boundary.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np

from nbm.config import ARMS, ExperimentConfig

DEFAULT_ARM = "model"
"""The arm of every decision when no experiment runs."""


def units(users: Iterable[str], salt: str, experiment: str) -> np.ndarray:
    """The uniform [0, 1) hash unit of each user."""
    prefix = f"{salt}\x00{experiment}\x00".encode()
    raw = b"".join(hashlib.sha256(prefix + str(u).encode()).digest()[:8] for u in users)
    return np.frombuffer(raw, dtype=">u8").astype(np.float64) / 2.0**64


def assign(users: Iterable[str], experiment: ExperimentConfig) -> np.ndarray:
    """The arm (object array of names) of each canonical user id; all :data:`DEFAULT_ARM` without an experiment."""
    users = list(users)
    if not experiment.name:
        return np.full(len(users), DEFAULT_ARM, dtype=object)
    names = [a for a in ARMS if experiment.arms.get(a, 0.0) > 0]
    edges = np.cumsum([experiment.arms[a] for a in names])
    edges[-1] = 1.0                        # the shares sum to 1 up to rounding: the last arm takes the rest
    index = np.searchsorted(edges, units(users, experiment.salt, experiment.name), side="right")
    return np.asarray(names, dtype=object)[np.minimum(index, len(names) - 1)]
