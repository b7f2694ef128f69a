"""nbm against an MLflow tracking server (issue 42): ``mlflow server`` (SQLite backend store, a local folder as
its artifact store, artifacts proxied through the server) on 127.0.0.1; ``nbm train`` logs and registers
through its URL, and ``nbm serve`` loads the champion from it.

What a team's shared setup changes is only the URL (``mlflow_tracking_uri``): this checks that nothing in nbm
reads the tracking store or the artifacts behind MLflow's back (a local path, a SQLite file).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from nbm.cli import main
from serving.launch import free_port, start_service, stop_service

pytestmark = pytest.mark.slow

MLFLOW = Path(sys.executable).with_name("mlflow")


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory):
    """``mlflow server`` on 127.0.0.1: (its URL, the folder its artifacts land in)."""
    if not MLFLOW.exists() and shutil.which("mlflow") is None:
        pytest.skip("the `mlflow` command is not installed")
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    artifacts = root / "artifacts"
    command = [str(MLFLOW) if MLFLOW.exists() else "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'store.db'}",
               "--artifacts-destination", str(artifacts)]
    log = open(root / "server.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    deadline = time.monotonic() + 180
    while not _healthy(port):
        if process.poll() is not None or time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("mlflow server did not start: " + (root / "server.log").read_text()[-2000:])
        time.sleep(0.5)
    yield f"http://127.0.0.1:{port}", artifacts
    os.killpg(process.pid, signal.SIGKILL)      # nothing of it is kept: no clean shutdown to wait for
    process.wait(timeout=20)
    log.close()


def test_train_registers_on_a_tracking_server_and_serve_loads_the_champion_from_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tracking_server) -> None:
    url, artifacts = tracking_server
    home, data, config = tmp_path / "home", tmp_path / "world", tmp_path / "nbm.toml"
    config.write_text(f'mlflow_tracking_uri = "{url}"\n')
    monkeypatch.setenv("NBM_HOME", str(home))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    assert main(["simulate", "--out", str(data), "--users", "400", "--days", "30", "--seed", "3"]) == 0
    assert main(["train", "--config", str(config), "--data", str(data), "--no-compare", "--no-policy-eval"]) == 0

    # Registered on the server, its files behind the server's artifact store (none under the local home).
    from mlflow import MlflowClient

    from training.tracking import MODEL_NAME

    client = MlflowClient(tracking_uri=url, registry_uri=url)
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert champion.source and not champion.source.startswith(("file:", "/"))
    stored = [p for p in artifacts.rglob("*") if p.is_file()]
    assert any(p.name == "MLmodel" for p in stored), "the model's files did not go through the server"
    assert not (home / "mlflow.db").exists() and not (home / "mlruns").exists()

    # `nbm serve` loads that champion through the same URL and decides with it.
    port = free_port()
    process = start_service(data, home, port, env={"NBM_CONFIG": str(config)})
    try:
        user = str(pd.read_parquet(data / "users.parquet")["user_id"].iloc[0])
        request = urllib.request.Request(f"http://127.0.0.1:{port}/recommend", json.dumps({"user_id": user}).encode(),
                                         {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
    finally:
        stop_service(process)
    assert answer["model_version"] == str(champion.version)
    assert answer["user_id"] == user
