"""Keep-alive connections spread evenly over the workers of one ``nbm serve``.

BentoML's workers share one listening socket, and a connection stays for its life with the worker that
accepted it. Which worker accepts is a race that the worker already awake wins: measured here (2 workers,
8 keep-alive clients connecting together, as a campaign engine's connection pool does), the split was 7:1
in three runs of six and 6:2 in one (``4:4`` in none) — one worker deciding for seven clients while the
other waits, which is what the p99 at concurrency 8 paid. BentoML has no setting for it
(bentoml/BentoML#5426).

So the workers rebalance the connections themselves, as proxies do with a maximum connection age: each
worker publishes, in a small file shared by the workers of one service (:func:`workers_file`, made by
``nbm serve``), how many keep-alive connections it is serving and a heartbeat; a worker serving more than
its fair share (the total over the live workers, divided among them, rounded up) answers the next request
of one of them with ``Connection: close``. The client reconnects (HTTP clients do so by themselves) and the
busier worker, deciding, is not there to accept: the idler one is. No connection is closed while the
spread is even, and a worker alone never closes one.

A connection counts as keep-alive once it has sent two requests, and as gone when it has sent none for
``window`` seconds (a connection made for one request, as campaign batches are sent, never counts); a
worker closes one once it has been above its share for ``gap`` seconds, and then one every ``gap``.
The heartbeat (a thread, every ``HEARTBEAT_S``) also drops silent connections and publishes the count, so a
worker that gets no request shows its count fall. The file's slots are 64-bit integers (a single aligned
store each: a reader never sees half a value); a worker whose heartbeat is older than ``stale`` seconds is
taken as gone. The file has twice as many slots as workers (BentoML's arbiter may number a restarted
worker past the count while the old one stops); a worker whose slot is past them serves without
balancing. The heartbeats also tell :func:`serving.launch.start_service` that every worker has finished
loading (BentoML's ``/readyz`` answers from whichever worker is ready first). Requests that came through a
proxy are not counted (:func:`connection`): their client is the address the proxy forwarded, not a
connection of this worker, and the proxy balances its own connections.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
import time
from pathlib import Path

import numpy as np

SLOT = 2
"""Integers per worker: keep-alive connections served, heartbeat (``time.monotonic_ns``, 0: never)."""
WINDOW_S = 1.0
STALE_S = 2.0
HEARTBEAT_S = 0.25
GAP_S = 0.02
"""A worker closes a connection once it has had more than its share for this long, and then at most one
every as long: the counts of a pool's connections settle meanwhile (as a pool starts, each connection counts
from its second request on, and a worker would otherwise close for a share the others have not shown yet)."""


def workers_file(home: Path, host: str, port: int) -> Path:
    """The shared file of the service listening on ``host:port`` with ``NBM_HOME=home``."""
    return Path(home) / "run" / f"workers-{host.replace(':', '_')}-{port}"


def create(path: Path, workers: int) -> Path:
    """``path`` made (or reset) for ``workers`` workers: every slot zero."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(bytes(8 * SLOT * workers))
    os.replace(tmp, path)
    return path


def read(path: Path) -> np.ndarray:
    """The slots of ``path``: (workers, 2) int64 (connections, heartbeat)."""
    return np.frombuffer(path.read_bytes(), dtype=np.int64).reshape(-1, SLOT)


def connection(scope: dict) -> tuple | None:
    """The connection an ASGI request ``scope`` came on, as ``(host, port)``; ``None`` when it came through a
    proxy (an ``X-Forwarded-For`` header) or its client is unknown.

    For a request from a trusted proxy uvicorn replaces the client by the address the header forwards — with
    port 0, or (uvicorn 0.54 here) the port the header names — so a proxy's requests are not this worker's
    connections: many of them would count as one, or one as many."""
    client = scope.get("client")
    if not client or not client[1]:
        return None
    for name, _ in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            return None
    return tuple(client)


def live_workers(path: Path, stale: float = STALE_S) -> int:
    """How many workers of ``path`` have a heartbeat younger than ``stale`` seconds (0 without the file)."""
    try:
        slots = read(path)
    except (OSError, ValueError):
        return 0
    return int((slots[:, 1] > time.monotonic_ns() - stale * 1e9).sum())


