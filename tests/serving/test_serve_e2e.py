"""`nbm serve` as a subprocess with 2 workers: concurrent requests never break a cap; state survives a restart."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations

import pandas as pd
import pytest

NOW = "2026-11-01T00:00:00Z"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _start(data, home, port: int) -> subprocess.Popen:
    env = {**os.environ, "NBM_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"}
    process = subprocess.Popen([sys.executable, "-m", "nbm.cli", "serve", "--data", str(data), "--port", str(port),
                                "--workers", "2", "--explorer", "greedy"], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)
    _stop(process)
    raise AssertionError("nbm serve did not become ready in 120 s")


def _stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _check_caps(items: list[dict]) -> None:
    """Default contact policy: 1 per channel per day, 12 h between any two, 5 a week in total."""
    times = [(pd.Timestamp(i["send_at"]), i["channel"], i["message_id"]) for i in items]
    assert len(times) <= 5
    for (a, ca, ma), (b, cb, mb) in combinations(times, 2):
        assert abs(a - b) >= pd.Timedelta(hours=12), (a, b)
        assert not (ca == cb and abs(a - b) < pd.Timedelta(hours=24))
        assert ma != mb   # cooldown 7 days


@pytest.mark.slow
def test_two_workers_hold_the_caps_and_state_survives_a_restart(served_world) -> None:
    data, home = served_world
    users = pd.read_parquet(data / "users.parquet")
    candidates = users.loc[users["consent"].map(len) >= 3, "user_id"].tolist()
    port = _free_port()
    process = _start(data, home, port)
    try:
        for user in candidates[:80]:     # a user who gets something (asked days before: its plan has expired)
            probe = _post(port, "/recommend", {"user_id": user, "now": "2026-10-28T00:00:00Z", "k": 2})
            if len(probe["items"]) == 2:
                break
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: _post(port, "/recommend", {"user_id": user, "now": NOW, "k": 2}),
                                    range(24)))
        items = [i for a in answers for i in a["items"]]
        assert len(items) >= 2, "the concurrent requests got nothing: the test proves nothing"
        _check_caps(items)
        first = next(a for a in answers if a["items"])
        item = first["items"][0]
        sent = {"event_id": f"e2e-{first['decision_id']}", "timestamp": item["send_at"], "user_id": user,
                "event_type": "send", "message_id": item["message_id"], "channel": item["channel"],
                "decision_id": first["decision_id"]}
        assert _post(port, "/feedback", {"events": [sent]})["accepted"] == 1
    finally:
        _stop(process)
    port = _free_port()   # a fresh port: the old one may still be closing
    process = _start(data, home, port)
    try:
        after = _post(port, "/recommend", {"user_id": user, "now": NOW, "k": 3})
        _check_caps(items + after["items"])             # what was planned before the restart still counts
        assert _post(port, "/feedback", {"events": [sent]}) == {"accepted": 0, "duplicates": 1, "rejected": []}
    finally:
        _stop(process)
