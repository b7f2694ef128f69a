"""Dask for scale-out: the ``dask_scheduler`` setting (DESIGN.md, "CLI contract"; docs/deploy.md).

* ``""`` (the default): no cluster; every stage runs in this process, as it always did.
* ``"local"``: a :class:`distributed.LocalCluster` on this machine — worker *processes*, one thread each, so
  that partitions run in parallel beside the GIL.
* anything else: the address of a running scheduler (``tcp://scheduler:8786``); its workers need nbm
  installed, the same version.

What runs on the cluster takes the :class:`distributed.Client` this module opens, one user partition a task:
the training set of ``nbm train`` (:func:`features.pipeline.build_training_set`) and the decisions of
``nbm recommend`` (:func:`serving.batch_scoring.recommend_all`); and, for training windows of ``[training]
dask_min_rows`` sends or more, ``nbm train``'s boosters, by LightGBM's own distributed training
(:mod:`training.dask_fit`). Progress is Dask's own: its dashboard (the commands print its address,
:func:`describe`) and its task stream.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger(__name__)

LOCAL = "local"
LOCAL_WORKERS = 2
"""Worker processes of a ``"local"`` cluster when the caller names no number (at most the machine's cores)."""


def describe(client) -> str:
    """One line for the command's progress output: the cluster's workers and where Dask's dashboard shows the
    tasks (its task stream and progress bars)."""
    workers = len(client.scheduler_info().get("workers", {}))
    link = getattr(client, "dashboard_link", None)
    where = f"; its dashboard (tasks, progress): {link}" if link else ""
    return f"Dask: {workers} worker(s) at {client.scheduler.address}{where}"


@contextmanager
def dask_client(scheduler: str, workers: int | None = None, dashboard: bool = True) -> Iterator[object | None]:
    """A :class:`distributed.Client` for ``scheduler`` (see the module docstring) while the block runs, closed
    after it (a ``"local"`` cluster stopped with it); ``None`` for ``""``.

    ``workers``: processes of a ``"local"`` cluster (default :data:`LOCAL_WORKERS`, at most the cores).
    ``dashboard``: serve Dask's diagnostic dashboard on a free port of 127.0.0.1 (``"local"`` only).
    """
    if not scheduler:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler == LOCAL:
        n = max(1, min(workers or LOCAL_WORKERS, os.cpu_count() or 1))
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0" if dashboard else None)
        try:
            with Client(cluster) as client:
                if dashboard and client.dashboard_link:
                    log.info("dask: a local cluster of %d worker processes; its dashboard: %s", n, client.dashboard_link)
                yield client
        finally:
            cluster.close()
        return
    with Client(scheduler) as client:
        log.info("dask: connected to %s (%d workers)", scheduler, len(client.scheduler_info().get("workers", {})))
        yield client
