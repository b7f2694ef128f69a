"""Start ``nbm serve`` as a subprocess on a free loopback port, wait until it is ready, stop it.

For the end-to-end tests and ``benchmarks/serve.py``: the service runs in its own process group, so that
stopping it stops BentoML's workers too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from serving.balance import live_workers, workers_file


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(data: Path, home: Path, port: int, workers: int = 1, explorer: str | None = None,
                  timeout: float = 180.0, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``nbm serve --data DATA`` with ``NBM_HOME=HOME`` (and ``env``) on 127.0.0.1:PORT, returned once ``/readyz``
    answers."""
    env = {**os.environ, "NBM_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})}
    command = [sys.executable, "-m", "nbm.cli", "serve", "--data", str(data), "--port", str(port),
               "--workers", str(workers)] + (["--explorer", explorer] if explorer else [])
    process = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    began = time.monotonic()
    wait_ready(process, port, timeout, "nbm serve")
    if workers > 1:   # /readyz answers from the first worker ready: wait for every worker's heartbeat
        path = workers_file(Path(home).expanduser().resolve(), "127.0.0.1", port)
        while live_workers(path) < workers:
            if process.poll() is not None or time.monotonic() - began > timeout:
                stop_service(process)
                raise RuntimeError(f"nbm serve: {live_workers(path)} of {workers} workers ready in {timeout:.0f} s")
            time.sleep(0.1)
    return process


def is_ready(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``/readyz`` on ``host:port`` answers 200 now (a server bound to all addresses is asked on
    loopback)."""
    probe = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    url = f"http://[{probe}]:{port}/readyz" if ":" in probe else f"http://{probe}:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_ready(process: subprocess.Popen, port: int, timeout: float = 180.0, what: str = "the server"
               ) -> subprocess.Popen:
    """``process`` once ``/readyz`` on 127.0.0.1:PORT answers 200; stopped, and an error, when it exits or
    ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if is_ready(port):
            return process
        time.sleep(0.5)
    stop_service(process)
    raise RuntimeError(f"{what} did not become ready in {timeout:.0f} s")


def stop_service(process: subprocess.Popen) -> None:
    """Stop the service and its workers (SIGTERM, then SIGKILL after 30 s)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
