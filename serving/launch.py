"""Run the scoring service: the supervision behind ``nbm serve``, and helpers that start ``nbm serve`` for tests.

:func:`serve` runs BentoML's server for ``nbm serve`` and supervises it: the settings passed to the workers
as environment variables, the workers' shared file (:mod:`serving.balance`), the example request printed
once the service answers, signals passed on, the workers' file removed at the end.

:func:`start_service`, :func:`wait_ready` and :func:`stop_service` start ``nbm serve`` as a subprocess on a
free loopback port, wait until it is ready and stop it, for the end-to-end tests and ``benchmarks/serve.py``:
the service runs in its own process group, so that stopping it stops BentoML's workers too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from serving import balance


def serve(data: Path, model: str, *, host: str, port: int, workers: int, explorer: str, threshold: float,
          reload_seconds: float, home: Path, config_path: Path | None = None, example: str | None = None) -> int:
    """Run the service on ``host:port`` until it stops; returns BentoML's exit code (0 after Ctrl-C).

    ``data``, ``model``, ``explorer``, ``threshold``, ``reload_seconds`` and ``config_path`` (the
    configuration file, if any) reach each of the ``workers`` through the environment, with ``home`` (the
    state's directory). The printed example request asks for ``example``, by default a user of ``data`` with
    a consent (:func:`example_user`). The arguments are taken as checked: the data directory exists, the port
    is free (:func:`port_free`), the model resolves.
    """
    env = {**os.environ, "NBM_DATA": str(Path(data).resolve()), "NBM_MODEL": model,
           "NBM_EXPLORER": explorer, "NBM_THRESHOLD": str(threshold),
           "NBM_RELOAD_SECONDS": str(reload_seconds), "NBM_WORKERS": str(workers),
           "NBM_HOME": str(Path(home).expanduser().resolve())}
    if config_path:
        env["NBM_CONFIG"] = str(Path(config_path).resolve())
    # BentoML keeps /metrics' multi-process files in BENTOML_HOME and wipes them when a server starts: two
    # services on one machine sharing the default ~/bentoml emptied each other's /metrics. Each its own.
    env.setdefault("BENTOML_HOME", str(Path(env["NBM_HOME"]) / "bentoml" / f"{host}-{port}".replace(":", "_")))
    print(f"nbm serve: starting on http://{host}:{port} (data {data}, model {model}, "
          f"{workers} worker(s))", file=sys.stderr, flush=True)
    example = example or example_user(Path(data)) or "u000001"
    quote = lambda text: text.replace("'", "'\\''")          # noqa: E731 — quoted for a POSIX shell
    body = quote(json.dumps({"user_id": example}))
    # A person nbm has never seen, with what the caller knows of them in the request (a cold start).
    from nbm.config import load_config

    channel = next(iter(load_config(config_path or None).channels), "email")
    newcomer = quote(json.dumps({"user_id": "newcomer-1", "context": {"consent": [channel], "timezone": "Europe/Paris"}}))
    ready_line = (f"nbm serve: ready on http://{host}:{port}; try:\n"
                  f"  curl -s -X POST http://{host}:{port}/recommend -H 'content-type: application/json' "
                  f"-d '{body}'\n"
                  f"  curl -s -X POST http://{host}:{port}/recommend -H 'content-type: application/json' "
                  f"-d '{newcomer}'")
    command = [sys.executable, "-m", "bentoml", "serve", "serving.service:NbmService", "--host", host,
               "--port", str(port)]
    shared_file = None
    if workers > 1:   # the workers' shared file: connection counts and heartbeats (serving/balance.py)
        path = balance.workers_file(Path(env["NBM_HOME"]), host, port)
        shared_file = balance.create(path, 2 * workers)     # room for restarted workers' numbers
        env["NBM_WORKERS_FILE"] = str(shared_file)
    return _supervise(command, env, shared_file, (host, port, ready_line))


def example_user(data: Path) -> str | None:
    """A user of ``data`` with a consent (so the printed example gets an answer with an item), read from the
    first rows of its users table; ``None`` when there is none to read cheaply."""
    path = data / "users.parquet"
    if not path.is_file():
        return None
    try:
        import pyarrow.parquet as pq

        batch = next(pq.ParquetFile(path).iter_batches(batch_size=1024, columns=["user_id", "consent"]), None)
    except Exception:  # noqa: BLE001 — only an example: a table it cannot read falls back to the default id
        return None
    users = [] if batch is None else zip(batch.column("user_id").to_pylist(), batch.column("consent").to_pylist())
    return next((str(user) for user, consent in users if user and consent), None)


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (bound as servers bind: with SO_REUSEADDR, which
    a socket in TIME_WAIT does not block but a listening one does). An unresolvable host is left to the
    server to report."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError:
        return True
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return False
    return True


def _supervise(command: list[str], env: dict[str, str], workers_file: Path | None,
               announce: tuple[str, int, str] | None = None) -> int:
    """Run BentoML's server until it stops. A SIGTERM or SIGHUP sent to ``nbm serve`` alone (a process
    manager's stop) is passed on to the server, which stops its workers, and ``nbm serve`` waits for it;
    Ctrl-C reaches both (one process group). Either way the workers' file is removed at the end.
    ``announce`` (host, port, line): ``line`` is printed once the server answers ``/readyz``."""
    process = subprocess.Popen(command, env=env)
    if announce is not None:
        threading.Thread(target=_announce_when_ready, args=(process, *announce), name="nbm-serve-ready",
                         daemon=True).start()
    forward = lambda signum, frame: process.send_signal(signum)  # noqa: E731
    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        while True:
            try:
                return process.wait()
            except KeyboardInterrupt:        # the server got it too: give it time to stop its workers
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if process.poll() is None:           # an error here: do not leave the server behind
            process.kill()
            process.wait()
        if workers_file is not None:
            workers_file.unlink(missing_ok=True)


def _announce_when_ready(process: subprocess.Popen, host: str, port: int, line: str) -> None:
    """Print ``line`` (the example request) once ``/readyz`` answers, so that it works when it appears."""
    while process.poll() is None:
        if is_ready(port, host):
            print(line, file=sys.stderr, flush=True)
            return
        time.sleep(0.5)


def _ephemeral_ports() -> range:
    """The range the kernel draws outgoing connections' local ports from (Linux: ``ip_local_port_range``)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def _reserved_ports() -> set[int]:
    """Ports the administrator reserved (Linux: ``ip_local_reserved_ports``, e.g. ``8000-8080,9000``)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_reserved_ports").read_text().strip()
    except OSError:
        return set()
    out: set[int] = set()
    for item in filter(None, text.split(",")):
        low, _, high = item.partition("-")
        out.update(range(int(low), int(high or low) + 1))
    return out


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, drawn outside the ephemeral range. A port the kernel hands out for
    ``bind(0)`` comes from the range outgoing connections use too, so that between this call and the server's
    bind any client's connection (a Redis pool, a Dask comm) could take it, and the server would stop with
    "address already in use"."""
    import random

    ephemeral, reserved = _ephemeral_ports(), _reserved_ports()
    candidates = [p for p in range(1024, 65536) if p not in ephemeral and p not in reserved]
    draw = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(min(200, len(candidates))):
        port = draw.choice(candidates)
        if port_free("127.0.0.1", port):
            with socket.socket() as s:       # nothing listening, and nothing connected from it either
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no free port on 127.0.0.1 outside the ephemeral range {ephemeral.start}-{ephemeral.stop - 1} "
                       f"({len(candidates)} candidates)")


