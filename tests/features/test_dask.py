"""The training set on a Dask cluster (issue 42, ``dask_scheduler = "local"``): a LocalCluster of 2 worker
processes builds it partition by partition, and the result equals the one-pass build in this process, row for
row and column for column (the partition property: a user's features depend on that user's events and the
shared globals only)."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from features.pipeline import build_training_set
from nbm.cluster import dask_client

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client():
    with dask_client("local", workers=2, dashboard=False) as c:
        yield c


def test_the_training_set_built_on_a_local_cluster_equals_the_one_built_in_process(dataset, config, client,
                                                                                   caplog) -> None:
    assert len(client.scheduler_info()["workers"]) == 2
    with caplog.at_level(logging.INFO, logger="features.pipeline"):
        on_cluster = build_training_set(dataset, config, partitions=1, client=client)
    # At least one partition per worker, each built on the cluster.
    assert sum("built on the cluster" in r.getMessage() for r in caplog.records) == 2
    pd.testing.assert_frame_equal(on_cluster, build_training_set(dataset, config, partitions=1))


def test_more_partitions_than_workers_give_the_same_training_set(dataset, config, client) -> None:
    pd.testing.assert_frame_equal(build_training_set(dataset, config, partitions=5, client=client),
                                  build_training_set(dataset, config, partitions=1))


def test_no_scheduler_is_no_cluster() -> None:
    with dask_client("") as c:
        assert c is None
