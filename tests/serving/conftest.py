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
        assert main(["train", "--data", str(data), "--no-policy-eval", "--valid-days", "5", "--test-days", "5"]) == 0
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
