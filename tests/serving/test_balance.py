"""Keep-alive connections rebalanced over workers (serving/balance.py), on a shared file and a fake clock."""

from __future__ import annotations

import pytest

from serving.balance import ConnectionBalancer, connection, create, live_workers, read, workers_file

S = 10**9


class Clock:
    def __init__(self) -> None:
        self.now = 1_000 * S

    def __call__(self) -> int:
        return self.now


def _workers(tmp_path, n: int, clock: Clock) -> list[ConnectionBalancer]:
    path = create(workers_file(tmp_path, "127.0.0.1", 3000), n)
    return [ConnectionBalancer(path, i, clock=clock, heartbeat=False) for i in range(n)]


def _round(worker: ConnectionBalancer, clients: list, clock: Clock) -> list:
    """One request of each of ``clients``, 1 ms apart; the ones told to close."""
    closed = []
    for client in clients:
        clock.now += S // 1000
        if worker.observe(client):
            closed.append(client)
    return closed


def _simulate(workers: list[ConnectionBalancer], pool: list[tuple[int, int]], clock: Clock,
              rounds: int = 30, to: int | None = None) -> int:
    """``pool``: each client's (worker, port). Every round each sends a request (1 ms apart); a client told
    to close reconnects on a new port to worker ``to`` (the idle one accepts; default the same worker).
    The closes in all."""
    closes, port = 0, 1000
    for _ in range(rounds):
        for k, (w, _) in enumerate(pool):
            clock.now += S // 1000
            if workers[w].observe(pool[k]):
                closes += 1
                port += 1
                pool[k] = (w if to is None else to, port)
    return closes


def test_an_even_spread_closes_nothing(tmp_path) -> None:
    clock = Clock()
    a, b = _workers(tmp_path, 2, clock)
    assert _simulate([a, b], [(0, 1 + i) for i in range(4)] + [(1, 1 + i) for i in range(4, 8)], clock) == 0
    assert read(workers_file(tmp_path, "127.0.0.1", 3000))[:, 0].tolist() == [4, 4]


@pytest.mark.parametrize(("split", "expected"), [((7, 1), [4, 4]), ((8, 0), [4, 4]), ((6, 3), [5, 4]),
                                                  ((5, 3), [4, 4])])
def test_a_worker_above_its_share_closes_down_to_it(tmp_path, split, expected) -> None:
    clock = Clock()
    workers = _workers(tmp_path, 2, clock)
    pool = [(0, 1 + i) for i in range(split[0])] + [(1, 100 + i) for i in range(split[1])]
    closes = _simulate(workers, pool, clock, to=1)
    assert workers[0].slots[:, 0].tolist() == expected
    assert closes == split[0] - expected[0]                # no more closes than the spread needs


def test_a_reconnection_to_the_same_worker_is_closed_again(tmp_path) -> None:
    clock = Clock()
    workers = _workers(tmp_path, 2, clock)
    pool = [(0, 1 + i) for i in range(5)] + [(1, 100)]         # 5 : 1, a fair share of 3
    closes = _simulate(workers, pool, clock, rounds=20)    # every reconnection lands on worker 0 again: 120 ms
    assert 3 <= closes <= 120 // 20                        # it keeps trying, at most one close every `gap`
    assert workers[0].closed == closes


def test_a_worker_alone_or_with_stale_peers_never_closes(tmp_path) -> None:
    clock = Clock()
    (alone,) = _workers(tmp_path / "one", 1, clock)
    clients = [("c", 1 + i) for i in range(8)]
    for _ in range(3):
        assert _round(alone, clients, clock) == []
    a, b = _workers(tmp_path / "two", 2, clock)
    clock.now += 3 * S                                     # b's heartbeat is older than `stale`: gone
    for _ in range(3):
        assert _round(a, clients, clock) == []
    b.beat()                                               # b is back (no connections): a has 8 of 8
    closes = [len(_round(a, clients, clock)) for _ in range(4)]     # 32 ms: above its share for `gap`
    assert closes == [0, 0, 1, 0]


def test_one_shot_and_idle_connections_do_not_count(tmp_path) -> None:
    clock = Clock()
    a, b = _workers(tmp_path, 2, clock)
    _round(b, [("b", 1)] * 2, clock)
    assert _round(a, [("once", 1 + i) for i in range(50)], clock) == []     # a connection per request
    assert a.slots[a.index, 0] == 0
    _round(a, [("a", 9)] * 2, clock)
    assert a.slots[a.index, 0] == 1
    clock.now += 2 * S                                                  # silent longer than the window
    b.beat()
    a.observe(("a", 10))
    assert a.slots[a.index, 0] == 0


def test_live_workers_reads_the_heartbeats(tmp_path) -> None:
    clock = Clock()
    path = workers_file(tmp_path, "127.0.0.1", 3000)
    assert live_workers(path) == 0                         # no file yet
    create(path, 2)
    assert live_workers(path) == 0
    ConnectionBalancer(path, 0, heartbeat=False).close()   # the real clock: a live heartbeat
    assert live_workers(path) == 1
    with pytest.raises(ValueError, match="outside the 2 slots"):
        ConnectionBalancer(path, 2, clock=clock, heartbeat=False)


