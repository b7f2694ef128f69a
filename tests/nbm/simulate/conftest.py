"""Seeded worlds shared by the simulator's tests (built once per session; they are read-only)."""

from __future__ import annotations

import pytest

from nbm.simulate import SimConfig, SimulatedData, simulate


@pytest.fixture(scope="session")
def small_world() -> SimulatedData:
    """3,000 users over 42 days: enough sends for the statistical checks, about a second to build."""
    return simulate(SimConfig(n_users=3000, n_days=42, seed=11))


@pytest.fixture(scope="session")
def large_world() -> SimulatedData:
    """20,000 users over 42 days, for effects measured on rare events (unsubscribes); a few seconds."""
    return simulate(SimConfig(n_users=20_000, n_days=42, seed=12))