class ConnectionBalancer:
    """One worker's view: :meth:`observe` each request's client, close when it says so (module docstring).

    ``index`` is the worker's 0-based slot in ``path`` (BentoML's ``server_context.worker_index`` − 1).
    ``clock`` (nanoseconds) is for tests; a heartbeat thread is started unless ``heartbeat`` is false.
    """

    def __init__(self, path: Path, index: int, window: float = WINDOW_S, stale: float = STALE_S,
                 gap: float = GAP_S, clock=time.monotonic_ns, heartbeat: bool = True) -> None:
        self._file = open(path, "r+b")  # noqa: SIM115 — held for the worker's life, with the mapping
        self._map = mmap.mmap(self._file.fileno(), 0)
        self._cells = memoryview(self._map).cast("q")  # what a request reads and writes: no numpy per call
        self.workers = len(self._cells) // SLOT
        if not 0 <= index < self.workers:
            self._cells.release()
            self._map.close()
            self._file.close()
            raise ValueError(f"worker index {index} outside the {self.workers} slots of {path}")
        self.index = index
        self.window_ns = int(window * 1e9)
        self.stale_ns = int(stale * 1e9)
        self.gap_ns = int(gap * 1e9)
        self._last_close = -self.gap_ns
        self._above_since: int | None = None        # since when this worker has had more than its share
        self.clock = clock
        self._seen: dict[object, list[int]] = {}      # client → [last request's time, requests]
        self._persistent = 0
        self._pruned = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.closed = 0
        self.beat()      # a restarted worker's slot: its predecessor's count is not its own
        if heartbeat:
            threading.Thread(target=self._heartbeat, name="nbm-balance-heartbeat", daemon=True).start()

    @property
    def slots(self) -> np.ndarray:
        """The file's slots now: (workers, 2) int64 (connections, heartbeat)."""
        return np.array(self._cells.tolist(), dtype=np.int64).reshape(-1, SLOT)

    def beat(self) -> None:
        """The heartbeat: connections silent for ``window`` dropped, the count and the time published (a worker
        that gets no request still shows its count fall)."""
        with self._lock:
            now = self.clock()
            self._prune(now)
            self._publish(now)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.beat()

    def close(self) -> None:
        """Stop the heartbeat and let the file go (tests; a worker keeps its balancer for life)."""
        self._stop.set()
        with self._lock:
            self._cells.release()
            self._map.close()
            self._file.close()

    def observe(self, client) -> bool:
        """Count a request of connection ``client`` (what :func:`connection` gives for it); true: answer it
        with ``Connection: close``. ``None`` (not a connection of this worker) counts nothing."""
        if client is None:
            return False
        now = self.clock()
        with self._lock:
            if now - self._pruned > self.window_ns // 4:
                self._prune(now)
            entry = self._seen.get(client)
            if entry is None:
                self._seen[client] = [now, 1]
                self._publish(now)
                return False
            entry[0] = now
            entry[1] += 1
            if entry[1] == 2:
                self._persistent += 1
            close = False
            if self._persistent <= self._fair_share(now):
                self._above_since = None
            elif self._above_since is None:
                self._above_since = now
            else:
                close = now - self._above_since >= self.gap_ns and now - self._last_close >= self.gap_ns
            if close:
                del self._seen[client]
                self._persistent -= 1
                self.closed += 1
                self._last_close = now
            self._publish(now)
            return close

    def _fair_share(self, now: int) -> int:
        cells, total, live = self._cells, self._persistent, 1
        for w in range(self.workers):
            if w != self.index and cells[SLOT * w + 1] > now - self.stale_ns:
                total += cells[SLOT * w]
                live += 1
        return -(-total // live)

    def _prune(self, now: int) -> None:
        old = [client for client, (last, _) in self._seen.items() if now - last > self.window_ns]
        for client in old:
            if self._seen.pop(client)[1] >= 2:
                self._persistent -= 1
        self._pruned = now

    def _publish(self, now: int) -> None:
        self._cells[SLOT * self.index] = self._persistent
        self._cells[SLOT * self.index + 1] = now

    @classmethod
    def from_env(cls) -> ConnectionBalancer | None:
        """The balancer of this worker when ``nbm serve`` runs several (``NBM_WORKERS_FILE``), else ``None``."""
        path = os.environ.get("NBM_WORKERS_FILE")
        if not path or int(os.environ.get("NBM_WORKERS", "1")) < 2:
            return None
        import bentoml

        index = bentoml.server_context.worker_index
        if index is None:
            return None
        try:
            return cls(Path(path), int(index) - 1)
        except (OSError, ValueError) as exc:   # serve on without balancing rather than fail the worker
            logging.getLogger(__name__).warning("connections are not rebalanced over the workers: %s", exc)
            return None
