"""A small simulated world, loaded through the data contract, for the feature tests."""

from __future__ import annotations

import pandas as pd
import pytest

from nbm.config import load_config
from nbm.dataset import Dataset, build_dataset
from nbm.simulate import SimConfig, simulate

NOW = pd.Timestamp("2026-11-01T00:00:00Z")


def world_dataset(n_users: int, n_days: int, seed: int) -> Dataset:
    tables = simulate(SimConfig(n_users=n_users, n_days=n_days, seed=seed)).tables
    dataset, report = build_dataset(tables, load_config(environ={}), now=NOW)
    assert report.exit_code == 0
    return dataset


@pytest.fixture(scope="session")
def dataset() -> Dataset:
    return world_dataset(600, 21, seed=31)


@pytest.fixture(scope="session")
def config():
    return load_config(environ={})
