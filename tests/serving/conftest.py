"""One small world, one registered model and one in-process service per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nbm.cli import main


@pytest.fixture(scope="session")
def served_world(tmp_path_factory) -> tuple[Path, Path]:
    """(data directory, NBM_HOME) with a champion registered."""
    root = tmp_path_factory.mktemp("served")
    home, data = root / "home", root / "world"
    old = os.environ.get("NBM_HOME")
    os.environ["NBM_HOME"] = str(home)
    try:
        assert main(["simulate", "--out", str(data), "--users", "1500", "--days", "30", "--seed", "5"]) == 0
        assert main(["train", "--data", str(data), "--no-policy-eval", "--no-compare", "--valid-days", "5",
                     "--test-days", "5"]) == 0
    finally:
        if old is None:
            os.environ.pop("NBM_HOME", None)
        else:
            os.environ["NBM_HOME"] = old
    return data, home


@pytest.fixture(scope="session")
def client(served_world):
    """A test client of the BentoML ASGI app, built once per process."""
    from starlette.testclient import TestClient

    data, home = served_world
    os.environ.update(NBM_HOME=str(home), NBM_DATA=str(data), NBM_EXPLORER="epsilon_greedy",
                      MLFLOW_DISABLE_TELEMETRY="true")
    from serving.service import NbmService

    with TestClient(NbmService.to_asgi()) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A Redis server on a free loopback port, persisting every write (appendfsync always); its URL."""
    import shutil
    import subprocess
    import time

    import redis

    from serving.launch import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (`make test` installs Debian's redis-server when it can)")
    root = tmp_path_factory.mktemp("redis")
    port = free_port()
    process = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(root),
                                "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(timeout=10)
