"""The engine picks up a new version when the registry alias moves, without failing requests in flight."""

from __future__ import annotations

import itertools
import os
import threading
import time

import pandas as pd
import pytest

from nbm.cli import main


@pytest.mark.slow
def test_alias_move_is_picked_up_while_requests_run(served_world) -> None:
    """Requests run without pause from before the alias moves until after the new version answers: none
    fails, the old version answers while the new one is trained, registered and loaded, and the new one
    takes over (within the reload interval plus its load)."""
    data, home = served_world
    os.environ["NBM_HOME"] = str(home)
    from nbm.config import load_config
    from serving.engine import Engine, EngineSettings

    engine = Engine(load_config(), EngineSettings(data=data, reload_seconds=0.0))
    before = engine.model.version
    users = itertools.cycle(pd.read_parquet(data / "users.parquet")["user_id"].head(200).tolist())
    lock, stop = threading.Lock(), threading.Event()
    answered: list[tuple[float, str]] = []
    failed: list[BaseException] = []

    def ask() -> None:
        while not stop.is_set():
            with lock:
                user = next(users)
            try:
                version = engine.recommend(user, now=pd.Timestamp("2026-10-30T00:00:00Z"))["model_version"]
            except BaseException as exc:  # noqa: BLE001 — collected: the test fails on any
                failed.append(exc)
                return
            answered.append((time.monotonic(), version))

    threads = [threading.Thread(target=ask, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        moved = time.monotonic()
        assert main(["train", "--data", str(data), "--no-policy-eval", "--force-promote", "--seed", "3",
                     "--valid-days", "5", "--test-days", "5"]) == 0
        deadline = time.monotonic() + 60    # the new version loads (and compiles) in the background
        while not any(v != before for _, v in answered[-20:]) and time.monotonic() < deadline and not failed:
            time.sleep(0.2)
        time.sleep(0.5)            # and a few more requests on the new version
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not failed, failed[:3]
    versions = {v for _, v in answered}
    assert versions == {before, str(int(before) + 1)}, versions
    assert any(v == before and moved < at for at, v in answered), "no request ran while the alias moved"
    assert answered[-1][1] == str(int(before) + 1)
