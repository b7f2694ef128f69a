"""The engine picks up a new version when the registry alias moves, without failing requests in flight."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from nbm.cli import main


@pytest.mark.slow
def test_alias_move_is_picked_up_while_requests_run(served_world) -> None:
    data, home = served_world
    os.environ["NBM_HOME"] = str(home)
    from nbm.config import load_config
    from serving.engine import Engine, EngineSettings

    engine = Engine(load_config(), EngineSettings(data=data, reload_seconds=0.0))
    before = engine.model.version
    users = pd.read_parquet(data / "users.parquet")["user_id"].head(60).tolist()
    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(engine.recommend, u, 1, None, None, pd.Timestamp("2026-10-30T00:00:00Z")) for u in users]
        assert main(["train", "--data", str(data), "--no-policy-eval", "--force-promote", "--seed", "3",
                     "--valid-days", "5", "--test-days", "5"]) == 0
        answers = [f.result() for f in running]           # none failed
    deadline = time.monotonic() + 60    # the new version loads (and compiles) in the background
    while True:
        after = engine.recommend(users[0], now=pd.Timestamp("2026-10-31T00:00:00Z"))
        if after["model_version"] != before or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert int(after["model_version"]) == int(before) + 1
    assert {a["model_version"] for a in answers} <= {before, after["model_version"]}
