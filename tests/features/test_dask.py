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


@pytest.mark.slow
def test_a_local_cluster_serves_its_dashboard_on_loopback_and_the_commands_say_where() -> None:
    """The progress of a cluster's work is Dask's own dashboard: it answers (bokeh installed), on 127.0.0.1 only,
    and :func:`nbm.cluster.describe` gives its address."""
    import urllib.request

    from nbm.cluster import describe

    with dask_client("local", workers=1) as c:
        line = describe(c)
        assert line.startswith("Dask: 1 worker(s) at tcp://127.0.0.1:") and c.dashboard_link in line
        assert c.dashboard_link.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(c.dashboard_link, timeout=30) as page:
            assert page.status == 200 and b"Dask" in page.read()