def test_from_env_serves_on_without_balancing_when_the_file_is_unusable(tmp_path, monkeypatch) -> None:
    import bentoml

    monkeypatch.setenv("NBM_WORKERS", "2")
    monkeypatch.setattr(bentoml.server_context, "worker_index", 3)
    monkeypatch.setenv("NBM_WORKERS_FILE", str(create(tmp_path / "w", 2)))
    assert ConnectionBalancer.from_env() is None                     # worker 3 of a 2-slot file
    monkeypatch.setenv("NBM_WORKERS_FILE", str(tmp_path / "missing"))
    assert ConnectionBalancer.from_env() is None
    monkeypatch.setattr(bentoml.server_context, "worker_index", 2)
    monkeypatch.setenv("NBM_WORKERS_FILE", str(tmp_path / "w"))
    balancer = ConnectionBalancer.from_env()
    assert balancer is not None and balancer.index == 1
    balancer.close()
    monkeypatch.setenv("NBM_WORKERS", "1")
    assert ConnectionBalancer.from_env() is None


def test_a_worker_without_requests_shows_its_count_fall(tmp_path) -> None:
    """A pool leaves worker 1 and a new one lands all on worker 0: 1's heartbeat drops its silent
    connections, so 0 sees 8 of 8 and closes down to its share."""
    clock = Clock()
    workers = _workers(tmp_path, 2, clock)
    _simulate(workers, [(1, 1 + i) for i in range(8)], clock, rounds=3)
    assert workers[0].slots[1, 0] == 8
    clock.now += 2 * S                                     # the old pool is gone; worker 1 gets no request
    workers[1].beat()
    assert workers[0].slots[1, 0] == 0
    pool = [(0, 100 + i) for i in range(8)]
    closes = 0
    for _ in range(10):                                    # worker 1 beats every 0.25 s of the fake clock
        closes += _simulate(workers, pool, clock, rounds=30, to=1)
        workers[1].beat()
    assert closes == 4 and sorted(workers[0].slots[:, 0].tolist()) == [4, 4]


def test_a_restarted_worker_does_not_inherit_its_slot(tmp_path) -> None:
    clock = Clock()
    path = workers_file(tmp_path, "127.0.0.1", 3000)
    a, b = _workers(tmp_path, 2, clock)
    _simulate([a, b], [(1, 1 + i) for i in range(6)], clock, rounds=3)
    assert read(path)[1, 0] == 6
    b.close()
    ConnectionBalancer(path, 1, clock=clock, heartbeat=False)   # the worker of slot 1, restarted
    assert read(path)[1, 0] == 0


def test_forwarded_clients_are_not_connections(tmp_path) -> None:
    """uvicorn gives a proxy's forwarded requests the end client's address and port 0."""
    clock = Clock()
    a, _ = _workers(tmp_path, 2, clock)
    assert _round(a, [connection({"client": ("203.0.113.7", 0), "headers": []})] * 50, clock) == []
    assert a.slots[0, 0] == 0


@pytest.mark.parametrize(("scope", "expected"), [
    ({"client": ("127.0.0.1", 51234), "headers": [(b"host", b"x")]}, ("127.0.0.1", 51234)),
    ({"client": ("203.0.113.7", 0), "headers": []}, None),                               # an older uvicorn's rewrite
    ({"client": ("203.0.113.7", 4711), "headers": [(b"x-forwarded-for", b"203.0.113.7:4711")]}, None),
    ({"client": ("127.0.0.1", 51234), "headers": [(b"x-forwarded-for", b"203.0.113.7")]}, None),
    ({"client": None, "headers": []}, None),
    ({"headers": []}, None),
])
def test_connection_of_a_request(scope, expected) -> None:
    assert connection(scope) == expected


def test_proxied_requests_through_the_uvicorn_middleware_are_not_counted(tmp_path) -> None:
    """uvicorn's ProxyHeadersMiddleware (trusting loopback) turns ``X-Forwarded-For: ip:port`` into the client;
    one proxy connection carrying 50 end clients' requests counts as nothing, not as 50 connections."""
    import asyncio

    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    clock = Clock()
    a, _ = _workers(tmp_path, 2, clock)
    seen: list = []

    async def app(scope, receive, send) -> None:
        seen.append(scope["client"])
        a.observe(connection(scope))

    middleware = ProxyHeadersMiddleware(app, trusted_hosts="127.0.0.1")
    for i in range(50):
        scope = {"type": "http", "scheme": "http", "client": ("127.0.0.1", 40000),
                 "headers": [(b"x-forwarded-for", f"203.0.113.{i}:{5000 + i}".encode())]}
        asyncio.run(middleware(scope, None, None))
        clock.now += S // 1000
    assert seen[0] != ("127.0.0.1", 40000)        # the middleware did rewrite the client
    assert a.slots[0, 0] == 0 and a._seen == {}
