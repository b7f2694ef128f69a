"""Benchmark of the service (issue 6): /recommend latency and throughput, /recommend_batch decisions per second.

Builds a world whose users each have 100 eligible messages × 3 channels (× 6 slots = 1,800 candidates, or
1,500 where the 21:00 slot, moved out of quiet hours, lands on the user's next 08:00 slot; the floors' user
is one of those),
registers a model in a temporary NBM_HOME, then — on 127.0.0.1 only, each level bounded in requests and
seconds — measures ``nbm serve`` with 1 and 2 workers at concurrency 1, 8 and 32, 2 workers at concurrency 8
with the batching of concurrent calls off (``NBM_MAX_BATCH=1``), /recommend_batch one and two requests at a
time (a new connection each), and the HTTP path alone (a request refused by validation). With ``--live``, a
level of live decisions too (issue 41): 2 workers at concurrency 8, every request carrying a ``context``
(the user's consent and time zone), while a writer posts opens, clicks and visits of the users decided to
``/feedback`` (each rebuilds its user's features within ``[service] live_refresh_seconds``); then how long a
consent posted to ``/users`` takes to rule the next decision, on either worker.
Floors measured in the same run: the engine's ``recommend`` in-process (candidates, features, LightGBM,
``decide()``, state store: what the service wraps) one request at a time and 1, 4, 8, 32 together, LightGBM
``Booster.predict`` and the compiled booster alone on one decision's rows, and a plain FastAPI/uvicorn app calling the
same engine (in its own process, like the service).

    .venv/bin/python benchmarks/serve.py [--requests 400] [--seconds 10] [--live] [--only-live]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from serving.launch import free_port, start_service, stop_service, wait_ready

NOW = "2026-11-01T00:00:00Z"
BATCH_NOW = "2026-11-15T00:00:00Z"
CHANNELS = ["email", "push", "sms"]


def build_world(root: Path) -> tuple[Path, Path, list[str]]:
    """A simulated world and its model, then a catalog of 100 live messages on email, push and sms."""
    data, home = root / "world", root / "home"
    env = {**os.environ, "NBM_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "nbm.cli", *a], env=env, check=True,  # noqa: E731
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run("simulate", "--out", str(data), "--users", "12000", "--days", "35", "--seed", "4")
    run("train", "--data", str(data), "--no-policy-eval")
    messages = pd.read_parquet(data / "messages.parquet")
    extra = messages.sample(100 - len(messages) if len(messages) < 100 else 0, replace=True, random_state=0)
    extra = extra.assign(message_id=[f"x{i:03d}" for i in range(len(extra))])
    catalog = pd.concat([messages, extra], ignore_index=True).head(100)
    catalog["channels"] = [CHANNELS] * len(catalog)
    catalog["lifecycle_stages"] = [[] for _ in range(len(catalog))]
    catalog["start_at"] = pd.Timestamp("2026-01-01T00:00:00Z")
    catalog["end_at"] = pd.NaT
    catalog.to_parquet(data / "messages.parquet")
    users = pd.read_parquet(data / "users.parquet")
    users["consent"] = [CHANNELS] * len(users)
    users.to_parquet(data / "users.parquet")
    (data / "decisions.parquet").unlink(missing_ok=True)
    return data, home, users["user_id"].tolist()


def prepared_world(root: Path | None) -> Path:
    """``root`` (a new temporary directory when ``None``) holding :func:`build_world`'s world and model,
    built when missing (``root/world``, ``root/home``), with ``NBM_HOME`` set to its home: what the
    in-process benchmarks (``decision_batch.py``, ``decision_latency.py``) start from."""
    root = root or Path(tempfile.mkdtemp())
    if not (root / "world" / "events.parquet").exists():
        root.mkdir(parents=True, exist_ok=True)
        build_world(root)
    os.environ.update(NBM_HOME=str(root / "home"), MLFLOW_DISABLE_TELEMETRY="true")
    return root


def per_call_ms(call, calls: int = 200) -> float:
    """Mean milliseconds of ``call()`` over ``calls`` calls."""
    t = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - t) / calls * 1e3


def load(port: int, path: str, bodies: list[bytes], concurrency: int, seconds: float,
         expect: int = 200, fresh: bool = False) -> dict[str, float]:
    """Send ``bodies`` with ``concurrency`` keep-alive connections; stop early after ``seconds``.

    ``fresh``: a new connection for every request instead (a connection stays with the worker process
    that accepted it, so two keep-alive connections may both land on one worker)."""
    ms, wall = send(port, path, bodies, concurrency, seconds, expect, fresh)
    return {"requests": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "per_s": len(ms) / wall}


def send(port: int, path: str, bodies: list[bytes], concurrency: int, seconds: float,
         expect: int = 200, fresh: bool = False) -> tuple[np.ndarray, float]:
    """:func:`load`'s requests: each one's milliseconds (in the order they ended) and the wall seconds."""
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    chunks = [bodies[i::concurrency] for i in range(concurrency)]

    def worker(mine: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for body in mine:
            if time.monotonic() > deadline:
                break
            t = time.perf_counter()
            if fresh:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("POST", path, body, {"content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            elapsed = time.perf_counter() - t
            if response.status != expect:
                raise RuntimeError(f"{path} answered {response.status}")
            with lock:
                latencies.append(elapsed)
        conn.close()

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, chunks))
    return np.asarray(latencies) * 1e3, time.perf_counter() - began


def fastapi_app(data: Path):
    """A plain FastAPI app calling the same engine (one process, uvicorn), with ``/readyz``."""
    from fastapi import FastAPI

    from nbm.config import load_config
    from serving.engine import Engine, EngineSettings

    engine = Engine(load_config(), EngineSettings(data=data))
    app = FastAPI()

    @app.post("/recommend")
    def recommend(body: dict) -> dict:
        return engine.recommend(user_id=body["user_id"], now=pd.Timestamp(body["now"]))

    @app.get("/readyz")
    def ready() -> dict:
        return {}

    return app


def fastapi_floor(data: Path, home: Path, bodies: list[bytes], concurrency: int, seconds: float) -> dict[str, float]:
    """The FastAPI floor's load, the app in its own process (in this one, the load's client threads would
    share its GIL and inflate its latencies: p50 104 ms at concurrency 8 measured that way)."""
    port = free_port()
    env = {**os.environ, "NBM_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"}
    process = wait_ready(subprocess.Popen([sys.executable, __file__, "--fastapi-floor", str(data), "--port", str(port)],
                                          env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL), port, what="the FastAPI floor's app")
    try:
        load(port, "/recommend", bodies[:20], 2, seconds)                  # warm-up
        return load(port, "/recommend", bodies[20:], concurrency, seconds)
    finally:
        stop_service(process)


def serve_fastapi_floor(data: Path, port: int) -> None:
    import uvicorn

    uvicorn.run(fastapi_app(data), host="127.0.0.1", port=port, log_level="error")


def live_level(data: Path, home: Path, take, args) -> None:
    """The live level (see the module docstring): p50/p99 at concurrency 8 on 2 workers with context and a
    feedback stream, the feedback accepted meanwhile, and the seconds a posted consent takes to rule decisions."""
    users = pd.read_parquet(data / "users.parquet").set_index("user_id")
    messages = pd.read_parquet(data / "messages.parquet")["message_id"].astype(str).tolist()

    def body(u: str) -> bytes:
        return json.dumps({"user_id": u, "now": NOW, "context": {"consent": CHANNELS,
                                                                 "timezone": str(users.at[u, "timezone"])}}).encode()

    port = free_port()
    env = {}
    if os.environ.get("NBM_BENCH_CONFIG"):          # (a configuration of the live level's service: experiments)
        env["NBM_CONFIG"] = os.environ["NBM_BENCH_CONFIG"]
    process = start_service(data, home, port, 2, env=env)
    stop = threading.Event()
    posted = [0]
    feedback_ms: list[float] = []

    def feedback() -> None:            # ~100 events/s: opens, clicks and visits of users being decided
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        rng = np.random.default_rng(1)
        pool = list(users.index[:5000])
        n = 0
        while not stop.is_set():
            events = []
            for _ in range(10):
                u, m = pool[int(rng.integers(len(pool)))], messages[int(rng.integers(len(messages)))]
                kind = ("open", "click", "visit")[n % 3]
                events.append({"event_id": f"live-{n}", "timestamp": "2026-10-31T12:00:00Z", "user_id": u,
                               "event_type": kind, **({} if kind == "visit" else {"message_id": m, "channel": "email"})})
                n += 1
            t = time.perf_counter()
            conn.request("POST", "/feedback", json.dumps({"events": events}).encode(), {"content-type": "application/json"})
            response = conn.getresponse()
            answer = json.loads(response.read())
            feedback_ms.append((time.perf_counter() - t) * 1e3)
            posted[0] += answer["accepted"]
            time.sleep(0.1)
        conn.close()

    plain = lambda u: json.dumps({"user_id": u, "now": NOW}).encode()      # noqa: E731
    try:
        load(port, "/recommend", [body(u) for u in take(20)], 2, args.seconds)          # warm-up
        # The same load without the live parts, then with the context alone, on the same warm workers.
        for name, make in (("no context, no feedback", plain), ("context, no feedback", body)):
            r = load(port, "/recommend", [make(u) for u in take(args.requests)], 8, args.seconds)
            print(f"live: /recommend, {name}, 2 workers, concurrency 8: p50 {r['p50_ms']:.1f} ms, "
                  f"p99 {r['p99_ms']:.1f} ms, {r['per_s']:.0f}/s")
        writer = threading.Thread(target=feedback)
        writer.start()
        time.sleep(1.0)
        r = load(port, "/recommend", [body(u) for u in take(args.requests)], 8, args.seconds)
        time.sleep(0.5)
        stop.set()
        writer.join()
        print(f"live: /recommend with context, 2 workers, concurrency 8, feedback stream on: p50 {r['p50_ms']:.1f} ms, "
              f"p99 {r['p99_ms']:.1f} ms (target ≤ 25), {r['per_s']:.0f}/s; {posted[0]:,} feedback events accepted "
              f"meanwhile, /feedback of 10 events p50 {np.percentile(feedback_ms, 50):.1f} ms, "
              f"max {max(feedback_ms):.1f} ms")
        # A consent posted to /users: how long until the next decision (on either worker) obeys it.
        waits = []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def post(path: str, payload: dict) -> dict:
            conn.request("POST", path, json.dumps(payload).encode(), {"content-type": "application/json"})
            response = conn.getresponse()
            return json.loads(response.read())

        def probe(u: str, day: int) -> dict:
            # Each probe a week after the last (no cap of an earlier probe holds), on a new connection (either
            # worker), asking for email and push alone: answered before the change, nothing after it.
            now = (pd.Timestamp(NOW) + pd.Timedelta(days=day)).isoformat()
            fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            fresh.request("POST", "/recommend", json.dumps({"user_id": u, "now": now, "channels": ["email", "push"],
                                                            "explore": False}).encode(),
                          {"content-type": "application/json"})
            answer = json.loads(fresh.getresponse().read())
            fresh.close()
            return answer

        for i, u in enumerate(take(30)):
            if not probe(u, 8)["items"]:
                continue                       # nothing for this user even before: it would prove nothing
            post("/users", {"users": [{"user_id": u, "consent": ["sms"]}]})
            began, day = time.perf_counter(), 8
            while True:
                day += 8
                answer = probe(u, day)
                if not answer["items"] and answer["reason"] == "no_eligible_candidate":
                    break
                if time.perf_counter() - began > 10:
                    raise RuntimeError(f"a consent posted for {u} was not obeyed within 10 s")
            waits.append(time.perf_counter() - began)
            if len(waits) == 10:
                break
        conn.close()
        print(f"live: a consent posted to /users rules the next decision within {max(waits):.2f} s (max of "
              f"{len(waits)}; median {np.median(waits):.2f} s; target ≤ 1 s)")
    finally:
        stop.set()
        stop_service(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per level (at most; a fresh user each)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per level (at most)")
    parser.add_argument("--fastapi-floor", type=Path, help=argparse.SUPPRESS)   # internal: serve the floor's app
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--live", action="store_true", help="also the live level (context, feedback stream)")
    parser.add_argument("--only-live", action="store_true", help="the live level and its floors only")
    args = parser.parse_args()
    if args.fastapi_floor is not None:
        serve_fastapi_floor(args.fastapi_floor, args.port)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data, home, users = build_world(Path(tmp))
        rng = np.random.default_rng(0)
        # Every request is for a different user: a user asked twice at the same `now` is mostly capped by
        # the first answer's reservation, and a capped decision is cheap — it would flatter the figures.
        fresh = iter(rng.permutation(users).tolist())
        take = lambda n: [next(fresh) for _ in range(n)]  # noqa: E731
        # Campaign batches decide every user again two weeks later, when no cap of the first answers holds.
        again = iter(rng.permutation(users).tolist())
        bodies_for = lambda n: [json.dumps({"user_id": u, "now": NOW}).encode() for u in take(n)]  # noqa: E731

        # Floors, in this process.
        os.environ.update(NBM_HOME=str(home), MLFLOW_DISABLE_TELEMETRY="true")
        from decision.candidates import expand
        from nbm.config import load_config
        from serving.engine import Engine, EngineSettings

        engine = Engine(load_config(), EngineSettings(data=data))
        sample = take(200)
        rows = expand(engine.store, sample[0], pd.Timestamp(NOW))
        matrix = engine.model.artifact.matrix(engine.store.featurise_columns(rows))
        predict_ms = per_call_ms(lambda: engine.model.artifact.booster.predict(matrix, num_threads=1))
        compiled = engine.model.artifact.compiled
        compiled_ms = float("nan") if compiled is None else per_call_ms(lambda: compiled.predict(matrix))
        for u in take(30):   # warm-up
            engine.recommend(user_id=u, now=pd.Timestamp(NOW))
        t = time.perf_counter()
        for u in sample:
            engine.recommend(user_id=u, now=pd.Timestamp(NOW))
        decide_ms = (time.perf_counter() - t) / len(sample) * 1e3
        curve = {}
        for size in (1, 4, 8, 32):   # in-process recommend_many: the cost of deciding `size` requests together
            reps = max(3, 64 // size)
            t = time.perf_counter()
            for _ in range(reps):
                engine.recommend_many([{"user_id": u, "now": pd.Timestamp(NOW)} for u in take(size)])
            curve[size] = (time.perf_counter() - t) / reps * 1e3
        print(f"candidates per request: {len(rows):,} (100 messages × 3 channels × {len(rows) // 300} slots)")
        print(f"floor: LightGBM predict alone on {len(rows):,} rows      {predict_ms:7.2f} ms")
        print(f"floor: compiled booster alone on {len(rows):,} rows       {compiled_ms:7.2f} ms (what nbm scores with)")
        print(f"floor: in-process recommend (decide() path)  {decide_ms:7.2f} ms = {1e3 / decide_ms:6.0f} decisions/s")
        print("in-process recommend_many, requests decided together: "
              + ", ".join(f"{k}: {v:.1f} ms" for k, v in curve.items()))
        del engine
        if args.live or args.only_live:
            live_level(data, home, take, args)
            if args.only_live:
                return
        rows_out = []
        for c in (1, 8):
            r = fastapi_floor(data, home, bodies_for(args.requests + 20), c, args.seconds)
            rows_out.append({"server": "FastAPI floor", "workers": 1, "concurrency": c, **r})

        batch_rates: dict[int, float] = {}
        for workers, max_batch in ((1, "64"), (2, "64"), (2, "1")):
            os.environ["NBM_MAX_BATCH"] = max_batch      # 1: concurrent calls decided one by one
            port = free_port()
            process = start_service(data, home, port, workers)
            try:
                load(port, "/recommend", bodies_for(20), 2, args.seconds)  # warm-up
                if max_batch == "1":
                    rows_out.append({"server": "nbm serve, batching off", "workers": workers, "concurrency": 8,
                                     **load(port, "/recommend", bodies_for(args.requests), 8, args.seconds)})
                    continue
                if workers == 1:   # the HTTP path alone: a request refused by validation (400) does no work
                    invalid = [json.dumps({"user_id": "u", "k": 99}).encode()] * 100
                    http_floor = load(port, "/recommend", invalid, 1, args.seconds, expect=400)["p50_ms"]
                for c in (1, 8, 32):
                    rows_out.append({"server": "nbm serve", "workers": workers, "concurrency": c,
                                     **load(port, "/recommend", bodies_for(args.requests), c, args.seconds)})
                if workers == 2:
                    # One campaign batch at a time uses one worker; two at a time, both. A batch is a new
                    # connection (each is accepted by whichever worker is free), after one each to warm up.
                    batches = lambda n: [json.dumps({"requests": [{"user_id": u, "now": BATCH_NOW} for u in  # noqa: E731
                                                                  (next(again) for _ in range(500))]}).encode()
                                         for _ in range(n)]
                    load(port, "/recommend_batch", batches(2), 2, args.seconds, fresh=True)
                    for c in (1, 2):
                        r = load(port, "/recommend_batch", batches(6 * c), c, args.seconds * 3, fresh=True)
                        batch_rates[c] = r["per_s"] * 500
            finally:
                stop_service(process)
        table = pd.DataFrame(rows_out)
        print(table.to_string(index=False, float_format=lambda x: f"{x:.1f}"))
        print(f"HTTP path alone (a 400 answer, 1 worker, concurrency 1): p50 {http_floor:.1f} ms")
        two = table[(table["server"] == "nbm serve") & (table["workers"] == 2)].set_index("concurrency")
        print(f"p99 at concurrency 8, 2 workers: {two.loc[8, 'p99_ms']:.1f} ms (target ≤ 25)")
        best = two["per_s"].max()
        print(f"service throughput {best:.0f}/s = {best / (1e3 / decide_ms):.0%} of in-process decide() "
              f"(target ≥ 40 %)")
        grouped = 32e3 / curve[32]       # the harder floor: one process deciding 32 requests at a time
        print(f"  and {best / grouped:.0%} of in-process recommend_many with 32 decided together "
              f"({grouped:.0f} decisions/s, one process)")
        print(f"/recommend_batch (500 decisions a request, 2 workers): {batch_rates[1]:.0f} decisions/s one request "
              f"at a time, {batch_rates[2]:.0f} decisions/s two at a time (target ≥ 5,000)")


if __name__ == "__main__":
    main()