def start_service(data: Path, home: Path, port: int, workers: int = 1, explorer: str | None = None,
                  timeout: float = 180.0, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``nbm serve --data DATA`` with ``NBM_HOME=HOME`` (and ``env``) on 127.0.0.1:PORT, returned once ``/readyz``
    answers."""
    env = {**os.environ, "NBM_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})}
    command = [sys.executable, "-m", "nbm.cli", "serve", "--data", str(data), "--port", str(port),
               "--workers", str(workers)] + (["--explorer", explorer] if explorer else [])
    log = tempfile.TemporaryFile()   # the service's output, whose end goes into the error when it fails to start
    try:
        process = subprocess.Popen(command, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    except BaseException:
        log.close()
        raise
    process.log = log  # type: ignore[attr-defined]
    began = time.monotonic()
    wait_ready(process, port, timeout, "nbm serve")
    if workers > 1:   # /readyz answers from the first worker ready: wait for every worker's heartbeat
        path = balance.workers_file(Path(home).expanduser().resolve(), "127.0.0.1", port)
        while balance.live_workers(path) < workers:
            if process.poll() is not None or time.monotonic() - began > timeout:
                ready, tail = balance.live_workers(path), _log_tail(process)
                stop_service(process)
                raise RuntimeError(f"nbm serve: {ready} of {workers} workers ready in {timeout:.0f} s{tail}")
            time.sleep(0.1)
    return process


def _log_tail(process: subprocess.Popen, chars: int = 4000) -> str:
    """The end of the output of a service started by :func:`start_service` (empty when it kept none)."""
    log = getattr(process, "log", None)
    if log is None or log.closed:
        return ""
    log.seek(0, os.SEEK_END)
    log.seek(max(0, log.tell() - chars))
    return "; its output ended with:\n" + log.read().decode(errors="replace")


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
    code = process.poll()
    tail = _log_tail(process)
    stop_service(process)
    outcome = f"exited with code {code} before it was ready" if code is not None else f"did not become ready in {timeout:.0f} s"
    raise RuntimeError(f"{what} {outcome}{tail}")


def stop_service(process: subprocess.Popen) -> None:
    """Stop the service and its workers (SIGTERM, then SIGKILL after 30 s); a service already gone is fine."""
    def signal_group(kind: int) -> None:
        with contextlib.suppress(ProcessLookupError):      # it exited, and its group with it
            os.killpg(process.pid, kind)

    try:
        signal_group(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            signal_group(signal.SIGKILL)
            process.wait(timeout=10)
    finally:
        log = getattr(process, "log", None)
        if log is not None:
            log.close()
